//! `SessionMiddleware` and the `Session` extractor in an actix-web app of
//! their own (not ours): what each kind of handler costs in store calls,
//! and what the request sees of its own changes.
//!
//! The store is the memory store behind a counter, so every call is
//! visible; the app crate's tests repeat the important cases on real Redis
//! with MONITOR.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::StatusCode;
use actix_web::http::header::{COOKIE, SET_COOKIE};
use actix_web::{App, HttpResponse, test, web};
use async_trait::async_trait;
use serde::Deserialize;
use session::store::{LoadedSession, Renewal};
use session::{
    Changes, MemorySessionStore, Session, SessionError, SessionId, SessionMiddleware,
    SessionService, SessionSettings, SessionStore, StoreError, WritePolicy,
};

/// The memory store, counting loads and writes.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemorySessionStore,
    loads: AtomicUsize,
    writes: AtomicUsize,
}

impl CountingStore {
    fn calls(&self) -> (usize, usize) {
        (
            self.loads.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    async fn load(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(id).await
    }
    async fn create(
        &self,
        id: &SessionId,
        c: &Changes,
        p: &WritePolicy,
    ) -> Result<bool, StoreError> {
        self.wrote();
        self.inner.create(id, c, p).await
    }
    async fn update(
        &self,
        id: &SessionId,
        c: &Changes,
        p: &WritePolicy,
    ) -> Result<bool, StoreError> {
        self.wrote();
        self.inner.update(id, c, p).await
    }
    async fn renew(
        &self,
        old: &SessionId,
        new: &SessionId,
        c: &Changes,
        p: &WritePolicy,
    ) -> Result<Renewal, StoreError> {
        self.wrote();
        self.inner.renew(old, new, c, p).await
    }
    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        p: &WritePolicy,
    ) -> Result<Option<i64>, StoreError> {
        self.wrote();
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
        self.wrote();
        self.inner
            .compare_and_set(id, field, expected, new, p)
            .await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.wrote();
        self.inner.delete(id).await
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

fn routes(config: &mut web::ServiceConfig) {
    config
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
    store: Arc<CountingStore>,
    sessions: SessionService,
}

impl Harness {
    fn new() -> Self {
        let store = Arc::new(CountingStore::default());
        let sessions = SessionService::new(store.clone(), SessionSettings::default());
        Self { store, sessions }
    }

    async fn call(&self, method: &str, path: &str, sid: Option<&str>) -> Outcome {
        let app = test::init_service(
            App::new()
                .wrap(SessionMiddleware::new(self.sessions.clone()))
                .configure(routes),
        )
        .await;
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
    assert_eq!((outcome.loads, outcome.writes), (0, 1));
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
