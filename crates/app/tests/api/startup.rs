//! The real binary: one clear line when it cannot start, and logs that never
//! carry a whole session id or a password.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::RedisServer;

/// Runs the app binary with `env` until it exits; returns (code, stderr).
fn run_app(env: &[(&str, &str)]) -> (Option<i32>, String) {
    // Ports 0 unless the case sets one: tests run in parallel, and two of
    // them on the default 8080 (or 9464) would fail each other's bind.
    let output = Command::new(env!("CARGO_BIN_EXE_app"))
        .env("APP__SERVER__PORT", "0")
        .env("APP__SERVER__METRICS_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .expect("run the app binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_clear_line(stderr: &str) {
    assert_eq!(stderr.lines().count(), 1, "exactly one line, got: {stderr}");
    assert!(stderr.starts_with("app: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_redis_ends_start_up_with_one_clear_line() {
    let port = testkit::free_port().to_string();
    let url = format!("redis://127.0.0.1:{port}");

    let (code, stderr) = run_app(&[
        ("APP__REDIS__URL", &url),
        ("APP__REDIS__STARTUP_WAIT_MS", "300"),
    ]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    let expected = format!(
        "app: cannot reach Redis at {url} (connection refused): start one with scripts/run.sh or set APP__REDIS__URL"
    );
    assert_eq!(stderr.trim_end(), expected);
}

#[test]
fn a_password_in_the_redis_url_is_never_printed() {
    let url = format!("redis://:hunter2@127.0.0.1:{}", testkit::free_port());

    let (code, stderr) = run_app(&[
        ("APP__REDIS__URL", &url),
        ("APP__REDIS__STARTUP_WAIT_MS", "100"),
    ]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("redis://:***@127.0.0.1"), "{stderr}");
}

#[test]
fn a_value_of_the_wrong_type_ends_start_up_naming_the_key() {
    let (code, stderr) = run_app(&[("APP__SERVER__PORT", "eighty")]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(
        stderr.contains("invalid configuration") && stderr.contains("server.port"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_key_ends_start_up_naming_it() {
    let (code, stderr) = run_app(&[("APP__SESSION__TTL_SECONDS", "60")]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(stderr.contains("ttl_seconds"), "{stderr}");
}

#[test]
fn an_impossible_value_ends_start_up_naming_the_key() {
    let (code, stderr) = run_app(&[("APP__SESSION__IDLE_TIMEOUT_SECS", "0")]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(stderr.contains("session.idle_timeout_secs"), "{stderr}");
}

#[test]
fn every_bad_session_or_store_value_ends_start_up_with_one_line_naming_its_key() {
    let cases = [
        (
            "APP__SESSION__MAX_SESSIONS_PER_USER",
            "0",
            "session.max_sessions_per_user",
        ),
        (
            "APP__SESSION__MAX_SESSIONS_PER_USER",
            "1001",
            "session.max_sessions_per_user",
        ),
        (
            "APP__SESSION__ABSOLUTE_TIMEOUT_SECS",
            "0",
            "session.absolute_timeout_secs",
        ),
        (
            "APP__SERVER__ALLOWED_ORIGINS",
            "https://a.example:443",
            "server.allowed_origins",
        ),
        (
            "APP__SERVER__METRICS_ADDR",
            "localhost:9464",
            "server.metrics_addr",
        ),
        ("APP__SERVER__METRICS_ADDR", "9464", "server.metrics_addr"),
        (
            "APP__SERVER__ALLOWED_ORIGINS",
            "https://a.example,https://b.example/path",
            "server.allowed_origins",
        ),
        (
            "APP__SESSION__TOUCH_AFTER_FRACTION",
            "-1",
            "session.touch_after_fraction",
        ),
        (
            "APP__SESSION__TOUCH_AFTER_FRACTION",
            "NaN",
            "session.touch_after_fraction",
        ),
        (
            "APP__SESSION__IDLE_TIMEOUT_SECS",
            "31536001",
            "session.idle_timeout_secs",
        ),
        (
            "APP__SESSION__STORE_TIMEOUT_MS",
            "0",
            "session.store_timeout_ms",
        ),
        ("APP__SESSION__COOKIE_NAME", "my sid", "session.cookie_name"),
        ("APP__SESSION__COOKIE_PATH", "shop", "session.cookie_path"),
        (
            "APP__SESSION__COOKIE_DOMAIN",
            "exa mple.com",
            "session.cookie_domain",
        ),
        (
            "APP__SESSION__COOKIE_SAME_SITE",
            "none",
            "session.cookie_same_site",
        ),
        (
            "APP__SESSION__COOKIE_SAME_SITE",
            "sometimes",
            "cookie_same_site",
        ),
        (
            "APP__SESSION__COOKIE_HTTP_ONLY",
            "maybe",
            "cookie_http_only",
        ),
        ("APP__STORE__KEY_PREFIX", "sid prefix", "store.key_prefix"),
        // Under the session prefix: a Nest node would write into it.
        (
            "APP__STORE__USER_INDEX_PREFIX",
            "sid_users:",
            "store.user_index_prefix",
        ),
        (
            "APP__STORE__USER_INDEX_PREFIX",
            "users{x}:",
            "store.user_index_prefix",
        ),
        (
            "APP__STORE__USER_INDEX_PREFIX",
            "",
            "store.user_index_prefix",
        ),
        ("APP__STORE__ACCEPT_EVICTION", "maybe", "accept_eviction"),
        (
            "APP__STORE__LEGACY_USER_INDEX",
            "maybe",
            "legacy_user_index",
        ),
        ("APP__STORE__KIND", "postgres", "kind"),
        (
            "APP__REDIS__DURABLE_WRITE_TIMEOUT_MS",
            "20000",
            "redis.durable_write_timeout_ms",
        ),
    ];
    for (variable, value, key) in cases {
        let (code, stderr) = run_app(&[(variable, value)]);

        assert_eq!(code, Some(1), "{variable}={value}: {stderr}");
        assert_one_clear_line(&stderr);
        assert!(stderr.contains(key), "{variable}={value}: {stderr}");
    }
}

#[test]
fn every_bad_new_session_limit_or_trusted_proxy_ends_start_up_with_one_line_naming_its_key() {
    // (variable, value, the key named, the problem stated)
    let cases = [
        (
            "APP__SERVER__NEW_SESSION_LIMIT__PER_SECOND",
            "ten",
            "server.new_session_limit.per_second",
            "expected an integer",
        ),
        (
            "APP__SERVER__NEW_SESSION_LIMIT__PER_SECOND",
            "2000000",
            "server.new_session_limit.per_second",
            "must be at most 1000000 (0 turns the limit off)",
        ),
        (
            "APP__SERVER__NEW_SESSION_LIMIT__BURST",
            "-1",
            "server.new_session_limit.burst",
            "-1",
        ),
        (
            "APP__SERVER__NEW_SESSION_LIMIT__RATE",
            "5",
            "rate",
            "unknown field",
        ),
        (
            "APP__SERVER__TRUSTED_PROXIES",
            "127.0.0.1,nginx",
            "server.trusted_proxies",
            "\"nginx\", which is not an IP address or CIDR block",
        ),
        (
            "APP__SERVER__TRUSTED_PROXIES",
            "10.0.0.1/8",
            "server.trusted_proxies",
            "did you mean 10.0.0.0/8?",
        ),
        (
            "APP__SERVER__TRUSTED_PROXIES",
            "::1/129",
            "server.trusted_proxies",
            "longer than 128 bits",
        ),
    ];
    for (variable, value, key, problem) in cases {
        let (code, stderr) = run_app(&[(variable, value)]);

        assert_eq!(code, Some(1), "{variable}={value}: {stderr}");
        assert_one_clear_line(&stderr);
        assert!(
            stderr.contains(key) && stderr.contains(problem),
            "{variable}={value}: {stderr}"
        );
    }
}

#[test]
fn every_bad_key_ring_ends_start_up_with_one_line_naming_the_key_id_never_the_key() {
    // 32 bytes, and 16: base64 of bytes no other part of the test prints.
    let good = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/AbCdE=";
    let short = "SGVsbG8sIHNlY3JldCBrZXkh";
    let keys_file = std::env::temp_dir().join(format!(
        "session-keys-{}",
        &session::SessionId::generate().as_str()[..8]
    ));
    std::fs::write(&keys_file, format!("# one key a line\nk1:{short}\n")).expect("write");
    let keys_file = keys_file.display().to_string();
    // (environment, the key named, the problem stated)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case<'_>; 8] = [
        (
            &[("APP__SESSION__ENCRYPTION__KEYS", &format!("k1:{short}"))],
            "session.encryption.keys",
            "key \"k1\" must be 32 bytes of base64, got 18 bytes",
        ),
        (
            &[(
                "APP__SESSION__ENCRYPTION__KEYS",
                &format!("k1:{good},k1:{good}"),
            )],
            "session.encryption.keys",
            "key id \"k1\" is listed twice",
        ),
        (
            &[("APP__SESSION__ENCRYPTION__KEYS", good)],
            "session.encryption.keys",
            "entry 1 must be \"<key-id>:<base64 key>\"",
        ),
        (
            &[(
                "APP__SESSION__ENCRYPTION__KEYS",
                &format!("k1:{good},bad id!:{good}"),
            )],
            "session.encryption.keys",
            "entry 2: a key id is 1 to 16 characters",
        ),
        (
            &[("APP__SESSION__ENCRYPTION__KEYS", "k1:not*base64")],
            "session.encryption.keys",
            "key \"k1\" is not standard base64",
        ),
        (
            &[("APP__SESSION__ENCRYPTION__KEYS_FILE", &keys_file)],
            "session.encryption.keys_file",
            "key \"k1\" must be 32 bytes",
        ),
        (
            &[(
                "APP__SESSION__ENCRYPTION__KEYS_FILE",
                "/nonexistent/session-keys",
            )],
            "session.encryption.keys_file",
            "cannot be read (/nonexistent/session-keys)",
        ),
        (
            &[("APP__SESSION__COOKIE_SIGNING_KEYS", &format!("c1:{short}"))],
            "session.cookie_signing_keys",
            "key \"c1\" must be 32 bytes",
        ),
    ];
    for (env, key, problem) in cases {
        let (code, stderr) = run_app(env);
        assert_eq!(code, Some(1), "{env:?}: {stderr}");
        assert_one_clear_line(&stderr);
        assert!(
            stderr.contains(key) && stderr.contains(problem),
            "{env:?}: {stderr}"
        );
        assert!(
            !stderr.contains(good) && !stderr.contains(short),
            "never the key: {stderr}"
        );
    }
    let _ = std::fs::remove_file(&keys_file);
}

#[test]
fn every_bad_protection_setting_ends_start_up_with_one_line_naming_its_key() {
    let good = format!("k1:{}", "A".repeat(43));
    let keys_file = std::env::temp_dir().join(format!(
        "session-keys-both-{}",
        &session::SessionId::generate().as_str()[..8]
    ));
    std::fs::write(&keys_file, format!("{good}\n")).expect("write");
    let keys_file = keys_file.display().to_string();
    // (environment, the key named, the problem stated)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case<'_>; 4] = [
        (
            // A node that writes plain values must be able to read them.
            &[
                ("APP__SESSION__ENCRYPTION__KEYS", &good),
                ("APP__SESSION__ENCRYPTION__SEAL_WRITES", "false"),
                ("APP__SESSION__ENCRYPTION__ACCEPT_PLAINTEXT", "false"),
            ],
            "session.encryption.accept_plaintext",
            "must be true while session.encryption.seal_writes is false",
        ),
        (
            &[("APP__SESSION__ENCRYPTION__PLAINTEXT_FIELDS", "count,__salt")],
            "session.encryption.plaintext_fields",
            "names user fields",
        ),
        (
            &[
                ("APP__SESSION__ENCRYPTION__KEYS", &good),
                ("APP__SESSION__ENCRYPTION__KEYS_FILE", &keys_file),
            ],
            "session.encryption.keys_file",
            "is set together with session.encryption.keys",
        ),
        (
            // The memory store keeps raw ids: hash_ids cannot hold.
            &[
                ("APP__STORE__KIND", "memory"),
                ("APP__SESSION__HASH_IDS", "true"),
            ],
            "session.hash_ids",
            "needs a store that hashes ids",
        ),
    ];
    for (env, key, problem) in cases {
        let (code, stderr) = run_app(env);
        assert_eq!(code, Some(1), "{env:?}: {stderr}");
        assert_one_clear_line(&stderr);
        assert!(
            stderr.contains(key) && stderr.contains(problem),
            "{env:?}: {stderr}"
        );
        assert!(!stderr.contains(&"A".repeat(43)), "never the key: {stderr}");
    }
    let _ = std::fs::remove_file(&keys_file);
}

#[test]
fn a_wrong_password_ends_start_up_saying_redis_refused_not_that_it_is_down() {
    let redis = testkit::RedisServer::start();
    let () = testkit::redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right")
        .query(&mut redis.connection())
        .expect("CONFIG SET requirepass");
    let (code, stderr) = run_app(&[
        ("APP__REDIS__URL", &redis.url()),
        ("APP__REDIS__PASSWORD", "wrong"),
        ("APP__REDIS__STARTUP_WAIT_MS", "3000"),
    ]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(
        stderr.contains("refuses this client") && stderr.contains("authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong"), "never the password: {stderr}");
}

#[test]
fn a_replica_wait_as_long_as_the_reply_timeout_ends_start_up_naming_both_keys() {
    let (code, stderr) = run_app(&[
        ("APP__REDIS__MODE", "sentinel"),
        ("APP__REDIS__SENTINELS", "redis://127.0.0.1:1"),
        ("APP__REDIS__MASTER_NAME", "mymaster"),
        ("APP__REDIS__RESPONSE_TIMEOUT_MS", "500"),
        ("APP__REDIS__DURABLE_WRITE_TIMEOUT_MS", "500"),
    ]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(
        stderr.contains("redis.durable_write_timeout_ms")
            && stderr.contains("redis.response_timeout_ms"),
        "{stderr}"
    );
}

#[test]
fn same_site_none_with_secure_starts() {
    // The one good combination of the refused one above: no settings
    // error (it then stops at Redis, which is not there).
    let nowhere = format!("redis://127.0.0.1:{}", testkit::free_port());
    let (code, stderr) = run_app(&[
        ("APP__SESSION__COOKIE_SAME_SITE", "none"),
        ("APP__SESSION__COOKIE_SECURE", "true"),
        ("APP__REDIS__URL", &nowhere),
        ("APP__REDIS__STARTUP_WAIT_MS", "100"),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        !stderr.contains("invalid configuration") && stderr.contains("cannot reach Redis"),
        "{stderr}"
    );
}

#[test]
fn cluster_mode_without_nodes_ends_start_up_naming_redis_nodes() {
    let (code, stderr) = run_app(&[("APP__REDIS__MODE", "cluster")]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(stderr.contains("redis.nodes"), "{stderr}");
}

#[test]
fn a_password_given_apart_from_the_url_is_never_printed() {
    let url = format!("redis://127.0.0.1:{}", testkit::free_port());
    let (code, stderr) = run_app(&[
        ("APP__REDIS__URL", &url),
        ("APP__REDIS__PASSWORD", "hunter2"),
        ("APP__REDIS__STARTUP_WAIT_MS", "300"),
    ]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_tls_file_that_cannot_be_read_ends_start_up_naming_the_key() {
    let url = format!("rediss://127.0.0.1:{}", testkit::free_port());

    let (code, stderr) = run_app(&[
        ("APP__REDIS__URL", &url),
        ("APP__REDIS__TLS__CA_FILE", "/nonexistent/ca.pem"),
    ]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(
        stderr.contains("redis.tls.ca_file cannot be read (/nonexistent/ca.pem)"),
        "{stderr}"
    );
}

#[test]
fn tls_files_with_a_plain_redis_url_end_start_up_saying_rediss() {
    let (code, stderr) = run_app(&[("APP__REDIS__TLS__CA_FILE", "/etc/ca.pem")]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(stderr.contains("switch to rediss://"), "{stderr}");
}

#[test]
fn a_metrics_address_in_use_ends_start_up_with_one_line_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("bound").to_string();

    let (code, stderr) = run_app(&[("APP__SERVER__METRICS_ADDR", &address)]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(
        stderr.contains(&format!("cannot listen for metrics on {address}"))
            && stderr.contains("APP__SERVER__METRICS_ADDR"),
        "{stderr}"
    );
}

#[test]
fn a_missing_app_env_file_ends_start_up_naming_it() {
    let (code, stderr) = run_app(&[("APP_ENV", "no-such-environment")]);

    assert_eq!(code, Some(1));
    assert_one_clear_line(&stderr);
    assert!(stderr.contains("no-such-environment"), "{stderr}");
}

#[tokio::test]
async fn debug_logs_never_contain_a_whole_session_id() {
    let redis = RedisServer::start();
    let port = testkit::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_app"))
        .env("APP__REDIS__URL", redis.url())
        .env("APP__SERVER__PORT", port.to_string())
        .env("APP__SERVER__METRICS_ADDR", "127.0.0.1:0")
        .env("APP__SERVER__WORKERS", "1")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the app binary");
    let stderr = child.stderr.take().expect("piped stderr");
    let log_reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the app did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New, existing, forged, corrupt and conflicting sessions, and an outage:
    // every path that logs something about a session.
    let mut sids = Vec::new();
    let first = client
        .get(format!("{base}/count"))
        .send()
        .await
        .expect("GET");
    let sid = first
        .cookies()
        .find(|cookie| cookie.name() == "sid")
        .map(|cookie| cookie.value().to_owned())
        .expect("a sid");
    sids.push(sid.clone());
    let forged = session::SessionId::generate().as_str().to_owned();
    sids.push(forged.clone());
    let corrupt = session::SessionId::generate().as_str().to_owned();
    let () = testkit::redis::cmd("HSET")
        .arg(format!("sid_{corrupt}"))
        .arg("count")
        .arg("x")
        .query(&mut redis.connection())
        .expect("HSET");
    sids.push(corrupt.clone());
    for cookie in [
        format!("sid={sid}"),
        format!("sid={forged}"),
        format!("sid={corrupt}"),
        format!("sid={sid}; sid={forged}"),
    ] {
        let response = client
            .get(format!("{base}/count"))
            .header("cookie", cookie)
            .send()
            .await
            .expect("GET");
        if let Some(issued) = response.cookies().find(|c| c.name() == "sid") {
            sids.push(issued.value().to_owned());
        }
    }
    child.kill().expect("stop the app");
    child.wait().expect("reap the app");
    let logs = log_reader.join().expect("the log reader").join("\n");

    assert!(logs.contains("DEBUG"), "debug logging was on: {logs}");
    for sid in &sids {
        assert!(
            !logs.contains(sid.as_str()),
            "a whole sid appears in the logs:\n{logs}"
        );
    }
    // Sessions are still identifiable in the logs, by their 8-character prefix.
    assert!(
        logs.contains(&format!("session {}…", &forged[..8])),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("session {}…", &corrupt[..8])),
        "{logs}"
    );
}

#[test]
fn a_redis_that_can_evict_the_user_index_ends_start_up_unless_the_risk_is_accepted() {
    let redis = RedisServer::start();
    let () = testkit::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("volatile-lru")
        .query(&mut redis.connection())
        .expect("CONFIG SET");

    let (code, stderr) = run_app(&[("APP__REDIS__URL", &redis.url())]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_clear_line(&stderr);
    assert!(
        stderr.contains("store.accept_eviction") && stderr.contains("\"volatile-lru\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_accepted_eviction_risk_and_a_denied_config_each_start_with_a_warning() {
    let redis = RedisServer::start();
    let mut connection = redis.connection();
    let () = testkit::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut connection)
        .expect("CONFIG SET");
    let accepted =
        crate::helpers::AppProcess::start(&redis.url(), &[("APP__STORE__ACCEPT_EVICTION", "true")])
            .await;
    let log = accepted.log();
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains("maxmemory-policy is allkeys-lru")),
        "{log}"
    );

    // A managed Redis that denies CONFIG: the store's own ACL rules.
    let mut setuser = testkit::redis::cmd("ACL");
    setuser.arg("SETUSER").arg("sessions").arg("on").arg(">pw");
    for rule in session::RedisSessionStore::acl_rules("sid_", "user_sessions:").split_whitespace() {
        setuser.arg(rule);
    }
    let () = setuser.query(&mut connection).expect("ACL SETUSER");
    let url = format!("redis://sessions:pw@127.0.0.1:{}", redis.port());
    let denied = crate::helpers::AppProcess::start(&url, &[]).await;
    let log = denied.log();
    assert!(
        log.lines().any(|line| line.contains("WARN")
            && line.contains("could not read Redis's maxmemory-policy")),
        "{log}"
    );
    assert!(!log.contains(":pw@"), "no password: {log}");
}
