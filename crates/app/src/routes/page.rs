//! `GET /`: a page that shows the session and drives `/count` and `/logout`.

use actix_web::http::header::{CACHE_CONTROL, ContentType};
use actix_web::{HttpResponse, web};
use session::{Session, SessionService};

use crate::error::ApiError;
use crate::routes::count::COUNT_FIELD;
use crate::startup::NodeName;

const TEMPLATE: &str = include_str!("page.html");

/// Renders the page with this session's count and remaining TTL (one Redis
/// round trip: `HGETALL` + `PTTL`, pipelined; none without a cookie). Reads
/// only: showing the page does not count, and refreshes the TTL only when
/// the touch threshold has passed.
pub(crate) async fn page(
    session: Session,
    sessions: web::Data<SessionService>,
    node: web::Data<NodeName>,
) -> Result<HttpResponse, ApiError> {
    let settings = sessions.settings();
    // A count that is not a number (written by another app) shows as 0.
    let count = session
        .get::<i64>(COUNT_FIELD)
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    let ttl = session
        .times()
        .await?
        .and_then(|times| times.expires_in)
        .map(|left| left.as_secs().to_string())
        .unwrap_or_default();
    let html = TEMPLATE
        .replace("{{count}}", &count.to_string())
        .replace("{{node}}", &escape_html(&node.0))
        .replace("{{ttl}}", &ttl)
        .replace("{{ttl_total}}", &settings.idle_timeout_secs.to_string());
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
