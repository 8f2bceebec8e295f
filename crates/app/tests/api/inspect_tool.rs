//! `session-inspect`: the operator's read of one sealed session.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use testkit::RedisServer;

use crate::helpers::{bare_client, set_cookie, spawn_app_with};

fn key(id: &str, byte: u8) -> String {
    format!(
        "{id}:{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

/// Runs the tool against `redis` with `keys` (comma-separated), the id as
/// its argument or on stdin: its exit code, stdout and stderr.
fn run_tool(
    redis: &RedisServer,
    keys: &str,
    id: &str,
    on_stdin: bool,
) -> (Option<i32>, String, String) {
    run_tool_with(redis, keys, id, on_stdin, &[])
}

/// [`run_tool`] with more environment.
fn run_tool_with(
    redis: &RedisServer,
    keys: &str,
    id: &str,
    on_stdin: bool,
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_session-inspect"));
    command
        .envs(env.iter().copied())
        .env("APP__REDIS__URL", redis.url())
        .env("APP__SESSION__ENCRYPTION__KEYS", keys)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !on_stdin {
        command.arg(id);
    }
    let mut child = command.spawn().expect("start session-inspect");
    let mut stdin = child.stdin.take().expect("stdin");
    if on_stdin {
        stdin.write_all(id.as_bytes()).expect("write the id");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("it ends");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn it_prints_a_sealed_session_decrypted_and_never_writes() {
    let redis = RedisServer::start();
    let k1 = key("k1", 1);
    let ring = k1.clone();
    let app = spawn_app_with(redis.url(), move |settings| {
        settings.session.encryption.keys = [ring].into_iter().collect();
    })
    .await;
    let response = bare_client()
        .post(app.url("/login"))
        .json(&serde_json::json!({ "user": "ada" }))
        .send()
        .await
        .expect("POST /login");
    let cookie = set_cookie(response.headers(), "sid").expect("a cookie");
    let sid = cookie
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("sid="))
        .expect("sid=")
        .to_owned();
    assert_eq!(app.count_as(&sid).await.count, Some(1));

    let mut monitor = redis.monitor();
    let start = monitor.begin();
    let (code, out, err) = run_tool(&redis, &k1, &sid, false);
    let commands = monitor.commands_since(start);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("user = \"ada\"  (sealed, key k1)"), "{out}");
    assert!(out.contains("__user = \"ada\"  (sealed, key k1)"), "{out}");
    assert!(out.contains("count = \"1\"  (plain)"), "{out}");
    assert!(out.contains("signed in, handle "), "{out}");
    for write in [
        "evalsha", "eval", "hset", "hdel", "del", "unlink", "rename", "script", "pexpire",
    ] {
        assert!(
            !commands.iter().any(|c| c == write),
            "{write} in {commands:?}"
        );
    }
    assert!(commands.iter().any(|c| c == "hgetall"), "{commands:?}");

    // The id on stdin, as a signed cookie would hand it over too.
    let (code, out, _) = run_tool(&redis, &k1, &format!("{sid}\n"), true);
    assert_eq!(code, Some(0));
    assert!(out.contains("user = \"ada\""), "{out}");

    // A ring without the key that sealed it says so, and exits 3.
    let (code, out, _) = run_tool(&redis, &key("k2", 2), &sid, false);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(
            "user UNREADABLE: sealed under key \"k1\", which this ring (k2) does not hold"
        ),
        "{out}"
    );
    assert!(!out.contains("ada"), "{out}");

    // No such session: 2. Not an id: 1. No keys: 1, saying so.
    let (code, out, _) = run_tool(&redis, &k1, session::SessionId::generate().as_str(), false);
    assert_eq!(code, Some(2), "{out}");
    let (code, _, err) = run_tool(&redis, &k1, "sid_*", false);
    assert_eq!(code, Some(1));
    assert!(err.contains("not a session id"), "{err}");
    let (code, _, err) = run_tool(&redis, "", &sid, false);
    assert_eq!(code, Some(1));
    assert!(err.contains("no encryption keys"), "{err}");
}

#[tokio::test]
async fn with_the_hash_ids_migration_on_it_reads_a_raw_session_and_moves_nothing() {
    let redis = RedisServer::start();
    let plain = spawn_app_with(redis.url(), |_| {}).await;
    let sid = plain.count_with_cookie(b"").await.sid.expect("a session");
    let raw_key = format!("sid_{sid}");
    let (code, out, err) = run_tool_with(
        &redis,
        &key("k1", 1),
        &sid,
        false,
        &[
            ("APP__SESSION__HASH_IDS", "true"),
            ("APP__SESSION__ACCEPT_RAW_KEYS", "true"),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("at {raw_key}")), "{out}");
    assert!(out.contains("count = \"1\"  (plain)"), "{out}");
    let still_raw: i64 = testkit::redis::cmd("EXISTS")
        .arg(&raw_key)
        .query(&mut redis.connection())
        .expect("EXISTS");
    assert_eq!(still_raw, 1, "the tool moved nothing");
}
