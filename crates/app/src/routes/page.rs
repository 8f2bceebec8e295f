//! `GET /`: a page that shows the session and drives `/count` and `/logout`.

use actix_web::http::header::{CACHE_CONTROL, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use session::SessionService;
use session::cookie::session_id_from_headers;

use crate::error::ApiError;
use crate::startup::NodeName;

const TEMPLATE: &str = include_str!("page.html");

/// Renders the page with this session's count and remaining TTL (one Redis
/// round trip: `HGETALL` + `PTTL`, pipelined; none without a cookie). Reads
/// only: showing the page neither counts nor extends the session.
pub(crate) async fn page(
    request: HttpRequest,
    sessions: web::Data<SessionService>,
    node: web::Data<NodeName>,
) -> Result<HttpResponse, ApiError> {
    let settings = sessions.settings();
    let view = match session_id_from_headers(request.headers(), &settings.cookie_name) {
        Some(id) => sessions.inspect(&id).await?,
        None => None,
    };
    let count = view
        .as_ref()
        .and_then(|view| view.fields.get("count"))
        .and_then(|count| count.parse::<i64>().ok())
        .unwrap_or(0);
    let ttl = view
        .and_then(|view| view.expires_in)
        .map(|left| left.as_secs().to_string())
        .unwrap_or_default();
    let html = TEMPLATE
        .replace("{{count}}", &count.to_string())
        .replace("{{node}}", &escape_html(&node.0))
        .replace("{{ttl}}", &ttl)
        .replace("{{ttl_total}}", &settings.ttl_secs.to_string());
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(html))
}

/// Escapes text for an HTML element or a quoted attribute.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::escape_html;

    #[test]
    fn markup_in_a_node_name_is_escaped() {
        assert_eq!(escape_html("<b>\"n'&"), "&lt;b&gt;&quot;n&#39;&amp;");
    }
}
