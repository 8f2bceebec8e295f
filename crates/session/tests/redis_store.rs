//! The store behaviour suite against [`RedisSessionStore`] on a real
//! redis-server, plus the edge cases only Redis has.

mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use redis_client::{RedisService, RedisSettings};
use session::{RedisSessionStore, SessionId, SessionStore, StoreError};
use store_suite::{Harness, LONG, created};
use testkit::{RedisServer, redis};

/// A store on its own server, with a random key prefix, as the suite wants.
async fn make_store() -> Harness {
    let server = RedisServer::start();
    let store = redis_store(
        &server,
        &format!("test_{}_", &SessionId::generate().as_str()[..8]),
    )
    .await;
    Harness::new(Arc::new(store), server)
}

async fn redis_store(server: &RedisServer, prefix: &str) -> RedisSessionStore {
    let settings = RedisSettings {
        url: server.url(),
        ..Default::default()
    };
    let redis = RedisService::new(&settings).expect("valid settings");
    redis
        .wait_until_ready(Duration::from_secs(5))
        .await
        .expect("redis answers");
    RedisSessionStore::new(redis, prefix)
}

store_behaviour_suite!(make_store);

#[tokio::test]
async fn sessions_use_the_nest_layout_a_sid_prefixed_hash_with_a_ttl() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = created(&store, &[("count", "1")], Duration::from_secs(1800)).await;

    let mut redis = server.connection();
    let key = format!("sid_{}", id.as_str());
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query(&mut redis)
        .expect("TYPE");
    let fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(&key)
        .query(&mut redis)
        .expect("HGETALL");
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut redis).expect("TTL");
    assert_eq!(kind, "hash");
    assert_eq!(fields, vec![("count".to_owned(), "1".to_owned())]);
    assert!((1790..=1800).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn a_session_written_by_the_nest_service_is_read_and_counted() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = SessionId::generate();
    // Exactly what the NestJS hashSet does: HSET per field, then EXPIRE.
    let mut redis = server.connection();
    let key = format!("sid_{}", id.as_str());
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("count")
        .arg(5)
        .query(&mut redis)
        .expect("HSET");
    let () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(1800)
        .query(&mut redis)
        .expect("EXPIRE");

    assert_eq!(
        store.load(&id).await.expect("load").expect("exists")["count"],
        "5"
    );
    assert_eq!(
        store.increment(&id, "count", 1, LONG).await.expect("incr"),
        Some(6)
    );
    // ...and the Nest service's hGetAll + parseInt reads our write back.
    let count: String = redis::cmd("HGET")
        .arg(&key)
        .arg("count")
        .query(&mut redis)
        .expect("HGET");
    assert_eq!(count.parse::<i64>().expect("decimal"), 6);
}

#[tokio::test]
async fn a_key_of_another_type_is_invalid_data_and_is_left_alone() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = SessionId::generate();
    let mut redis = server.connection();
    let key = format!("sid_{}", id.as_str());
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("not a hash")
        .query(&mut redis)
        .expect("SET");

    assert!(matches!(
        store.load(&id).await,
        Err(StoreError::InvalidData(_))
    ));
    assert!(matches!(
        store.increment(&id, "count", 1, LONG).await,
        Err(StoreError::InvalidData(_))
    ));
    let value: String = redis::cmd("GET").arg(&key).query(&mut redis).expect("GET");
    assert_eq!(value, "not a hash");
}

#[tokio::test]
async fn a_field_that_is_not_utf8_is_invalid_data_not_a_crash() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = SessionId::generate();
    let mut redis = server.connection();
    let key = format!("sid_{}", id.as_str());
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("name")
        .arg(&b"\xff\xfe"[..])
        .query(&mut redis)
        .expect("HSET");

    assert!(matches!(
        store.load(&id).await,
        Err(StoreError::InvalidData(_))
    ));
}

#[tokio::test]
async fn scripts_flushed_from_redis_are_reloaded_transparently() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = created(&store, &[("count", "1")], LONG).await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut server.connection())
        .expect("SCRIPT FLUSH");

    assert_eq!(
        store.increment(&id, "count", 1, LONG).await.expect("incr"),
        Some(2)
    );
}

#[tokio::test]
async fn a_stopped_server_is_unavailable_and_a_restarted_one_serves_again() {
    let mut server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = created(&store, &[("count", "1")], LONG).await;

    server.stop();
    let outcome = store.increment(&id, "count", 1, LONG).await;
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(store.check_health().await.is_err());

    server.restart(); // empty: the old session is gone, as after a crash without persistence
    store
        .check_health()
        .await
        .expect("healthy again without rebuilding the store");
    assert_eq!(
        store.increment(&id, "count", 1, LONG).await.expect("incr"),
        None
    );
    created(&store, &[("count", "1")], LONG).await;
}

#[tokio::test]
async fn a_frozen_server_gives_unavailable_and_the_unanswered_increment_is_never_retried() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = created(&store, &[("count", "1")], LONG).await;

    server.pause();
    // The bound here only catches a hang; the client's own timeouts (2 s by
    // default) are what end the call.
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        store.increment(&id, "count", 1, LONG),
    )
    .await
    .expect("the call ends by itself");
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "{outcome:?}"
    );

    // A timeout leaves the outcome unknown: this increment was already in the
    // server's socket buffer and runs when it wakes. What must hold is that
    // nothing re-sends it, so it counts once (3 below), never twice (4).
    server.resume();
    assert_eq!(
        store.increment(&id, "count", 1, LONG).await.expect("incr"),
        Some(3)
    );
}
