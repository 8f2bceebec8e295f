//! The store behaviour suite over TLS (client certificate required), as an
//! ACL user that has exactly [`RedisSessionStore::acl_rules`] and no more;
//! and proof that those rules deny everything else.

mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use redis_client::{RedisService, RedisSettings, TlsSettings};
use session::{RedisSessionStore, SessionId, SessionStore};
use store_suite::{Harness, LONG, created};
use testkit::{RedisServer, TlsFiles, redis};

const USER: &str = "sessions";
const PASSWORD: &str = "s3ssion-pa55word";

/// A TLS-only server that requires client certificates, with the `sessions`
/// user given the store's rules for `prefix`.
fn tls_server_with_session_user(tls: &TlsFiles, prefix: &str) -> RedisServer {
    let server = RedisServer::start_tls(tls, &["--tls-auth-clients", "yes"]);
    let rules = RedisSessionStore::acl_rules(prefix, &format!("u{prefix}"));
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg(USER)
        .arg("on")
        .arg(format!(">{PASSWORD}"));
    for rule in rules.split_whitespace() {
        setuser.arg(rule);
    }
    let () = setuser
        .query(&mut server.connection())
        .expect("ACL SETUSER with the store's rules");
    server
}

async fn tls_acl_store(server: &RedisServer, tls: &TlsFiles, prefix: &str) -> RedisSessionStore {
    let settings = RedisSettings {
        url: server.url(),
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        tls: TlsSettings {
            ca_file: Some(tls.ca_file()),
            cert_file: Some(tls.client_cert_file()),
            key_file: Some(tls.client_key_file()),
        },
        ..Default::default()
    };
    assert!(settings.url.starts_with("rediss://"), "{}", settings.url);
    let redis = RedisService::new(&settings).expect("valid settings");
    redis
        .wait_until_ready(Duration::from_secs(5))
        .await
        .expect("redis answers over TLS, as the ACL user");
    let store = RedisSessionStore::new(redis)
        .with_key_prefix(prefix)
        .expect("a valid prefix")
        // Each test's users apart from every other test's, on one server.
        .with_user_index_prefix(format!("u{prefix}"))
        .expect("a valid user index prefix");
    store.prepare().await.expect("SCRIPT LOAD is allowed");
    store
}

async fn make_store() -> Harness {
    let tls = TlsFiles::generate();
    let prefix = format!("test_{}_", &SessionId::generate().as_str()[..8]);
    let server = tls_server_with_session_user(&tls, &prefix);
    let store = tls_acl_store(&server, &tls, &prefix).await;
    Harness::new(Arc::new(store), (server, tls))
}

store_behaviour_suite!(make_store);

/// What the `sessions` user gets for `command`: `Ok` or the error.
fn as_session_user(
    server: &RedisServer,
    tls: &TlsFiles,
    command: &redis::Cmd,
) -> Result<(), String> {
    let url = format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{}", server.port());
    let mut connection = redis::Client::build_with_tls(url, tls.client_certificates())
        .and_then(|client| client.get_connection())
        .expect("the session user connects");
    command
        .query::<redis::Value>(&mut connection)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// A `NOPERM` reply ("no permissions"), or the error a script gets when it calls a command
/// its caller may not run.
fn is_acl_denial(outcome: &Result<(), String>) -> bool {
    outcome.as_ref().is_err_and(|error| {
        error.contains("no permissions") || error.contains("can't run this command")
    })
}

#[tokio::test]
async fn the_session_user_can_do_nothing_beyond_sessions() {
    let tls = TlsFiles::generate();
    let server = tls_server_with_session_user(&tls, "sid_");
    let store = tls_acl_store(&server, &tls, "sid_").await;
    let id = created(&store, &[("count", "1")], &LONG).await;
    let key = format!("sid_{}", id.as_str());

    let allowed = |args: &[&str]| {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        as_session_user(&server, &tls, &command)
    };
    assert_eq!(allowed(&["HGETALL", &key]), Ok(()));
    for denied in [
        vec!["KEYS", "*"],
        vec!["FLUSHALL"],
        vec!["CONFIG", "GET", "maxmemory"],
        vec!["CLIENT", "KILL", "TYPE", "normal"],
        vec!["SHUTDOWN"],
        vec!["SCRIPT", "FLUSH"],
        vec!["INFO"],
        vec!["ACL", "LIST"],
        vec!["SUBSCRIBE", "news"],
        vec!["HGETALL", "user_1"],      // a key outside the prefix
        vec!["SET", &key, "clobbered"], // a command the store never sends
        vec!["EVAL", "return redis.call('GET', 'user_1')", "0"],
    ] {
        let outcome = allowed(&denied);
        assert!(
            is_acl_denial(&outcome),
            "{denied:?} must be denied: {outcome:?}"
        );
    }
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query(&mut server.connection())
        .expect("HGETALL as the admin");
    assert_eq!(fields["count"], "1", "the denied SET changed nothing");
}

#[tokio::test]
async fn a_prefix_with_glob_characters_opens_only_itself() {
    let tls = TlsFiles::generate();
    let server = tls_server_with_session_user(&tls, "s*_");
    let mut sibling = redis::cmd("HGETALL");
    sibling.arg("sx_1");
    let outcome = as_session_user(&server, &tls, &sibling);
    assert!(
        is_acl_denial(&outcome),
        "`s*_` is a literal prefix, not a pattern: {outcome:?}"
    );
    let mut own = redis::cmd("HGETALL");
    own.arg("s*_1");
    assert_eq!(as_session_user(&server, &tls, &own), Ok(()));
}

#[tokio::test]
async fn a_flushed_script_is_reloaded_under_the_least_privilege_rules() {
    // Without +eval, recovery from NOSCRIPT (a restart, a failover to a
    // node that never saw the script) must be SCRIPT LOAD + EVALSHA.
    let tls = TlsFiles::generate();
    let server = tls_server_with_session_user(&tls, "sid_");
    let store = tls_acl_store(&server, &tls, "sid_").await;
    let id = created(&store, &[("count", "1")], &LONG).await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut server.connection())
        .expect("SCRIPT FLUSH, as the admin");

    let counted = store.increment(&id, "count", 1, &LONG).await;

    assert_eq!(counted.expect("incr after NOSCRIPT"), Some(2));
}
