//! One Redis round trip per `/count`, counted with MONITOR: the commands
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
