//! `GET /count`: the Nest contract, and where the Nest design was wrong.

use std::time::Duration;

use reqwest::StatusCode;
use testkit::RedisServer;

use crate::helpers::{
    all_keys, browser, set_cookie, spawn_app, spawn_app_with, stored_fields, stored_hash,
    stored_ttl,
};

#[tokio::test]
async fn count_starts_at_one_and_goes_up_with_the_cookie() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();

    let mut seen = Vec::new();
    for _ in 0..3 {
        let reply = app.count(&client).await;
        assert_eq!(reply.status, StatusCode::OK);
        seen.push(reply.count);
    }
    assert_eq!(seen, vec![Some(1), Some(2), Some(3)]);
}

#[tokio::test]
async fn the_session_is_a_sid_hash_with_a_count_field_and_a_30_minute_ttl() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    app.count(&client).await;
    let reply = app.count(&client).await;

    let sid = reply.sid.expect("the cookie is set on every response");
    let hash = stored_hash(&redis, &sid);
    let names: Vec<&str> = hash.iter().map(|(name, _)| name.as_str()).collect();
    // The Nest layout's `count`, plus the session's creation time (for the
    // absolute timeout) and last write, in ms since the epoch.
    assert_eq!(names, ["__created", "__seen", "count"]);
    assert_eq!(hash[2].1, "2");
    let created: u64 = hash[0].1.parse().expect("ms");
    let seen: u64 = hash[1].1.parse().expect("ms");
    assert!(created > 1_700_000_000_000 && seen >= created, "{hash:?}");
    let ttl = stored_ttl(&redis, &sid);
    assert!((1..=1800).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn the_cookie_is_httponly_lax_rooted_and_lives_as_long_as_the_session() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;

    let reply = app.count(&browser()).await;

    let cookie = set_cookie(&reply.headers, "sid").expect("Set-Cookie: sid");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=1800"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "not Secure unless configured: {cookie}"
    );
    assert_eq!(
        reply.headers.get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
}

#[tokio::test]
async fn the_cookie_is_secure_when_configured() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.cookie_secure = true
    })
    .await;

    let reply = app.count(&browser()).await;

    let cookie = set_cookie(&reply.headers, "sid").expect("Set-Cookie: sid");
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn every_response_says_which_node_served_it() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();

    for path in ["/count", "/healthz", "/readyz", "/no-such-route"] {
        let response = client.get(app.url(path)).send().await.expect("request");
        let served_by = response
            .headers()
            .get("x-served-by")
            .map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(served_by.as_deref(), Some(app.node_name.as_str()), "{path}");
    }
}

#[tokio::test]
async fn with_served_by_header_off_no_response_names_the_node() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.server.served_by_header = false;
    })
    .await;
    let client = browser();

    for path in ["/count", "/healthz", "/", "/no-such-route"] {
        let response = client.get(app.url(path)).send().await.expect("request");
        assert_eq!(response.headers().get("x-served-by"), None, "{path}");
    }
    // The session still works: the first /count above made it, this is 2.
    assert_eq!(app.count(&client).await.count, Some(2));
}

#[tokio::test]
async fn session_ids_are_random_v4_uuids() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;

    let first = app.count(&browser()).await.sid.expect("sid");
    let second = app.count(&browser()).await.sid.expect("sid");

    assert_ne!(first, second);
    for sid in [&first, &second] {
        let parsed = session::SessionId::parse(sid);
        assert!(parsed.is_some(), "{sid} is not a canonical v4 uuid");
    }
}

#[tokio::test]
async fn a_forged_sid_is_never_adopted() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    // Well-formed, but no session of ours: what a fixation attacker plants.
    let forged = session::SessionId::generate();

    let reply = app.count_as(forged.as_str()).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.count, Some(1));
    let issued = reply.sid.expect("a fresh sid");
    assert_ne!(issued, forged.as_str());
    assert_eq!(
        all_keys(&redis),
        vec![format!("sid_{issued}")],
        "nothing is stored under the forged id"
    );
}

#[tokio::test]
async fn an_expired_session_starts_over_at_one_with_a_new_id() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.idle_timeout_secs = 1
    })
    .await;
    let client = browser();
    app.count(&client).await;
    let before = app.count(&client).await;
    assert_eq!(before.count, Some(2));

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = app.count(&client).await;

    assert_eq!(after.count, Some(1));
    assert_ne!(after.sid, before.sid, "an expired id is not revived");
}

#[tokio::test]
async fn each_request_slides_the_expiry() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.idle_timeout_secs = 2
    })
    .await;
    let client = browser();

    // Five requests 1.2 s apart: 4.8 s in all, more than twice the 2 s TTL,
    // but never 2 s without a request.
    let mut last = None;
    for _ in 0..5 {
        last = app.count(&client).await.count;
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }

    assert_eq!(last, Some(5));
}

#[tokio::test]
async fn a_session_written_by_the_nest_service_carries_on() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let sid = session::SessionId::generate();
    // The Nest SessionService's write: HSET per field, then EXPIRE.
    let mut connection = redis.connection();
    let key = format!("sid_{}", sid.as_str());
    let () = testkit::redis::cmd("HSET")
        .arg(&key)
        .arg("count")
        .arg("7")
        .query(&mut connection)
        .expect("HSET");
    let () = testkit::redis::cmd("EXPIRE")
        .arg(&key)
        .arg(1800)
        .query(&mut connection)
        .expect("EXPIRE");

    let reply = app.count_as(sid.as_str()).await;

    assert_eq!(reply.count, Some(8));
    assert_eq!(reply.sid.as_deref(), Some(sid.as_str()));
    assert_eq!(
        stored_fields(&redis, sid.as_str()),
        vec![("count".to_owned(), "8".to_owned())]
    );
}

#[tokio::test]
async fn a_corrupt_count_gets_a_fresh_session_and_the_old_one_is_left_alone() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let sid = session::SessionId::generate();
    let key = format!("sid_{}", sid.as_str());
    let mut connection = redis.connection();
    let () = testkit::redis::cmd("HSET")
        .arg(&key)
        .arg("count")
        .arg("not a number")
        .arg("user")
        .arg("ada")
        .query(&mut connection)
        .expect("HSET");

    let reply = app.count_as(sid.as_str()).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.count, Some(1));
    assert_ne!(reply.sid.as_deref(), Some(sid.as_str()));
    assert_eq!(
        stored_fields(&redis, sid.as_str()),
        vec![
            ("count".to_owned(), "not a number".to_owned()),
            ("user".to_owned(), "ada".to_owned())
        ],
        "nothing of the old session is lost or half-written"
    );
}

#[tokio::test]
async fn a_session_key_of_another_type_is_a_500_fault_not_a_silent_fresh_session() {
    // Before the fix, WRONGTYPE counted as bad data in the session, and
    // /count quietly moved the user to a fresh one, hiding the fault.
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let sid = session::SessionId::generate();
    let key = format!("sid_{}", sid.as_str());
    let () = testkit::redis::cmd("SET")
        .arg(&key)
        .arg("another app's string")
        .query(&mut redis.connection())
        .expect("SET");

    let response = crate::helpers::bare_client()
        .get(app.url("/count"))
        .header(reqwest::header::COOKIE, format!("sid={}", sid.as_str()))
        .send()
        .await
        .expect("GET /count");

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        response.headers().get("retry-after").is_none(),
        "not an outage"
    );
    assert_eq!(
        set_cookie(response.headers(), "sid"),
        None,
        "no fresh session"
    );
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "session_store_fault", "{body}");
    assert_eq!(
        all_keys(&redis),
        vec![key.clone()],
        "nothing else was created"
    );
    let value: String = testkit::redis::cmd("GET")
        .arg(&key)
        .query(&mut redis.connection())
        .expect("GET");
    assert_eq!(value, "another app's string", "left alone");
}

#[tokio::test]
async fn an_acl_that_denies_a_command_is_a_500_misconfiguration_not_a_503_outage() {
    // A user that may do everything the store needs but HINCRBY: every
    // /count is denied inside the script. Before the fix it was a 503 with
    // Retry-After, as if Redis were briefly down.
    let redis = RedisServer::start();
    let rules =
        session::RedisSessionStore::acl_rules("sid_", "user_sessions:").replace(" +hincrby", "");
    let mut command = testkit::redis::cmd("ACL");
    command.arg("SETUSER").arg("counter").arg("on").arg(">pw");
    for rule in rules.split(' ') {
        command.arg(rule);
    }
    let () = command.query(&mut redis.connection()).expect("ACL SETUSER");
    let app = spawn_app_with(redis.url(), |settings| {
        settings.redis.username = Some("counter".to_owned());
        settings.redis.password = Some("pw".to_owned());
    })
    .await;

    let first = browser().get(app.url("/count")).send().await.expect("GET");
    assert_eq!(first.status(), StatusCode::OK, "a create needs no HINCRBY");
    let client = browser();
    client.get(app.url("/count")).send().await.expect("GET");
    let denied = client.get(app.url("/count")).send().await.expect("GET");

    assert_eq!(denied.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        denied.headers().get("retry-after").is_none(),
        "not an outage"
    );
    let body: serde_json::Value = denied.json().await.expect("JSON");
    assert_eq!(body["error"], "session_store_misconfigured", "{body}");
}
