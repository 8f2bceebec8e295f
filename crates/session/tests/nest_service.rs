//! The NestJS design's `SessionService` calls on [`SessionService`], against
//! a real redis-server: `getSession<T>`, `setSession(sid, value, ttl)`,
//! `generateSid`, plus `increment`, `inspect` and `end_session`, with the
//! design's faults fixed (fixation, reserved names, TTLs out of range).

use std::time::Duration;

use redis_client::RedisSettings;
use serde::{Deserialize, Serialize};
use session::{RedisSessionStore, SessionError, SessionId, SessionMiddleware, SessionService};
use testkit::{RedisServer, redis};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Visit {
    count: i64,
    user: Option<String>,
}

async fn service(server: &RedisServer) -> SessionService {
    let settings = RedisSettings {
        url: server.url(),
        ..Default::default()
    };
    let store = RedisSessionStore::connect(&settings)
        .await
        .expect("redis answers");
    SessionMiddleware::builder(store)
        .build()
        .expect("valid settings")
        .service()
}

fn hash(server: &RedisServer, id: &SessionId) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(format!("sid_{}", id.as_str()))
        .query(&mut server.connection())
        .expect("HGETALL");
    fields.sort();
    fields
}

fn pttl(server: &RedisServer, id: &SessionId) -> i64 {
    redis::cmd("PTTL")
        .arg(format!("sid_{}", id.as_str()))
        .query(&mut server.connection())
        .expect("PTTL")
}

#[tokio::test]
async fn set_then_get_session_round_trips_a_typed_value_with_the_callers_ttl() {
    let server = RedisServer::start();
    let sessions = service(&server).await;
    let value = Visit {
        count: 3,
        user: Some("ada".to_owned()),
    };

    let id = sessions
        .set_session(None, &value, Duration::from_secs(60))
        .await
        .expect("set");

    assert_eq!(
        sessions
            .get_session::<Visit>(id.as_str())
            .await
            .expect("get"),
        Some(value)
    );
    let ttl = pttl(&server, &id);
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    // The Nest layout: one plain field per attribute.
    assert!(hash(&server, &id).contains(&("count".to_owned(), "3".to_owned())));
}

#[tokio::test]
async fn set_session_updates_a_known_id_and_keeps_the_fields_it_does_not_name() {
    let server = RedisServer::start();
    let sessions = service(&server).await;
    let id = sessions
        .set_session(
            None,
            &serde_json::json!({"count": 1, "theme": "dark"}),
            Duration::from_secs(60),
        )
        .await
        .expect("set");

    let again = sessions
        .set_session(
            Some(id.as_str()),
            &serde_json::json!({"count": 2}),
            Duration::from_secs(60),
        )
        .await
        .expect("set");

    assert_eq!(again, id);
    let fields: serde_json::Value = sessions
        .get_session(id.as_str())
        .await
        .expect("get")
        .expect("live");
    assert_eq!(fields, serde_json::json!({"count": 2, "theme": "dark"}));
}

#[tokio::test]
async fn set_session_never_adopts_an_id_it_does_not_know() {
    let server = RedisServer::start();
    let sessions = service(&server).await;
    let planted = SessionId::generate();

    for sid in [planted.as_str(), "not-an-id", ""] {
        let id = sessions
            .set_session(
                Some(sid),
                &serde_json::json!({"count": 1}),
                Duration::from_secs(60),
            )
            .await
            .expect("set");
        assert_ne!(id.as_str(), sid, "a fresh id, never the caller's");
    }
    assert!(
        hash(&server, &planted).is_empty(),
        "nothing under the planted id"
    );
}

#[tokio::test]
async fn reserved_names_are_refused_by_set_session_and_increment_and_nothing_is_written() {
    // Before the fix both skipped the name check: a caller could rewrite
    // __created and move, or defeat, the absolute lifetime.
    let server = RedisServer::start();
    let sessions = service(&server).await;
    let id = sessions
        .set_session(
            None,
            &serde_json::json!({"count": 1}),
            Duration::from_secs(60),
        )
        .await
        .expect("set");
    let before = hash(&server, &id);

    let set = sessions
        .set_session(
            Some(id.as_str()),
            &serde_json::json!({"__created": 0}),
            Duration::from_secs(60),
        )
        .await;
    let counted = sessions.increment(Some(&id), "__created", -1_000_000).await;
    let empty = sessions.increment(Some(&id), "", 1).await;

    assert!(
        matches!(set, Err(SessionError::InvalidKey(ref name)) if name == "__created"),
        "{set:?}"
    );
    assert!(
        matches!(counted, Err(SessionError::InvalidKey(_))),
        "{counted:?}"
    );
    assert!(
        matches!(empty, Err(SessionError::InvalidKey(_))),
        "{empty:?}"
    );
    assert_eq!(hash(&server, &id), before, "nothing written");
}

/// `number_of_cached_scripts` from `INFO memory`: the scripts Redis holds,
/// which it never evicts (only `SCRIPT FLUSH` empties the cache).
fn cached_scripts(server: &RedisServer) -> usize {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut server.connection())
        .expect("INFO memory");
    info.lines()
        .find_map(|line| line.strip_prefix("number_of_cached_scripts:"))
        .expect("Redis 7 reports number_of_cached_scripts")
        .trim()
        .parse()
        .expect("a count")
}

/// Creates a session with `ttl`, then updates it with the same `ttl`: the
/// two scripts `set_session` runs. Returns the id.
async fn create_then_update(sessions: &SessionService, ttl: Duration) -> SessionId {
    let value = serde_json::json!({"count": 1});
    let id = sessions
        .set_session(None, &value, ttl)
        .await
        .expect("create");
    let again = sessions
        .set_session(Some(id.as_str()), &value, ttl)
        .await
        .expect("update");
    assert_eq!(again, id, "the update found the session");
    id
}

#[tokio::test]
async fn distinct_ttls_through_set_session_load_no_script_per_ttl() {
    // Arrange: the configured scripts loaded, as at start-up.
    let server = RedisServer::start();
    let sessions = service(&server).await;
    sessions
        .prepare()
        .await
        .expect("the configured scripts load");
    let configured = cached_scripts(&server);

    // Act: 50 TTLs, distinct down to the millisecond, then 50 more.
    let ttl = |n: u64| Duration::from_millis(60_000 + n * 7);
    let mut last = None;
    for n in 0..50 {
        last = Some((create_then_update(&sessions, ttl(n)).await, ttl(n)));
    }
    let after_50 = cached_scripts(&server);
    for n in 50..100 {
        create_then_update(&sessions, ttl(n)).await;
    }
    let after_100 = cached_scripts(&server);

    // Assert: at most the two scripts set_session runs (create, update)
    // join the configured set, whatever the TTLs; and each TTL still holds.
    println!(
        "cached scripts: configured {configured}, after 50 TTLs {after_50}, after 100 {after_100}"
    );
    assert!(
        after_50 <= configured + 2,
        "configured {configured}, after 50 TTLs {after_50}"
    );
    assert_eq!(after_100, after_50, "50 more TTLs load nothing more");
    let (id, ttl) = last.expect("50 sessions");
    let left = u64::try_from(pttl(&server, &id)).expect("a TTL");
    let asked = u64::try_from(ttl.as_millis()).expect("ms");
    assert!(
        left <= asked && left + 5_000 > asked,
        "{left} of {asked} ms"
    );
}

#[tokio::test]
async fn a_ttl_a_store_cannot_hold_is_refused_before_any_write() {
    let server = RedisServer::start();
    let sessions = service(&server).await;
    for ttl in [
        Duration::ZERO,
        Duration::from_secs(2 * 365 * 24 * 3600),
        Duration::MAX,
    ] {
        let outcome = sessions
            .set_session(None, &serde_json::json!({"count": 1}), ttl)
            .await;
        assert!(
            matches!(&outcome, Err(SessionError::Config(error)) if error.key() == "session.idle_timeout_secs"),
            "{ttl:?}: {outcome:?}"
        );
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut server.connection())
        .expect("KEYS");
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn a_value_that_is_not_a_struct_or_has_no_fields_is_refused() {
    let server = RedisServer::start();
    let sessions = service(&server).await;
    for value in [
        serde_json::json!(5),
        serde_json::json!({}),
        serde_json::json!({"a": null}),
    ] {
        let outcome = sessions
            .set_session(None, &value, Duration::from_secs(60))
            .await;
        assert!(
            matches!(outcome, Err(SessionError::Encode(_))),
            "{value}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn get_session_of_a_malformed_or_unknown_id_is_none_without_a_lookup_for_the_malformed() {
    let server = RedisServer::start();
    let sessions = service(&server).await;
    let mut monitor = server.monitor();
    let start = monitor.begin();

    assert_eq!(sessions.get_session::<Visit>("*").await.expect("get"), None);
    assert_eq!(sessions.get_session::<Visit>("").await.expect("get"), None);
    assert!(
        monitor.commands_since(start).is_empty(),
        "malformed ids cost nothing"
    );
    let unknown = SessionId::generate();
    assert_eq!(
        sessions
            .get_session::<Visit>(unknown.as_str())
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn get_session_of_the_wrong_shape_is_a_decode_error() {
    let server = RedisServer::start();
    let sessions = service(&server).await;
    let id = sessions
        .set_session(
            None,
            &serde_json::json!({"count": "many"}),
            Duration::from_secs(60),
        )
        .await
        .expect("set");
    let outcome = sessions.get_session::<Visit>(id.as_str()).await;
    assert!(
        matches!(outcome, Err(SessionError::Decode(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn increment_counts_and_starts_over_only_on_bad_data() {
    let server = RedisServer::start();
    let sessions = service(&server).await;

    let first = sessions.increment(None, "count", 1).await.expect("incr");
    assert!(first.is_new && first.value == 1);
    let second = sessions
        .increment(Some(&first.id), "count", 1)
        .await
        .expect("incr");
    assert_eq!(
        (second.id.clone(), second.value, second.is_new),
        (first.id.clone(), 2, false)
    );

    let () = redis::cmd("HSET")
        .arg(format!("sid_{}", first.id.as_str()))
        .arg("count")
        .arg("not a number")
        .query(&mut server.connection())
        .expect("HSET");
    let fresh = sessions
        .increment(Some(&first.id), "count", 1)
        .await
        .expect("incr");
    assert!(fresh.is_new && fresh.value == 1 && fresh.id != first.id);
    assert!(
        hash(&server, &first.id).contains(&("count".to_owned(), "not a number".to_owned())),
        "the old session is left alone"
    );
}

#[tokio::test]
async fn increment_on_a_key_of_another_type_is_an_error_not_a_fresh_session() {
    let server = RedisServer::start();
    let sessions = service(&server).await;
    let id = SessionId::generate();
    let () = redis::cmd("SET")
        .arg(format!("sid_{}", id.as_str()))
        .arg("a string")
        .query(&mut server.connection())
        .expect("SET");
    let outcome = sessions.increment(Some(&id), "count", 1).await;
    assert!(
        matches!(&outcome, Err(error) if error.code() == "session_store_fault"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn inspect_and_end_session_read_and_delete_one_session() {
    let server = RedisServer::start();
    let sessions = service(&server).await;
    let id = sessions
        .set_session(
            None,
            &serde_json::json!({"count": 7}),
            Duration::from_secs(60),
        )
        .await
        .expect("set");

    let view = sessions.inspect(&id).await.expect("inspect").expect("live");
    assert_eq!(view.fields["count"], "7");
    assert!(
        view.expires_in
            .is_some_and(|left| left <= Duration::from_secs(60))
    );
    assert!(
        !view.fields.keys().any(|name| name.starts_with("__")),
        "no metadata"
    );

    assert!(sessions.end_session(id.as_str()).await.expect("end"));
    assert!(
        !sessions.end_session(id.as_str()).await.expect("end"),
        "already gone"
    );
    assert!(!sessions.end_session("junk").await.expect("end"));
    assert_eq!(sessions.inspect(&id).await.expect("inspect"), None);
}

#[test]
fn generate_sid_gives_fresh_canonical_ids() {
    let (a, b) = (
        SessionService::generate_sid(),
        SessionService::generate_sid(),
    );
    assert_ne!(a, b);
    assert_eq!(SessionId::parse(a.as_str()), Some(a));
}
