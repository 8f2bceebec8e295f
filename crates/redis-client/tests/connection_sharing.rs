//! Connections are shared and per thread (see `src/pool.rs`): many requests
//! on one thread travel on ONE connection, each thread has its own, and a
//! connection that broke is replaced.

use std::time::Duration;

use redis_client::{RedisService, RedisSettings, Retry};
use testkit::{RedisServer, redis};

/// Connections the server has, not counting the one asking.
fn clients(server: &RedisServer) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut server.connection())
        .expect("CLIENT LIST");
    list.lines().count() - 1
}

fn service(server: &RedisServer) -> RedisService {
    RedisService::new(&RedisSettings {
        url: server.url(),
        ..Default::default()
    })
    .expect("valid settings")
}

/// The INCR script, sent as a write that is never replayed.
async fn incr(
    redis: &RedisService,
    call: &redis_client::ScriptCall<'_>,
) -> Result<i64, redis_client::RedisClientError> {
    redis.run_script(call, Retry::NotIdempotent).await
}

/// A single-threaded runtime, as each actix worker has.
fn worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn concurrent_calls_on_one_thread_share_one_connection() {
    let server = RedisServer::start();
    let redis = service(&server);
    let local = tokio::task::LocalSet::new();
    local.block_on(&worker_runtime(), async {
        let tasks: Vec<_> = (0..200)
            .map(|n| {
                let redis = redis.clone();
                tokio::task::spawn_local(
                    async move { redis.hash_get_all(&format!("sid_{n}")).await },
                )
            })
            .collect();
        for task in tasks {
            assert!(task.await.expect("the task").expect("HGETALL").is_empty());
        }
        assert_eq!(clients(&server), 1, "200 concurrent calls, one connection");
    });
}

#[test]
fn each_thread_gets_its_own_connection() {
    let server = RedisServer::start();
    let redis = service(&server);
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let redis = redis.clone();
            std::thread::spawn(move || {
                worker_runtime().block_on(async {
                    for _ in 0..20 {
                        redis.ping().await.expect("PING");
                    }
                    // Keep the thread, and its lease, until counted.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                });
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(clients(&server), 3, "one per thread");
    for thread in threads {
        thread.join().expect("the thread");
    }
}

#[test]
fn after_a_restart_an_idempotent_call_is_retried_on_a_new_connection() {
    let mut server = RedisServer::start();
    let redis = service(&server);
    worker_runtime().block_on(async {
        redis.ping().await.expect("PING");
        server.restart(); // the leased connection's socket is dead now
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            outcomes.push(redis.ping().await.is_ok());
        }
        assert_eq!(outcomes, [true, true, true], "the first PING went twice");
    });
}

#[test]
fn after_a_restart_a_non_idempotent_script_fails_once_and_is_not_replayed() {
    let mut server = RedisServer::start();
    let redis = service(&server);
    let script = redis_client::redis::Script::new("return redis.call('INCR', KEYS[1])");
    let call = redis_client::ScriptCall::new(&script, &["counter"]);
    worker_runtime().block_on(async {
        assert_eq!(incr(&redis, &call).await.expect("INCR"), 1);
        server.restart(); // empty again, and our connection is dead
        // The connection dropped under the call: whether Redis ran it is
        // unknown to the client, so it is not sent again.
        let outcome = redis.run_script::<i64>(&call, Retry::NotIdempotent).await;
        assert!(outcome.is_err(), "{outcome:?}");
        let next: i64 = redis
            .run_script(&call, Retry::NotIdempotent)
            .await
            .expect("a new connection");
        assert_eq!(next, 1, "the failed call did not run, and was not replayed");
    });
}

#[test]
fn a_leased_connection_that_went_silent_while_idle_is_replaced_before_a_call_rides_it() {
    // A NAT or load balancer forgets an idle connection without a word.
    // Before the fix only pooled connections were checked when idle, never
    // a thread's leased one, so the next call waited out its response
    // timeout and failed.
    let server = RedisServer::start();
    let proxy = testkit::ReplyCutter::start(server.port());
    let redis = RedisService::new(&RedisSettings {
        url: proxy.url(),
        idle_check_after_ms: 200,
        response_timeout_ms: 500,
        ..Default::default()
    })
    .expect("valid settings");
    worker_runtime().block_on(async {
        redis
            .ping()
            .await
            .expect("the first call leases a connection");
        assert_eq!(proxy.connections(), 1);
        proxy.stall_open_connections();
        tokio::time::sleep(Duration::from_millis(300)).await; // idle past the check

        let fields = redis.hash_get_all("nothing").await;

        assert!(
            fields.is_ok_and(|fields| fields.is_empty()),
            "served on a new connection"
        );
        assert_eq!(proxy.connections(), 2, "the silent one was replaced");
        // A busy connection is not PINGed: the next call rides it as it is.
        let mut monitor = server.monitor();
        let start = monitor.begin();
        redis.hash_get_all("nothing").await.expect("HGETALL");
        assert_eq!(monitor.commands_since(start), ["hgetall"], "no PING first");
        assert_eq!(proxy.connections(), 2);
    });
}

#[test]
fn a_leased_connection_the_server_closed_while_unused_is_replaced_before_a_write_rides_it() {
    // CLIENT KILL, a server-side idle `timeout`, a proxy restart: the server
    // closes a thread's connection while no request is on it. The driver
    // task sees the close; the next write must go on a new connection, not
    // fail on the dead one (a write is never sent twice, so it would be a
    // 503 for nothing).
    let server = RedisServer::start();
    let redis = service(&server);
    let script = redis_client::redis::Script::new("return redis.call('INCR', KEYS[1])");
    let call = redis_client::ScriptCall::new(&script, &["counter"]);
    worker_runtime().block_on(async {
        assert_eq!(incr(&redis, &call).await.expect("INCR"), 1);
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query(&mut server.connection())
            .expect("CLIENT KILL");
        assert_eq!(killed, 1, "the service's one connection");
        // The worker's runtime goes on running: its driver task reads EOF.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = incr(&redis, &call).await;
        assert_eq!(next.expect("the write goes on a new connection"), 2);
    });
}

#[test]
fn a_master_short_of_replicas_refuses_a_write_that_did_not_run_and_keeps_the_connection() {
    // min-replicas-to-write: the bound on what a master cut off from its
    // replicas acknowledges. NOREPLICAS proves the write did not run: a 503,
    // nothing counted, and the connection (which is fine) is kept.
    let server = RedisServer::start_with(&["--min-replicas-to-write", "1"]);
    let redis = service(&server);
    let script = redis_client::redis::Script::new("return redis.call('INCR', KEYS[1])");
    let call = redis_client::ScriptCall::new(&script, &["counter"]);
    worker_runtime().block_on(async {
        redis.ping().await.expect("PING");
        let before = clients(&server);
        let refused = incr(&redis, &call).await.expect_err("no replica: refused");
        assert!(refused.is_unavailable(), "{refused:?}");
        assert!(
            refused.to_string().contains("min-replicas-to-write"),
            "{refused}"
        );
        let count: Option<i64> = redis::cmd("GET")
            .arg("counter")
            .query(&mut server.connection())
            .expect("GET");
        assert_eq!(count, None, "nothing ran");
        redis.ping().await.expect("PING");
        assert_eq!(clients(&server), before, "the connection was kept");
    });
}
