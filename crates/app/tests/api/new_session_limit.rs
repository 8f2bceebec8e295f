//! The per-client limit on NEW sessions (`server.new_session_limit`): a
//! client past it gets 429 and writes nothing; requests on existing
//! sessions are never limited; the client is the peer, or, from a trusted
//! proxy, the right-most untrusted `X-Forwarded-For` address.

use std::time::Instant;

use app::settings::{NewSessionLimitSettings, Settings};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, RETRY_AFTER};
use session::SessionId;
use testkit::RedisServer;

use crate::helpers::{
    AppProcess, TestApp, all_keys, bare_client, browser, set_cookie, spawn_app, spawn_app_with,
};

/// An app whose clients may create `burst` new sessions, then one a
/// second: slow enough that no test below sees a refill.
async fn app_with_limit(redis: &RedisServer, burst: u32, trusted_proxies: &[&str]) -> TestApp {
    let trusted_proxies: Vec<String> = trusted_proxies.iter().map(|&p| p.to_owned()).collect();
    spawn_app_with(redis.url(), move |settings: &mut Settings| {
        settings.server.new_session_limit = NewSessionLimitSettings {
            per_second: 1,
            burst,
        };
        settings.server.trusted_proxies = trusted_proxies;
    })
    .await
}

/// The status of a `GET /count` with no cookie jar: with `cookie` as the
/// `Cookie` header and `forwarded_for` as `X-Forwarded-For`, if given.
async fn count_status(
    app: &TestApp,
    cookie: Option<&str>,
    forwarded_for: Option<&str>,
) -> StatusCode {
    let mut request = bare_client().get(app.url("/count"));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    request.send().await.expect("GET /count").status()
}

#[tokio::test]
async fn past_its_burst_a_client_gets_429_with_retry_after_and_a_json_error_and_nothing_is_written()
{
    // Arrange: the default limit, 10 new sessions a second in bursts of 1000.
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = bare_client();
    let started = Instant::now();

    // Act: new sessions (no cookie) until one is refused. The bucket
    // refills at 10 a second meanwhile, so the refusal may come a little
    // past the 1000th.
    let mut admitted: u64 = 0;
    let refused = loop {
        let response = client
            .get(app.url("/count"))
            .send()
            .await
            .expect("GET /count");
        if response.status() != StatusCode::OK {
            break response;
        }
        admitted += 1;
        let ceiling = 1000 + 10 * started.elapsed().as_secs() + 10;
        assert!(
            admitted <= ceiling,
            "{admitted} new sessions from one client in {:?}, none refused",
            started.elapsed()
        );
    };

    // Assert
    assert!(admitted >= 1000, "refused after only {admitted}");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert_eq!(set_cookie(refused.headers(), "sid"), None);
    let body: serde_json::Value = refused.json().await.expect("a JSON body");
    assert_eq!(body["error"], "too_many_new_sessions", "{body}");
    assert!(body["message"].is_string(), "{body}");
    // One key per admitted session, none for the refused one.
    assert_eq!(all_keys(&redis).len() as u64, admitted);
}

#[tokio::test]
async fn a_random_sid_cookie_or_a_sign_in_does_not_get_around_the_limit() {
    // Arrange: a client that has used up its burst of 3.
    let redis = RedisServer::start();
    let app = app_with_limit(&redis, 3, &[]).await;
    for _ in 0..3 {
        assert_eq!(count_status(&app, None, None).await, StatusCode::OK);
    }
    let keys = all_keys(&redis);
    assert_eq!(keys.len(), 3);
    let random = format!("sid={}", SessionId::generate().as_str());

    // Act: a cookie naming no session, a sign-in with none, and with one
    // that names no session.
    let counted = count_status(&app, Some(&random), None).await;
    let signed_in = bare_client()
        .post(app.url("/login"))
        .json(&serde_json::json!({ "user": "ada" }))
        .send()
        .await
        .expect("POST /login");
    let signed_in_on_random = bare_client()
        .post(app.url("/login"))
        .header(COOKIE, &random)
        .json(&serde_json::json!({ "user": "ada" }))
        .send()
        .await
        .expect("POST /login");

    // Assert: each would have created a session, and each was refused
    // before writing.
    assert_eq!(counted, StatusCode::TOO_MANY_REQUESTS);
    for refused in [signed_in, signed_in_on_random] {
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers().contains_key(RETRY_AFTER));
        assert_eq!(set_cookie(refused.headers(), "sid"), None);
        let body: serde_json::Value = refused.json().await.expect("a JSON body");
        assert_eq!(body["error"], "too_many_new_sessions", "{body}");
    }
    let mut after = all_keys(&redis);
    let mut before = keys;
    after.sort();
    before.sort();
    assert_eq!(after, before, "no session, and no user index, was written");
}

#[tokio::test]
async fn requests_on_existing_sessions_are_never_limited_even_past_the_limit() {
    // Arrange: a browser with a session, then the client's burst of 2 used
    // up.
    let redis = RedisServer::start();
    let app = app_with_limit(&redis, 2, &[]).await;
    let jar = browser();
    assert_eq!(app.count(&jar).await.count, Some(1));
    assert_eq!(count_status(&app, None, None).await, StatusCode::OK);
    assert_eq!(
        count_status(&app, None, None).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Act: 20 counts on the session (at one new session a second, a
    // limit applied to them would refuse most), a sign-in on it (a
    // renewal, not a creation), and reads.
    let mut counts = Vec::new();
    for _ in 0..20 {
        let reply = app.count(&jar).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        counts.push(reply.count);
    }
    let (login, _) = app.login(&jar, "ada").await;
    let me = app.me(&jar).await;
    let after_login = app.count(&jar).await;

    // Assert
    assert_eq!(counts, (2..=21).map(Some).collect::<Vec<_>>());
    assert_eq!(login, StatusCode::OK);
    assert_eq!(me["user"], "ada", "{me}");
    assert_eq!(
        after_login.count,
        Some(22),
        "the session moved with its count"
    );
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    // Arrange: 127.0.0.1 is not among the trusted proxies.
    let redis = RedisServer::start();
    let app = app_with_limit(&redis, 3, &["10.0.0.0/8"]).await;

    // Act: each request claims to come from another client.
    let mut statuses = Vec::new();
    for n in 1..=4 {
        let claimed = format!("203.0.113.{n}");
        statuses.push(count_status(&app, None, Some(&claimed)).await);
    }

    // Assert: all counted against the peer, 127.0.0.1.
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(all_keys(&redis).len(), 3);
}

#[tokio::test]
async fn a_trusted_proxys_x_forwarded_for_names_the_client() {
    // Arrange: the test client plays the proxy, at 127.0.0.1.
    let redis = RedisServer::start();
    let app = app_with_limit(&redis, 2, &["127.0.0.1", "10.0.0.0/8"]).await;
    let ok = StatusCode::OK;
    let refused = StatusCode::TOO_MANY_REQUESTS;

    // Act and assert, request by request: (X-Forwarded-For, status).
    let steps: [(Option<&str>, StatusCode); 9] = [
        // 203.0.113.7 uses up its burst.
        (Some("203.0.113.7"), ok),
        (Some("203.0.113.7"), ok),
        (Some("203.0.113.7"), refused),
        // What it wrote left of the proxy's entry is not believed.
        (Some("198.51.100.1, 203.0.113.7"), refused),
        // Another client has its own burst.
        (Some("203.0.113.8"), ok),
        // A second trusted hop (10.1.2.3) vouches for the client left of it.
        (Some("203.0.113.7, 10.1.2.3"), refused),
        (Some("203.0.113.9, 10.1.2.3"), ok),
        // No header: the client is the proxy itself.
        (None, ok),
        (None, ok),
    ];
    for (forwarded_for, expected) in steps {
        assert_eq!(
            count_status(&app, None, forwarded_for).await,
            expected,
            "X-Forwarded-For: {forwarded_for:?}"
        );
    }
    assert_eq!(
        all_keys(&redis).len(),
        6,
        "one session per admitted request"
    );
}

#[tokio::test]
async fn a_limit_of_0_turns_it_off() {
    // Arrange: 0 for either number, in settings and from the environment.
    let redis = RedisServer::start();
    let mut apps = Vec::new();
    for (per_second, burst) in [(0, 2), (1, 0)] {
        apps.push(
            spawn_app_with(redis.url(), move |settings: &mut Settings| {
                settings.server.new_session_limit = NewSessionLimitSettings { per_second, burst };
            })
            .await,
        );
    }
    let process = AppProcess::start(
        &redis.url(),
        &[
            ("APP__SERVER__NEW_SESSION_LIMIT__PER_SECOND", "0"),
            ("APP__SERVER__NEW_SESSION_LIMIT__BURST", "2"),
        ],
    )
    .await;

    // Act: 10 new sessions through each.
    let mut statuses = Vec::new();
    for app in &apps {
        for _ in 0..10 {
            statuses.push(count_status(app, None, None).await);
        }
    }
    for _ in 0..10 {
        let response = bare_client()
            .get(process.url("/count"))
            .send()
            .await
            .expect("GET /count");
        statuses.push(response.status());
    }

    // Assert
    assert_eq!(statuses, vec![StatusCode::OK; 30]);
    assert_eq!(all_keys(&redis).len(), 30);
}
