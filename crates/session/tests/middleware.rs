//! `SessionMiddleware` and the `Session` extractor in an actix-web app of
//! their own (not ours): what each kind of handler costs in store calls,
//! and what the request sees of its own changes.
//!
//! The store is the memory store behind a counter, so every call is
//! visible; the app crate's tests repeat the important cases on real Redis
//! with MONITOR.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{COOKIE, SET_COOKIE};
use actix_web::{App, HttpResponse, test, web};
use async_trait::async_trait;
use serde::Deserialize;
use session::{
    Changes, LoadedSession, MemorySessionStore, Renewal, SameSite, Session, SessionError,
    SessionHandle, SessionId, SessionMiddleware, SessionMiddlewareBuilder, SessionStore,
    StoreError, UserEntry, WritePolicy,
};

/// The memory store, counting loads and writes; clones share everything.
/// It can also be made slow (every call waits) or failing (writes are
/// unavailable), to test the budget and the commit-failure path.
#[derive(Debug, Default, Clone)]
struct CountingStore {
    inner: Arc<MemorySessionStore>,
    loads: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    fail_writes: Arc<AtomicBool>,
}

impl CountingStore {
    fn calls(&self) -> (usize, usize) {
        (
            self.loads.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }

    async fn wrote(&self) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.pause().await;
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("writes are failing".into()));
        }
        Ok(())
    }

    async fn pause(&self) {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    async fn load(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.pause().await;
        self.inner.load(id).await
    }
    async fn create(
        &self,
        id: &SessionId,
        c: &Changes,
        p: &WritePolicy,
    ) -> Result<bool, StoreError> {
        self.wrote().await?;
        self.inner.create(id, c, p).await
    }
    async fn update(
        &self,
        id: &SessionId,
        c: &Changes,
        p: &WritePolicy,
    ) -> Result<bool, StoreError> {
        self.wrote().await?;
        self.inner.update(id, c, p).await
    }
    async fn renew(
        &self,
        old: &SessionId,
        new: &SessionId,
        c: &Changes,
        p: &WritePolicy,
    ) -> Result<Renewal, StoreError> {
        self.wrote().await?;
        self.inner.renew(old, new, c, p).await
    }
    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        p: &WritePolicy,
    ) -> Result<Option<i64>, StoreError> {
        self.wrote().await?;
        self.inner.increment(id, field, by, p).await
    }
    async fn compare_and_set(
        &self,
        id: &SessionId,
        field: &str,
        expected: Option<&str>,
        new: Option<&str>,
        p: &WritePolicy,
    ) -> Result<Option<bool>, StoreError> {
        self.wrote().await?;
        self.inner
            .compare_and_set(id, field, expected, new, p)
            .await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.wrote().await?;
        self.inner.delete(id).await
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, StoreError> {
        self.inner.user_epoch(user).await
    }
    async fn join_user(
        &self,
        user: &str,
        epoch: u64,
        entry: &UserEntry,
        p: &WritePolicy,
        cap: usize,
    ) -> Result<Option<Vec<UserEntry>>, StoreError> {
        self.wrote().await?;
        self.inner.join_user(user, epoch, entry, p, cap).await
    }
    async fn user_entries(
        &self,
        user: &str,
        p: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        self.inner.user_entries(user, p).await
    }
    async fn revoke_user(
        &self,
        user: &str,
        spare: Option<&SessionHandle>,
        p: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        self.wrote().await?;
        self.inner.revoke_user(user, spare, p).await
    }
    async fn rejoin_user(
        &self,
        user: &str,
        handle: &SessionHandle,
        old: &SessionId,
        new: &SessionId,
    ) -> Result<bool, StoreError> {
        self.wrote().await?;
        self.inner.rejoin_user(user, handle, old, new).await
    }
    async fn take_user_entry(
        &self,
        user: &str,
        handle: &SessionHandle,
    ) -> Result<Option<UserEntry>, StoreError> {
        self.wrote().await?;
        self.inner.take_user_entry(user, handle).await
    }
    async fn drop_user_entries(
        &self,
        user: &str,
        handles: &[SessionHandle],
    ) -> Result<(), StoreError> {
        self.wrote().await?;
        self.inner.drop_user_entries(user, handles).await
    }
    async fn check_health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[derive(Debug, Deserialize, PartialEq)]
struct Profile {
    user: String,
    visits: i64,
}

type Reply = Result<HttpResponse, SessionError>;

async fn untouched(_session: Session) -> HttpResponse {
    HttpResponse::Ok().body("no session needed")
}

async fn no_extractor() -> HttpResponse {
    HttpResponse::Ok().body("never asks for the session")
}

/// Two extractions in one request are one session.
async fn two_handles(first: Session, second: Session) -> Reply {
    first.insert("user", "ada")?;
    let seen: Option<String> = second.get("user").await?;
    let visits = second.incr("visits", 1).await?;
    Ok(HttpResponse::Ok().body(format!("{seen:?} {visits}")))
}

async fn visit(session: Session) -> Reply {
    let visits = session.incr("visits", 1).await?;
    Ok(HttpResponse::Ok().body(visits.to_string()))
}

async fn read_twice(session: Session) -> Reply {
    let first: Option<String> = session.get("user").await?;
    let second: Option<i64> = session.get("visits").await?;
    Ok(HttpResponse::Ok().body(format!("{first:?} {second:?}")))
}

async fn sign_in(session: Session) -> Reply {
    session.insert("user", "ada")?;
    Ok(HttpResponse::Ok().finish())
}

async fn profile(session: Session) -> Reply {
    let profile: Option<Profile> = session.get_as().await?;
    Ok(HttpResponse::Ok().json(profile.map(|p| (p.user, p.visits))))
}

async fn edit(session: Session) -> Reply {
    // The request sees its own changes before they are committed.
    session.insert("theme", "dark")?;
    session.remove("user");
    let theme: Option<String> = session.get("theme").await?;
    let user: Option<String> = session.get("user").await?;
    let visits = session.incr("visits", 10).await?;
    let entries = session.entries().await?;
    let mut names: Vec<_> = entries.keys().cloned().collect();
    names.sort();
    Ok(HttpResponse::Ok().body(format!("{theme:?} {user:?} {visits} {names:?}")))
}

async fn wipe(session: Session) -> Reply {
    session.clear();
    session.insert("after", &1)?;
    let entries = session.entries().await?;
    Ok(HttpResponse::Ok().body(format!("{}", entries.len())))
}

async fn one_time_token(session: Session) -> Reply {
    let won = session
        .compare_and_set("token", Some("fresh"), "spent")
        .await?;
    Ok(HttpResponse::Ok().body(won.to_string()))
}

async fn issue_token(session: Session) -> Reply {
    let issued = session.compare_and_set("token", None, &"fresh").await?;
    Ok(HttpResponse::Ok().body(issued.to_string()))
}

async fn bad_keys(session: Session) -> HttpResponse {
    let reserved = session.insert("__created", &1);
    let empty = session.insert("", &1);
    let incr = session.incr("__seen", 1).await;
    let all_refused = [reserved.is_err(), empty.is_err(), incr.is_err()];
    HttpResponse::Ok().body(format!("{all_refused:?}"))
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().finish()
}

async fn rotate(session: Session) -> HttpResponse {
    session.renew();
    HttpResponse::Ok().finish()
}

/// A logout, then the handler keeps writing: every write is refused, and
/// the cookie's session still ends.
async fn logout_then_write(session: Session) -> HttpResponse {
    session.purge();
    let incr = session.incr("visits", 1).await;
    let cas = session.compare_and_set("token", None, "x").await;
    let insert = session.insert("user", "mallory");
    session.renew();
    session.start_over();
    let refused = [incr, cas.map(|_| 0), insert.map(|()| 0)]
        .map(|result| matches!(result, Err(SessionError::Purged)));
    HttpResponse::Ok().body(format!("{refused:?} {:?}", session.status()))
}

/// What `status()` says after each kind of change.
async fn statuses(session: Session) -> Reply {
    let mut seen = vec![session.status()];
    let _: Option<String> = session.get("user").await?;
    seen.push(session.status());
    session.insert("user", "ada")?;
    seen.push(session.status());
    session.renew();
    seen.push(session.status());
    session.purge();
    seen.push(session.status());
    Ok(HttpResponse::Ok().body(format!("{seen:?}")))
}

async fn has_keys(session: Session) -> Reply {
    session.insert("pending", "1")?;
    session.remove("visits");
    let found = [
        session.contains_key("pending").await?,
        session.contains_key("visits").await?,
        session.contains_key("never").await?,
    ];
    Ok(HttpResponse::Ok().body(format!("{found:?}")))
}

/// Counts, then fails: the count stands, and so must its cookie.
async fn count_then_fail(session: Session) -> HttpResponse {
    match session.incr("visits", 1).await {
        Ok(_) => HttpResponse::InternalServerError().body("failed after counting"),
        Err(error) => HttpResponse::BadGateway().body(error.to_string()),
    }
}

/// Counts on a value this request wrote: by Redis's integer rule.
async fn count_on_pending(session: Session, value: web::Path<String>) -> HttpResponse {
    if let Err(error) = session.insert("n", value.as_str()) {
        return HttpResponse::BadRequest().body(error.to_string());
    }
    match session.incr("n", 1).await {
        Ok(n) => HttpResponse::Ok().body(n.to_string()),
        Err(error) if error.is_invalid_data() => HttpResponse::Conflict().body("not an integer"),
        Err(error) => HttpResponse::BadGateway().body(error.to_string()),
    }
}

/// Three store calls in a row: a load, an increment, then the commit.
async fn three_calls(session: Session) -> Reply {
    let _: Option<String> = session.get("user").await?;
    session.incr("visits", 1).await?;
    session.insert("user", "ada")?;
    Ok(HttpResponse::Ok().finish())
}

async fn start_over_then_logout(session: Session) -> HttpResponse {
    session.start_over();
    session.purge();
    HttpResponse::Ok().finish()
}

/// A load that runs out the budget, then an increment: it must not be sent.
async fn past_the_budget(session: Session) -> HttpResponse {
    let load: Result<Option<String>, _> = session.get("user").await;
    let incr = session.incr("visits", 1).await;
    HttpResponse::Ok().body(format!(
        "{} {}",
        load.is_err_and(|e| e.is_unavailable()),
        incr.is_err_and(|e| e.is_unavailable())
    ))
}

/// Removes more names than the field limit, then sets some.
async fn remove_many_then_set(session: Session) -> Reply {
    for name in ["a", "b", "c", "d", "e"] {
        session.remove(name);
    }
    session.insert("x", "1")?;
    session.insert("y", "2")?;
    Ok(HttpResponse::Ok().finish())
}

fn routes(config: &mut web::ServiceConfig) {
    config
        .route(
            "/remove-many-then-set",
            web::post().to(remove_many_then_set),
        )
        .route(
            "/start-over-then-logout",
            web::post().to(start_over_then_logout),
        )
        .route("/past-the-budget", web::post().to(past_the_budget))
        .route("/logout-then-write", web::post().to(logout_then_write))
        .route("/statuses", web::post().to(statuses))
        .route("/has-keys", web::post().to(has_keys))
        .route("/count-then-fail", web::post().to(count_then_fail))
        .route("/count-on/{value}", web::post().to(count_on_pending))
        .route("/three-calls", web::post().to(three_calls))
        .route("/untouched", web::get().to(untouched))
        .route("/no-extractor", web::get().to(no_extractor))
        .route("/two-handles", web::post().to(two_handles))
        .route("/visit", web::get().to(visit))
        .route("/read", web::get().to(read_twice))
        .route("/sign-in", web::post().to(sign_in))
        .route("/profile", web::get().to(profile))
        .route("/edit", web::post().to(edit))
        .route("/wipe", web::post().to(wipe))
        .route("/token/issue", web::post().to(issue_token))
        .route("/token/spend", web::post().to(one_time_token))
        .route("/bad-keys", web::post().to(bad_keys))
        .route("/logout", web::post().to(logout))
        .route("/rotate", web::post().to(rotate));
}

/// What one request did: status, body, the `sid` cookie it set (`Some("")`
/// for a removal), and the store calls it cost.
#[derive(Debug)]
struct Outcome {
    status: StatusCode,
    body: String,
    set_sid: Option<String>,
    loads: usize,
    writes: usize,
}

struct Harness {
    store: CountingStore,
    middleware: SessionMiddleware,
}

impl Harness {
    fn new() -> Self {
        Self::with(|builder| builder)
    }

    /// A harness whose middleware `configure` shaped.
    fn with(configure: impl FnOnce(SessionMiddlewareBuilder) -> SessionMiddlewareBuilder) -> Self {
        let store = CountingStore::default();
        let middleware = configure(SessionMiddleware::builder(store.clone()))
            .build()
            .expect("valid settings");
        Self { store, middleware }
    }

    async fn call(&self, method: &str, path: &str, sid: Option<&str>) -> Outcome {
        let app =
            test::init_service(App::new().wrap(self.middleware.clone()).configure(routes)).await;
        let mut request = match method {
            "GET" => test::TestRequest::get(),
            _ => test::TestRequest::post(),
        }
        .uri(path);
        if let Some(sid) = sid {
            request = request.insert_header((COOKIE, format!("sid={sid}")));
        }
        let (loads_before, writes_before) = self.store.calls();
        let response = test::call_service(&app, request.to_request()).await;
        let status = response.status();
        let set_sid = response
            .headers()
            .get_all(SET_COOKIE)
            .filter_map(|value| value.to_str().ok())
            .find_map(|value| value.strip_prefix("sid="))
            .map(|rest| rest.split(';').next().unwrap_or_default().to_owned());
        let body = String::from_utf8(test::read_body(response).await.to_vec()).expect("UTF-8");
        let (loads, writes) = self.store.calls();
        Outcome {
            status,
            body,
            set_sid,
            loads: loads - loads_before,
            writes: writes - writes_before,
        }
    }

    /// A session holding `visits = 1`, and its id.
    async fn session(&self) -> String {
        self.call("GET", "/visit", None)
            .await
            .set_sid
            .expect("a new session sends its cookie")
    }
}

#[actix_web::test]
async fn a_handler_that_never_touches_the_session_costs_no_store_call() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness.call("GET", "/untouched", Some(&sid)).await;
    assert_eq!((outcome.loads, outcome.writes), (0, 0), "{outcome:?}");
    assert_eq!(outcome.set_sid, None);
}

#[actix_web::test]
async fn a_handler_without_the_extractor_opens_no_session_whatever_the_cookie() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let unknown = SessionId::generate();
    for cookie in [
        Some(sid.as_str()),
        Some(unknown.as_str()),
        Some("junk"),
        None,
    ] {
        let outcome = harness.call("GET", "/no-extractor", cookie).await;
        assert_eq!(outcome.status, StatusCode::OK, "{cookie:?}");
        assert_eq!(outcome.body, "never asks for the session");
        assert_eq!((outcome.loads, outcome.writes), (0, 0), "{cookie:?}");
        assert_eq!(outcome.set_sid, None, "{cookie:?}");
    }
}

#[actix_web::test]
async fn two_extractions_in_one_request_are_one_session_committed_once() {
    let harness = Harness::new();
    let sid = harness.session().await; // visits = 1
    let outcome = harness.call("POST", "/two-handles", Some(&sid)).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(
        outcome.body, r#"Some("ada") 2"#,
        "the second sees the first's change"
    );
    // The increment at its call, the insert at the commit; nothing twice.
    assert_eq!((outcome.loads, outcome.writes), (0, 2), "{outcome:?}");
    let profile = harness.call("GET", "/profile", Some(&sid)).await;
    assert_eq!(profile.body, r#"["ada",2]"#);
}

#[actix_web::test]
async fn incr_is_one_write_and_no_load() {
    let harness = Harness::new();
    let outcome = harness.call("GET", "/visit", None).await;
    assert_eq!((outcome.loads, outcome.writes), (0, 1), "create");
    let sid = outcome.set_sid.expect("cookie");
    let outcome = harness.call("GET", "/visit", Some(&sid)).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, "2");
    assert_eq!((outcome.loads, outcome.writes), (0, 1), "increment");
    assert_eq!(
        outcome.set_sid.as_deref(),
        Some(sid.as_str()),
        "Max-Age slides"
    );
}

#[actix_web::test]
async fn several_reads_cost_one_load_and_no_write() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness.call("GET", "/read", Some(&sid)).await;
    assert_eq!(outcome.body, "None Some(1)");
    assert_eq!((outcome.loads, outcome.writes), (1, 0), "{outcome:?}");
    assert_eq!(outcome.set_sid, None, "nothing written, nothing to send");
}

#[actix_web::test]
async fn reads_without_a_cookie_cost_nothing() {
    let harness = Harness::new();
    let outcome = harness.call("GET", "/read", None).await;
    assert_eq!(outcome.body, "None None");
    assert_eq!((outcome.loads, outcome.writes), (0, 0));
}

#[actix_web::test]
async fn inserts_are_one_write_at_commit_and_never_a_load() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness.call("POST", "/sign-in", Some(&sid)).await;
    assert_eq!((outcome.loads, outcome.writes), (0, 1), "{outcome:?}");
    let profile = harness.call("GET", "/profile", Some(&sid)).await;
    assert_eq!(profile.body, r#"["ada",1]"#);
}

#[actix_web::test]
async fn a_request_sees_its_own_changes_and_commits_only_them() {
    let harness = Harness::new();
    let sid = harness.session().await;
    harness.call("POST", "/sign-in", Some(&sid)).await;
    let outcome = harness.call("POST", "/edit", Some(&sid)).await;
    assert_eq!(
        outcome.body, r#"Some("dark") None 11 ["theme", "visits"]"#,
        "{outcome:?}"
    );
    // One load (for entries), the increment, then one commit of theme + user.
    assert_eq!((outcome.loads, outcome.writes), (1, 2), "{outcome:?}");
    let profile = harness.call("GET", "/read", Some(&sid)).await;
    assert_eq!(profile.body, "None Some(11)");
}

#[actix_web::test]
async fn clear_empties_the_session_but_keeps_its_id() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness.call("POST", "/wipe", Some(&sid)).await;
    assert_eq!(outcome.body, "1");
    assert_eq!((outcome.loads, outcome.writes), (0, 1), "no load needed");
    let after = harness.call("GET", "/read", Some(&sid)).await;
    assert_eq!(after.body, "None None");
}

#[actix_web::test]
async fn compare_and_set_lets_a_one_time_token_be_spent_once() {
    let harness = Harness::new();
    let issued = harness.call("POST", "/token/issue", None).await;
    assert_eq!(issued.body, "true");
    let sid = issued.set_sid.expect("a session was created for the token");
    let again = harness.call("POST", "/token/issue", Some(&sid)).await;
    assert_eq!(again.body, "false", "already issued");
    let first = harness.call("POST", "/token/spend", Some(&sid)).await;
    let second = harness.call("POST", "/token/spend", Some(&sid)).await;
    assert_eq!(
        (first.body.as_str(), second.body.as_str()),
        ("true", "false")
    );
}

#[actix_web::test]
async fn reserved_or_empty_field_names_are_refused() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness.call("POST", "/bad-keys", Some(&sid)).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, "[true, true, true]");
    assert_eq!(outcome.writes, 0, "{outcome:?}");
}

#[actix_web::test]
async fn purge_deletes_and_expires_the_cookie() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness.call("POST", "/logout", Some(&sid)).await;
    assert_eq!(outcome.set_sid.as_deref(), Some(""), "a removal cookie");
    assert_eq!(outcome.writes, 1);
    let after = harness.call("GET", "/read", Some(&sid)).await;
    assert_eq!(after.body, "None None");
    assert_eq!(
        after.set_sid.as_deref(),
        Some(""),
        "a dead id's cookie is cleared"
    );
}

#[actix_web::test]
async fn purge_without_a_session_costs_nothing() {
    let harness = Harness::new();
    let outcome = harness.call("POST", "/logout", None).await;
    assert_eq!((outcome.loads, outcome.writes), (0, 0));
    assert_eq!(outcome.set_sid, None);
}

#[actix_web::test]
async fn renew_moves_the_session_to_a_new_id_in_one_write() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness.call("POST", "/rotate", Some(&sid)).await;
    let new = outcome.set_sid.expect("the new id is sent");
    assert_ne!(new, sid);
    // One read first (a signed-in session's index entry must move with
    // it), then the one write.
    assert_eq!((outcome.loads, outcome.writes), (1, 1));
    assert_eq!(
        harness.call("GET", "/read", Some(&new)).await.body,
        "None Some(1)"
    );
    assert_eq!(
        harness.call("GET", "/read", Some(&sid)).await.body,
        "None None"
    );
}

#[actix_web::test]
async fn renew_without_a_session_writes_nothing() {
    let harness = Harness::new();
    let outcome = harness.call("POST", "/rotate", None).await;
    assert_eq!(
        (outcome.loads, outcome.writes, outcome.set_sid),
        (0, 0, None)
    );
}

#[actix_web::test]
async fn a_route_without_the_middleware_gets_a_json_500_not_a_panic() {
    let app = test::init_service(App::new().route("/visit", web::get().to(visit))).await;
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/visit").to_request()).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: serde_json::Value = test::read_body_json(response).await;
    assert_eq!(body["error"], "session_internal_error");
}

#[actix_web::test]
async fn a_logout_ends_the_cookies_session_whatever_the_handler_writes_after_it() {
    // Before the fix, an `incr` after `purge` created a fresh session, and
    // the commit deleted that one: the cookie's session lived on.
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness.call("POST", "/logout-then-write", Some(&sid)).await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body, "[true, true, true] Purged", "{outcome:?}");
    assert_eq!(outcome.set_sid.as_deref(), Some(""), "a removal cookie");
    assert_eq!(
        outcome.writes, 1,
        "the UNLINK, and nothing else: {outcome:?}"
    );
    let id = SessionId::parse(&sid).expect("a valid id");
    assert_eq!(
        harness.store.inner.load(&id).await.expect("load"),
        None,
        "the session is gone"
    );
}

#[actix_web::test]
async fn status_reports_what_the_request_did() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness.call("POST", "/statuses", Some(&sid)).await;
    assert_eq!(
        outcome.body,
        "[Unchanged, Unchanged, Changed, Renewed, Purged]"
    );
}

#[actix_web::test]
async fn contains_key_sees_the_stored_session_through_this_requests_changes() {
    let harness = Harness::new();
    let sid = harness.session().await; // visits = 1
    let outcome = harness.call("POST", "/has-keys", Some(&sid)).await;
    assert_eq!(outcome.body, "[true, false, false]", "{outcome:?}");
}

#[actix_web::test]
async fn a_session_that_incr_created_keeps_its_cookie_when_the_handler_then_fails() {
    let harness = Harness::new();
    let outcome = harness.call("POST", "/count-then-fail", None).await;
    assert_eq!(outcome.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The increment happened and stands: without the cookie, the session
    // would sit in the store with no browser able to reach it.
    let sid = outcome.set_sid.expect("the created session's cookie");
    assert_eq!(
        outcome.writes, 1,
        "only the create; the commit saved nothing"
    );
    let next = harness.call("POST", "/count-then-fail", Some(&sid)).await;
    assert_eq!(next.writes, 1);
    let read = harness.call("GET", "/read", Some(&sid)).await;
    assert_eq!(
        read.body, "None Some(2)",
        "both counts landed on one session"
    );
}

#[actix_web::test]
async fn counting_on_a_value_this_request_wrote_follows_redis_integer_rules() {
    let harness = Harness::new();
    for (value, status, body) in [
        ("41", StatusCode::OK, "42"),
        ("-1", StatusCode::OK, "0"),
        ("+1", StatusCode::CONFLICT, "not an integer"),
        ("01", StatusCode::CONFLICT, "not an integer"),
        ("-0", StatusCode::CONFLICT, "not an integer"),
        ("1.0", StatusCode::CONFLICT, "not an integer"),
        (
            "9223372036854775807",
            StatusCode::CONFLICT,
            "not an integer",
        ),
    ] {
        let outcome = harness
            .call("POST", &format!("/count-on/{value}"), None)
            .await;
        assert_eq!(
            (outcome.status, outcome.body.as_str()),
            (status, body),
            "{value}"
        );
    }
}

#[actix_web::test]
async fn one_requests_store_calls_share_one_time_budget() {
    // Calls of 300 ms each against a 500 ms budget of store time: the load
    // takes 300, the increment is cut off at the 200 left, and the request
    // is told the store is unavailable (its commit, after a failed handler,
    // writes nothing).
    let harness = Harness::with(|builder| builder.store_timeout(Duration::from_millis(500)));
    let sid = harness.session().await;
    harness.store.delay_ms.store(300, Ordering::SeqCst);
    let started = Instant::now();
    let outcome = harness.call("POST", "/three-calls", Some(&sid)).await;
    let took = started.elapsed();
    assert_eq!(
        outcome.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{outcome:?}"
    );
    assert!(
        outcome.body.contains("session_store_unavailable"),
        "{outcome:?}"
    );
    // The bound: the budget, not the 900 ms the chain would take.
    assert!(took < Duration::from_millis(850), "took {took:?}");
}

#[actix_web::test]
async fn a_failed_commit_is_answered_by_the_apps_own_handler() {
    let harness = Harness::with(|builder| {
        builder.on_commit_error(|error, request| {
            HttpResponse::build(actix_web::ResponseError::status_code(error)).body(format!(
                "our shape: {} on {}",
                error.code(),
                request.path()
            ))
        })
    });
    let sid = harness.session().await;
    harness.store.fail_writes.store(true, Ordering::SeqCst);
    let outcome = harness.call("POST", "/sign-in", Some(&sid)).await;
    assert_eq!(outcome.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        outcome.body,
        "our shape: session_store_unavailable on /sign-in"
    );
    assert_eq!(
        outcome.set_sid, None,
        "no cookie for a session that was not saved"
    );
}

#[actix_web::test]
async fn a_failed_commit_and_a_failed_handler_answer_with_one_json_shape() {
    let harness = Harness::new();
    let sid = harness.session().await;
    harness.store.fail_writes.store(true, Ordering::SeqCst);
    let commit = harness.call("POST", "/sign-in", Some(&sid)).await; // the commit fails
    let handler = harness.call("GET", "/visit", Some(&sid)).await; // the incr fails
    for outcome in [&commit, &handler] {
        assert_eq!(
            outcome.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{outcome:?}"
        );
        let body: serde_json::Value = serde_json::from_str(&outcome.body).expect("JSON");
        assert_eq!(body["error"], "session_store_unavailable", "{body}");
        assert!(body["message"].is_string(), "{body}");
    }
}

#[actix_web::test]
async fn every_cookie_attribute_reaches_the_browser() {
    let harness = Harness::with(|builder| {
        builder
            .cookie_name("app_sid")
            .cookie_path("/shop")
            .cookie_domain(Some("example.com".to_owned()))
            .cookie_same_site(SameSite::Strict)
            .cookie_secure(true)
            .cookie_http_only(false)
    });
    let app = test::init_service(
        App::new()
            .wrap(harness.middleware.clone())
            .configure(routes),
    )
    .await;
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/visit").to_request()).await;
    let cookie = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .expect("a cookie")
        .to_owned();
    assert!(cookie.starts_with("app_sid="), "{cookie}");
    for part in [
        "Path=/shop",
        "Domain=example.com",
        "SameSite=Strict",
        "Secure",
        "Max-Age=1800",
    ] {
        assert!(cookie.contains(part), "{part} missing from {cookie}");
    }
    assert!(!cookie.contains("HttpOnly"), "{cookie}");
}

type Configure = fn(SessionMiddlewareBuilder) -> SessionMiddlewareBuilder;

#[actix_web::test]
async fn settings_that_can_never_work_fail_at_build_naming_the_key() {
    let build = |configure: Configure| {
        configure(SessionMiddleware::builder(MemorySessionStore::new()))
            .build()
            .map(|_| ())
            .map_err(|error| (error.key(), error.to_string()))
    };
    let cases: [(Configure, &str); 6] = [
        (
            |b| b.touch_after_fraction(f64::NAN),
            "session.touch_after_fraction",
        ),
        (
            |b| b.touch_after_fraction(-1.0),
            "session.touch_after_fraction",
        ),
        (
            |b| b.idle_timeout(Duration::from_secs(u64::MAX)),
            "session.idle_timeout_secs",
        ),
        (|b| b.cookie_name("my sid"), "session.cookie_name"),
        (
            |b| b.cookie_same_site(SameSite::None),
            "session.cookie_same_site",
        ),
        (
            |b| b.store_timeout(Duration::ZERO),
            "session.store_timeout_ms",
        ),
    ];
    for (configure, key) in cases {
        let (named, line) = build(configure).expect_err(key);
        assert_eq!(named, key);
        assert!(line.starts_with(key) && !line.contains('\n'), "{line}");
    }
    assert!(build(|b| b.cookie_same_site(SameSite::None).cookie_secure(true)).is_ok());
}

#[actix_web::test]
async fn a_logout_after_start_over_still_ends_the_cookies_session() {
    let harness = Harness::new();
    let sid = harness.session().await;
    let outcome = harness
        .call("POST", "/start-over-then-logout", Some(&sid))
        .await;
    assert_eq!(
        outcome.set_sid.as_deref(),
        Some(""),
        "a removal cookie: {outcome:?}"
    );
    let id = SessionId::parse(&sid).expect("a valid id");
    assert_eq!(harness.store.inner.load(&id).await.expect("load"), None);
}

#[actix_web::test]
async fn no_write_is_sent_once_the_budget_is_spent() {
    // The load takes the whole budget; the increment after it must not
    // reach the store, since the caller is told it failed.
    let harness = Harness::with(|builder| builder.store_timeout(Duration::from_millis(300)));
    let sid = harness.session().await;
    harness.store.delay_ms.store(500, Ordering::SeqCst);
    let outcome = harness.call("POST", "/past-the-budget", Some(&sid)).await;
    assert_eq!(outcome.body, "true true", "{outcome:?}");
    assert_eq!((outcome.loads, outcome.writes), (1, 0), "{outcome:?}");
}

#[actix_web::test]
async fn removals_do_not_count_toward_the_field_limit_of_a_request() {
    let harness = Harness::with(|builder| builder.max_fields(2));
    let outcome = harness.call("POST", "/remove-many-then-set", None).await;
    assert_eq!(outcome.status, StatusCode::OK, "{outcome:?}");
    assert!(outcome.set_sid.is_some(), "the two sets made a session");
}

/// A gate that admits `left` new sessions in all, then refuses them, and
/// counts how often it was asked; clones share both.
#[derive(Debug, Clone)]
struct Allowance {
    left: Arc<AtomicUsize>,
    asked: Arc<AtomicUsize>,
}

impl Allowance {
    fn of(left: usize) -> Self {
        Self {
            left: Arc::new(AtomicUsize::new(left)),
            asked: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

impl session::NewSessionGate for Allowance {
    fn admit(&self, _client: Option<std::net::IpAddr>) -> Result<(), Duration> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .map(drop)
            .map_err(|_| Duration::from_millis(2_500))
    }
}

#[actix_web::test]
async fn a_refused_new_session_answers_429_and_writes_nothing() {
    // Arrange: room for one new session.
    let gate = Allowance::of(1);
    let harness = Harness::with(|builder| builder.new_session_gate(gate.clone()));
    harness.session().await;

    // Act: an incr at its call, and an insert at the commit, both with no
    // session.
    let counted = harness.call("GET", "/visit", None).await;
    let inserted = harness.call("POST", "/sign-in", None).await;

    // Assert
    for outcome in [&counted, &inserted] {
        assert_eq!(outcome.status, StatusCode::TOO_MANY_REQUESTS, "{outcome:?}");
        assert_eq!((outcome.loads, outcome.writes), (0, 0), "{outcome:?}");
        assert_eq!(outcome.set_sid, None, "{outcome:?}");
        assert!(
            outcome.body.contains("too_many_new_sessions"),
            "{outcome:?}"
        );
    }
    assert_eq!(gate.asked(), 3);
}

#[actix_web::test]
async fn a_cookie_naming_no_live_session_is_asked_at_the_gate_like_no_cookie() {
    // Arrange: no room at all.
    let gate = Allowance::of(0);
    let harness = Harness::with(|builder| builder.new_session_gate(gate.clone()));
    let random = SessionId::generate();

    // Act
    let counted = harness.call("GET", "/visit", Some(random.as_str())).await;
    let inserted = harness
        .call("POST", "/sign-in", Some(random.as_str()))
        .await;

    // Assert: one guarded write each, which found no session; no creation.
    for outcome in [&counted, &inserted] {
        assert_eq!(outcome.status, StatusCode::TOO_MANY_REQUESTS, "{outcome:?}");
        assert_eq!((outcome.loads, outcome.writes), (0, 1), "{outcome:?}");
    }
    assert_eq!(gate.asked(), 2);
    assert_eq!(harness.store.inner.load(&random).await.expect("load"), None);
}

#[actix_web::test]
async fn requests_on_a_live_session_never_ask_the_gate() {
    // Arrange: one session, then no more room.
    let gate = Allowance::of(1);
    let harness = Harness::with(|builder| builder.new_session_gate(gate.clone()));
    let sid = harness.session().await;

    // Act: reads, writes, increments and a renewal on it.
    let mut outcomes = Vec::new();
    for (method, path) in [
        ("GET", "/visit"),
        ("GET", "/read"),
        ("POST", "/sign-in"),
        ("POST", "/edit"),
        ("POST", "/rotate"),
    ] {
        outcomes.push(harness.call(method, path, Some(&sid)).await);
    }

    // Assert
    for outcome in &outcomes {
        assert_eq!(outcome.status, StatusCode::OK, "{outcome:?}");
    }
    assert_eq!(gate.asked(), 1, "only the first session was asked for");
}
