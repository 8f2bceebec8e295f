//! `/healthz` and `/readyz`.

use reqwest::StatusCode;
use testkit::RedisServer;

use crate::helpers::{browser, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_answers_while_the_process_is_up_even_without_redis() {
    let mut redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    assert_eq!(app.status_of(&client, "/healthz").await, StatusCode::OK);

    redis.stop();

    assert_eq!(app.status_of(&client, "/healthz").await, StatusCode::OK);
}

#[tokio::test]
async fn readyz_follows_redis_down_and_back_up() {
    let mut redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    let readyz = || client.get(app.url("/readyz")).send();

    assert_eq!(readyz().await.expect("GET").status(), StatusCode::OK);
    redis.stop();
    let down = readyz().await.expect("GET");
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.headers().contains_key("retry-after"));
    redis.restart();
    assert_eq!(readyz().await.expect("GET").status(), StatusCode::OK);
}

#[tokio::test]
async fn the_memory_store_needs_no_redis_and_is_always_ready() {
    // A Redis URL where nothing listens: the memory store never dials it.
    let nowhere = format!("redis://127.0.0.1:{}", testkit::free_port());
    let app = spawn_app_with(nowhere, |settings| {
        settings.store.kind = app::settings::StoreKind::Memory
    })
    .await;
    let client = browser();

    assert_eq!(app.status_of(&client, "/readyz").await, StatusCode::OK);
    assert_eq!(app.count(&client).await.count, Some(1));
    assert_eq!(app.count(&client).await.count, Some(2));
}

#[tokio::test]
async fn health_checks_stay_on_the_public_listener_and_metrics_are_apart() {
    // Arrange
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let client = browser();
    let metrics = app
        .metrics_address
        .clone()
        .expect("spawn_app opens a metrics listener");

    // Act
    let healthz = app.status_of(&client, "/healthz").await;
    let readyz = app.status_of(&client, "/readyz").await;
    let public_metrics = app.status_of(&client, "/metrics").await;
    let scraped = client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    let health_on_metrics = client
        .get(format!("{metrics}/healthz"))
        .send()
        .await
        .expect("GET /healthz");

    // Assert: the load balancer's checks answer where it sends traffic;
    // the metrics only where operators scrape them.
    assert_eq!((healthz, readyz), (StatusCode::OK, StatusCode::OK));
    assert_eq!(public_metrics, StatusCode::NOT_FOUND);
    assert_eq!(scraped.status(), StatusCode::OK);
    let text = scraped.text().await.expect("a body");
    assert!(text.contains("route=\"/healthz\""), "{text}");
    assert_eq!(health_on_metrics.status(), StatusCode::NOT_FOUND);
}
