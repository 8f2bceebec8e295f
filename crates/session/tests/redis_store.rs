//! The store behaviour suite against [`RedisSessionStore`] on a real
//! redis-server, plus the edge cases only Redis has.

mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use redis_client::{RedisService, RedisSettings};
use session::{RedisSessionStore, SessionId, SessionStore, StoreError};
use store_suite::{Harness, LONG, created, policy};
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
    RedisSessionStore::new(redis)
        .with_key_prefix(prefix)
        .expect("a valid prefix")
        // Each test's users apart from every other test's, on one server.
        .with_user_index_prefix(format!("u{prefix}"))
        .expect("a valid user index prefix")
}

store_behaviour_suite!(make_store);

/// The same suite with every value sealed (`SealedStore` over Redis).
mod sealed {
    use super::*;

    async fn make_sealed_store() -> Harness {
        let server = RedisServer::start();
        let prefix = format!("test_{}_", &SessionId::generate().as_str()[..8]);
        let store = redis_store(&server, &prefix).await;
        Harness::sealed(store, server)
    }

    store_behaviour_suite!(make_sealed_store);
}

/// The same suite with ids hashed at rest, the migration switch on.
mod hashed {
    use super::*;

    async fn make_hashed_store() -> Harness {
        let server = RedisServer::start();
        let prefix = format!("test_{}_", &SessionId::generate().as_str()[..8]);
        let store = redis_store(&server, &prefix)
            .await
            .with_hashed_ids(true)
            .expect("standalone");
        Harness::new(Arc::new(store), server)
    }

    store_behaviour_suite!(make_hashed_store);
}

/// Exactly what the NestJS `hashSet` does: `HSET` per field, then `EXPIRE`
/// 30 minutes, with no metadata.
fn nest_write(redis: &mut redis::Connection, key: &str, field: &str, value: i64) {
    let () = redis::cmd("HSET")
        .arg(key)
        .arg(field)
        .arg(value)
        .query(redis)
        .expect("HSET");
    let () = redis::cmd("EXPIRE")
        .arg(key)
        .arg(1800)
        .query(redis)
        .expect("EXPIRE");
}

#[tokio::test]
async fn sessions_use_the_nest_layout_a_sid_prefixed_hash_with_a_ttl() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = created(
        &store,
        &[("count", "1")],
        &policy(Duration::from_secs(1800), None),
    )
    .await;

    let mut redis = server.connection();
    let key = format!("sid_{}", id.as_str());
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query(&mut redis)
        .expect("TYPE");
    let fields: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query(&mut redis)
        .expect("HGETALL");
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut redis).expect("TTL");
    assert_eq!(kind, "hash");
    // The user's field as the NestJS design stores it, plus our two
    // metadata fields (creation and last write, ms since the epoch).
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(names, ["__created", "__seen", "count"]);
    assert_eq!(fields["count"], "1");
    assert!(fields["__created"].parse::<u64>().expect("ms") > 1_700_000_000_000);
    assert!((1790..=1800).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn a_session_written_by_the_nest_service_is_read_and_counted() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = SessionId::generate();
    let mut redis = server.connection();
    let key = format!("sid_{}", id.as_str());
    nest_write(&mut redis, &key, "count", 5);

    assert_eq!(
        store.load(&id).await.expect("load").expect("exists").fields["count"],
        "5"
    );
    assert_eq!(
        store.increment(&id, "count", 1, &LONG).await.expect("incr"),
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
async fn a_nest_session_starts_its_absolute_lifetime_at_its_first_rust_write() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = SessionId::generate();
    let key = format!("sid_{}", id.as_str());
    let mut redis = server.connection();
    // A NestJS node wrote it: no __created, and a 30-minute TTL.
    nest_write(&mut redis, &key, "count", 1);
    assert_eq!(
        store
            .load(&id)
            .await
            .expect("load")
            .expect("exists")
            .created,
        None
    );

    let capped = policy(Duration::from_secs(1800), Some(Duration::from_secs(60)));
    assert_eq!(
        store
            .increment(&id, "count", 1, &capped)
            .await
            .expect("incr"),
        Some(2)
    );
    let loaded = store.load(&id).await.expect("load").expect("exists");
    assert!(loaded.created.is_some(), "stamped by the first write");
    assert!(
        loaded.ttl.expect("ttl") <= Duration::from_secs(60),
        "{loaded:?}"
    );

    // A Nest node stretching the TTL again cannot outrun the cap: the next
    // write checks __created and the TTL is cut back.
    let () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(1800)
        .query(&mut redis)
        .expect("EXPIRE");
    assert!(
        store
            .update(&id, &session::Changes::default(), &capped)
            .await
            .expect("touch")
    );
    let ttl = store
        .load(&id)
        .await
        .expect("load")
        .expect("exists")
        .ttl
        .expect("ttl");
    assert!(ttl <= Duration::from_secs(60), "{ttl:?}");
}

#[tokio::test]
async fn a_session_past_its_absolute_lifetime_is_deleted_by_the_next_write() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = created(&store, &[("count", "1")], &LONG).await;
    let key = format!("sid_{}", id.as_str());
    // Created two hours ago (as if under a longer cap); the cap is now one.
    let two_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        - 2 * 3600 * 1000;
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("__created")
        .arg(two_hours_ago.to_string())
        .query(&mut server.connection())
        .expect("HSET");
    let capped = policy(Duration::from_secs(1800), Some(Duration::from_secs(3600)));
    assert_eq!(
        store
            .increment(&id, "count", 1, &capped)
            .await
            .expect("incr"),
        None
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query(&mut server.connection())
        .expect("EXISTS");
    assert_eq!(exists, 0, "deleted, not left to its TTL");
}

#[tokio::test]
async fn a_key_of_another_type_is_a_backend_fault_and_is_left_alone() {
    // WRONGTYPE at a session key is not bad data in one session but a
    // fault (another writer shares the prefix): a 500 with its cause, never
    // "start the user over", which would hide it.
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

    let loaded = store.load(&id).await;
    assert!(matches!(loaded, Err(StoreError::Backend(_))), "{loaded:?}");
    let counted = store.increment(&id, "count", 1, &LONG).await;
    assert!(
        matches!(counted, Err(StoreError::Backend(_))),
        "{counted:?}"
    );
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
    let id = created(&store, &[("count", "1")], &LONG).await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut server.connection())
        .expect("SCRIPT FLUSH");

    assert_eq!(
        store.increment(&id, "count", 1, &LONG).await.expect("incr"),
        Some(2)
    );
}

#[tokio::test]
async fn a_stopped_server_is_unavailable_and_a_restarted_one_serves_again() {
    let mut server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let id = created(&store, &[("count", "1")], &LONG).await;

    server.stop();
    let outcome = store.increment(&id, "count", 1, &LONG).await;
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
        store.increment(&id, "count", 1, &LONG).await.expect("incr"),
        None
    );
    created(&store, &[("count", "1")], &LONG).await;
}

#[tokio::test]
async fn a_frozen_server_gives_unavailable_and_the_unanswered_increment_is_never_retried() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    // Every script of the policy loaded: the frozen call is an EVALSHA that
    // runs when the server wakes, not one that meets NOSCRIPT.
    store.prepare_policy(&LONG).await.expect("SCRIPT LOAD");
    let id = created(&store, &[("count", "1")], &LONG).await;

    server.pause();
    // The bound here only catches a hang; the client's own timeouts (2 s by
    // default) are what end the call.
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        store.increment(&id, "count", 1, &LONG),
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
        store.increment(&id, "count", 1, &LONG).await.expect("incr"),
        Some(3)
    );
}

/// The stored value of `field`, read directly.
fn stored(server: &RedisServer, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(&mut server.connection())
        .expect("HGET")
}

#[tokio::test]
async fn a_lost_reply_never_makes_a_write_run_twice_and_reads_are_retried() {
    // Through a proxy that loses a reply on demand: Redis runs the request,
    // the connection dies before the answer arrives.
    let server = RedisServer::start();
    let proxy = testkit::ReplyCutter::start(server.port());
    let settings = RedisSettings {
        url: proxy.url(),
        ..Default::default()
    };
    let redis = RedisService::new(&settings).expect("valid settings");
    let store = RedisSessionStore::new(redis);
    store.prepare().await.expect("SCRIPT LOAD");
    // The scripts of the policy too: a cut reply must be that of a write
    // that ran, not of a NOSCRIPT.
    store.prepare_policy(&LONG).await.expect("SCRIPT LOAD");
    let id = created(&store, &[("count", "1")], &LONG).await;
    let key = store.key(&id);

    // An increment whose reply is lost: Redis counted it once, and the
    // client does not send it again, so it reports the failure instead.
    proxy.cut_next_reply();
    let outcome = store.increment(&id, "count", 1, &LONG).await;
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "{outcome:?}"
    );
    assert_eq!(proxy.cuts(), 1);
    assert_eq!(
        stored(&server, &key, "count").as_deref(),
        Some("2"),
        "ran once"
    );

    // So is a compare-and-set, and a field write. (Each cut kills the
    // connection: a health check opens the next one, so that the cut hits
    // the request and not the connection's handshake.)
    store.check_health().await.expect("reconnected");
    proxy.cut_next_reply();
    let outcome = store
        .compare_and_set(&id, "count", Some("2"), Some("10"), &LONG)
        .await;
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(stored(&server, &key, "count").as_deref(), Some("10"));
    store.check_health().await.expect("reconnected");
    proxy.cut_next_reply();
    let outcome = store
        .update(&id, &store_suite::sets(&[("user", "ada")]), &LONG)
        .await;
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(stored(&server, &key, "user").as_deref(), Some("ada"));

    // A load whose reply is lost is sent again on a new connection.
    store.check_health().await.expect("reconnected");
    proxy.cut_next_reply();
    let loaded = store
        .load(&id)
        .await
        .expect("the read was retried")
        .expect("the session");
    assert_eq!(proxy.cuts(), 4);
    assert_eq!(loaded.fields["count"], "10");

    // And so is a TTL refresh (no field changes).
    store.check_health().await.expect("reconnected");
    proxy.cut_next_reply();
    let refreshed = store
        .update(&id, &session::Changes::default(), &LONG)
        .await
        .expect("the refresh was retried");
    assert!(refreshed);
    assert_eq!(proxy.cuts(), 5);

    // After all that, the next increment counts from what Redis holds.
    assert_eq!(
        store.increment(&id, "count", 1, &LONG).await.expect("incr"),
        Some(11)
    );
}

/// The commands each `+` rule of [`RedisSessionStore::acl_rules`] names.
fn granted_commands() -> std::collections::BTreeSet<String> {
    RedisSessionStore::acl_rules("sid_", "user_sessions:")
        .split(' ')
        .filter_map(|rule| rule.strip_prefix('+'))
        .map(str::to_owned)
        .collect()
}

/// The commands the session scripts call: MONITOR shows a script's own
/// commands apart from its caller's, so they are read from the source.
fn script_commands() -> Vec<String> {
    let source = [
        include_str!("../src/store/lua/prelude.lua"),
        include_str!("../src/store/lua/change.lua"),
        include_str!("../src/store/lua/create.lua"),
        include_str!("../src/store/lua/incr.lua"),
        include_str!("../src/store/lua/update.lua"),
        include_str!("../src/store/lua/renew.lua"),
        include_str!("../src/store/lua/cas.lua"),
        include_str!("../src/store/lua/adopt.lua"),
        include_str!("../src/store/user_index.lua"),
    ]
    .concat();
    let mut found = Vec::new();
    for call in ["redis.call('", "redis.pcall('"] {
        for (at, _) in source.match_indices(call) {
            let name = &source[at + call.len()..];
            let name = &name[..name.find('\'').expect("a quoted command")];
            found.push(name.to_ascii_lowercase());
        }
    }
    found
}

#[tokio::test]
async fn the_acl_grants_exactly_the_commands_the_store_sends() {
    // Least privilege: every grant is used, and every command sent is
    // granted. Before the fix, `+eval` was granted and never sent.
    let server = RedisServer::start();
    let mut monitor = server.monitor();
    let start = monitor.begin();
    let store = redis_store(&server, "sid_").await;
    store.prepare().await.expect("SCRIPT LOAD");
    let id = created(&store, &[("count", "1"), ("user", "ada")], &LONG).await;
    store.load(&id).await.expect("load");
    let changes = session::Changes {
        clear: true,
        removals: vec!["user".to_owned()],
        upserts: vec![("theme".to_owned(), "dark".to_owned())],
        ..session::Changes::default()
    };
    store.update(&id, &changes, &LONG).await.expect("update");
    store.increment(&id, "count", 1, &LONG).await.expect("incr");
    store
        .compare_and_set(&id, "theme", Some("dark"), None, &LONG)
        .await
        .expect("cas");
    let new = store.id_for_renewal(&id);
    store
        .renew(&id, &new, &session::Changes::default(), &LONG)
        .await
        .expect("renew");
    store.check_health().await.expect("ping");
    // The user index: every op.
    let policy = store_suite::policy(
        LONG.idle_timeout(),
        Some(std::time::Duration::from_secs(60)),
    );
    let epoch = store.user_epoch("ada").await.expect("epoch");
    let entry = session::UserEntry {
        handle: session::SessionHandle::generate(),
        id: new.clone(),
        created: std::time::SystemTime::now(),
    };
    store
        .join_user("ada", epoch, &entry, &policy, 1)
        .await
        .expect("join");
    store.user_entries("ada", &policy).await.expect("list");
    store
        .revoke_user("ada", None, &policy)
        .await
        .expect("revoke");
    store
        .drop_user_entries("ada", std::slice::from_ref(&entry.handle))
        .await
        .expect("drop");
    store.delete(&new).await.expect("unlink");
    let mut sent: std::collections::BTreeSet<String> = monitor
        .commands_since(start)
        .into_iter()
        // redis-rs's CLIENT SETINFO on connect: its answer is ignored, so
        // it needs no grant. SCRIPT is sent only as SCRIPT LOAD.
        .filter(|name| name != "client")
        .map(|name| {
            if name == "script" {
                "script|load".to_owned()
            } else {
                name
            }
        })
        .collect();
    sent.extend(script_commands());
    // Grants only other modes use: Sentinel checks the master's ROLE, a
    // cluster client reads the slot map and follows ASK, and both WAIT for
    // a replica after a logout or a login.
    sent.extend(["role", "cluster|slots", "cluster|shards", "asking", "wait"].map(str::to_owned));

    assert_eq!(granted_commands(), sent);
}

#[tokio::test]
async fn a_user_index_always_has_a_ttl_even_after_joining_an_entry_at_its_deadline() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let policy = policy(
        LONG.idle_timeout(),
        Some(std::time::Duration::from_secs(60)),
    );
    let entry = |secs_ago: u64| session::UserEntry {
        handle: session::SessionHandle::generate(),
        id: SessionId::generate(),
        created: std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago),
    };
    store
        .join_user("ada", 0, &entry(120), &policy, 10)
        .await
        .expect("join");
    store
        .join_user("bob", 0, &entry(1), &policy, 10)
        .await
        .expect("join");
    store
        .revoke_user("cy", None, &policy)
        .await
        .expect("revoke");
    let keys: Vec<String> = testkit::redis::cmd("KEYS")
        .arg("usid_*")
        .query(&mut server.connection())
        .expect("KEYS");
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = testkit::redis::cmd("PTTL")
            .arg(&key)
            .query(&mut server.connection())
            .expect("PTTL");
        // -1 is "no TTL", the fault. A key at its 1 ms deadline may answer
        // 0 (under a millisecond left) or -2 (gone since KEYS).
        assert_ne!(ttl, -1, "{key} has no TTL");
    }
}

/// Every key and every value in the server.
fn everything(server: &RedisServer) -> String {
    let mut redis = server.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis).expect("KEYS");
    let mut seen = keys.clone();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query(&mut redis)
            .expect("TYPE");
        let values: Vec<String> = if kind == "hash" {
            redis::cmd("HGETALL")
                .arg(&key)
                .query(&mut redis)
                .expect("HGETALL")
        } else {
            redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut redis)
                .expect("ZRANGE")
        };
        seen.extend(values);
    }
    seen.join("\n")
}

#[tokio::test]
async fn with_hashed_ids_no_key_and_no_index_entry_holds_a_live_id() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_")
        .await
        .with_hashed_ids(false)
        .expect("standalone");
    let id = created(&store, &[("count", "1")], &LONG).await;
    let entry = session::UserEntry {
        handle: session::SessionHandle::generate(),
        id: id.clone(),
        created: std::time::SystemTime::now(),
    };
    let joined = store
        .join_user("ada", 0, &entry, &LONG, 10)
        .await
        .expect("join");
    assert_eq!(joined, Some(vec![]));

    let dump = everything(&server);
    assert!(!dump.contains(id.as_str()), "{dump}");
    // The key is sid_ and the SHA-256 of the id, in hex.
    assert!(
        dump.contains(&format!("sid_{}", hex_sha256(id.as_str()))),
        "{dump}"
    );
    assert_eq!(
        store.load(&id).await.expect("load").expect("live").fields["count"],
        "1"
    );
    // The index entry addresses the session by its hash.
    let listed = store.user_entries("ada", &LONG).await.expect("list");
    assert_eq!(
        store
            .load(&listed[0].id)
            .await
            .expect("load")
            .expect("live")
            .fields["count"],
        "1"
    );
    assert!(store.delete(&listed[0].id).await.expect("delete"));
    assert!(store.load(&id).await.expect("load").is_none());
}

fn hex_sha256(text: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum runs");
    String::from_utf8(out.stdout).expect("text")[..64].to_owned()
}

#[tokio::test]
async fn turning_hash_ids_on_moves_each_raw_session_when_first_met_and_loses_none() {
    let server = RedisServer::start();
    let raw = redis_store(&server, "sid_").await;
    let migrating = redis_store(&server, "sid_")
        .await
        .with_hashed_ids(true)
        .expect("standalone");
    let strict = redis_store(&server, "sid_")
        .await
        .with_hashed_ids(false)
        .expect("standalone");

    // Sessions written before hash_ids: one read first, one only counted
    // (a blind HINCRBY, as /count does), one logged out, one never met.
    let read = created(&raw, &[("user", "ada")], &LONG).await;
    let counted = created(&raw, &[("count", "41")], &LONG).await;
    let ended = created(&raw, &[("user", "bob")], &LONG).await;
    let untouched = created(&raw, &[("user", "cy")], &LONG).await;

    assert_eq!(
        strict.load(&read).await.expect("load"),
        None,
        "strict: raw keys are not read"
    );
    assert_eq!(
        migrating
            .load(&read)
            .await
            .expect("load")
            .expect("adopted")
            .fields["user"],
        "ada"
    );
    assert_eq!(
        migrating
            .increment(&counted, "count", 1, &LONG)
            .await
            .expect("incr"),
        Some(42)
    );
    assert!(
        migrating.delete(&ended).await.expect("delete"),
        "a logout ends a raw session"
    );
    assert_eq!(migrating.load(&ended).await.expect("load"), None);

    // Parallel requests on one raw session (a browser opening a page):
    // whichever moves it, every one of them finds it.
    let parallel = created(&raw, &[("user", "dee")], &LONG).await;
    let seen = futures_util::future::join_all((0..8).map(|_| migrating.load(&parallel))).await;
    assert!(
        seen.iter().all(|loaded| matches!(loaded, Ok(Some(_)))),
        "no request lost the session to a concurrent move: {seen:?}"
    );
    let counted_in_parallel = created(&raw, &[("count", "0")], &LONG).await;
    let counts = futures_util::future::join_all(
        (0..8).map(|_| migrating.increment(&counted_in_parallel, "count", 1, &LONG)),
    )
    .await;
    assert!(
        counts.iter().all(|count| matches!(count, Ok(Some(_)))),
        "{counts:?}"
    );
    assert_eq!(
        strict
            .load(&counted_in_parallel)
            .await
            .expect("load")
            .expect("moved")
            .fields["count"],
        "8"
    );

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sid_*")
        .query(&mut server.connection())
        .expect("KEYS");
    let raw_keys: Vec<&String> = keys.iter().filter(|key| key.len() == 4 + 36).collect();
    assert_eq!(
        raw_keys,
        [&format!("sid_{}", untouched.as_str())],
        "moved: {keys:?}"
    );
    // Moved sessions now read on a node that accepts no raw key.
    assert_eq!(
        strict
            .load(&read)
            .await
            .expect("load")
            .expect("hashed")
            .fields["user"],
        "ada"
    );
    assert_eq!(
        strict
            .load(&counted)
            .await
            .expect("load")
            .expect("hashed")
            .fields["count"],
        "42"
    );
}

#[tokio::test]
async fn on_a_cluster_adopting_raw_keys_is_refused_naming_the_setting() {
    let settings = RedisSettings {
        mode: redis_client::RedisMode::Cluster,
        nodes: vec!["redis://127.0.0.1:1".to_owned()],
        ..Default::default()
    };
    let store = RedisSessionStore::new(RedisService::new(&settings).expect("valid settings"));
    let error = store.clone().with_hashed_ids(true).expect_err("refused");
    assert_eq!(error.key(), "session.accept_raw_keys");
    assert!(store.with_hashed_ids(false).is_ok());
}

#[tokio::test]
async fn a_listing_on_a_node_without_the_sealing_key_keeps_the_entry_it_cannot_read() {
    use base64::Engine as _;
    let server = RedisServer::start();
    let ring = |id: &str, byte: u8| {
        let entry = format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode([byte; 32])
        );
        session::KeyRing::parse("session.encryption.keys", &[entry])
            .expect("valid")
            .expect("one key")
    };
    let ahead = session::SealedStore::new(redis_store(&server, "sid_").await, ring("k2", 2));
    let handle = session::SessionHandle::generate();
    let id = SessionId::generate();
    let mut changes = store_suite::sets(&[("user", "ada")]);
    changes
        .upserts
        .push(("__user".to_owned(), "ada".to_owned()));
    changes
        .upserts
        .push(("__handle".to_owned(), handle.as_str().to_owned()));
    assert!(ahead.create(&id, &changes, &LONG).await.expect("create"));
    let entry = session::UserEntry {
        handle: handle.clone(),
        id: id.clone(),
        created: std::time::SystemTime::now(),
    };
    ahead
        .join_user("ada", 0, &entry, &LONG, 10)
        .await
        .expect("join");

    // A node whose ring is behind (k1 only): the session does not open
    // there, yet it is listed, and its entry stays for "sign out everywhere".
    let behind = session::SessionMiddleware::builder(session::SealedStore::new(
        redis_store(&server, "sid_").await,
        ring("k1", 1),
    ))
    .absolute_timeout(None)
    .build()
    .expect("valid")
    .service();
    assert_eq!(
        behind.store().load(&id).await.expect("load"),
        None,
        "a request: gone"
    );
    let listed = behind.list_user_sessions("ada").await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].handle, handle);
    assert_eq!(listed[0].user_agent, None);
    assert_eq!(
        ahead
            .user_entries("ada", &LONG)
            .await
            .expect("entries")
            .len(),
        1
    );
    assert_eq!(
        behind
            .revoke_user_sessions("ada", None)
            .await
            .expect("revoke"),
        1
    );
    assert_eq!(
        ahead.load(&id).await.expect("load"),
        None,
        "ended everywhere"
    );
}

/// How many times the server ran `command`, from `INFO commandstats`
/// (script-internal calls included).
fn calls_of(server: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.connection())
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

#[tokio::test]
async fn a_busy_sessions_increment_inside_the_touch_threshold_is_an_hmget_and_an_hincrby() {
    let server = RedisServer::start();
    let store = redis_store(&server, "sid_").await;
    let touchy = LONG.with_touch_after(Duration::from_secs(60));
    let id = created(&store, &[("count", "1")], &touchy).await;
    let before: Vec<u64> = ["hmget", "hincrby", "hset", "pexpire", "time", "exists"]
        .iter()
        .map(|command| calls_of(&server, command))
        .collect();
    for n in 2..=4 {
        assert_eq!(
            store
                .increment(&id, "count", 1, &touchy)
                .await
                .expect("incr"),
            Some(n)
        );
    }
    let after: Vec<u64> = ["hmget", "hincrby", "hset", "pexpire", "time", "exists"]
        .iter()
        .map(|command| calls_of(&server, command))
        .collect();
    let ran: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // Three increments: an HMGET and an HINCRBY each; no HSET of __seen, no
    // PEXPIRE, and no TIME (the app's clock rides along).
    assert_eq!(ran, vec![3, 3, 0, 0, 0, 0]);
    // With no threshold every increment slides the TTL.
    store.increment(&id, "count", 1, &LONG).await.expect("incr");
    assert_eq!(calls_of(&server, "pexpire") - after[3], 1);
}

#[tokio::test]
async fn a_renewal_moves_an_entry_written_before_hash_ids_under_its_raw_id() {
    // Turning session.hash_ids on keeps everyone signed in: an entry that a
    // node without it wrote names the raw id, and a renewal on a hashing
    // node still moves it.
    let server = RedisServer::start();
    let raw = redis_store(&server, "sid_").await;
    let hashing = redis_store(&server, "sid_")
        .await
        .with_hashed_ids(true)
        .expect("hash_ids");
    let policy = policy(LONG.idle_timeout(), Some(Duration::from_secs(600)));
    let old = SessionId::generate();
    let entry = session::UserEntry {
        handle: session::SessionHandle::generate(),
        id: old.clone(),
        created: std::time::SystemTime::now(),
    };
    let joined = raw
        .join_user("ada", 0, &entry, &policy, 10)
        .await
        .expect("join");
    assert_eq!(joined, Some(vec![]));
    let new = hashing.id_for_renewal(&old);
    assert!(
        hashing
            .rejoin_user("ada", &entry.handle, &old, &new)
            .await
            .expect("rejoin")
    );
    let taken = hashing
        .take_user_entry("ada", &entry.handle)
        .await
        .expect("take")
        .expect("the entry");
    assert_ne!(taken.id, old, "it names the new session now");
    hashing
        .create(&new, &session::Changes::default(), &LONG)
        .await
        .expect("create");
    assert!(
        hashing.delete(&taken.id).await.expect("delete"),
        "the name in the entry addresses the new session"
    );
}
