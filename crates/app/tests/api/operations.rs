//! Operating the app: `/metrics` after a known workload, graceful shutdown
//! on SIGTERM, and the access log. Each test runs the real binary in a
//! process of its own, so its metrics are its own.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use testkit::RedisServer;

use crate::helpers::AppProcess;

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The value of `name` whose labels include `labels`; 0 if absent (a
/// counter that never moved is not rendered).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
        .sum()
}

/// The `sid` cookie a response set.
fn sid_of(response: &reqwest::Response) -> String {
    response
        .cookies()
        .find(|c| c.name() == "sid")
        .map(|c| c.value().to_owned())
        .expect("a sid")
}

async fn scrape(app: &AppProcess) -> Vec<Sample> {
    let response = reqwest::get(app.url("/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&response.text().await.expect("a body"))
}

#[tokio::test]
async fn a_scrape_after_a_known_workload_shows_the_expected_counts() {
    let redis = RedisServer::start();
    let app = AppProcess::start(&redis.url(), &[]).await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    for _ in 0..3 {
        client
            .get(app.url("/count"))
            .send()
            .await
            .expect("GET /count");
    }
    client
        .post(app.url("/login"))
        .json(&serde_json::json!({ "user": "ada" }))
        .send()
        .await
        .expect("POST /login");
    client.get(app.url("/me")).send().await.expect("GET /me");
    client
        .post(app.url("/logout"))
        .send()
        .await
        .expect("POST /logout");
    client
        .get(app.url("/no-such-page"))
        .send()
        .await
        .expect("GET 404");
    // Invented methods share one label: they cannot grow the metrics.
    for invented in ["BREW", "WHEN", "PROPFIND"] {
        client
            .request(
                reqwest::Method::from_bytes(invented.as_bytes()).expect("a token"),
                app.url("/no-such-page"),
            )
            .send()
            .await
            .expect("an invented method");
    }

    let samples = scrape(&app).await;
    let requests = |route: &str, status: &str| {
        value(
            &samples,
            "http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("/count", "200"), 3.0);
    assert_eq!(requests("/login", "200"), 1.0);
    assert_eq!(requests("/me", "200"), 1.0);
    assert_eq!(requests("/logout", "200"), 1.0);
    let get_404 = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(value(&samples, "http_requests_total", &get_404), 1.0);
    let invented = value(&samples, "http_requests_total", &[("method", "other")]);
    assert_eq!(
        invented, 3.0,
        "BREW, WHEN and PROPFIND all count as `other`"
    );
    assert!(
        !samples
            .iter()
            .any(|sample| sample.labels.values().any(|v| v == "BREW")),
        "no label per invented method"
    );
    // The first /count created the session; login loaded it (who was
    // signed in) and renewed it; /me loaded it; logout loaded it (to learn
    // its user, whose index entry goes too) and purged it. /count's increments happen at the call, so the commit
    // has nothing left to write.
    assert_eq!(value(&samples, "session_creations_total", &[]), 1.0);
    assert_eq!(value(&samples, "session_renewals_total", &[]), 1.0);
    assert_eq!(value(&samples, "session_loads_total", &[]), 3.0);
    assert_eq!(value(&samples, "session_purges_total", &[]), 1.0);
    assert_eq!(
        value(&samples, "session_commits_total", &[("op", "renew")]),
        1.0
    );
    assert_eq!(
        value(&samples, "session_commits_total", &[("op", "purge")]),
        1.0
    );
    assert_eq!(value(&samples, "session_commits_total", &[]), 2.0);
    // Round trips: PING and two SCRIPT LOADs at start-up, 3 counts, the
    // login's four (the epoch, the load, the renew, joining the index),
    // /me's load, and the logout's three (the load, the UNLINK, dropping
    // the entry).
    assert_eq!(
        value(&samples, "redis_round_trip_duration_seconds_count", &[]),
        14.0
    );
    let fast = value(
        &samples,
        "redis_round_trip_duration_seconds_bucket",
        &[("le", "0.1")],
    );
    assert_eq!(fast, 14.0, "loopback round trips take well under 100 ms");
    assert_eq!(value(&samples, "redis_errors_total", &[]), 0.0);
    assert!(value(&samples, "redis_pool_connections", &[]) >= 1.0);
    assert_eq!(value(&samples, "redis_pool_waiting_callers", &[]), 0.0);
    assert!(
        value(
            &samples,
            "http_request_duration_seconds_count",
            &[("route", "/count")]
        ) == 3.0
    );
}

#[tokio::test]
async fn redis_timeouts_and_errors_are_counted() {
    let redis = RedisServer::start();
    let app = AppProcess::start(&redis.url(), &[("APP__REDIS__RESPONSE_TIMEOUT_MS", "300")]).await;
    let session = reqwest::get(app.url("/count")).await.expect("GET /count");
    let sid = sid_of(&session);

    redis.pause();
    let stalled = reqwest::Client::new()
        .get(app.url("/count"))
        .header("cookie", format!("sid={sid}"))
        .send()
        .await
        .expect("GET /count");
    redis.resume();

    assert_eq!(stalled.status(), StatusCode::SERVICE_UNAVAILABLE);
    let samples = scrape(&app).await;
    assert_eq!(value(&samples, "redis_timeouts_total", &[]), 1.0);
    assert_eq!(
        value(&samples, "redis_errors_total", &[("kind", "unavailable")]),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "http_requests_total",
            &[("route", "/count"), ("status", "503")]
        ),
        1.0
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_cleanly() {
    let redis = RedisServer::start();
    let mut app = AppProcess::start(
        &redis.url(),
        &[
            ("APP__REDIS__RESPONSE_TIMEOUT_MS", "10000"),
            ("APP__SERVER__SHUTDOWN_GRACE_SECS", "10"),
        ],
    )
    .await;
    let first = reqwest::get(app.url("/count")).await.expect("GET /count");
    let sid = sid_of(&first);

    // A request held in flight: Redis is frozen under it.
    redis.pause();
    let in_flight = {
        let url = app.url("/count");
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("cookie", format!("sid={sid}"))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let refused = std::net::TcpStream::connect(("127.0.0.1", app.port));
    assert!(
        refused.is_err(),
        "new connections are refused after SIGTERM"
    );
    redis.resume();
    let finished = in_flight
        .await
        .expect("the task")
        .expect("the in-flight request got an answer");
    assert_eq!(finished.status(), StatusCode::OK);
    let body: serde_json::Value = finished.json().await.expect("JSON");
    assert_eq!(body["count"], 2, "it completed its work");
    assert_eq!(app.exit_code(Duration::from_secs(10)).await, Some(0));
    assert!(app.log().contains("Redis pool closed"), "{}", app.log());
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_and_only_a_short_hash_of_the_sid() {
    let redis = RedisServer::start();
    let mut app = AppProcess::start(&redis.url(), &[]).await;
    let first = reqwest::get(app.url("/count")).await.expect("GET /count");
    let sid = sid_of(&first);
    for path in ["/count", "/me"] {
        reqwest::Client::new()
            .get(app.url(path))
            .header("cookie", format!("sid={sid}"))
            .send()
            .await
            .expect("a request");
    }
    app.terminate();
    app.exit_code(Duration::from_secs(10)).await;

    let log = app.log();
    let hash = app::telemetry::short_hash(&sid);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("actix_web::middleware::logger"))
        .collect();
    assert_eq!(lines.len(), 4, "healthz probe + 3 requests: {log}");
    assert!(
        lines[1].contains(r#""GET /count HTTP/1.1" 200"#) && lines[1].contains("sid=-"),
        "{log}"
    );
    assert!(lines[2].contains(&format!("sid={hash}")), "{log}");
    assert!(lines[3].contains(r#""GET /me HTTP/1.1" 200"#), "{log}");
    assert!(!log.contains(&sid), "the whole id is never logged: {log}");
}
