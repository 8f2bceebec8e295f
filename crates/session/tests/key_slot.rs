//! Our hash-slot function agrees with Redis's own `CLUSTER KEYSLOT`, and a
//! rotated id lands in the old id's slot by Redis's own reckoning.

use session::SessionId;
use session::slot::{generate_in_same_slot, key_slot};
use testkit::{RedisServer, redis};

fn redis_slot(connection: &mut redis::Connection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(connection)
        .expect("CLUSTER KEYSLOT")
}

#[test]
fn key_slot_agrees_with_cluster_keyslot() {
    // A single cluster-enabled node answers CLUSTER KEYSLOT with no slots assigned.
    let server = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    let mut connection = server.connection();
    let mut keys: Vec<String> = (0..300)
        .map(|_| format!("sid_{}", SessionId::generate().as_str()))
        .collect();
    keys.extend(
        [
            "",
            "{",
            "}",
            "{}",
            "a{b}c",
            "a{}b{c}",
            "{{x}}",
            "{x}{y}",
            "日本{語}",
            "sid_",
            "{sessions}sid_1",
        ]
        .map(str::to_owned),
    );

    for key in &keys {
        assert_eq!(
            key_slot(key.as_bytes()),
            redis_slot(&mut connection, key),
            "key {key:?}"
        );
    }
}

#[test]
fn a_rotated_id_lands_in_the_old_ids_slot_by_redis_reckoning() {
    let server = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    let mut connection = server.connection();

    for _ in 0..5 {
        let old = SessionId::generate();
        let new = generate_in_same_slot("sid_", &old).expect("randomness");
        assert_ne!(new, old);
        assert_eq!(
            redis_slot(&mut connection, &format!("sid_{}", new.as_str())),
            redis_slot(&mut connection, &format!("sid_{}", old.as_str()))
        );
    }
}
