//! What both baselines share: settings from the environment, as the app's
//! `APP__SERVER__*` are.

/// `name` from the environment as a number, or `default`.
///
/// # Panics
///
/// If it is set but not a number: a bench misconfigured should stop loudly.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {text:?}")),
        Err(_) => default,
    }
}

/// `GET /healthz` on every baseline: no session, no Redis, and the same
/// response as the app's (`crates/app/src/routes/health.rs`), so that the
/// untouched-route comparison measures the middleware and nothing else.
pub async fn healthz() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(r#"{"status":"ok"}"#)
}
