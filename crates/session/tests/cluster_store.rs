//! The store behaviour suite on a real Redis Cluster (3 masters), and what
//! only a cluster can show: sessions on every master, renewals on each.

mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use redis_client::{RedisMode, RedisService, RedisSettings};
use session::{RedisSessionStore, SessionId, SessionStore, StoreError};
use store_suite::{Harness, LONG, created, sets};
use testkit::{RedisCluster, redis};

async fn cluster_store(cluster: &RedisCluster, prefix: &str) -> RedisSessionStore {
    let settings = RedisSettings {
        mode: RedisMode::Cluster,
        nodes: cluster.seed_urls(),
        // These clusters have no replicas: nothing could confirm a write.
        durable_write_timeout_ms: 0,
        ..Default::default()
    };
    let redis = RedisService::new(&settings).expect("valid settings");
    redis
        .wait_until_ready(Duration::from_secs(10))
        .await
        .expect("the cluster answers");
    let store = RedisSessionStore::new(redis)
        .with_key_prefix(prefix)
        .expect("a valid prefix")
        // Each test's users apart from every other test's, on one server.
        .with_user_index_prefix(format!("u{prefix}"))
        .expect("a valid user index prefix");
    store
        .prepare()
        .await
        .expect("the script loads on every master");
    store
}

/// A store on a cluster of its own, with a random key prefix.
async fn make_store() -> Harness {
    let cluster = RedisCluster::start(3, 0);
    let prefix = format!("test_{}_", &SessionId::generate().as_str()[..8]);
    let store = cluster_store(&cluster, &prefix).await;
    Harness::new(Arc::new(store), cluster)
}

store_behaviour_suite!(make_store);

/// The same suite with every value sealed (`SealedStore` over the
/// cluster) and ids hashed at rest: renewals must keep finding the slot.
mod sealed {
    use super::*;

    async fn make_sealed_store() -> Harness {
        let cluster = RedisCluster::start(3, 0);
        let prefix = format!("test_{}_", &SessionId::generate().as_str()[..8]);
        let store = cluster_store(&cluster, &prefix)
            .await
            .with_hashed_ids(false)
            .expect("no raw keys to adopt");
        Harness::sealed(store, cluster)
    }

    store_behaviour_suite!(make_sealed_store);
}

/// The node whose `KEYS` lists `key`.
fn holder(cluster: &RedisCluster, key: &str) -> Option<u16> {
    cluster.nodes().iter().find_map(|node| {
        let found: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut node.connection())
            .unwrap_or(0);
        (found == 1).then(|| node.port())
    })
}

#[tokio::test]
async fn sessions_land_on_every_master_and_renew_works_on_each() {
    let cluster = RedisCluster::start(3, 0);
    let store = cluster_store(&cluster, "sid_").await;
    renew_on_every_master(&cluster, &store).await;
}

#[tokio::test]
async fn a_tls_cluster_with_client_certificates_serves_sessions_on_every_master() {
    let tls = testkit::TlsFiles::generate();
    let cluster = RedisCluster::start_tls(&tls, 3, 0);
    assert!(
        cluster
            .seed_urls()
            .iter()
            .all(|url| url.starts_with("rediss://"))
    );
    let settings = RedisSettings {
        mode: RedisMode::Cluster,
        nodes: cluster.seed_urls(),
        durable_write_timeout_ms: 0, // no replicas
        tls: redis_client::TlsSettings {
            ca_file: Some(tls.ca_file()),
            cert_file: Some(tls.client_cert_file()),
            key_file: Some(tls.client_key_file()),
        },
        ..Default::default()
    };
    let redis = RedisService::new(&settings).expect("valid settings");
    redis
        .wait_until_ready(Duration::from_secs(10))
        .await
        .expect("the TLS cluster answers");
    let store = RedisSessionStore::new(redis);
    store
        .prepare()
        .await
        .expect("the script loads on every master");
    renew_on_every_master(&cluster, &store).await;
}

/// 30 sessions, each renewed: they reach all three masters, and each
/// renewal moves the data and kills the old id on whichever master.
async fn renew_on_every_master(cluster: &RedisCluster, store: &RedisSessionStore) {
    let mut holders = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let old = created(store, &[("count", "1")], &LONG).await;
        // On a cluster the store draws the new id in the old id's slot.
        let new = store.id_for_renewal(&old);
        let renewal = store
            .renew(&old, &new, &sets(&[("user", "ada")]), &LONG)
            .await
            .expect("renew");
        assert_eq!(renewal, session::Renewal::Renewed);
        let old_key = format!("sid_{}", old.as_str());
        let new_key = format!("sid_{}", new.as_str());
        assert_eq!(holder(cluster, &old_key), None, "the old id is gone");
        let node = holder(cluster, &new_key).expect("the new key is on some master");
        holders.insert(node);
        let fields = store
            .load(&new)
            .await
            .expect("load")
            .expect("renewed")
            .fields;
        assert_eq!((&fields["count"][..], &fields["user"][..]), ("1", "ada"));
    }
    assert_eq!(holders.len(), 3, "30 sessions reached all three masters");
}

#[tokio::test]
async fn a_renew_to_an_id_in_another_slot_is_refused_by_the_cluster_not_half_done() {
    let cluster = RedisCluster::start(3, 0);
    let store = cluster_store(&cluster, "sid_").await;
    let old = created(&store, &[("count", "1")], &LONG).await;
    // Why renew draws the new id in the old one's slot: a plain new id
    // almost surely hashes elsewhere, and a two-key script there is CROSSSLOT.
    let slot = |id: &SessionId| key_slot(&cluster, &format!("sid_{}", id.as_str()));
    let elsewhere = loop {
        let candidate = SessionId::generate();
        if slot(&candidate) != slot(&old) {
            break candidate;
        }
    };
    let outcome = store.renew(&old, &elsewhere, &sets(&[]), &LONG).await;
    // A fault of the request, not bad data in the session: never a reason
    // to start the user over.
    assert!(
        matches!(outcome, Err(StoreError::Backend(_))),
        "{outcome:?}"
    );
    assert!(
        store.load(&old).await.expect("load").is_some(),
        "the old session is intact"
    );
    assert!(store.load(&elsewhere).await.expect("load").is_none());
}

/// The slot of `key`, by the cluster's own reckoning.
fn key_slot(cluster: &RedisCluster, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut cluster.nodes()[0].connection())
        .expect("CLUSTER KEYSLOT")
}

/// Runs `CLUSTER <args>` on `node`.
fn cluster_command(node: &testkit::RedisServer, args: &[&str]) -> redis::Value {
    let mut command = redis::cmd("CLUSTER");
    for arg in args {
        command.arg(*arg);
    }
    command
        .query(&mut node.connection())
        .unwrap_or_else(|error| panic!("CLUSTER {args:?}: {error}"))
}

fn node_id(node: &testkit::RedisServer) -> String {
    match cluster_command(node, &["MYID"]) {
        redis::Value::BulkString(id) => String::from_utf8(id).expect("a text id"),
        other => panic!("CLUSTER MYID gave {other:?}"),
    }
}

#[tokio::test]
async fn a_session_whose_slot_migrates_is_followed_through_ask_then_moved() {
    let cluster = RedisCluster::start(3, 0);
    let store = cluster_store(&cluster, "sid_").await;
    let id = created(&store, &[("count", "1")], &LONG).await;
    let key = format!("sid_{}", id.as_str());
    let slot = key_slot(&cluster, &key).to_string();
    let nodes = cluster.nodes();
    let source = nodes
        .iter()
        .position(|node| holder(&cluster, &key) == Some(node.port()))
        .expect("the key's master");
    let target = (source + 1) % nodes.len();
    let (source_id, target_id) = (node_id(&nodes[source]), node_id(&nodes[target]));

    // Mid-migration: the key has moved, the slot still belongs to the
    // source, which answers ASK; the client must follow with ASKING.
    cluster_command(&nodes[target], &["SETSLOT", &slot, "IMPORTING", &source_id]);
    cluster_command(&nodes[source], &["SETSLOT", &slot, "MIGRATING", &target_id]);
    let () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(nodes[target].port())
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(&key)
        .query(&mut nodes[source].connection())
        .expect("MIGRATE");
    let (_, on_target): ((), i64) = redis::pipe()
        .cmd("ASKING")
        .cmd("EXISTS")
        .arg(&key)
        .query(&mut nodes[target].connection())
        .expect("ASKING + EXISTS on the target");
    assert_eq!(on_target, 1, "the key now lives on the target");
    let loaded = store.load(&id).await.expect("load via ASK").expect("found");
    assert_eq!(loaded.fields["count"], "1");
    assert_eq!(
        store
            .increment(&id, "count", 1, &LONG)
            .await
            .expect("incr via ASK"),
        Some(2)
    );

    // Migration done: every master is told, and the source answers MOVED.
    for node in nodes {
        cluster_command(node, &["SETSLOT", &slot, "NODE", &target_id]);
    }
    assert_eq!(
        store
            .increment(&id, "count", 1, &LONG)
            .await
            .expect("incr via MOVED"),
        Some(3)
    );
    let loaded = store.load(&id).await.expect("load").expect("found");
    assert_eq!(loaded.fields["count"], "3");
    assert!(store.delete(&id).await.expect("delete via the new owner"));
    assert_eq!(holder(&cluster, &key), None);
}
