//! Hostile and broken cookies: each gets a clean answer, never a 5xx, and
//! the node keeps serving.

use reqwest::StatusCode;
use testkit::RedisServer;

use crate::helpers::{TestApp, all_keys, browser, spawn_app, stored_fields};

/// After any bad input: a normal client still counts 1, 2.
async fn assert_still_serving(app: &TestApp) {
    let client = browser();
    assert_eq!(app.count(&client).await.count, Some(1));
    assert_eq!(app.count(&client).await.count, Some(2));
}

/// A bad cookie gets 200, a fresh session counting 1, and a new sid.
async fn assert_fresh_session(app: &TestApp, cookie: &[u8]) {
    let reply = app.count_with_cookie(cookie).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "cookie {:?}",
        String::from_utf8_lossy(cookie)
    );
    assert_eq!(reply.count, Some(1));
    let sid = reply.sid.expect("a fresh sid");
    assert!(session::SessionId::parse(&sid).is_some(), "{sid}");
}

#[tokio::test]
async fn an_empty_sid_gets_a_fresh_session() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    assert_fresh_session(&app, b"sid=").await;
    assert_fresh_session(&app, b"sid").await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_10_kb_sid_gets_a_fresh_session() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let huge = format!("sid={}", "a".repeat(10 * 1024));
    assert_fresh_session(&app, huge.as_bytes()).await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn glob_characters_get_a_fresh_session_and_touch_no_other_session() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let victim = app.count(&browser()).await.sid.expect("a session");

    for glob in ["sid=*", "sid=sid_*", "sid=?", "sid=[a-z]*", "sid=\\*"] {
        assert_fresh_session(&app, glob.as_bytes()).await;
    }

    assert_eq!(
        stored_fields(&redis, &victim),
        vec![("count".to_owned(), "1".to_owned())]
    );
    assert!(
        all_keys(&redis)
            .iter()
            .all(|key| !key.contains(['*', '?', '[']))
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn non_utf8_cookie_bytes_get_a_fresh_session() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    assert_fresh_session(&app, b"sid=\xff\xfe\xfd").await;
    assert_fresh_session(&app, b"other=\xc3\x28; sid=\x80").await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn two_different_sid_cookies_get_a_fresh_session_and_neither_is_touched() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let first = app.count(&browser()).await.sid.expect("a session");
    let second = app.count(&browser()).await.sid.expect("a session");

    assert_fresh_session(&app, format!("sid={first}; sid={second}").as_bytes()).await;

    for sid in [&first, &second] {
        assert_eq!(
            stored_fields(&redis, sid),
            vec![("count".to_owned(), "1".to_owned())]
        );
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn the_same_sid_cookie_twice_is_the_same_session() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let sid = app.count(&browser()).await.sid.expect("a session");

    let reply = app
        .count_with_cookie(format!("sid={sid}; sid={sid}").as_bytes())
        .await;

    assert_eq!(reply.count, Some(2));
    assert_eq!(reply.sid.as_deref(), Some(sid.as_str()));
}

#[tokio::test]
async fn a_64_kb_cookie_header_of_junk_gets_a_fresh_session() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let huge = format!("junk={}", "x".repeat(64 * 1024));
    assert_fresh_session(&app, huge.as_bytes()).await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_real_sid_is_found_inside_a_64_kb_cookie_header() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let sid = app.count(&browser()).await.sid.expect("a session");
    let huge = format!("junk={}; sid={sid}", "x".repeat(64 * 1024));

    let reply = app.count_with_cookie(huge.as_bytes()).await;

    assert_eq!(reply.count, Some(2));
    assert_eq!(reply.sid.as_deref(), Some(sid.as_str()));
}

#[tokio::test]
async fn a_cookie_header_beyond_the_server_limit_gets_431_and_the_node_keeps_serving() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let address = app.address.trim_start_matches("http://").to_owned();

    // Raw bytes, so that the whole oversized head is sent before we read.
    let status_line = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        let mut request = b"GET /count HTTP/1.1\r\nHost: test\r\nCookie: junk=".to_vec();
        request.extend(std::iter::repeat_n(b'x', 256 * 1024));
        request.extend_from_slice(b"\r\n\r\n");
        stream.write_all(&request).expect("send");
        let mut reply = [0_u8; 64];
        let read = stream.read(&mut reply).expect("read");
        String::from_utf8_lossy(&reply[..read])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    })
    .await
    .expect("the raw request");

    assert_eq!(status_line, "HTTP/1.1 431 Request Header Fields Too Large");
    assert_still_serving(&app).await;
}
