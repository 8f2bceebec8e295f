//! A renewal of a signed-in session racing the end of that session, with
//! the revocation held at the worst moment, on a real redis-server: the
//! renewal never outlives it. (`crates/app/tests/api/user_sessions.rs`
//! covers the wider case, a session ended while the handler runs.)
//!
//! Each test pauses one store call of the revoking side, once, runs the
//! renewal to its end meanwhile, then lets the revocation finish.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{COOKIE, SET_COOKIE};
use actix_web::{App, HttpResponse, test, web};
use async_trait::async_trait;
use redis_client::{RedisService, RedisSettings};
use session::{
    Changes, LoadedSession, RedisSessionStore, Renewal, Session, SessionError, SessionHandle,
    SessionId, SessionMiddleware, SessionService, SessionStore, StoreError, UserEntry, WritePolicy,
};
use testkit::{RedisServer, redis};
use tokio::sync::Semaphore;

/// Holds the first call of one named store method until released.
#[derive(Debug)]
struct Pause {
    /// The methods to hold, until one of them is reached.
    at: Mutex<Vec<&'static str>>,
    reached: Semaphore,
    go: Semaphore,
}

impl Default for Pause {
    fn default() -> Self {
        Self {
            at: Mutex::new(Vec::new()),
            reached: Semaphore::new(0),
            go: Semaphore::new(0),
        }
    }
}

impl Pause {
    async fn checkpoint(&self, method: &'static str) {
        let hold = {
            let mut at = self.at.lock().expect("not poisoned");
            let hold = at.contains(&method);
            if hold {
                at.clear(); // once
            }
            hold
        };
        if hold {
            self.reached.add_permits(1);
            self.go.acquire().await.expect("open").forget();
        }
    }
}

/// The Redis store, with a [`Pause`] in the calls a revocation makes.
#[derive(Debug, Clone)]
struct PausingStore {
    inner: RedisSessionStore,
    pause: Arc<Pause>,
}

#[async_trait]
impl SessionStore for PausingStore {
    async fn load(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        self.inner.load(id).await
    }
    async fn create(
        &self,
        id: &SessionId,
        c: &Changes,
        p: &WritePolicy,
    ) -> Result<bool, StoreError> {
        self.inner.create(id, c, p).await
    }
    async fn update(
        &self,
        id: &SessionId,
        c: &Changes,
        p: &WritePolicy,
    ) -> Result<bool, StoreError> {
        self.inner.update(id, c, p).await
    }
    async fn renew(
        &self,
        old: &SessionId,
        new: &SessionId,
        c: &Changes,
        p: &WritePolicy,
    ) -> Result<Renewal, StoreError> {
        self.inner.renew(old, new, c, p).await
    }
    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        p: &WritePolicy,
    ) -> Result<Option<i64>, StoreError> {
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
        self.inner
            .compare_and_set(id, field, expected, new, p)
            .await
    }
    fn id_for_renewal(&self, old: &SessionId) -> SessionId {
        self.inner.id_for_renewal(old)
    }
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        // Before the delete: a logout held between reading its session and
        // deleting it.
        self.pause.checkpoint("delete").await;
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
        self.inner.join_user(user, epoch, entry, p, cap).await
    }
    async fn rejoin_user(
        &self,
        user: &str,
        handle: &SessionHandle,
        old: &SessionId,
        new: &SessionId,
    ) -> Result<bool, StoreError> {
        self.inner.rejoin_user(user, handle, old, new).await
    }
    async fn take_user_entry(
        &self,
        user: &str,
        handle: &SessionHandle,
    ) -> Result<Option<UserEntry>, StoreError> {
        // After the read: a revocation held before it ends what it read.
        let taken = self.inner.take_user_entry(user, handle).await;
        self.pause.checkpoint("take_user_entry").await;
        taken
    }
    async fn user_entries(
        &self,
        user: &str,
        p: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        let entries = self.inner.user_entries(user, p).await;
        self.pause.checkpoint("user_entries").await;
        entries
    }
    async fn revoke_user(
        &self,
        user: &str,
        spare: Option<&SessionHandle>,
        p: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        let doomed = self.inner.revoke_user(user, spare, p).await;
        self.pause.checkpoint("revoke_user").await;
        doomed
    }
    async fn drop_user_entries(
        &self,
        user: &str,
        handles: &[SessionHandle],
    ) -> Result<(), StoreError> {
        self.inner.drop_user_entries(user, handles).await
    }
    async fn check_health(&self) -> Result<(), StoreError> {
        self.inner.check_health().await
    }
}

async fn login(session: Session) -> Result<HttpResponse, SessionError> {
    let ticket = session.begin_sign_in("ada").await?;
    session.sign_in(ticket)?;
    Ok(HttpResponse::Ok().finish())
}

async fn renew(session: Session) -> Result<HttpResponse, SessionError> {
    session.user().await?;
    session.renew();
    Ok(HttpResponse::Ok().finish())
}

async fn logout(session: Session) -> Result<HttpResponse, SessionError> {
    session.user().await?;
    session.purge();
    Ok(HttpResponse::Ok().finish())
}

struct Fixture {
    server: RedisServer,
    prefix: String,
    pause: Arc<Pause>,
    sessions: SessionMiddleware,
}

impl Fixture {
    async fn new() -> Self {
        let server = RedisServer::start();
        let redis = RedisService::new(&RedisSettings {
            url: server.url(),
            ..Default::default()
        })
        .expect("valid settings");
        redis
            .wait_until_ready(Duration::from_secs(5))
            .await
            .expect("redis answers");
        let prefix = format!("test_{}_", &SessionId::generate().as_str()[..8]);
        let inner = RedisSessionStore::new(redis)
            .with_key_prefix(prefix.clone())
            .expect("a valid prefix");
        inner.prepare().await.expect("the scripts load");
        let pause = Arc::new(Pause::default());
        let store = PausingStore {
            inner,
            pause: Arc::clone(&pause),
        };
        let sessions = SessionMiddleware::builder(store)
            .build()
            .expect("valid settings");
        sessions
            .service()
            .prepare()
            .await
            .expect("the policy's scripts load");
        Self {
            server,
            prefix,
            pause,
            sessions,
        }
    }

    fn service(&self) -> SessionService {
        self.sessions.service()
    }

    /// The session keys in Redis.
    fn session_keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut self.server.connection())
            .expect("KEYS")
    }
}

/// `POST path` with `sid` on `app`: the status, and the `sid` the
/// response set (`Some("")` for a removal). A macro: the test service's
/// type cannot be named.
macro_rules! call {
    ($app:expr, $path:expr, $sid:expr) => {{
        let mut request = test::TestRequest::post().uri($path);
        if let Some(sid) = $sid {
            request = request.insert_header((COOKIE, format!("sid={sid}")));
        }
        let response = test::call_service($app, request.to_request()).await;
        let set_sid = response
            .headers()
            .get_all(SET_COOKIE)
            .filter_map(|value| value.to_str().ok())
            .find_map(|value| value.strip_prefix("sid="))
            .map(|rest| rest.split(';').next().unwrap_or_default().to_owned());
        (response.status().as_u16(), set_sid)
    }};
}

/// What the revoking side does, held at `pause_at`.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// "Sign out everywhere", held after it raised the epoch and read the
    /// entries, before it ends their sessions.
    Everywhere,
    /// A revocation of the session's handle, held after it read the entry.
    One,
    /// A logout with the same cookie (another tab, or the owner while a
    /// thief renews), held after it read the session, before the delete.
    Logout,
}

async fn a_renewal_racing(ending: Ending) {
    let fixture = Fixture::new().await;
    let app = test::init_service(
        App::new()
            .wrap(fixture.sessions.clone())
            .route("/login", web::post().to(login))
            .route("/renew", web::post().to(renew))
            .route("/logout", web::post().to(logout)),
    )
    .await;
    let (status, sid) = call!(&app, "/login", None::<&str>);
    assert_eq!(status, 200);
    let sid = sid.expect("a session");
    let service = fixture.service();
    let listed = service.list_user_sessions("ada").await.expect("list");
    assert_eq!(listed.len(), 1);
    let handle = listed[0].handle.clone();

    *fixture.pause.at.lock().expect("not poisoned") = match ending {
        Ending::Everywhere => vec!["revoke_user"],
        // Today's call and the one before: the test holds either.
        Ending::One => vec!["take_user_entry", "user_entries"],
        Ending::Logout => vec!["delete"],
    };
    let revocation = async {
        match ending {
            Ending::Everywhere => {
                service
                    .revoke_user_sessions("ada", None)
                    .await
                    .expect("revoke all");
            }
            Ending::One => {
                assert!(
                    service
                        .revoke_user_session("ada", &handle)
                        .await
                        .expect("revoke one")
                );
            }
            Ending::Logout => {
                let (status, _) = call!(&app, "/logout", Some(&sid));
                assert_eq!(status, 200);
            }
        }
    };
    let renewal = async {
        fixture
            .pause
            .reached
            .acquire()
            .await
            .expect("open")
            .forget();
        let renewed = call!(&app, "/renew", Some(&sid));
        fixture.pause.go.add_permits(1);
        renewed
    };
    let ((), (status, cookie)) = tokio::join!(revocation, renewal);

    assert_eq!(status, 200, "{ending:?}");
    assert!(
        cookie.as_deref().is_none_or(str::is_empty),
        "{ending:?}: no cookie of a live session: {cookie:?}"
    );
    assert!(
        fixture.session_keys().is_empty(),
        "{ending:?}: the renewed session outlived its end: {:?}",
        fixture.session_keys()
    );
    assert!(
        service
            .list_user_sessions("ada")
            .await
            .expect("list")
            .is_empty(),
        "{ending:?}"
    );
}

#[actix_web::test]
async fn a_renewal_between_sign_out_everywhere_and_its_deletes_does_not_survive() {
    a_renewal_racing(Ending::Everywhere).await;
}

#[actix_web::test]
async fn a_renewal_between_a_revocation_and_its_delete_does_not_survive() {
    a_renewal_racing(Ending::One).await;
}

#[actix_web::test]
async fn a_renewal_between_a_logout_and_its_delete_does_not_survive() {
    a_renewal_racing(Ending::Logout).await;
}

#[actix_web::test]
async fn a_list_that_read_the_entry_before_a_renewal_moved_it_leaves_it_revocable() {
    // A list reads h -> A; a renewal renames A to B; the list finds A gone
    // and takes the entry for stale; the renewal moves h to B. The list
    // must not drop h: B would be live and out of every revocation's reach.
    let fixture = Fixture::new().await;
    let app = test::init_service(
        App::new()
            .wrap(fixture.sessions.clone())
            .route("/login", web::post().to(login))
            .route("/renew", web::post().to(renew)),
    )
    .await;
    let (_, sid) = call!(&app, "/login", None::<&str>);
    let sid = sid.expect("a session");
    let service = fixture.service();
    // Held after the list read the index, before it loads the sessions.
    *fixture.pause.at.lock().expect("not poisoned") = vec!["user_entries"];
    let listing = async { service.list_user_sessions("ada").await.expect("list") };
    let renewal = async {
        fixture
            .pause
            .reached
            .acquire()
            .await
            .expect("open")
            .forget();
        let renewed = call!(&app, "/renew", Some(&sid));
        fixture.pause.go.add_permits(1);
        renewed
    };
    let (_, (status, renewed)) = tokio::join!(listing, renewal);
    assert_eq!(status, 200);
    let renewed = renewed.expect("the renewal stands");
    assert!(!renewed.is_empty());

    let listed = service.list_user_sessions("ada").await.expect("list");
    assert_eq!(listed.len(), 1, "the renewed session is still listed");
    let ended = service
        .revoke_user_sessions("ada", None)
        .await
        .expect("revoke");
    assert_eq!(ended, 1, "and sign out everywhere ends it");
    assert!(
        fixture.session_keys().is_empty(),
        "{:?}",
        fixture.session_keys()
    );
}
