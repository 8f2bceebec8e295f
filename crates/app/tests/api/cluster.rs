//! The app on Redis Cluster, configured from the environment as an operator
//! would: every route works. (Failovers: `failover.rs`.)

use reqwest::StatusCode;
use testkit::RedisCluster;

use crate::helpers::AppProcess;

/// `GET url`, its JSON body.
async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = client.get(url).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.json().await.expect("a JSON body")
}

pub(crate) async fn app_on(cluster: &RedisCluster, extra: &[(&str, &str)]) -> AppProcess {
    let nodes = cluster.seed_urls().join(",");
    let mut env = vec![
        ("APP__REDIS__MODE", "cluster"),
        ("APP__REDIS__NODES", nodes.as_str()),
    ];
    env.extend_from_slice(extra);
    // redis.url is ignored in cluster mode; point it nowhere to prove it.
    AppProcess::start("redis://127.0.0.1:1", &env).await
}

#[tokio::test]
async fn every_route_works_on_a_cluster_configured_from_the_environment() {
    let cluster = RedisCluster::start(3, 0);
    // No replicas: nothing could confirm a logout, so do not wait for one.
    let app = app_on(&cluster, &[("APP__REDIS__DURABLE_WRITE_TIMEOUT_MS", "0")]).await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    for expected in 1..=3 {
        let body: serde_json::Value = get_json(&client, &app.url("/count")).await;
        assert_eq!(body["count"], expected);
    }
    let login = client
        .post(app.url("/login"))
        .json(&serde_json::json!({ "user": "ada" }))
        .send()
        .await
        .expect("POST /login");
    assert_eq!(login.status(), StatusCode::OK);
    let me: serde_json::Value = get_json(&client, &app.url("/me")).await;
    assert_eq!(me["user"], "ada");
    let count: serde_json::Value = get_json(&client, &app.url("/count")).await;
    assert_eq!(count["count"], 4, "the renewed session kept its count");
    let ready = reqwest::get(app.url("/readyz")).await.expect("GET /readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    client
        .post(app.url("/logout"))
        .send()
        .await
        .expect("POST /logout");
    let after: serde_json::Value = get_json(&client, &app.url("/me")).await;
    assert_eq!(after["user"], serde_json::Value::Null);
}

#[tokio::test]
async fn where_youre_signed_in_works_on_a_cluster_for_a_user_id_with_braces() {
    // The session keys and the user's index keys live in different slots;
    // every script keeps to one. A user id with braces cannot move the
    // index's hash tag.
    let cluster = RedisCluster::start(3, 0);
    let app = app_on(&cluster, &[("APP__REDIS__DURABLE_WRITE_TIMEOUT_MS", "0")]).await;
    let devices: Vec<reqwest::Client> = (0..3)
        .map(|i| {
            reqwest::Client::builder()
                .cookie_store(true)
                .user_agent(format!("device-{i}"))
                .build()
                .expect("a client")
        })
        .collect();
    for device in &devices {
        let login = device
            .post(app.url("/login"))
            .json(&serde_json::json!({ "user": "{ada}:}{" }))
            .send()
            .await
            .expect("POST /login");
        assert_eq!(login.status(), StatusCode::OK);
    }
    let listed = get_json(&devices[0], &app.url("/sessions")).await;
    let items = listed["sessions"].as_array().expect("a list");
    assert_eq!(items.len(), 3, "{listed}");
    let handle = items[0]["handle"].as_str().expect("a handle");
    let revoked = devices[0]
        .delete(app.url(&format!("/sessions/{handle}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let others = devices[0]
        .post(app.url("/logout/others"))
        .send()
        .await
        .expect("POST");
    let others: serde_json::Value = others.json().await.expect("JSON");
    assert_eq!(others["revoked"], 1);
    let me = get_json(&devices[0], &app.url("/me")).await;
    assert_eq!(me["user"], "{ada}:}{");
    for device in &devices[1..] {
        let me = get_json(device, &app.url("/me")).await;
        assert_eq!(me["user"], serde_json::Value::Null);
    }
    assert!(
        !app.log().contains("CROSSSLOT"),
        "no script spanned slots: {}",
        app.log()
    );
}
