//! TLS against a real TLS-only redis-server with a throw-away CA: what
//! connects, what is refused, and that every refusal is one clear line
//! without a secret in it.

use std::time::Duration;

use redis_client::{RedisClientError, RedisService, RedisSettings, TlsSettings};
use testkit::{RedisServer, TlsFiles};

fn full_tls(tls: &TlsFiles) -> TlsSettings {
    TlsSettings {
        ca_file: Some(tls.ca_file()),
        cert_file: Some(tls.client_cert_file()),
        key_file: Some(tls.client_key_file()),
    }
}

fn settings(url: String, tls: TlsSettings) -> RedisSettings {
    RedisSettings {
        url,
        tls,
        connect_timeout_ms: 2000,
        ..Default::default()
    }
}

async fn ping(settings: &RedisSettings) -> Result<(), RedisClientError> {
    let redis = RedisService::new(settings)?;
    redis.wait_until_ready(Duration::from_millis(300)).await
}

#[tokio::test]
async fn the_right_ca_and_client_certificate_connect() {
    let tls = TlsFiles::generate();
    let server = RedisServer::start_tls(&tls, &["--tls-auth-clients", "yes"]);
    ping(&settings(server.url(), full_tls(&tls)))
        .await
        .expect("TLS with the client certificate");
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused() {
    let (ours, theirs) = (TlsFiles::generate(), TlsFiles::generate());
    let server = RedisServer::start_tls(&theirs, &[]);
    let error = ping(&settings(server.url(), full_tls(&ours)))
        .await
        .expect_err("an unknown issuer must not be trusted");
    assert!(error.is_unavailable(), "{error}");
    assert!(
        format!("{error:?}").contains("UnknownIssuer"),
        "the cause is the certificate: {error:?}"
    );
}

#[tokio::test]
async fn without_a_ca_file_a_private_ca_is_not_trusted() {
    // The system trust store is the default; it does not know our CA.
    let tls = TlsFiles::generate();
    let server = RedisServer::start_tls(&tls, &[]);
    let error = ping(&settings(server.url(), TlsSettings::default()))
        .await
        .expect_err("the system's CAs did not sign this server");
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
}

#[tokio::test]
async fn a_server_requiring_client_certificates_refuses_a_client_without_one() {
    let tls = TlsFiles::generate();
    let server = RedisServer::start_tls(&tls, &["--tls-auth-clients", "yes"]);
    let only_ca = TlsSettings {
        ca_file: Some(tls.ca_file()),
        ..Default::default()
    };
    assert!(ping(&settings(server.url(), only_ca)).await.is_err());
}

#[tokio::test]
async fn plain_redis_to_a_tls_port_does_not_connect() {
    let tls = TlsFiles::generate();
    let server = RedisServer::start_tls(&tls, &[]);
    let plain = server.url().replace("rediss://", "redis://");
    assert!(
        ping(&settings(plain, TlsSettings::default()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_wrong_password_over_tls_says_so_without_the_password() {
    let tls = TlsFiles::generate();
    let server = RedisServer::start_tls(&tls, &[]);
    let () = testkit::redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right-one")
        .query(&mut server.connection())
        .expect("set a password");
    let mut wrong = settings(server.url(), full_tls(&tls));
    wrong.password = Some("hunter2-wrong".into());
    let error = ping(&wrong).await.expect_err("wrong password");
    let printed = format!("{error} {error:?}");
    assert!(printed.contains("authentication failed"), "{printed}");
    assert!(!printed.contains("hunter2-wrong"), "{printed}");
    let mut right = wrong.clone();
    right.password = Some("right-one".into());
    ping(&right).await.expect("the right password");
}

#[test]
fn unreadable_or_non_pem_files_fail_at_start_up_with_one_line() {
    let tls = TlsFiles::generate();
    let url = "rediss://127.0.0.1:1".to_owned();

    let mut missing = full_tls(&tls);
    missing.ca_file = Some("/nonexistent/ca.pem".into());
    let message = RedisService::new(&settings(url.clone(), missing))
        .expect_err("no such file")
        .to_string();
    assert!(
        message.starts_with("redis.tls.ca_file cannot be read (/nonexistent/ca.pem)"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");

    // A key where the certificate goes, and a certificate where the key goes.
    let mut swapped = full_tls(&tls);
    swapped.cert_file = Some(tls.client_key_file());
    let message = RedisService::new(&settings(url.clone(), swapped))
        .expect_err("a key is not a certificate")
        .to_string();
    assert_eq!(message, "redis.tls.cert_file holds no PEM CERTIFICATE");

    let mut swapped = full_tls(&tls);
    swapped.key_file = Some(tls.client_cert_file());
    let message = RedisService::new(&settings(url, swapped))
        .expect_err("a certificate is not a key")
        .to_string();
    assert_eq!(message, "redis.tls.key_file holds no PEM PRIVATE KEY");
}
