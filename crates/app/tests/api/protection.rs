//! Session data protected at rest: sealed values, rotation, migration,
//! tampering, signed cookies. Against a real redis-server, across nodes.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use testkit::{RedisServer, redis};
use tokio::sync::Semaphore;

use crate::helpers::{AppProcess, TestApp, bare_client, set_cookie, spawn_app_with};

/// A ring entry: `id:` and 32 copies of `byte`, in standard base64.
fn key(id: &str, byte: u8) -> String {
    format!("{id}:{}", STANDARD.encode([byte; 32]))
}

/// An app node sealing with `keys` (newest first).
async fn sealed_node(redis: &RedisServer, keys: &[String], accept_plaintext: bool) -> TestApp {
    let keys = keys.to_vec();
    spawn_app_with(redis.url(), move |settings| {
        settings.session.encryption.keys = keys.into_iter().collect();
        settings.session.encryption.accept_plaintext = accept_plaintext;
    })
    .await
}

/// The `sid` a response set: `Some("")` for a removal cookie.
fn sid_set(headers: &reqwest::header::HeaderMap) -> Option<String> {
    set_cookie(headers, "sid").map(|cookie| {
        cookie
            .split(';')
            .next()
            .and_then(|pair| pair.strip_prefix("sid="))
            .unwrap_or_default()
            .to_owned()
    })
}

/// `POST /login` as `user` with no cookie: the new session's id.
async fn login(base: &str, user: &str) -> String {
    let response = bare_client()
        .post(format!("{base}/login"))
        .json(&serde_json::json!({ "user": user }))
        .send()
        .await
        .expect("POST /login");
    assert_eq!(response.status(), StatusCode::OK);
    sid_set(response.headers()).expect("a session cookie")
}

/// `GET /me` as `sid`: the status, the user it names, and the cookie it set.
async fn me_as(base: &str, sid: &str) -> (StatusCode, Option<String>, Option<String>) {
    let response = bare_client()
        .get(format!("{base}/me"))
        .header("cookie", format!("sid={sid}"))
        .send()
        .await
        .expect("GET /me");
    let status = response.status();
    let cookie = sid_set(response.headers());
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["user"].as_str().map(str::to_owned), cookie)
}

fn hget(redis: &RedisServer, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(&mut redis.connection())
        .expect("HGET")
}

fn hset(redis: &RedisServer, key: &str, field: &str, value: &str) {
    let _: i64 = redis::cmd("HSET")
        .arg(key)
        .arg(field)
        .arg(value)
        .query(&mut redis.connection())
        .expect("HSET");
}

/// Every value of every key, as `redis-cli` would dump it.
fn dump(redis: &RedisServer) -> Vec<String> {
    let mut connection = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut connection)
        .expect("KEYS");
    let mut seen = keys.clone();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query(&mut connection)
            .expect("TYPE");
        let values: Vec<String> = match kind.as_str() {
            "hash" => redis::cmd("HGETALL").arg(&key).query(&mut connection),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(&mut connection),
            other => panic!("{key} is a {other}"),
        }
        .expect("read");
        seen.extend(values);
    }
    seen
}

#[tokio::test]
async fn a_redis_dump_holds_no_user_name_and_no_live_session_id() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.encryption.keys = [key("k1", 1)].into_iter().collect();
        settings.session.hash_ids = true;
    })
    .await;
    let user = "ada.lovelace@example.com";
    let sid = login(&app.address, user).await;
    // A second device, and a counter on the first.
    let other = login(&app.address, user).await;
    assert_eq!(app.count_as(&sid).await.count, Some(1));
    assert_eq!(me_as(&app.address, &sid).await.1.as_deref(), Some(user));

    let everything = dump(&redis);
    let text = everything.join("\n");
    assert!(!text.contains("ada.lovelace"), "{text}");
    for live in [&sid, &other] {
        assert!(
            !text.contains(live.as_str()),
            "a live id in the dump: {text}"
        );
    }
    // What stays readable: the field names, the counter, the metadata.
    let mut connection = redis.connection();
    let session_keys: Vec<String> = redis::cmd("KEYS")
        .arg("sid_*")
        .query(&mut connection)
        .expect("KEYS");
    let sessions: Vec<&String> = session_keys
        .iter()
        .filter(|key| !key.starts_with("sid_user:"))
        .collect();
    assert_eq!(sessions.len(), 2, "{session_keys:?}");
    let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(sessions[0])
        .query(&mut connection)
        .expect("HGETALL");
    fields.sort();
    let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.starts_with(&["__created", "__handle", "__salt", "__seen", "__user"]),
        "{names:?}"
    );
    for (name, value) in &fields {
        match name.as_str() {
            "user" | "__user" => assert!(value.starts_with("\u{1}v1:k1:"), "{name} = {value:?}"),
            "count" => assert_eq!(value, "1"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn four_hundred_concurrent_increments_over_two_sealed_nodes_lose_none() {
    const REQUESTS: i64 = 400;
    let redis = RedisServer::start();
    let keys = [key("k1", 1)];
    let nodes = Arc::new([
        sealed_node(&redis, &keys, true).await,
        sealed_node(&redis, &keys, true).await,
    ]);
    // A sealed field beside the counter: the session is a sealed one.
    let sid = login(&nodes[0].address, "ada").await;
    let gate = Arc::new(Semaphore::new(48));
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let (nodes, gate, sid) = (Arc::clone(&nodes), Arc::clone(&gate), sid.clone());
        requests.spawn(async move {
            let _slot = gate.acquire_owned().await.expect("semaphore open");
            nodes[usize::try_from(i % 2).expect("0 or 1")]
                .count_as(&sid)
                .await
        });
    }
    let replies = requests.join_all().await;
    assert!(replies.iter().all(|reply| reply.status == StatusCode::OK));
    let mut counts: Vec<i64> = replies
        .iter()
        .map(|reply| reply.count.expect("a count"))
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=REQUESTS).collect::<Vec<i64>>(),
        "0 lost, 0 doubled"
    );
    assert_eq!(
        me_as(&nodes[1].address, &sid).await.1.as_deref(),
        Some("ada"),
        "the sealed user survived 400 counter writes"
    );
}

#[tokio::test]
async fn a_rotated_ring_reads_old_values_and_rewrites_them_under_the_new_key() {
    let redis = RedisServer::start();
    let old = sealed_node(&redis, &[key("k1", 1)], true).await;
    let both = sealed_node(&redis, &[key("k2", 2), key("k1", 1)], true).await;
    let only_new = sealed_node(&redis, &[key("k2", 2)], true).await;

    let rewritten = login(&old.address, "ada").await;
    let untouched = login(&old.address, "bob").await;
    let session_key = format!("sid_{rewritten}");
    assert!(
        hget(&redis, &session_key, "user")
            .expect("stored")
            .starts_with("\u{1}v1:k1:")
    );

    // The node with k2 first reads k1's values, and seals what it writes
    // under k2: a login on that session rewrites every sealed field.
    assert_eq!(
        me_as(&both.address, &rewritten).await.1.as_deref(),
        Some("ada")
    );
    let response = bare_client()
        .post(both.url("/login"))
        .header("cookie", format!("sid={rewritten}"))
        .json(&serde_json::json!({ "user": "ada" }))
        .send()
        .await
        .expect("POST /login");
    assert_eq!(response.status(), StatusCode::OK);
    let renewed = sid_set(response.headers()).expect("a renewed id");
    let renewed_key = format!("sid_{renewed}");
    for field in ["user", "__user"] {
        let value = hget(&redis, &renewed_key, field).expect("written by the login");
        assert!(value.starts_with("\u{1}v1:k2:"), "{field} = {value:?}");
    }
    // A node with only k2 reads the rewritten session...
    assert_eq!(
        me_as(&only_new.address, &renewed).await.1.as_deref(),
        Some("ada")
    );
    // ... and the session never rewritten is gone for it: a fresh session
    // and a removal cookie, never a 5xx. It is left in Redis for nodes
    // that still hold k1.
    let (status, user, cookie) = me_as(&only_new.address, &untouched).await;
    assert_eq!(
        (status, user, cookie.as_deref()),
        (StatusCode::OK, None, Some(""))
    );
    assert_eq!(
        me_as(&both.address, &untouched).await.1.as_deref(),
        Some("bob")
    );
}

#[tokio::test]
async fn turning_encryption_on_logs_nobody_out_and_turning_plaintext_off_ends_the_migration() {
    let redis = RedisServer::start();
    let plain = spawn_app_with(redis.url(), |_| {}).await;
    let migrating = sealed_node(&redis, &[key("k1", 1)], true).await;
    let strict = sealed_node(&redis, &[key("k1", 1)], false).await;

    let sid = login(&plain.address, "ada").await;
    let session_key = format!("sid_{sid}");
    assert_eq!(hget(&redis, &session_key, "user").as_deref(), Some("ada"));
    let never_written = login(&plain.address, "bob").await;

    // Encryption on: the plaintext session still reads...
    assert_eq!(
        me_as(&migrating.address, &sid).await.1.as_deref(),
        Some("ada")
    );
    // ... and a write seals it, with the counter left plain.
    let count = migrating.count_as(&sid).await;
    assert_eq!(count.count, Some(1));
    let response = bare_client()
        .post(migrating.url("/login"))
        .header("cookie", format!("sid={sid}"))
        .json(&serde_json::json!({ "user": "ada" }))
        .send()
        .await
        .expect("POST /login");
    let sealed = sid_set(response.headers()).expect("renewed");
    let sealed_key = format!("sid_{sealed}");
    assert!(
        hget(&redis, &sealed_key, "user")
            .expect("set")
            .starts_with("\u{1}v1:k1:")
    );
    assert_eq!(hget(&redis, &sealed_key, "count").as_deref(), Some("1"));
    assert_eq!(
        migrating.count_as(&sealed).await.count,
        Some(2),
        "nobody logged out"
    );

    // The first deploy of a rollout (keys, seal_writes = false, and so
    // accept_plaintext = true) opens what sealing nodes wrote, and itself
    // writes plain values.
    let opening = spawn_app_with(redis.url(), |settings| {
        settings.session.encryption.keys = [key("k1", 1)].into_iter().collect();
        settings.session.encryption.seal_writes = false;
        settings.session.encryption.accept_plaintext = true;
    })
    .await;
    assert_eq!(
        me_as(&opening.address, &sealed).await.1.as_deref(),
        Some("ada")
    );
    let written_plain = login(&opening.address, "cy").await;
    assert_eq!(
        hget(&redis, &format!("sid_{written_plain}"), "user").as_deref(),
        Some("cy")
    );
    assert_eq!(
        me_as(&migrating.address, &written_plain).await.1.as_deref(),
        Some("cy")
    );

    // accept_plaintext off: the sealed session reads, the plain one is gone.
    assert_eq!(
        me_as(&strict.address, &sealed).await.1.as_deref(),
        Some("ada")
    );
    let (status, user, cookie) = me_as(&strict.address, &never_written).await;
    assert_eq!(
        (status, user, cookie.as_deref()),
        (StatusCode::OK, None, Some(""))
    );
}

#[tokio::test]
async fn a_value_moved_to_another_field_or_session_does_not_decrypt() {
    let redis = RedisServer::start();
    let app = sealed_node(&redis, &[key("k1", 1)], true).await;
    let ada = login(&app.address, "ada").await;
    let bob = login(&app.address, "bob").await;
    let ada_user = hget(&redis, &format!("sid_{ada}"), "user").expect("sealed");

    // HGET then HSET, as an operator with redis-cli would: bob's session
    // given ada's sealed user.
    hset(&redis, &format!("sid_{bob}"), "user", &ada_user);
    let (status, user, cookie) = me_as(&app.address, &bob).await;
    assert_eq!(
        (status, user, cookie.as_deref()),
        (StatusCode::OK, None, Some(""))
    );

    // Ada's own sealed user copied to another field of her session.
    let ada_key = format!("sid_{ada}");
    hset(&redis, &ada_key, "role", &ada_user);
    let (status, user, cookie) = me_as(&app.address, &ada).await;
    assert_eq!(
        (status, user, cookie.as_deref()),
        (StatusCode::OK, None, Some(""))
    );
}

/// `session_decrypt_failures_total{reason}` from the app's `/metrics`.
async fn decrypt_failures(app: &AppProcess, reason: &str) -> u64 {
    let text = reqwest::get(app.metrics_url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a body");
    let prefix = format!("session_decrypt_failures_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |count| count.trim().parse().expect("a count"))
}

/// A sealed value with one byte of its binary body (nonce, ciphertext and
/// tag) changed at `at` (negative: from the end).
fn flip_body_byte(sealed: &str, at: isize) -> String {
    let (head, body) = sealed.rsplit_once(':').expect("a sealed value");
    let mut bytes = URL_SAFE_NO_PAD.decode(body).expect("base64url");
    let index = usize::try_from(if at < 0 {
        isize::try_from(bytes.len()).expect("short") + at
    } else {
        at
    })
    .expect("in range");
    bytes[index] ^= 0x01;
    format!("{head}:{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[tokio::test]
async fn every_tampered_part_gets_a_fresh_session_is_counted_and_is_never_a_5xx() {
    let redis = RedisServer::start();
    let k1 = key("k1", 1);
    let app = AppProcess::start(
        &redis.url(),
        &[
            // Two keys, comma-separated, as the environment gives them.
            (
                "APP__SESSION__ENCRYPTION__KEYS",
                &format!("{k1},{}", key("k0", 9)),
            ),
        ],
    )
    .await;
    let sid = login(&app.base, "ada").await;
    let session_key = format!("sid_{sid}");
    let original = hget(&redis, &session_key, "user").expect("sealed");
    assert!(original.starts_with("\u{1}v1:k1:"));

    let cases = [
        ("version", original.replacen("v1", "v2", 1), "malformed"),
        (
            "key id unknown",
            original.replacen(":k1:", ":k7:", 1),
            "unknown_key",
        ),
        (
            "key id of another key",
            original.replacen(":k1:", ":k0:", 1),
            "tampered",
        ),
        ("nonce", flip_body_byte(&original, 0), "tampered"),
        ("ciphertext", flip_body_byte(&original, 24), "tampered"),
        ("tag", flip_body_byte(&original, -1), "tampered"),
        // Still long enough for a nonce and a tag: the tag fails.
        (
            "truncated",
            original[..original.len() - 2].to_owned(),
            "tampered",
        ),
        ("cut to the head", original[..8].to_owned(), "malformed"),
    ];
    for (part, tampered, reason) in cases {
        let before = decrypt_failures(&app, reason).await;
        hset(&redis, &session_key, "user", &tampered);
        let (status, user, cookie) = me_as(&app.base, &sid).await;
        assert_eq!(status, StatusCode::OK, "{part}");
        assert_eq!(user, None, "{part}: never the tampered value");
        assert_eq!(cookie.as_deref(), Some(""), "{part}: a removal cookie");
        assert_eq!(decrypt_failures(&app, reason).await, before + 1, "{part}");
        // Put it back: the session was left in place, and reads again.
        hset(&redis, &session_key, "user", &original);
        assert_eq!(
            me_as(&app.base, &sid).await.1.as_deref(),
            Some("ada"),
            "{part}"
        );
    }
    let log = app.log();
    assert!(
        log.contains("does not decrypt (tampered): treated as gone"),
        "{log}"
    );
    assert!(
        !log.contains(&sid) && !log.contains(&original),
        "no id, no value logged"
    );
}

#[tokio::test]
async fn a_forged_signed_cookie_costs_no_redis_command() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.cookie_signing_keys = [key("c1", 3)].into_iter().collect();
    })
    .await;
    let first = app.count_with_cookie(b"").await;
    let signed = first.sid.expect("a signed cookie");
    let (id, tag) = signed.split_once('.').expect("<id>.<tag>");
    assert_eq!((id.len(), tag.len()), (36, 43));
    assert_eq!(app.count_as(&signed).await.count, Some(2));

    let mut monitor = redis.monitor();
    let forged_tag = format!("{id}.{}", "A".repeat(43));
    let other_id = format!("{}.{tag}", session::SessionId::generate().as_str());
    for forged in [forged_tag.as_str(), other_id.as_str(), id] {
        let start = monitor.begin();
        let status = bare_client()
            .get(app.url("/me"))
            .header("cookie", format!("sid={forged}"))
            .send()
            .await
            .expect("GET /me")
            .status();
        let commands = monitor.commands_since(start);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(commands, Vec::<String>::new(), "{forged}: not looked up");
    }
    assert_eq!(
        app.count_as(&signed).await.count,
        Some(3),
        "the real one still counts"
    );
}

#[tokio::test]
async fn a_cookie_signed_by_an_older_key_comes_back_signed_by_the_current_one() {
    let redis = RedisServer::start();
    let signer = |keys: Vec<String>| {
        spawn_app_with(redis.url(), move |settings| {
            settings.session.cookie_signing_keys = keys.into_iter().collect();
            // No Max-Age: only the re-signing sends the cookie again.
            settings.session.cookie_mode = session::CookieMode::BrowserSession;
        })
    };
    let old = signer(vec![key("c1", 1)]).await;
    let rotated = signer(vec![key("c2", 2), key("c1", 1)]).await;
    let only_new = signer(vec![key("c2", 2)]).await;

    let by_old = old.count_with_cookie(b"").await.sid.expect("signed by c1");
    // A read on the rotated node: the cookie comes back signed by c2.
    let (status, _, resigned) = me_as(&rotated.address, &by_old).await;
    assert_eq!(status, StatusCode::OK);
    let resigned = resigned.expect("the cookie is sent again");
    assert_ne!(resigned, by_old);
    assert_eq!(
        resigned.split('.').next(),
        by_old.split('.').next(),
        "the same id"
    );
    // And a request signed by the current key is left alone.
    assert_eq!(me_as(&rotated.address, &resigned).await.2, None);
    // Never re-signed: a dead id (a removal instead), or a failed request.
    let dead = old.count_with_cookie(b"").await.sid.expect("signed by c1");
    let _: i64 = testkit::redis::cmd("DEL")
        .arg(format!("sid_{}", dead.split('.').next().expect("id")))
        .query(&mut redis.connection())
        .expect("DEL");
    assert_eq!(
        me_as(&rotated.address, &dead).await.2.as_deref(),
        Some(""),
        "removed"
    );
    let refused = bare_client()
        .get(rotated.url("/sessions"))
        .header("cookie", format!("sid={by_old}"))
        .send()
        .await
        .expect("GET /sessions");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "not signed in");
    assert_eq!(
        set_cookie(refused.headers(), "sid"),
        None,
        "a failed request sends nothing"
    );
    // The old key can go: the re-signed cookie still counts.
    assert_eq!(only_new.count_as(&resigned).await.count, Some(2));
    assert_eq!(
        only_new.count_as(&by_old).await.count,
        Some(1),
        "c1 alone: a fresh session"
    );
}

#[tokio::test]
async fn a_plain_user_written_into_redis_signs_nobody_in_on_a_sealed_node() {
    // Keys alone: accept_plaintext is left at its default.
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.encryption.keys = [key("k1", 1)].into_iter().collect();
    })
    .await;
    let visitor = bare_client()
        .get(app.url("/count"))
        .send()
        .await
        .expect("GET /count");
    let sid = sid_set(visitor.headers()).expect("a session");

    // Whoever can write to Redis makes their own session ada's, in plain text.
    hset(&redis, &format!("sid_{sid}"), "__user", "ada");
    hset(&redis, &format!("sid_{sid}"), "user", "ada");

    let (status, user, cookie) = me_as(&app.url(""), &sid).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user, None, "a forged plain user is refused");
    assert_eq!(
        cookie.as_deref(),
        Some(""),
        "the session counts as gone: a removal cookie"
    );
    let listed = bare_client()
        .get(app.url("/sessions"))
        .header("cookie", format!("sid={sid}"))
        .send()
        .await
        .expect("GET /sessions");
    assert_eq!(listed.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn accepting_plaintext_is_an_explicit_migration_switch_that_start_up_warns_about() {
    let redis = RedisServer::start();
    let keys = key("k1", 1);
    let strict =
        AppProcess::start(&redis.url(), &[("APP__SESSION__ENCRYPTION__KEYS", &keys)]).await;
    let migrating = AppProcess::start(
        &redis.url(),
        &[
            ("APP__SESSION__ENCRYPTION__KEYS", &keys),
            ("APP__SESSION__ENCRYPTION__ACCEPT_PLAINTEXT", "true"),
        ],
    )
    .await;
    let warning = "session.encryption.accept_plaintext is on";
    assert!(!strict.log().contains(warning), "{}", strict.log());
    let log = migrating.log();
    let line = log
        .lines()
        .find(|line| line.contains(warning))
        .unwrap_or_else(|| panic!("a warning: {log}"));
    assert!(line.contains("WARN") && line.contains("forge"), "{line}");
}
