//! `GET /` and `POST /logout`.

use std::sync::Arc;

use reqwest::StatusCode;
use testkit::RedisServer;

use crate::helpers::{all_keys, bare_client, browser, set_cookie, spawn_app, stored_ttl};

#[tokio::test]
async fn the_page_shows_the_count_the_node_and_the_time_left() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    for _ in 0..3 {
        app.count(&client).await;
    }

    let response = client.get(app.url("/")).send().await.expect("GET /");

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.expect("a body");
    assert!(html.contains(r#"aria-live="polite">3</p>"#), "the count");
    assert!(
        html.contains(&format!(r#"<dd id="node">{}</dd>"#, app.node_name)),
        "the node"
    );
    let seconds: u64 = html
        .split(r#"data-seconds=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|value| value.parse().ok())
        .expect("the time left, in seconds");
    assert!((1790..=1800).contains(&seconds), "{seconds}");
}

#[tokio::test]
async fn the_page_neither_counts_nor_creates_a_session() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;

    let response = browser().get(app.url("/")).send().await.expect("GET /");

    assert!(set_cookie(response.headers(), "sid").is_none());
    let html = response.text().await.expect("a body");
    assert!(html.contains(r#"aria-live="polite">0</p>"#));
    assert!(
        html.contains(r#"data-seconds="""#),
        "no session, no time left"
    );
    assert!(all_keys(&redis).is_empty());
}

#[tokio::test]
async fn logout_deletes_the_session_and_expires_the_cookie() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    let sid = app.count(&client).await.sid.expect("a session");
    app.count(&client).await;

    let response = client
        .post(app.url("/logout"))
        .send()
        .await
        .expect("POST /logout");

    assert_eq!(response.status(), StatusCode::OK);
    let cookie = set_cookie(response.headers(), "sid").expect("a removal cookie");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    assert_eq!(
        response.json::<serde_json::Value>().await.expect("JSON"),
        serde_json::json!({ "ended": true })
    );
    assert_eq!(stored_ttl(&redis, &sid), -2, "the key is gone");
    let next = app.count(&client).await;
    assert_eq!(next.count, Some(1));
    assert_ne!(next.sid.as_deref(), Some(sid.as_str()));
}

#[tokio::test]
async fn logout_without_a_session_is_harmless() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;

    let response = bare_client()
        .post(app.url("/logout"))
        .send()
        .await
        .expect("POST /logout");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<serde_json::Value>().await.expect("JSON"),
        serde_json::json!({ "ended": false })
    );
}

#[tokio::test]
async fn a_logout_racing_in_flight_requests_always_wins() {
    let redis = RedisServer::start();
    let nodes = Arc::new([spawn_app(&redis).await, spawn_app(&redis).await]);
    let sid = nodes[0].count(&browser()).await.sid.expect("a session");

    // 100 counts on both nodes, with the logout fired in the middle of them.
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..100_usize {
        let (nodes, sid) = (Arc::clone(&nodes), sid.clone());
        requests.spawn(async move { nodes[i % 2].count_as(&sid).await });
    }
    let logout = bare_client()
        .post(nodes[1].url("/logout"))
        .header("cookie", format!("sid={sid}"))
        .send()
        .await
        .expect("POST /logout");
    let replies = requests.join_all().await;

    assert_eq!(logout.status(), StatusCode::OK);
    assert!(replies.iter().all(|reply| reply.status == StatusCode::OK));
    // Whatever ran after the delete started a fresh session; none revived the old one.
    assert_eq!(
        stored_ttl(&redis, &sid),
        -2,
        "the logged-out session stays dead"
    );
    let (before, after): (Vec<_>, Vec<_>) = replies
        .iter()
        .partition(|reply| reply.sid.as_deref() == Some(sid.as_str()));
    let mut counted: Vec<i64> = before
        .iter()
        .map(|reply| reply.count.expect("a count"))
        .collect();
    counted.sort_unstable();
    let expected: Vec<i64> = (2..).take(before.len()).collect();
    assert_eq!(
        counted, expected,
        "requests before the logout counted on the old session, without gaps"
    );
    assert!(
        after.iter().all(|reply| reply.count == Some(1)),
        "requests after it each started afresh"
    );
}
