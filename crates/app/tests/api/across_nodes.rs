//! Two app nodes on one Redis: what a load balancer's users see.

use std::sync::Arc;

use reqwest::StatusCode;
use testkit::RedisServer;
use tokio::sync::Semaphore;

use crate::helpers::{browser, spawn_app};

#[tokio::test]
async fn a_session_started_on_one_node_continues_on_the_other() {
    let redis = RedisServer::start();
    let (node_1, node_2) = (spawn_app(&redis).await, spawn_app(&redis).await);
    let client = browser();

    let mut counts = Vec::new();
    let mut served_by = Vec::new();
    for node in [&node_1, &node_2, &node_1, &node_2] {
        let reply = node.count(&client).await;
        counts.push(reply.count.expect("a count"));
        served_by.push(reply.served_by.expect("X-Served-By"));
    }

    assert_eq!(counts, vec![1, 2, 3, 4]);
    assert_eq!(
        served_by,
        [&node_1, &node_2, &node_1, &node_2].map(|node| node.node_name.clone())
    );
}

#[tokio::test]
async fn concurrent_increments_on_two_nodes_are_all_counted() {
    const REQUESTS: i64 = 240;
    const IN_FLIGHT: usize = 48;
    let redis = RedisServer::start();
    let nodes = Arc::new([spawn_app(&redis).await, spawn_app(&redis).await]);
    let sid = nodes[0].count(&browser()).await.sid.expect("a session");

    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let (nodes, gate, sid) = (Arc::clone(&nodes), Arc::clone(&gate), sid.clone());
        requests.spawn(async move {
            let _slot = gate.acquire_owned().await.expect("semaphore open");
            let node = &nodes[usize::try_from(i % 2).expect("0 or 1")];
            node.count_as(&sid).await
        });
    }
    let replies = requests.join_all().await;

    assert!(replies.iter().all(|reply| reply.status == StatusCode::OK));
    assert!(
        replies
            .iter()
            .all(|reply| reply.sid.as_deref() == Some(sid.as_str())),
        "no request lost the session"
    );
    let mut counts: Vec<i64> = replies
        .iter()
        .map(|reply| reply.count.expect("a count"))
        .collect();
    counts.sort_unstable();
    // The first request counted 1; these saw every value from 2 up, once each.
    assert_eq!(counts, (2..=REQUESTS + 1).collect::<Vec<i64>>());
    let final_count = nodes[1].count_as(&sid).await.count;
    assert_eq!(final_count, Some(REQUESTS + 2));
}
