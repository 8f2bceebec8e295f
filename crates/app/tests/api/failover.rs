//! Failovers under load, through the app: a Redis Cluster master killed by
//! PID, and a Sentinel failover. 16 clients keep counting on 200 sessions
//! written (and replicated) before the fault; the app must serve again by
//! itself, and no session may be lost. The figures are printed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::{RedisCluster, RedisServer, SentinelGroup, redis};

use crate::cluster::app_on;
use crate::helpers::AppProcess;

/// Short timeouts, so that a request to a dead node fails fast.
const FAST_FAIL: [(&str, &str); 2] = [
    ("APP__REDIS__RESPONSE_TIMEOUT_MS", "500"),
    ("APP__REDIS__CONNECT_TIMEOUT_MS", "300"),
];

/// What the clients saw.
#[derive(Debug)]
struct LoadReport {
    fault_at_ms: u128,
    errors: u64,
    /// From the first failed request to the last.
    gap_ms: u64,
    served: u64,
    served_in_the_last_second: u64,
}

impl LoadReport {
    fn summary(&self) -> String {
        format!(
            "fault at {} ms; {} failed requests over a {} ms gap; {} served in all, {} in the last second",
            self.fault_at_ms, self.errors, self.gap_ms, self.served, self.served_in_the_last_second
        )
    }
}

async fn make_sessions(app: &AppProcess, count: usize) -> Vec<String> {
    let mut sessions = Vec::new();
    for _ in 0..count {
        let response = reqwest::get(app.url("/count")).await.expect("GET /count");
        assert_eq!(response.status(), StatusCode::OK);
        let sid = response
            .cookies()
            .find(|c| c.name() == "sid")
            .map(|c| c.value().to_owned())
            .expect("a sid");
        sessions.push(sid);
    }
    sessions
}

/// 16 clients count on `sessions` for a second, then `fault` runs; they go on
/// until 2 s pass without an error (at most 20 s), then one more second.
async fn under_load(app: Arc<AppProcess>, sessions: &[String], fault: impl FnOnce()) -> LoadReport {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let first_error_ms = Arc::new(AtomicU64::new(u64::MAX));
    let last_error_ms = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let elapsed_ms = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let mine: Vec<String> = sessions.iter().skip(worker).step_by(16).cloned().collect();
        let (app, stop, errors, served) = (
            Arc::clone(&app),
            Arc::clone(&stop),
            Arc::clone(&errors),
            Arc::clone(&served),
        );
        let (first_error_ms, last_error_ms) =
            (Arc::clone(&first_error_ms), Arc::clone(&last_error_ms));
        clients.spawn(async move {
            let client = reqwest::Client::new();
            for sid in mine.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ok = client
                    .get(app.url("/count"))
                    .header("cookie", format!("sid={sid}"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK);
                if ok {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error_ms.fetch_min(elapsed_ms(), Ordering::Relaxed);
                    last_error_ms.fetch_max(elapsed_ms(), Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fault_at_ms = started.elapsed().as_millis();
    fault();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let quiet = elapsed_ms() > last_error_ms.load(Ordering::Relaxed) + 2000;
        if (quiet && started.elapsed().as_millis() > fault_at_ms + 3000)
            || Instant::now() > deadline
        {
            break;
        }
    }
    let before_last_second = served.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    clients.join_all().await;
    let errors = errors.load(Ordering::Relaxed);
    let served = served.load(Ordering::Relaxed);
    LoadReport {
        fault_at_ms,
        errors,
        gap_ms: if errors == 0 {
            0
        } else {
            last_error_ms.load(Ordering::Relaxed) - first_error_ms.load(Ordering::Relaxed)
        },
        served,
        served_in_the_last_second: served - before_last_second,
    }
}

/// Waits until every master's replicas have acknowledged all it wrote: what
/// `WAIT 1` after each write would give, checked from outside.
fn wait_for_replication<'a>(servers: impl IntoIterator<Item = &'a RedisServer>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for server in servers {
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut server.connection())
                .expect("INFO replication");
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(str::trim)
            };
            if field("role:") != Some("master") {
                break;
            }
            let offset = format!(
                "offset={},",
                field("master_repl_offset:").unwrap_or_default()
            );
            if info
                .lines()
                .filter(|l| l.starts_with("slave"))
                .all(|l| l.contains(&offset))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replication did not catch up: {info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn assert_all_counted(connection: &mut dyn redis::ConnectionLike, sessions: &[String]) {
    for sid in sessions {
        let count: Option<i64> = redis::cmd("HGET")
            .arg(format!("sid_{sid}"))
            .arg("count")
            .query(connection)
            .expect("HGET");
        assert!(
            count.is_some_and(|c| c >= 1),
            "session {} was lost",
            &sid[..8]
        );
    }
}

#[tokio::test]
async fn cluster_master_killed_under_load_no_replicated_session_lost_app_recovers_alone() {
    let mut cluster = RedisCluster::start(3, 1);
    let app = Arc::new(app_on(&cluster, &FAST_FAIL).await);
    let sessions = make_sessions(&app, 200).await;
    wait_for_replication(cluster.nodes());

    let victim = cluster.a_master();
    let report = under_load(Arc::clone(&app), &sessions, || cluster.kill(victim)).await;
    println!(
        "cluster failover (master killed by PID): {}",
        report.summary()
    );

    assert!(
        report.served_in_the_last_second > 0,
        "serving again: {report:?}"
    );
    cluster.wait_until_ok(Duration::from_secs(10));
    let live: Vec<String> = cluster
        .seed_urls()
        .into_iter()
        .enumerate()
        .filter(|(index, _)| *index != victim)
        .map(|(_, url)| url)
        .collect();
    let mut connection = redis::cluster::ClusterClient::new(live)
        .and_then(|client| client.get_connection())
        .expect("a cluster connection");
    assert_all_counted(&mut connection, &sessions);
}

#[tokio::test]
async fn sentinel_failover_under_load_no_replicated_session_lost_app_recovers_alone() {
    let group = SentinelGroup::start();
    let sentinels = group.sentinel_urls().join(",");
    let mut env = vec![
        ("APP__REDIS__MODE", "sentinel"),
        ("APP__REDIS__SENTINELS", sentinels.as_str()),
        ("APP__REDIS__MASTER_NAME", SentinelGroup::MASTER_NAME),
    ];
    env.extend_from_slice(&FAST_FAIL);
    let app = Arc::new(AppProcess::start("redis://127.0.0.1:1", &env).await);
    let sessions = make_sessions(&app, 200).await;
    wait_for_replication([&group.master]);
    let old_master = group.master_port();

    let report = under_load(Arc::clone(&app), &sessions, || group.failover()).await;
    println!(
        "sentinel failover (SENTINEL FAILOVER): {}",
        report.summary()
    );

    assert_ne!(group.master_port(), old_master);
    assert!(
        report.served_in_the_last_second > 0,
        "serving again: {report:?}"
    );
    assert_all_counted(&mut group.replica.connection(), &sessions);
}
