//! Liveness and readiness, for load balancers and orchestrators.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use serde_json::json;
use session::SessionService;

use crate::error::ApiError;

/// 200 while the process is up. Touches nothing else, so a Redis outage does
/// not get healthy nodes restarted. A fixed body, not built per request:
/// load balancers call this often.
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(r#"{"status":"ok"}"#)
}

/// 200 when the session store answers (Redis PING), 503 when it does not, so
/// a load balancer sends traffic only to nodes that can serve sessions.
pub(crate) async fn readyz(sessions: web::Data<SessionService>) -> Result<HttpResponse, ApiError> {
    sessions
        .store()
        .check_health()
        .await
        .map_err(|error| ApiError::from(session::SessionError::from(error)))?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}
