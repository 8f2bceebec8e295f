//! The app on Redis Cluster: configured from the environment as an operator
//! would, every route working, and a master killed under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::{RedisCluster, redis};

use crate::helpers::AppProcess;

/// `GET url`, its JSON body.
async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = client.get(url).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.json().await.expect("a JSON body")
}

async fn app_on(cluster: &RedisCluster, extra: &[(&str, &str)]) -> AppProcess {
    let nodes = cluster.seed_urls().join(",");
    let mut env = vec![
        ("APP__REDIS__MODE", "cluster"),
        ("APP__REDIS__NODES", nodes.as_str()),
    ];
    env.extend_from_slice(extra);
    // redis.url is ignored in cluster mode; point it nowhere to prove it.
    AppProcess::start("redis://127.0.0.1:1", &env).await
}

#[tokio::test]
async fn every_route_works_on_a_cluster_configured_from_the_environment() {
    let cluster = RedisCluster::start(3, 0);
    let app = app_on(&cluster, &[]).await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client");
    for expected in 1..=3 {
        let body: serde_json::Value = get_json(&client, &app.url("/count")).await;
        assert_eq!(body["count"], expected);
    }
    let login = client
        .post(app.url("/login"))
        .json(&serde_json::json!({ "user": "ada" }))
        .send()
        .await
        .expect("POST /login");
    assert_eq!(login.status(), StatusCode::OK);
    let me: serde_json::Value = get_json(&client, &app.url("/me")).await;
    assert_eq!(me["user"], "ada");
    let count: serde_json::Value = get_json(&client, &app.url("/count")).await;
    assert_eq!(count["count"], 4, "the renewed session kept its count");
    let ready = reqwest::get(app.url("/readyz")).await.expect("GET /readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    client
        .post(app.url("/logout"))
        .send()
        .await
        .expect("POST /logout");
    let after: serde_json::Value = get_json(&client, &app.url("/me")).await;
    assert_eq!(after["user"], serde_json::Value::Null);
}

/// Waits until every master's replicas have acknowledged everything it has
/// written: what `WAIT 1` would give each write, checked from outside.
fn wait_for_replication(cluster: &RedisCluster) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in cluster.nodes() {
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut node.connection())
                .expect("INFO replication");
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            if field("role:").as_deref() != Some("master") {
                break;
            }
            let master_offset = field("master_repl_offset:").unwrap_or_default();
            let replica_acked = info
                .lines()
                .filter(|line| line.starts_with("slave"))
                .all(|line| line.contains(&format!("offset={master_offset},")));
            if replica_acked {
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

#[tokio::test]
async fn killing_a_master_under_load_loses_no_replicated_session_and_the_app_recovers_alone() {
    let mut cluster = RedisCluster::start(3, 1);
    let app = Arc::new(
        app_on(
            &cluster,
            &[
                ("APP__REDIS__RESPONSE_TIMEOUT_MS", "500"),
                ("APP__REDIS__CONNECT_TIMEOUT_MS", "300"),
            ],
        )
        .await,
    );

    // 200 sessions spread over all masters, counted to 1, replicated.
    let mut sessions = Vec::new();
    for _ in 0..200 {
        let response = reqwest::get(app.url("/count")).await.expect("GET /count");
        let sid = response
            .cookies()
            .find(|c| c.name() == "sid")
            .map(|c| c.value().to_owned())
            .expect("a sid");
        sessions.push(sid);
    }
    wait_for_replication(&cluster);

    // 16 clients hammer /count on those sessions while a master dies.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let last_error_ms = Arc::new(AtomicU64::new(0));
    let first_error_ms = Arc::new(AtomicU64::new(u64::MAX));
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (app, stop, errors, served) = (
            Arc::clone(&app),
            Arc::clone(&stop),
            Arc::clone(&errors),
            Arc::clone(&served),
        );
        let (last_error_ms, first_error_ms) =
            (Arc::clone(&last_error_ms), Arc::clone(&first_error_ms));
        let mine: Vec<String> = sessions.iter().skip(worker).step_by(16).cloned().collect();
        clients.spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let sid = &mine[n % mine.len()];
                n += 1;
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
                    let at = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    errors.fetch_add(1, Ordering::Relaxed);
                    last_error_ms.fetch_max(at, Ordering::Relaxed);
                    first_error_ms.fetch_min(at, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = cluster.a_master();
    let killed_at = started.elapsed();
    cluster.kill(victim);
    // Serve on until well after the replica's promotion (node timeout 1 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let quiet =
            started.elapsed().as_millis() as u64 > last_error_ms.load(Ordering::Relaxed) + 2000;
        if (quiet && started.elapsed() > killed_at + Duration::from_secs(3))
            || Instant::now() > deadline
        {
            break;
        }
    }
    let served_before_end = served.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    clients.join_all().await;

    let errors = errors.load(Ordering::Relaxed);
    let first = first_error_ms.load(Ordering::Relaxed);
    let last = last_error_ms.load(Ordering::Relaxed);
    let gap_ms = if errors == 0 { 0 } else { last - first };
    println!(
        "cluster failover: master killed at {} ms; {errors} failed requests over a {gap_ms} ms gap; {} served in all",
        killed_at.as_millis(),
        served.load(Ordering::Relaxed)
    );
    assert!(
        served.load(Ordering::Relaxed) > served_before_end,
        "the app serves again by itself after the promotion"
    );
    cluster.wait_until_ok(Duration::from_secs(10));
    // Every session written (and replicated) before the kill is still there.
    let mut connection = redis::cluster::ClusterClient::new(
        cluster
            .seed_urls()
            .into_iter()
            .filter(|url| {
                redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection())
                    .is_ok()
            })
            .collect::<Vec<_>>(),
    )
    .and_then(|client| client.get_connection())
    .expect("a cluster connection");
    for sid in &sessions {
        let count: Option<i64> = redis::cmd("HGET")
            .arg(format!("sid_{sid}"))
            .arg("count")
            .query(&mut connection)
            .expect("HGET");
        assert!(count.is_some_and(|c| c >= 1), "session {} lost", &sid[..8]);
    }
}
