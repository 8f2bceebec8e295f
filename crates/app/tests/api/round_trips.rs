//! One Redis round trip per phase, for `/count` and every other route,
//! counted with MONITOR: the commands
//! clients sent, script-internal ones left out.

use testkit::RedisServer;

use crate::helpers::{browser, spawn_app};

#[tokio::test]
async fn an_existing_session_costs_one_round_trip() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    app.count(&client).await;
    app.count(&client).await; // every pooled connection is now warm
    let mut monitor = redis.monitor();

    let start = monitor.begin();
    let reply = app.count(&client).await;
    let commands = monitor.commands_since(start);

    assert_eq!(reply.count, Some(3));
    assert_eq!(commands, vec!["evalsha"]);
}

#[tokio::test]
async fn a_new_session_costs_one_round_trip() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let mut monitor = redis.monitor();

    let start = monitor.begin();
    let reply = app.count(&browser()).await;
    let commands = monitor.commands_since(start);

    assert_eq!(reply.count, Some(1));
    assert_eq!(commands, vec!["evalsha"]);
}

#[tokio::test]
async fn an_unknown_sid_costs_two_round_trips_and_is_not_adopted() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let forged = session::SessionId::generate();
    let mut monitor = redis.monitor();

    let start = monitor.begin();
    let reply = app.count_as(forged.as_str()).await;
    let commands = monitor.commands_since(start);

    assert_eq!(reply.count, Some(1));
    assert_eq!(
        commands,
        vec!["evalsha", "evalsha"],
        "a failed increment, then a create"
    );
}

#[tokio::test]
async fn a_malformed_sid_costs_one_round_trip_it_never_reaches_redis_as_a_key() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let mut monitor = redis.monitor();

    let start = monitor.begin();
    let reply = app.count_as("*").await;
    let commands = monitor.commands_since(start);

    assert_eq!(reply.count, Some(1));
    assert_eq!(commands, vec!["evalsha"], "only the create");
}

/// The commands one request sends, counted by MONITOR around it.
async fn commands_of(
    redis: &RedisServer,
    send: impl std::future::Future<Output = reqwest::Response>,
) -> (reqwest::StatusCode, Vec<String>) {
    let mut monitor = redis.monitor();
    let start = monitor.begin();
    let response = send.await;
    let commands = monitor.commands_since(start);
    (response.status(), commands)
}

#[tokio::test]
async fn each_request_kind_costs_one_round_trip_per_phase() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    app.count(&client).await; // a session, and warm connections
    let post_login = || {
        client
            .post(app.url("/login"))
            .json(&serde_json::json!({ "user": "ada" }))
            .send()
    };
    let get = |path: &str| client.get(app.url(path)).send();

    let login = commands_of(&redis, async { post_login().await.expect("login") }).await;
    assert_eq!(
        login.1,
        vec!["hget", "hgetall", "pttl", "evalsha", "evalsha"],
        "the user's epoch, the session (who it was), renew + user in one script, then joining the user's index"
    );
    let me = commands_of(&redis, async { get("/me").await.expect("me") }).await;
    assert_eq!(
        me.1,
        vec!["hgetall", "pttl"],
        "one pipelined load, no write"
    );
    let page = commands_of(&redis, async { get("/").await.expect("page") }).await;
    assert_eq!(
        page.1,
        vec!["hgetall", "pttl"],
        "one load serves both reads"
    );
    let health = commands_of(&redis, async { get("/healthz").await.expect("healthz") }).await;
    assert_eq!(health.1, Vec::<String>::new(), "untouched: nothing");
    let logout = commands_of(&redis, async {
        client
            .post(app.url("/logout"))
            .send()
            .await
            .expect("logout")
    })
    .await;
    assert_eq!(
        logout.1,
        vec!["hgetall", "pttl", "evalsha", "unlink", "evalsha"],
        "a load to learn the user, its index entry marked as being ended (so that no \
         renewal racing the logout can move it), the delete, the entry dropped"
    );
    let fresh_login = commands_of(&redis, async { post_login().await.expect("login") }).await;
    assert_eq!(
        fresh_login.1,
        vec!["hget", "evalsha", "evalsha"],
        "no session: the epoch, one create, joining the index"
    );
    for (status, _) in [login, me, page, health, logout, fresh_login] {
        assert_eq!(status, reqwest::StatusCode::OK);
    }
}

#[tokio::test]
async fn where_youre_signed_in_costs_these_commands() {
    // The figures of the README's "Cost", measured: the commands each route
    // sends, by MONITOR, for ada signed in on three devices.
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let devices: Vec<_> = (0..3).map(|_| browser()).collect();
    for device in &devices {
        let login = device
            .post(app.url("/login"))
            .json(&serde_json::json!({ "user": "ada" }))
            .send()
            .await
            .expect("login");
        assert_eq!(login.status(), reqwest::StatusCode::OK);
    }
    let sorted = |mut commands: Vec<String>| {
        commands.sort();
        commands
    };
    let (status, list) = commands_of(&redis, async {
        devices[0]
            .get(app.url("/sessions"))
            .send()
            .await
            .expect("list")
    })
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    // The caller's load, the index, then the three sessions at once.
    assert_eq!(&list[..3], ["hgetall", "pttl", "evalsha"], "{list:?}");
    assert_eq!(
        sorted(list[3..].to_vec()),
        ["hgetall", "hgetall", "hgetall", "pttl", "pttl", "pttl"]
    );

    let listed: serde_json::Value = devices[0]
        .get(app.url("/sessions"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    let other = listed["sessions"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|item| item["current"] == false)
        .and_then(|item| item["handle"].as_str())
        .expect("another device")
        .to_owned();
    let (status, one) = commands_of(&redis, async {
        devices[0]
            .delete(app.url(&format!("/sessions/{other}")))
            .send()
            .await
            .expect("delete")
    })
    .await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    // The caller's load, the index (to find the handle), the UNLINK, the
    // entry dropped.
    assert_eq!(one, ["hgetall", "pttl", "evalsha", "unlink", "evalsha"]);

    let (status, others) = commands_of(&redis, async {
        devices[0]
            .post(app.url("/logout/others"))
            .send()
            .await
            .expect("others")
    })
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    // The caller's load, the epoch raised and the entries read, the one
    // UNLINK left, the entries dropped.
    assert_eq!(others, ["hgetall", "pttl", "evalsha", "unlink", "evalsha"]);
    println!(
        "GET /sessions (3 devices): {list:?}; DELETE /sessions/<other>: {one:?}; POST /logout/others: {others:?}"
    );
}
