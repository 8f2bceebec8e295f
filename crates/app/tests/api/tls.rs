//! The real binary on a TLS-only Redis that requires client certificates,
//! as a least-privilege ACL user, configured from the environment alone.

use testkit::{RedisServer, TlsFiles, redis};

use crate::helpers::{AppProcess, all_keys};

#[tokio::test]
async fn the_app_counts_over_tls_as_a_least_privilege_user() {
    let tls = TlsFiles::generate();
    let server = RedisServer::start_tls(&tls, &["--tls-auth-clients", "yes"]);
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">t0p-secret-pw");
    for rule in session::RedisSessionStore::acl_rules("sid_", "user_sessions:").split_whitespace() {
        setuser.arg(rule);
    }
    let () = setuser
        .query(&mut server.connection())
        .expect("ACL SETUSER");
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let (ca, cert, key) = (
        path(tls.ca_file()),
        path(tls.client_cert_file()),
        path(tls.client_key_file()),
    );

    let app = AppProcess::start(
        &server.url(),
        &[
            ("APP__REDIS__USERNAME", "app"),
            ("APP__REDIS__PASSWORD", "t0p-secret-pw"),
            ("APP__REDIS__TLS__CA_FILE", &ca),
            ("APP__REDIS__TLS__CERT_FILE", &cert),
            ("APP__REDIS__TLS__KEY_FILE", &key),
        ],
    )
    .await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    let mut counts = Vec::new();
    for _ in 0..3 {
        let reply: serde_json::Value = client
            .get(app.url("/count"))
            .send()
            .await
            .expect("GET /count")
            .json()
            .await
            .expect("JSON");
        counts.push(reply["count"].as_i64().expect("a count"));
    }
    assert_eq!(counts, [1, 2, 3]);
    let keys = all_keys(&server);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let log = app.log();
    assert!(!log.contains("t0p-secret-pw"), "{log}");
}
