//! `session.legacy_ids`: a cookie that a NestJS node issued (its weak
//! `Math.random().toString(36)` id) is accepted once and renewed away, so a
//! shop moving from Nest nodes logs nobody out.

use reqwest::StatusCode;
use testkit::{RedisServer, redis};

use crate::helpers::{TestApp, spawn_app_with};

/// A Nest-style id: 11 characters of `[0-9a-z]`.
fn nest_id() -> String {
    session::SessionId::generate()
        .as_str()
        .replace('-', "")
        .chars()
        .take(11)
        .collect()
}

/// Exactly the Nest design's `GET /count`: `getSession` (HGETALL), count
/// + 1, `setSession` (HSET per field, then EXPIRE 1800), and the cookie
///   it sets (the same id, or a fresh one).
fn nest_count(redis: &RedisServer, sid: Option<&str>) -> (String, i64) {
    let mut connection = redis.connection();
    let sid = sid.map_or_else(nest_id, str::to_owned);
    let key = format!("sid_{sid}");
    let stored: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query(&mut connection)
        .expect("HGETALL");
    let count = stored
        .get("count")
        .map_or(1, |count| count.parse::<i64>().expect("an integer") + 1);
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg("count")
        .arg(count)
        .query(&mut connection)
        .expect("HSET");
    let _: i64 = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(1800)
        .query(&mut connection)
        .expect("EXPIRE");
    (sid, count)
}

async fn rust_node(redis: &RedisServer, legacy_ids: bool) -> TestApp {
    spawn_app_with(redis.url(), move |settings| {
        settings.session.legacy_ids = legacy_ids;
    })
    .await
}

/// One cookie jar, alternating between a Nest node and a Rust node.
async fn alternate(redis: &RedisServer, rust: &TestApp, nest_first: bool) -> Vec<i64> {
    let mut jar: Option<String> = None;
    let mut counts = Vec::new();
    for turn in 0..10 {
        if (turn % 2 == 0) == nest_first {
            let (sid, count) = nest_count(redis, jar.as_deref());
            jar = Some(sid);
            counts.push(count);
        } else {
            let reply = match &jar {
                Some(sid) => rust.count_as(sid).await,
                None => rust.count_with_cookie(b"").await,
            };
            assert_eq!(reply.status, StatusCode::OK);
            if let Some(sid) = reply.sid {
                jar = Some(sid);
            }
            counts.push(reply.count.expect("a count"));
        }
    }
    counts
}

#[tokio::test]
async fn one_jar_alternating_nest_and_rust_counts_one_to_ten_whichever_starts() {
    let redis = RedisServer::start();
    let rust = rust_node(&redis, true).await;
    let expected: Vec<i64> = (1..=10).collect();
    assert_eq!(alternate(&redis, &rust, true).await, expected, "Nest first");
    assert_eq!(
        alternate(&redis, &rust, false).await,
        expected,
        "Rust first"
    );
}

#[tokio::test]
async fn without_the_switch_a_nest_session_is_lost_at_the_first_rust_node() {
    let redis = RedisServer::start();
    let rust = rust_node(&redis, false).await;
    let counts = alternate(&redis, &rust, true).await;
    assert_eq!(&counts[..3], [1, 1, 2], "the defect legacy_ids fixes");
}

#[tokio::test]
async fn a_legacy_id_is_accepted_once_and_its_weak_id_dies_at_once() {
    let redis = RedisServer::start();
    let rust = rust_node(&redis, true).await;
    let (legacy, _) = nest_count(&redis, None);
    let reply = rust.count_as(&legacy).await;
    assert_eq!(reply.count, Some(2));
    let renewed = reply.sid.expect("a fresh id is sent");
    assert!(session::SessionId::parse(&renewed).is_some(), "{renewed}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("sid_{legacy}"))
        .query(&mut redis.connection())
        .expect("EXISTS");
    assert_eq!(exists, 0, "the weak id names nothing any more");
    // Replaying the legacy cookie: no session, and it is not re-created.
    let replay = rust.count_as(&legacy).await;
    assert_eq!(replay.count, Some(1));
    assert_ne!(replay.sid.as_deref(), Some(legacy.as_str()));
    assert_eq!(rust.count_as(&renewed).await.count, Some(3));
}

#[tokio::test]
async fn a_legacy_id_naming_no_session_is_never_adopted_and_other_forms_cost_no_lookup() {
    let redis = RedisServer::start();
    let rust = rust_node(&redis, true).await;
    let unknown = nest_id();
    let reply = rust.count_as(&unknown).await;
    assert_eq!(reply.count, Some(1));
    let fresh = reply.sid.expect("a fresh session");
    assert!(
        session::SessionId::parse(&fresh).is_some(),
        "a v4 id, not the planted one"
    );
    let planted: i64 = redis::cmd("EXISTS")
        .arg(format!("sid_{unknown}"))
        .query(&mut redis.connection())
        .expect("EXISTS");
    assert_eq!(planted, 0, "the planted id was not created");

    // Forged forms (too long, upper case, a glob) are refused before Redis.
    let mut monitor = redis.monitor();
    for forged in ["0123456789abcdefg", "ABCDEF", "abc*", "a_b"] {
        let start = monitor.begin();
        let status = crate::helpers::bare_client()
            .get(rust.url("/me"))
            .header("cookie", format!("sid={forged}"))
            .send()
            .await
            .expect("GET /me")
            .status();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            monitor.commands_since(start),
            Vec::<String>::new(),
            "{forged}"
        );
    }
}
