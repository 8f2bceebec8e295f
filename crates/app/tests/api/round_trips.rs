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
        vec!["hget", "evalsha", "evalsha"],
        "the user's epoch, renew + user in one script, then joining the user's index"
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
        vec!["hgetall", "pttl", "unlink", "evalsha"],
        "a load to learn the user, the delete, the index entry dropped"
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
