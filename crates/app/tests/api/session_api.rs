//! The session API over HTTP, with two app nodes on one Redis: `/login`,
//! `/me`, `/logout`, and what the middleware promises (lazy loading, delta
//! commits, deletes that win, timeouts, touch throttling, limits, failure
//! policy).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use reqwest::StatusCode;
use session::{Session, SessionError, SessionId};
use testkit::RedisServer;
use tokio::sync::Semaphore;

use crate::helpers::{
    TestApp, all_keys, bare_client, browser, set_cookie, spawn_app, spawn_app_with,
    spawn_app_with_routes, stored_fields, stored_ttl,
};

/// The `sid` a response set, if any.
fn sid_of(response: &reqwest::Response) -> Option<String> {
    set_cookie(response.headers(), "sid").and_then(|cookie| {
        cookie
            .split(';')
            .next()
            .and_then(|pair| pair.strip_prefix("sid="))
            .map(str::to_owned)
    })
}

/// The `sid` a cookie-keeping client holds now, by asking a node.
async fn current_sid(app: &TestApp, client: &reqwest::Client) -> String {
    app.count(client).await.sid.expect("/count sets the cookie")
}

/// Routes only these tests need: `POST /test/set/{field}/{value}`, a blind
/// write of one field; `POST /test/fail`, which writes and then answers 500;
/// `POST /test/fill/{n}`, which sets fields f0..f{n-1}.
fn test_routes(routes: &mut web::ServiceConfig) {
    routes
        .route(
            "/test/set/{field}/{value}",
            web::post().to(
                |session: Session, path: web::Path<(String, String)>| async move {
                    let (field, value) = path.into_inner();
                    session.insert(&field, &value)?;
                    Ok::<_, SessionError>(HttpResponse::Ok().finish())
                },
            ),
        )
        .route(
            "/test/fail",
            web::post().to(|session: Session| async move {
                session.insert("doomed", "yes")?;
                Ok::<_, SessionError>(HttpResponse::InternalServerError().finish())
            }),
        )
        .route(
            "/test/fill/{n}",
            web::post().to(|session: Session, n: web::Path<usize>| async move {
                let prefix = SessionId::generate().as_str()[..4].to_owned();
                for i in 0..n.into_inner() {
                    session.insert(&format!("{prefix}{i}"), &i)?;
                }
                Ok::<_, SessionError>(HttpResponse::Ok().finish())
            }),
        );
}

#[tokio::test]
async fn login_renews_the_id_keeps_the_data_and_every_node_sees_the_user() {
    let redis = RedisServer::start();
    let nodes = [spawn_app(&redis).await, spawn_app(&redis).await];
    let client = browser();
    nodes[0].count(&client).await;
    let before = current_sid(&nodes[0], &client).await; // count = 2

    let (status, body) = nodes[1].login(&client, "ada").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({ "user": "ada" }));
    let after = current_sid(&nodes[0], &client).await; // count = 3

    assert_ne!(after, before, "login rotates the id");
    assert_eq!(stored_ttl(&redis, &before), -2, "the old id is dead");
    assert_eq!(
        stored_fields(&redis, &after),
        vec![
            ("count".to_owned(), "3".to_owned()),
            ("user".to_owned(), "ada".to_owned())
        ],
        "the data moved with it"
    );
    for node in &nodes {
        assert_eq!(node.me(&client).await["user"], "ada");
    }
    // The old id, replayed by someone who saw it, gets nothing.
    let replay = bare_client()
        .get(nodes[1].url("/me"))
        .header("cookie", format!("sid={before}"))
        .send()
        .await
        .expect("GET /me");
    let replayed: serde_json::Value = replay.json().await.expect("JSON");
    assert_eq!(replayed["user"], serde_json::Value::Null);
}

#[tokio::test]
async fn on_a_single_server_login_draws_any_fresh_id_with_no_slot_search() {
    // Only Redis Cluster needs the renewed id in the old id's slot (a
    // RENAME across slots fails there); crates/app/tests/api/cluster.rs
    // logs in on a cluster. A single server gets any fresh id, so on it two
    // ids share a slot by chance alone: 1 in 16,384.
    let redis = RedisServer::start();
    let slots = RedisServer::start_with(&["--cluster-enabled", "yes"]); // CLUSTER KEYSLOT only
    let app = spawn_app(&redis).await;
    let mut same_slot = 0;
    for _ in 0..8 {
        let client = browser();
        let before = current_sid(&app, &client).await;
        app.login(&client, "ada").await;
        let after = current_sid(&app, &client).await;
        assert_ne!(before, after);
        if key_slot(&slots, &before) == key_slot(&slots, &after) {
            same_slot += 1;
        }
    }
    assert!(
        same_slot <= 1,
        "{same_slot} of 8 renewed ids kept their slot: a slot search ran"
    );
}

fn key_slot(server: &RedisServer, id: &str) -> u16 {
    testkit::redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(format!("sid_{id}"))
        .query(&mut server.connection())
        .expect("CLUSTER KEYSLOT")
}

#[tokio::test]
async fn login_without_a_session_starts_one() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    let (status, _) = app.login(&client, "grace").await;
    assert_eq!(status, StatusCode::OK);
    let me = app.me(&client).await;
    assert_eq!(me["user"], "grace");
    let keys = all_keys(&redis);
    assert_eq!(
        keys.len(),
        3,
        "the session and grace's two index keys: {keys:?}"
    );
    assert_eq!(
        keys.iter()
            .filter(|key| key.starts_with("user_sessions:{"))
            .count(),
        2,
        "{keys:?}"
    );
}

#[tokio::test]
async fn bad_login_bodies_get_400_json_and_write_nothing() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let long = "x".repeat(65);
    let huge = "y".repeat(5000);
    let cases: [(&str, String); 8] = [
        ("empty user", r#"{"user": ""}"#.into()),
        ("blank user", r#"{"user": "   "}"#.into()),
        ("control character", r#"{"user": "a\u0007b"}"#.into()),
        ("too long", format!(r#"{{"user": "{long}"}}"#)),
        ("body over 4 KiB", format!(r#"{{"user": "{huge}"}}"#)),
        ("missing field", r#"{}"#.into()),
        ("unknown field", r#"{"user": "a", "admin": true}"#.into()),
        ("not JSON", "user=ada".into()),
    ];
    for (case, body) in cases {
        let response = bare_client()
            .post(app.url("/login"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /login");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        let json: serde_json::Value = response.json().await.expect("a JSON body");
        assert!(json["error"].is_string(), "{case}: {json}");
    }
    assert!(all_keys(&redis).is_empty(), "nothing was written");
}

#[tokio::test]
async fn me_shows_the_session_times() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    let anonymous = app.me(&client).await;
    assert_eq!(
        anonymous,
        serde_json::json!({
            "user": null, "created_at": null, "last_seen_at": null, "expires_in_secs": null
        })
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    app.login(&client, "ada").await;
    let me = app.me(&client).await;
    let created = me["created_at"].as_u64().expect("created_at");
    let seen = me["last_seen_at"].as_u64().expect("last_seen_at");
    assert!(created.abs_diff(now) <= 5, "{me}");
    assert!(seen >= created, "{me}");
    let left = me["expires_in_secs"].as_u64().expect("expires_in_secs");
    assert!((1790..=1800).contains(&left), "{me}");
}

#[tokio::test]
async fn logout_racing_an_in_flight_request_the_session_stays_dead() {
    let redis = RedisServer::start();
    // The slow route reads the session, says so, waits to be released, then
    // writes: the shape of any request still in flight during a logout.
    let has_read = Arc::new(Semaphore::new(0));
    let release = Arc::new(Semaphore::new(0));
    let slow_route = {
        let (has_read, release) = (Arc::clone(&has_read), Arc::clone(&release));
        move |routes: &mut web::ServiceConfig| {
            let (has_read, release) = (Arc::clone(&has_read), Arc::clone(&release));
            routes.route(
                "/test/slow",
                web::post().to(move |session: Session| {
                    let (has_read, release) = (Arc::clone(&has_read), Arc::clone(&release));
                    async move {
                        let user: Option<String> = session.get("user").await?;
                        has_read.add_permits(1);
                        release.acquire().await.expect("open").forget();
                        session.insert("last_seen_by", &user)?;
                        session.insert("cart", "3 books")?;
                        Ok::<_, SessionError>(HttpResponse::Ok().finish())
                    }
                }),
            );
        }
    };
    let nodes = [
        spawn_app(&redis).await,
        spawn_app_with_routes(redis.url(), |_| {}, slow_route).await,
    ];
    let client = browser();
    nodes[0].login(&client, "ada").await;
    let sid = current_sid(&nodes[0], &client).await;

    let slow = {
        let (client, url) = (client.clone(), nodes[1].url("/test/slow"));
        tokio::spawn(async move { client.post(url).send().await.expect("POST /test/slow") })
    };
    has_read.acquire().await.expect("open").forget();
    let logout = client
        .post(nodes[0].url("/logout"))
        .send()
        .await
        .expect("POST /logout");
    assert_eq!(logout.status(), StatusCode::OK);
    release.add_permits(1);
    let slow = slow.await.expect("the slow request");

    assert_eq!(slow.status(), StatusCode::OK);
    let cookie = set_cookie(slow.headers(), "sid").expect("the slow response clears the cookie");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    assert_eq!(stored_ttl(&redis, &sid), -2, "the session stays dead");
    assert!(
        all_keys(&redis).is_empty(),
        "nothing re-created it, under any id: {:?}",
        all_keys(&redis)
    );
    assert_eq!(nodes[1].me(&client).await["user"], serde_json::Value::Null);
}

#[tokio::test]
async fn concurrent_increments_and_writes_to_other_fields_across_two_nodes_lose_nothing() {
    let redis = RedisServer::start();
    let nodes = Arc::new([
        spawn_app_with_routes(redis.url(), |_| {}, test_routes).await,
        spawn_app_with_routes(redis.url(), |_| {}, test_routes).await,
    ]);
    let client = browser();
    nodes[0].login(&client, "ada").await;
    let sid = current_sid(&nodes[0], &client).await; // count = 1

    let mut requests = tokio::task::JoinSet::new();
    // 100 increments and 50 writes of distinct fields, interleaved, half on
    // each node (52 fields in all: inside the default limit of 64).
    for i in 0..150_usize {
        let (nodes, sid) = (Arc::clone(&nodes), sid.clone());
        requests.spawn(async move {
            let node = &nodes[i % 2];
            let request = if i % 3 < 2 {
                bare_client().get(node.url("/count"))
            } else {
                bare_client().post(node.url(&format!("/test/set/field{i}/{i}")))
            };
            let response = request
                .header("cookie", format!("sid={sid}"))
                .send()
                .await
                .expect("a request");
            response.status()
        });
    }
    let statuses = requests.join_all().await;
    let failed: Vec<_> = statuses.iter().filter(|s| **s != StatusCode::OK).collect();
    assert!(failed.is_empty(), "{failed:?}");

    let fields = stored_fields(&redis, &sid);
    let get = |name: &str| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(get("count").as_deref(), Some("101"), "1 + 100 increments");
    assert_eq!(get("user").as_deref(), Some("ada"));
    let written: Vec<usize> = (0..150).filter(|i| i % 3 == 2).collect();
    assert_eq!(fields.len(), 2 + written.len(), "{fields:?}");
    for i in written {
        assert_eq!(get(&format!("field{i}")), Some(i.to_string()));
    }
}

#[tokio::test]
async fn the_absolute_timeout_ends_a_session_that_is_kept_busy() {
    let redis = RedisServer::start();
    let short_life = |settings: &mut app::settings::Settings| {
        settings.session.idle_timeout_secs = 60;
        settings.session.absolute_timeout_secs = 2;
    };
    let nodes = [
        spawn_app_with(redis.url(), short_life).await,
        spawn_app_with(redis.url(), short_life).await,
    ];
    let client = browser();
    nodes[0].login(&client, "ada").await;
    let first = current_sid(&nodes[0], &client).await;

    // Busy every 200 ms, on both nodes, well inside the idle timeout.
    let mut counts = Vec::new();
    let mut sid = first.clone();
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply = nodes[round % 2].count(&client).await;
        counts.push(reply.count.expect("a count"));
        sid = reply.sid.expect("a cookie");
        if sid != first {
            break;
        }
    }
    assert_ne!(sid, first, "the session ended within 4 s: {counts:?}");
    assert!(
        counts.len() >= 8,
        "it served until its 2 s were up: {counts:?}"
    );
    assert_eq!(counts.last(), Some(&1), "the next request starts afresh");
    assert_eq!(stored_ttl(&redis, &first), -2);
    assert_eq!(nodes[1].me(&client).await["user"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_route_that_never_touches_the_session_makes_no_redis_call() {
    let mut redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    app.login(&client, "ada").await; // the client now sends a session cookie
    let mut monitor = redis.monitor();

    let start = monitor.begin();
    for _ in 0..5 {
        assert_eq!(app.status_of(&client, "/healthz").await, StatusCode::OK);
    }
    let commands = monitor.commands_since(start);
    assert_eq!(commands, Vec::<String>::new());
    drop(monitor);

    redis.stop();
    assert_eq!(
        app.status_of(&client, "/healthz").await,
        StatusCode::OK,
        "and it keeps working with Redis down"
    );
}

#[tokio::test]
async fn reads_inside_the_touch_threshold_write_nothing_later_ones_refresh_the_ttl() {
    let redis = RedisServer::start();
    // Idle 8 s; a read refreshes once more than 25% (2 s) has gone.
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.idle_timeout_secs = 8;
        settings.session.touch_after_fraction = 0.25;
    })
    .await;
    let client = browser();
    app.login(&client, "ada").await;
    let sid = current_sid(&app, &client).await;
    let mut monitor = redis.monitor();

    let start = monitor.begin();
    let fresh = client.get(app.url("/me")).send().await.expect("GET /me");
    assert_eq!(monitor.commands_since(start), vec!["hgetall", "pttl"]);
    assert!(
        set_cookie(fresh.headers(), "sid").is_none(),
        "no write, no cookie"
    );

    tokio::time::sleep(Duration::from_millis(2600)).await;
    let ttl_before = stored_ttl(&redis, &sid);
    let start = monitor.begin();
    let due = client.get(app.url("/me")).send().await.expect("GET /me");
    assert_eq!(
        monitor.commands_since(start),
        vec!["hgetall", "pttl", "evalsha"],
        "the load, then one touch"
    );
    assert!(ttl_before <= 6, "{ttl_before}");
    assert!(stored_ttl(&redis, &sid) >= 7, "the touch slid the TTL");
    let cookie = set_cookie(due.headers(), "sid").expect("the cookie slides too");
    assert!(cookie.contains("Max-Age=8"), "{cookie}");
}

#[tokio::test]
async fn a_5xx_response_saves_nothing() {
    let redis = RedisServer::start();
    let app = spawn_app_with_routes(redis.url(), |_| {}, test_routes).await;
    let client = browser();
    let sid = current_sid(&app, &client).await;
    let response = client
        .post(app.url("/test/fail"))
        .send()
        .await
        .expect("POST /test/fail");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        stored_fields(&redis, &sid),
        vec![("count".to_owned(), "1".to_owned())]
    );
    // ...and for a request without a session, no session at all.
    let anonymous = bare_client()
        .post(app.url("/test/fail"))
        .send()
        .await
        .expect("POST /test/fail");
    assert!(sid_of(&anonymous).is_none());
    assert_eq!(all_keys(&redis).len(), 1);
}

#[tokio::test]
async fn a_failed_commit_is_503_json_with_retry_after() {
    let mut redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    app.count(&client).await;
    redis.stop();

    // /login touches Redis only in the commit, after its handler succeeded.
    let (status, body) = app.login(&client, "ada").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "session_store_unavailable", "{body}");
    let response = client
        .post(app.url("/login"))
        .json(&serde_json::json!({ "user": "ada" }))
        .send()
        .await
        .expect("POST /login");
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(
        sid_of(&response).is_none(),
        "no cookie for a session that was not saved"
    );
}

#[tokio::test]
async fn too_many_fields_is_413_json_and_nothing_is_half_written() {
    let redis = RedisServer::start();
    let app = spawn_app_with_routes(
        redis.url(),
        |settings| settings.session.max_fields = 5,
        test_routes,
    )
    .await;
    let client = browser();
    let sid = current_sid(&app, &client).await; // 1 field: count

    // Caught in the handler: this request alone sets 6 fields.
    let response = client
        .post(app.url("/test/fill/6"))
        .send()
        .await
        .expect("POST /test/fill/6");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["message"], "a session holds at most 5 fields");
    assert_eq!(
        stored_fields(&redis, &sid).len(),
        1,
        "the fields set before the error are not saved"
    );

    // Caught by the script at commit: 3 fit, 3 more do not.
    let fits = client
        .post(app.url("/test/fill/3"))
        .send()
        .await
        .expect("POST");
    assert_eq!(fits.status(), StatusCode::OK);
    let over = client
        .post(app.url("/test/fill/3"))
        .send()
        .await
        .expect("POST");
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = over.json().await.expect("JSON");
    assert_eq!(body["error"], "session_too_large");
    assert_eq!(
        stored_fields(&redis, &sid).len(),
        4,
        "count + the 3 that fit"
    );
}

#[tokio::test]
async fn a_browser_session_cookie_has_no_max_age() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.cookie_mode = session::CookieMode::BrowserSession;
    })
    .await;
    let client = browser();
    let first = app.count(&client).await;
    let cookie = set_cookie(&first.headers, "sid").expect("a new session sends its id");
    assert!(!cookie.contains("Max-Age"), "{cookie}");
    let second = app.count(&client).await;
    assert_eq!(second.count, Some(2));
    assert!(
        set_cookie(&second.headers, "sid").is_none(),
        "nothing to slide: the id is unchanged"
    );
}
