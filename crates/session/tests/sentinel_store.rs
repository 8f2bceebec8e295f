//! The store behaviour suite through Redis Sentinel (a master, a replica,
//! three Sentinels), and a failover that the store rides through.

mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use redis_client::{RedisMode, RedisService, RedisSettings};
use session::{RedisSessionStore, SessionId, SessionStore};
use store_suite::{Harness, LONG, created};
use testkit::{SentinelGroup, redis};

async fn sentinel_store(group: &SentinelGroup, prefix: &str) -> RedisSessionStore {
    sentinel_store_with(group, prefix, false).await
}

async fn sentinel_store_with(
    group: &SentinelGroup,
    prefix: &str,
    read_from_replicas: bool,
) -> RedisSessionStore {
    let settings = RedisSettings {
        mode: RedisMode::Sentinel,
        sentinels: group.sentinel_urls(),
        master_name: SentinelGroup::MASTER_NAME.to_owned(),
        read_from_replicas,
        ..Default::default()
    };
    let redis = RedisService::new(&settings).expect("valid settings");
    redis
        .wait_until_ready(Duration::from_secs(10))
        .await
        .expect("the master answers");
    let store = RedisSessionStore::new(redis)
        .with_key_prefix(prefix)
        .expect("a valid prefix")
        // Each test's users apart from every other test's, on one server.
        .with_user_index_prefix(format!("u{prefix}"))
        .expect("a valid user index prefix");
    store.prepare().await.expect("the script loads");
    // And the scripts of the policy the tests write with, as the middleware
    // loads its own at start-up: a write is then one EVALSHA.
    store.prepare_policy(&LONG).await.expect("the scripts load");
    store
}

/// A store behind a Sentinel group of its own, with a random key prefix.
async fn make_store() -> Harness {
    let group = SentinelGroup::start();
    let prefix = format!("test_{}_", &SessionId::generate().as_str()[..8]);
    let store = sentinel_store(&group, &prefix).await;
    Harness::new(Arc::new(store), group)
}

store_behaviour_suite!(make_store);

#[tokio::test]
async fn after_a_sentinel_failover_the_store_writes_to_the_new_master() {
    let group = SentinelGroup::start();
    let store = sentinel_store(&group, "sid_").await;
    let id = created(&store, &[("count", "1")], &LONG).await;
    let old_master = group.master_port();

    group.failover();
    assert_ne!(group.master_port(), old_master);

    // The connection to the demoted master answers READONLY once; the store
    // then reconnects through the Sentinels. Retry like a client would.
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let outcome = store.increment(&id, "count", 1, &LONG).await;
        let done = matches!(outcome, Ok(Some(_)));
        outcomes.push(outcome.map_err(|error| error.to_string()));
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = outcomes.last().cloned();
    assert!(
        matches!(last, Some(Ok(Some(2)))),
        "the session survived and counts on the new master: {outcomes:?}"
    );
}

#[tokio::test]
async fn with_replica_reads_loads_go_to_the_replica_and_misses_to_the_master() {
    let group = SentinelGroup::start();
    let store = sentinel_store_with(&group, "sid_", true).await;
    let id = created(&store, &[("count", "1")], &LONG).await;
    let acknowledged: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut group.master.connection())
        .expect("WAIT");
    assert_eq!(acknowledged, 1, "the replica has the session");
    // Open the replica connection first: opening it asks the replica its
    // ROLE, which would show in the counts below.
    store.load(&id).await.expect("load").expect("the session");
    let (mut on_master, mut on_replica) = (group.master.monitor(), group.replica.monitor());

    // A session the replica has: read there, the master is not asked.
    let (master_start, replica_start) = (on_master.begin(), on_replica.begin());
    let loaded = store.load(&id).await.expect("load").expect("the session");
    assert_eq!(loaded.fields["count"], "1");
    assert_eq!(
        on_replica.commands_since(replica_start),
        ["hgetall", "pttl"]
    );
    assert!(on_master.commands_since(master_start).is_empty());

    // A miss on the replica (here an unknown id; equally a session created
    // a moment ago that the replica has not received yet): the master decides.
    let (master_start, replica_start) = (on_master.begin(), on_replica.begin());
    let unknown = SessionId::generate();
    assert!(store.load(&unknown).await.expect("load").is_none());
    assert_eq!(
        on_replica.commands_since(replica_start),
        ["hgetall", "pttl"]
    );
    assert_eq!(on_master.commands_since(master_start), ["hgetall", "pttl"]);

    // Writes go to the master, whatever the reads do.
    let master_start = on_master.begin();
    assert_eq!(
        store.increment(&id, "count", 1, &LONG).await.expect("incr"),
        Some(2)
    );
    assert_eq!(on_master.commands_since(master_start), ["evalsha"]);
}

#[tokio::test]
async fn over_tls_the_sentinels_and_the_master_are_reached_with_client_certificates() {
    let tls = testkit::TlsFiles::generate();
    let group = SentinelGroup::start_tls(&tls);
    assert!(
        group
            .sentinel_urls()
            .iter()
            .all(|url| url.starts_with("rediss://"))
    );
    let settings = RedisSettings {
        mode: RedisMode::Sentinel,
        sentinels: group.sentinel_urls(),
        master_name: SentinelGroup::MASTER_NAME.to_owned(),
        tls: redis_client::TlsSettings {
            ca_file: Some(tls.ca_file()),
            cert_file: Some(tls.client_cert_file()),
            key_file: Some(tls.client_key_file()),
        },
        read_from_replicas: true,
        ..Default::default()
    };
    let redis = RedisService::new(&settings).expect("valid settings");
    redis
        .wait_until_ready(Duration::from_secs(10))
        .await
        .expect("the master answers over TLS");
    let store = RedisSessionStore::new(redis);
    store.prepare().await.expect("the script loads");

    let id = created(&store, &[("count", "1")], &LONG).await;
    assert_eq!(
        store.increment(&id, "count", 1, &LONG).await.expect("incr"),
        Some(2)
    );
    let acknowledged: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut group.master.connection())
        .expect("WAIT");
    assert_eq!(acknowledged, 1, "replicated over TLS");
    store.load(&id).await.expect("load").expect("found"); // opens the replica connection
    let mut on_replica = group.replica.monitor();
    let mut on_master = group.master.monitor();
    let (start, master_start) = (on_replica.begin(), on_master.begin());
    let loaded = store.load(&id).await.expect("load").expect("found");
    assert_eq!(loaded.fields["count"], "2");
    // A connection the pool opens anew checks its ROLE first (on a loaded
    // machine the first one may have been replaced): that is set-up, not
    // the read.
    let read: Vec<String> = on_replica
        .commands_since(start)
        .into_iter()
        .filter(|command| command != "role")
        .collect();
    assert_eq!(
        read,
        ["hgetall", "pttl"],
        "read from the replica over TLS, not fallen back to the master"
    );
    assert!(
        !on_master
            .commands_since(master_start)
            .iter()
            .any(|command| command == "hgetall"),
        "the master served no load"
    );
}
