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
    let response = reqwest::get(app.metrics_url("/metrics"))
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
    // Round trips: at start-up a PING, the maxmemory-policy check (CONFIG
    // GET), a TIME (the clock check) and two pipelined batches of SCRIPT
    // LOADs; then 3 counts, the login's four (the epoch, the load, the
    // renew, joining the index), /me's load, and the logout's four (the
    // load, marking its index entry, the UNLINK, dropping the entry).
    assert_eq!(
        value(&samples, "redis_round_trip_duration_seconds_count", &[]),
        17.0
    );
    let fast = value(
        &samples,
        "redis_round_trip_duration_seconds_bucket",
        &[("le", "0.1")],
    );
    assert_eq!(fast, 17.0, "loopback round trips take well under 100 ms");
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
    // The in-flight request ended after SIGTERM: its line is written before
    // the process exits (by the writer's next drain, or at the latest by
    // the flush at shutdown; the unit test
    // everything_queued_is_written_once_the_guard_is_dropped holds the latter).
    let log = app.log();
    let counted = access_lines(&log)
        .filter(|line| line.request == "GET /count HTTP/1.1")
        .count();
    assert_eq!(counted, 2, "the first request and the in-flight one: {log}");
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

/// One access log line, split into its fields (see `crates/app/src/access_log.rs`).
#[derive(Debug)]
struct AccessLine<'a> {
    peer: &'a str,
    request: &'a str,
    status: &'a str,
    bytes: &'a str,
    millis: &'a str,
    sid: &'a str,
    agent: &'a str,
}

/// The access log lines in `log`, each checked to be whole and well-formed:
/// `[<timestamp> INFO  actix_web::middleware::logger] <peer> "<request
/// line>" <status> <bytes> <ms>ms sid=<8 hex or -> "<User-Agent>"`, the peer
/// an IP address without its port.
fn access_lines(log: &str) -> impl Iterator<Item = AccessLine<'_>> {
    // By the line's own header: another line may quote the target name.
    let is_access_line = |line: &&str| {
        line.split_once("] ")
            .is_some_and(|(header, _)| header.ends_with(" actix_web::middleware::logger"))
    };
    log.lines().filter(is_access_line).map(|line| {
        let rest = line.strip_prefix('[').expect(line);
        let (timestamp, rest) = rest.split_once(' ').expect(line);
        assert!(
            timestamp.len() == 24 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
            "RFC 3339 with milliseconds: {line}"
        );
        let rest = rest
            .strip_prefix("INFO  actix_web::middleware::logger] ")
            .expect(line);
        let (peer, rest) = rest.split_once(" \"").expect(line);
        let (request, rest) = rest.split_once("\" ").expect(line);
        let fields: Vec<&str> = rest.splitn(5, ' ').collect();
        let [status, bytes, millis, sid, agent] = fields[..] else {
            panic!("five fields after the request line: {line}")
        };
        let parsed = AccessLine {
            peer,
            request,
            status,
            bytes,
            millis: millis.strip_suffix("ms").expect(line),
            sid: sid.strip_prefix("sid=").expect(line),
            agent: agent
                .strip_prefix('"')
                .and_then(|agent| agent.strip_suffix('"'))
                .expect(line),
        };
        let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        assert!(peer.parse::<std::net::IpAddr>().is_ok(), "{line}");
        assert!(digits(parsed.status) && digits(parsed.bytes), "{line}");
        let (whole, fraction) = parsed.millis.split_once('.').expect(line);
        assert!(
            digits(whole) && digits(fraction) && fraction.len() == 6,
            "{line}"
        );
        assert!(
            parsed.sid == "-"
                || (parsed.sid.len() == 8 && parsed.sid.bytes().all(|b| b.is_ascii_hexdigit())),
            "{line}"
        );
        parsed
    })
}

#[tokio::test]
async fn every_request_makes_exactly_one_whole_access_line_and_none_shows_the_sid() {
    // Arrange
    let redis = RedisServer::start();
    let mut app = AppProcess::start(&redis.url(), &[]).await;
    let first = reqwest::get(app.url("/count")).await.expect("GET /count");
    let sid = sid_of(&first);
    let (tasks, per_task) = (8, 50);

    // Act: concurrent clients, each on its own connection.
    let mut clients = Vec::new();
    for task in 0..tasks {
        let (url, sid) = (app.url("/count"), sid.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0..per_task {
                let response = client
                    .get(&url)
                    .header("cookie", format!("sid={sid}"))
                    .header("user-agent", format!("access-log-test/{task}.{n}"))
                    .send()
                    .await
                    .expect("GET /count");
                assert_eq!(response.status(), StatusCode::OK);
            }
        }));
    }
    for client in clients {
        client.await.expect("the client task");
    }
    app.terminate();
    assert_eq!(app.exit_code(Duration::from_secs(10)).await, Some(0));

    // Assert
    let log = app.log();
    let ours: Vec<AccessLine<'_>> = access_lines(&log)
        .filter(|line| line.agent.starts_with("access-log-test/"))
        .collect();
    assert_eq!(ours.len(), tasks * per_task, "{log}");
    let hash = app::telemetry::short_hash(&sid);
    let mut agents = std::collections::BTreeSet::new();
    for line in &ours {
        assert_eq!(line.request, "GET /count HTTP/1.1", "{line:?}");
        assert_eq!(line.status, "200", "{line:?}");
        assert_eq!(line.sid, hash, "{line:?}");
        assert_eq!(line.peer, "127.0.0.1", "{line:?}");
        agents.insert(line.agent);
    }
    assert_eq!(
        agents.len(),
        tasks * per_task,
        "one line per request, none twice"
    );
    assert!(!log.contains(&sid), "the whole id is never logged");
}

/// Serves one `/count` with `env`, stops, and returns the whole log.
async fn log_of_one_count(redis: &RedisServer, env: &[(&str, &str)]) -> String {
    let mut app = AppProcess::start(&redis.url(), env).await;
    let response = reqwest::get(app.url("/count")).await.expect("GET /count");
    assert_eq!(response.status(), StatusCode::OK);
    app.terminate();
    assert_eq!(app.exit_code(Duration::from_secs(10)).await, Some(0));
    app.log()
}

#[tokio::test]
async fn with_the_access_log_off_no_request_is_logged() {
    let redis = RedisServer::start();
    let log = log_of_one_count(&redis, &[("APP__SERVER__ACCESS_LOG", "false")]).await;
    assert_eq!(access_lines(&log).count(), 0, "{log}");
    assert!(log.contains("Redis pool closed"), "{log}");
}

#[tokio::test]
async fn rust_log_that_hides_info_hides_the_access_log_as_before() {
    let redis = RedisServer::start();
    let log = log_of_one_count(&redis, &[("RUST_LOG", "warn")]).await;
    assert_eq!(access_lines(&log).count(), 0, "{log}");
}

#[tokio::test]
async fn a_newline_in_a_json_field_name_cannot_forge_a_log_line() {
    // Arrange: a field name that carries a whole access log line, and a
    // terminal escape. serde's error names the unknown field, and that
    // error is logged on stderr, the stream the access log shares.
    let redis = RedisServer::start();
    let mut app = AppProcess::start(&redis.url(), &[]).await;
    let forged = "[2026-12-01T10:00:00.000Z INFO  actix_web::middleware::logger] \
                  6.6.6.6 \"GET /forged HTTP/1.1\" 200 0 0.100000ms sid=- \"forger\"";
    let name = format!("x\n{forged}\u{1b}[2J");
    let body = serde_json::json!({ name: "y" }).to_string();

    // Act
    let response = reqwest::Client::new()
        .post(app.url("/login"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /login");
    let status = response.status();
    app.terminate();
    assert_eq!(app.exit_code(Duration::from_secs(10)).await, Some(0));

    // Assert
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let log = app.log();
    // (env_logger indents a message's later lines by four spaces; a log
    // collector that trims them reads a line all the same.)
    assert!(
        !log.lines()
            .any(|line| line.trim_start().starts_with("[2026-12-01T10:00:00.000Z")),
        "a forged line: {log}"
    );
    assert!(
        access_lines(&log).all(|line| line.request != "GET /forged HTTP/1.1"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw escape byte: {log:?}");
    // The error is still logged, on one line, with the client's text shown
    // escaped.
    let logged = log
        .lines()
        .find(|line| line.contains("unknown field"))
        .unwrap_or_else(|| panic!("the body error is logged: {log}"));
    assert!(
        logged.contains(r"unknown field `x\n[2026-12-01T10:00:00.000Z INFO")
            && logged.contains(r#"\"forger\"\u{1b}[2J`"#),
        "{logged}"
    );
    let login_lines = access_lines(&log)
        .filter(|line| line.request == "POST /login HTTP/1.1" && line.status == "400")
        .count();
    assert_eq!(login_lines, 1, "{log}");
}

#[tokio::test]
async fn metrics_are_served_on_the_metrics_listener_never_on_the_public_one() {
    // Arrange
    let redis = RedisServer::start();
    let app = AppProcess::start(&redis.url(), &[]).await;
    reqwest::get(app.url("/count")).await.expect("GET /count");

    // Act
    let public = reqwest::get(app.url("/metrics"))
        .await
        .expect("GET /metrics");
    let public_status = public.status();
    let public_body = public.text().await.expect("a body");
    let samples = scrape(&app).await;
    let other = reqwest::get(app.metrics_url("/count"))
        .await
        .expect("GET /count on the metrics listener");

    // Assert: what fronts the public port cannot reach the metrics; the
    // metrics listener has them, and serves nothing else.
    assert_eq!(public_status, StatusCode::NOT_FOUND);
    assert!(
        !public_body.contains("http_requests_total"),
        "{public_body}"
    );
    let counted = value(
        &samples,
        "http_requests_total",
        &[("route", "/count"), ("status", "200")],
    );
    assert_eq!(counted, 1.0);
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_empty_metrics_address_opens_no_metrics_listener() {
    let redis = RedisServer::start();
    let app = AppProcess::start(&redis.url(), &[("APP__SERVER__METRICS_ADDR", "")]).await;

    let metrics = std::net::TcpStream::connect(("127.0.0.1", app.metrics_port));
    let public = reqwest::get(app.url("/metrics"))
        .await
        .expect("GET /metrics");

    assert!(metrics.is_err(), "nothing listens on the metrics port");
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    assert!(!app.log().contains("metrics on"), "{}", app.log());
}
