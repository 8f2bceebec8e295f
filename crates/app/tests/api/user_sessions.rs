//! "Where you're signed in" through the app, on real Redis and two nodes:
//! the list, revoking one, the others, everywhere; who may see what; the
//! Origin check; sign-ins racing "sign out everywhere", forced and at
//! random; what the index costs and how it expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use reqwest::StatusCode;
use session::{Session, SessionError};
use testkit::{RedisServer, redis};
use tokio::sync::Semaphore;

use crate::helpers::{
    TestApp, all_keys, bare_client, set_cookie, spawn_app, spawn_app_with, spawn_app_with_routes,
};

/// A browser with a cookie jar and its own user agent.
fn device(agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .user_agent(agent)
        .build()
        .expect("a client")
}

async fn sign_in(app: &TestApp, client: &reqwest::Client, user: &str) {
    let (status, body) = app.login(client, user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn list(app: &TestApp, client: &reqwest::Client) -> (StatusCode, serde_json::Value) {
    let response = client
        .get(app.url("/sessions"))
        .send()
        .await
        .expect("GET /sessions");
    let status = response.status();
    if status == StatusCode::OK {
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap_or("")),
            Some("no-store")
        );
    }
    (status, response.json().await.expect("a JSON body"))
}

fn items(body: &serde_json::Value) -> Vec<serde_json::Value> {
    body["sessions"].as_array().expect("a list").clone()
}

async fn post(app: &TestApp, client: &reqwest::Client, path: &str) -> reqwest::Response {
    client.post(app.url(path)).send().await.expect("POST")
}

async fn delete(app: &TestApp, client: &reqwest::Client, handle: &str) -> StatusCode {
    client
        .delete(app.url(&format!("/sessions/{handle}")))
        .send()
        .await
        .expect("DELETE")
        .status()
}

async fn user_of(app: &TestApp, client: &reqwest::Client) -> serde_json::Value {
    app.me(client).await["user"].clone()
}

#[tokio::test]
async fn a_user_lists_revokes_one_and_the_revoked_device_is_signed_out_across_nodes() {
    let redis = RedisServer::start();
    let nodes = [spawn_app(&redis).await, spawn_app(&redis).await];
    let (laptop, phone) = (device("Laptop/1.0"), device("Phone/2.0"));
    sign_in(&nodes[0], &laptop, "ada").await;
    sign_in(&nodes[1], &phone, "ada").await;

    let (status, body) = list(&nodes[1], &laptop).await;
    assert_eq!(status, StatusCode::OK);
    let listed = items(&body);
    assert_eq!(listed.len(), 2, "{body}");
    assert_eq!(listed[0]["user_agent"], "Phone/2.0", "newest first");
    assert_eq!(listed[1]["user_agent"], "Laptop/1.0");
    assert_eq!(listed[0]["current"], false);
    assert_eq!(listed[1]["current"], true, "the laptop asked");
    for item in &listed {
        let handle = item["handle"].as_str().expect("a handle");
        assert_eq!(handle.len(), 32);
        assert!(item["created_at"].as_u64().is_some() && item["last_seen_at"].as_u64().is_some());
    }
    // No session id anywhere in the body.
    let keys = all_keys(&redis);
    for key in keys.iter().filter_map(|k| k.strip_prefix("sid_")) {
        assert!(!body.to_string().contains(key), "{key} leaked");
    }

    let phone_handle = listed[0]["handle"].as_str().expect("a handle").to_owned();
    assert_eq!(
        delete(&nodes[0], &laptop, &phone_handle).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        user_of(&nodes[1], &phone).await,
        serde_json::Value::Null,
        "signed out"
    );
    assert_eq!(user_of(&nodes[0], &laptop).await, "ada", "the laptop stays");
    let (_, body) = list(&nodes[0], &laptop).await;
    assert_eq!(items(&body).len(), 1);
    // Gone now, so 404 the second time.
    assert_eq!(
        delete(&nodes[1], &laptop, &phone_handle).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn another_users_handle_unknown_and_malformed_handles_all_get_the_same_404() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let (ada, bob) = (device("A"), device("B"));
    sign_in(&app, &ada, "ada").await;
    sign_in(&app, &bob, "bob").await;
    let (_, body) = list(&app, &bob).await;
    let bobs = items(&body)[0]["handle"]
        .as_str()
        .expect("a handle")
        .to_owned();
    let (_, body) = list(&app, &ada).await;
    assert_eq!(items(&body).len(), 1, "ada sees only her own: {body}");

    let mut answers = Vec::new();
    for handle in [
        bobs.as_str(),
        &"0".repeat(32),
        "nope",
        "not-a-handle",
        &"f".repeat(33),
    ] {
        let response = ada
            .delete(app.url(&format!("/sessions/{handle}")))
            .send()
            .await
            .expect("DELETE");
        answers.push((response.status(), response.text().await.expect("a body")));
    }
    for answer in &answers {
        assert_eq!(
            answer, &answers[0],
            "one answer for every handle not hers: {answers:?}"
        );
    }
    assert_eq!(answers[0].0, StatusCode::NOT_FOUND);
    assert_eq!(user_of(&app, &bob).await, "bob", "bob untouched");
}

#[tokio::test]
async fn log_out_others_keeps_this_one_and_everywhere_ends_all_and_clears_the_cookie() {
    let redis = RedisServer::start();
    let nodes = [spawn_app(&redis).await, spawn_app(&redis).await];
    let devices: Vec<_> = (0..3).map(|i| device(&format!("D{i}"))).collect();
    for (i, d) in devices.iter().enumerate() {
        sign_in(&nodes[i % 2], d, "ada").await;
    }
    let response = post(&nodes[1], &devices[0], "/logout/others").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["revoked"], 2);
    assert_eq!(user_of(&nodes[0], &devices[0]).await, "ada");
    for d in &devices[1..] {
        assert_eq!(user_of(&nodes[0], d).await, serde_json::Value::Null);
    }
    sign_in(&nodes[0], &devices[1], "ada").await;
    let response = post(&nodes[0], &devices[0], "/logout/everywhere").await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = set_cookie(response.headers(), "sid").expect("the cookie is removed");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["revoked"], 2, "this one and the other");
    for d in &devices {
        assert_eq!(user_of(&nodes[1], d).await, serde_json::Value::Null);
    }
    let leftover = session_keys(&redis);
    assert!(leftover.is_empty(), "no session left: {leftover:?}");
}

#[tokio::test]
async fn revoking_the_current_handle_ends_it_and_removes_the_cookie() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let laptop = device("L");
    sign_in(&app, &laptop, "ada").await;
    let (_, body) = list(&app, &laptop).await;
    let own = items(&body)[0]["handle"]
        .as_str()
        .expect("a handle")
        .to_owned();
    let response = laptop
        .delete(app.url(&format!("/sessions/{own}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cookie = set_cookie(response.headers(), "sid").expect("cookie removed");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    assert!(
        all_keys(&redis).is_empty(),
        "session and index gone: {:?}",
        all_keys(&redis)
    );
}

#[tokio::test]
async fn without_a_signed_in_session_every_route_is_401_and_writes_nothing() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let anonymous = device("A");
    app.count(&anonymous).await; // a session, but not signed in
    let mut monitor = redis.monitor();
    let start = monitor.begin();
    let mut statuses = vec![list(&app, &anonymous).await.0];
    statuses.push(delete(&app, &anonymous, &"a".repeat(32)).await);
    statuses.push(post(&app, &anonymous, "/logout/others").await.status());
    statuses.push(post(&app, &anonymous, "/logout/everywhere").await.status());
    statuses.push(list(&app, &bare_client()).await.0);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let sent = monitor.commands_since(start);
    assert!(
        sent.iter().all(|c| c == "hgetall" || c == "pttl"),
        "only the session's load: {sent:?}"
    );
}

#[tokio::test]
async fn a_cross_site_origin_is_refused_with_nothing_changed_and_allowed_ones_pass() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.server.allowed_origins = vec!["https://admin.example.com".to_owned()];
    })
    .await;
    let laptop = device("L");
    sign_in(&app, &laptop, "ada").await;
    let own_origin = app.url("");
    let own_origin = own_origin.trim_end_matches('/');
    let attempt = |origin: &str| {
        laptop
            .post(app.url("/logout/others"))
            .header("origin", origin)
            .send()
    };
    for evil in ["https://evil.example", "http://127.0.0.1:1", "null"] {
        let response = attempt(evil).await.expect("POST");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{evil}");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "cross_site_request");
    }
    let refused = laptop
        .delete(app.url(&format!("/sessions/{}", "a".repeat(32))))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let login = laptop
        .post(app.url("/logout"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("POST /logout");
    assert_eq!(
        login.status(),
        StatusCode::FORBIDDEN,
        "a cross-site logout too"
    );
    assert_eq!(user_of(&app, &laptop).await, "ada", "nothing changed");
    for fine in [own_origin, "https://admin.example.com"] {
        assert_eq!(
            attempt(fine).await.expect("POST").status(),
            StatusCode::OK,
            "{fine}"
        );
    }
    // No Origin at all (curl, a server): allowed.
    assert_eq!(
        post(&app, &laptop, "/logout/others").await.status(),
        StatusCode::OK
    );
}

/// A `/test/slow-login` route: begins the sign-in (reads the epoch), says
/// so, waits to be released, then signs in.
fn slow_login_route(
    has_begun: Arc<Semaphore>,
    release: Arc<Semaphore>,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |routes: &mut web::ServiceConfig| {
        let (has_begun, release) = (Arc::clone(&has_begun), Arc::clone(&release));
        routes.route(
            "/test/slow-login",
            web::post().to(move |session: Session| {
                let (has_begun, release) = (Arc::clone(&has_begun), Arc::clone(&release));
                async move {
                    let ticket = session.begin_sign_in("ada").await?;
                    has_begun.add_permits(1);
                    release.acquire().await.expect("open").forget();
                    session.sign_in(ticket)?;
                    Ok::<_, SessionError>(HttpResponse::Ok().finish())
                }
            }),
        );
    }
}

#[tokio::test]
async fn a_sign_in_that_began_before_sign_out_everywhere_cannot_become_signed_in() {
    // The forced interleaving: the sign-in reads the epoch on node 1, then
    // "sign out everywhere" runs to the end on node 0, then the sign-in
    // commits. It must fail (401) and leave no session behind.
    let redis = RedisServer::start();
    let (has_begun, release) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let nodes = [
        spawn_app(&redis).await,
        spawn_app_with_routes(
            redis.url(),
            |_| {},
            slow_login_route(has_begun.clone(), release.clone()),
        )
        .await,
    ];
    let (admin, thief) = (device("admin"), device("thief"));
    sign_in(&nodes[0], &admin, "ada").await;
    let slow = {
        let (thief, url) = (thief.clone(), nodes[1].url("/test/slow-login"));
        tokio::spawn(async move { thief.post(url).send().await.expect("POST") })
    };
    has_begun.acquire().await.expect("open").forget();
    assert_eq!(
        post(&nodes[0], &admin, "/logout/everywhere").await.status(),
        StatusCode::OK
    );
    release.add_permits(1);
    let slow = slow.await.expect("the slow sign-in");
    assert_eq!(slow.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = slow.json().await.expect("JSON");
    assert_eq!(body["error"], "sign_in_revoked");
    assert_eq!(user_of(&nodes[0], &thief).await, serde_json::Value::Null);
    let sessions = session_keys(&redis);
    assert!(sessions.is_empty(), "no session survives: {sessions:?}");

    // And the other order: a sign-in that completed before is ended. (The
    // admin signed out everywhere, so signs in again first.)
    sign_in(&nodes[0], &admin, "ada").await;
    sign_in(&nodes[1], &thief, "ada").await;
    assert_eq!(
        post(&nodes[0], &admin, "/logout/everywhere").await.status(),
        StatusCode::OK
    );
    assert_eq!(user_of(&nodes[1], &thief).await, serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_sign_ins_racing_sign_out_everywhere_leave_no_earlier_sign_in_alive() {
    // 3 clients sign in over and over on two nodes while 2 others sign in
    // and sign out everywhere. For every sign-in whose response arrived
    // before some revocation STARTED, its session must be dead once that
    // revocation answered. Bounded: 3 s of traffic.
    let redis = RedisServer::start();
    // A cap above the sign-ins of the run: no session ends by the cap, so
    // every dead one was ended by a revocation.
    let roomy =
        |settings: &mut app::settings::Settings| settings.session.max_sessions_per_user = 1000;
    let nodes = Arc::new([
        spawn_app_with(redis.url(), roomy).await,
        spawn_app_with(redis.url(), roomy).await,
    ]);
    let started = Instant::now();
    let run_for = Duration::from_secs(3);
    let mut signers = Vec::new();
    for n in 0..3 {
        let nodes = Arc::clone(&nodes);
        signers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            while started.elapsed() < run_for {
                let response = bare_client()
                    .post(nodes[n % 2].url("/login"))
                    .json(&serde_json::json!({ "user": "ada" }))
                    .send()
                    .await
                    .expect("POST /login");
                let finished = Instant::now();
                if response.status() == StatusCode::OK {
                    let sid = response
                        .cookies()
                        .find(|c| c.name() == "sid")
                        .map(|c| c.value().to_owned());
                    done.push((finished, sid));
                }
            }
            done
        }));
    }
    let mut revokers = Vec::new();
    for n in 0..2 {
        let nodes = Arc::clone(&nodes);
        revokers.push(tokio::spawn(async move {
            let mut windows = Vec::new();
            while started.elapsed() < run_for {
                let client = device("revoker");
                let (status, _) = nodes[n].login(&client, "ada").await;
                if status != StatusCode::OK {
                    continue;
                }
                let began = Instant::now();
                let response = client
                    .post(nodes[(n + 1) % 2].url("/logout/everywhere"))
                    .send()
                    .await
                    .expect("POST");
                if response.status() == StatusCode::OK {
                    windows.push((began, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            windows
        }));
    }
    let mut sign_ins = Vec::new();
    for signer in signers {
        sign_ins.extend(signer.await.expect("a signer"));
    }
    let mut revocations = Vec::new();
    for revoker in revokers {
        revocations.extend(revoker.await.expect("a revoker"));
    }
    let last_revocation_start = revocations
        .iter()
        .map(|(began, _)| *began)
        .max()
        .expect("revocations ran");
    let mut connection = redis.connection();
    let mut checked = 0;
    let mut survivors = Vec::new();
    for (finished, sid) in &sign_ins {
        let Some(sid) = sid else { continue };
        if *finished < last_revocation_start {
            checked += 1;
            let exists: i64 = redis::cmd("EXISTS")
                .arg(format!("sid_{sid}"))
                .query(&mut connection)
                .expect("EXISTS");
            if exists == 1 {
                survivors.push(sid.clone());
            }
        }
    }
    println!(
        "sign-ins racing sign-out-everywhere: {} sign-ins, {} revocations, {checked} sign-ins completed before a revocation began, {} survived",
        sign_ins.len(),
        revocations.len(),
        survivors.len()
    );
    assert!(
        checked > 10 && revocations.len() > 3,
        "the race ran: {checked}, {}",
        revocations.len()
    );
    assert!(survivors.is_empty(), "{} survived", survivors.len());
    // Revocations come every few dozen sign-ins, far below the cap of
    // 1000: no sign-in here ended by the cap.
    assert!(
        sign_ins.len() / revocations.len() < 1000,
        "{} sign-ins per revocation",
        sign_ins.len() / revocations.len()
    );
}

/// A `/test/renew` route: renews the session (a privilege change other than
/// a sign-in).
fn renew_route(routes: &mut web::ServiceConfig) {
    routes.route(
        "/test/renew",
        web::post().to(|session: Session| async move {
            session.renew();
            HttpResponse::Ok().finish()
        }),
    );
}

#[tokio::test]
async fn a_renewed_signed_in_session_stays_listed_and_is_ended_by_sign_out_everywhere() {
    let redis = RedisServer::start();
    let nodes = [
        spawn_app(&redis).await,
        spawn_app_with_routes(redis.url(), |_| {}, renew_route).await,
    ];
    let (laptop, phone) = (device("L"), device("P"));
    sign_in(&nodes[0], &laptop, "ada").await;
    sign_in(&nodes[0], &phone, "ada").await;
    let renewed = phone
        .post(nodes[1].url("/test/renew"))
        .send()
        .await
        .expect("POST");
    assert_eq!(renewed.status(), StatusCode::OK);
    assert_eq!(user_of(&nodes[0], &phone).await, "ada", "still signed in");
    let (_, body) = list(&nodes[0], &laptop).await;
    assert_eq!(
        items(&body).len(),
        2,
        "the renewed one is still listed: {body}"
    );
    let response = post(&nodes[0], &laptop, "/logout/everywhere").await;
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["revoked"], 2);
    assert_eq!(
        user_of(&nodes[0], &phone).await,
        serde_json::Value::Null,
        "ended"
    );
}

#[tokio::test]
async fn signing_in_as_another_user_moves_the_session_between_indexes() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.max_sessions_per_user = 2
    })
    .await;
    let (laptop, phone) = (device("L"), device("P"));
    sign_in(&app, &phone, "ada").await;
    // Re-logins do not pile up stale entries that the cap would count.
    for _ in 0..3 {
        sign_in(&app, &laptop, "ada").await;
    }
    assert_eq!(
        user_of(&app, &phone).await,
        "ada",
        "two live sessions: no eviction"
    );
    sign_in(&app, &laptop, "bob").await;
    let (_, ada) = list(&app, &phone).await;
    assert_eq!(items(&ada).len(), 1, "only the phone is ada's now: {ada}");
    let (_, bob) = list(&app, &laptop).await;
    assert_eq!(items(&bob).len(), 1, "{bob}");
    assert_eq!(items(&bob)[0]["current"], true);
}

#[tokio::test]
async fn the_index_expires_with_its_sessions_and_the_cap_ends_the_oldest() {
    let redis = RedisServer::start();
    let app = spawn_app_with(redis.url(), |settings| {
        settings.session.idle_timeout_secs = 2;
        settings.session.absolute_timeout_secs = 3;
        settings.session.max_sessions_per_user = 2;
    })
    .await;
    let devices: Vec<_> = (0..3).map(|i| device(&format!("D{i}"))).collect();
    for d in &devices {
        sign_in(&app, d, "ada").await;
    }
    // The cap: the first device's session ended when the third signed in.
    assert_eq!(user_of(&app, &devices[0]).await, serde_json::Value::Null);
    assert_eq!(user_of(&app, &devices[2]).await, "ada");
    let (_, body) = list(&app, &devices[2]).await;
    assert_eq!(items(&body).len(), 2, "{body}");
    // After the absolute lifetime, nothing is left: sessions and index.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection())
        .expect("KEYS");
    assert!(keys.is_empty(), "every key expired: {keys:?}");
}

#[tokio::test]
async fn count_and_me_cost_what_they_cost_before_for_a_signed_in_user() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let laptop = device("L");
    sign_in(&app, &laptop, "ada").await;
    app.count(&laptop).await;
    let mut monitor = redis.monitor();
    let start = monitor.begin();
    app.count(&laptop).await;
    let count = monitor.commands_since(start);
    let start = monitor.begin();
    app.me(&laptop).await;
    let me = monitor.commands_since(start);
    assert_eq!(count, ["evalsha"], "/count: one script");
    assert_eq!(me, ["hgetall", "pttl"], "/me: one pipelined load");
}

/// What the slow route does once released, to the session it read.
#[derive(Clone, Copy)]
enum Then {
    /// Writes a field.
    Write,
    /// Renews the session (a privilege change other than a sign-in).
    Renew,
}

/// A `/test/slow` route: reads the session, says so, waits to be released,
/// then does `then` to it.
fn slow_route(
    has_read: Arc<Semaphore>,
    release: Arc<Semaphore>,
    then: Then,
) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |routes: &mut web::ServiceConfig| {
        let (has_read, release) = (Arc::clone(&has_read), Arc::clone(&release));
        routes.route(
            "/test/slow",
            web::post().to(move |session: Session| {
                let (has_read, release) = (Arc::clone(&has_read), Arc::clone(&release));
                async move {
                    let user = session.user().await?;
                    has_read.add_permits(1);
                    release.acquire().await.expect("open").forget();
                    match then {
                        Then::Write => session.insert("last_seen_by", &user)?,
                        Then::Renew => session.renew(),
                    }
                    Ok::<_, SessionError>(HttpResponse::Ok().finish())
                }
            }),
        );
    }
}

/// The session keys in Redis: `sid_<id>`, whatever the user index keys are
/// named.
fn session_keys(redis: &RedisServer) -> Vec<String> {
    all_keys(redis)
        .into_iter()
        .filter(|key| key.starts_with("sid_") && !key.starts_with("sid_user:"))
        .collect()
}

/// How a session is ended while a request that read it is in flight.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// The laptop signs out its other devices.
    SignOutOthers,
    /// The laptop revokes the phone's session by its handle.
    RevokeOne,
    /// A second jar holding the phone's cookie (another tab) logs out.
    LogoutInAnotherTab,
}

/// The phone's request reads its signed-in session and is held; the
/// session is ended meanwhile (`ending`); then the request does `then`.
/// Whatever it does, the phone is signed out afterwards, nothing of its
/// session comes back, and the laptop alone is listed.
async fn a_held_request_cannot_outlive(ending: Ending, then: Then) {
    let redis = RedisServer::start();
    let (has_read, release) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let nodes = [
        spawn_app(&redis).await,
        spawn_app_with_routes(
            redis.url(),
            |_| {},
            slow_route(has_read.clone(), release.clone(), then),
        )
        .await,
    ];
    let (laptop, phone) = (device("L"), device("P"));
    sign_in(&nodes[0], &laptop, "ada").await;
    sign_in(&nodes[1], &phone, "ada").await;
    let (_, listed) = list(&nodes[0], &phone).await;
    let phone_handle = items(&listed)
        .into_iter()
        .find(|item| item["current"] == true)
        .expect("the phone is listed")["handle"]
        .as_str()
        .expect("a handle")
        .to_owned();
    let slow = {
        let (phone, url) = (phone.clone(), nodes[1].url("/test/slow"));
        tokio::spawn(async move { phone.post(url).send().await.expect("POST") })
    };
    has_read.acquire().await.expect("open").forget();
    match ending {
        Ending::SignOutOthers => {
            let response = post(&nodes[0], &laptop, "/logout/others").await;
            assert_eq!(response.status(), StatusCode::OK);
        }
        Ending::RevokeOne => {
            assert_eq!(
                delete(&nodes[0], &laptop, &phone_handle).await,
                StatusCode::NO_CONTENT
            );
        }
        Ending::LogoutInAnotherTab => {
            let sid = phone_sid(&redis);
            let tab = bare_client();
            let response = tab
                .post(nodes[0].url("/logout"))
                .header("cookie", format!("sid={sid}"))
                .send()
                .await
                .expect("POST /logout");
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    release.add_permits(1);
    let slow = slow.await.expect("the slow request");
    assert_eq!(slow.status(), StatusCode::OK, "{ending:?}");
    let cookie = set_cookie(slow.headers(), "sid");
    assert!(
        cookie
            .as_deref()
            .is_none_or(|cookie| cookie.starts_with("sid=;")),
        "{ending:?}: no cookie of a live session: {cookie:?}"
    );
    assert_eq!(
        list(&nodes[0], &phone).await.0,
        StatusCode::UNAUTHORIZED,
        "{ending:?}: the phone is signed out"
    );
    let (_, body) = list(&nodes[0], &laptop).await;
    assert_eq!(items(&body).len(), 1, "{ending:?}: only the laptop: {body}");
    assert_eq!(
        session_keys(&redis).len(),
        1,
        "{ending:?}: the laptop's alone, nothing resurrected: {:?}",
        session_keys(&redis)
    );
}

/// The phone's session id: the session key whose user agent is the
/// phone's.
fn phone_sid(redis: &RedisServer) -> String {
    session_keys(redis)
        .into_iter()
        .find(|key| {
            let agent: Option<String> = testkit::redis::cmd("HGET")
                .arg(key.as_str())
                .arg("__ua")
                .query(&mut redis.connection())
                .expect("HGET");
            agent.as_deref() == Some("P")
        })
        .expect("the phone's key")
        .trim_start_matches("sid_")
        .to_owned()
}

#[tokio::test]
async fn a_request_in_flight_on_a_revoked_session_writes_nothing_back() {
    a_held_request_cannot_outlive(Ending::SignOutOthers, Then::Write).await;
}

#[tokio::test]
async fn a_renewal_in_flight_cannot_outlive_sign_out_of_the_other_devices() {
    a_held_request_cannot_outlive(Ending::SignOutOthers, Then::Renew).await;
}

#[tokio::test]
async fn a_renewal_in_flight_cannot_outlive_the_revocation_of_its_session() {
    a_held_request_cannot_outlive(Ending::RevokeOne, Then::Renew).await;
}

#[tokio::test]
async fn a_renewal_in_flight_cannot_outlive_a_logout_in_another_tab() {
    a_held_request_cannot_outlive(Ending::LogoutInAnotherTab, Then::Renew).await;
}

#[tokio::test]
async fn a_renewal_in_flight_cannot_outlive_the_absolute_deadline() {
    let redis = RedisServer::start();
    let (has_read, release) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let app = spawn_app_with_routes(
        redis.url(),
        |settings| settings.session.absolute_timeout_secs = 2,
        slow_route(has_read.clone(), release.clone(), Then::Renew),
    )
    .await;
    let phone = device("P");
    sign_in(&app, &phone, "ada").await;
    let signed_in_at = Instant::now();
    let slow = {
        let (phone, url) = (phone.clone(), app.url("/test/slow"));
        tokio::spawn(async move { phone.post(url).send().await.expect("POST") })
    };
    has_read.acquire().await.expect("open").forget();
    // Past the deadline, the session is dead whatever its TTL says.
    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(signed_in_at.elapsed())).await;
    release.add_permits(1);
    let slow = slow.await.expect("the slow request");
    assert_eq!(slow.status(), StatusCode::OK);
    let cookie = set_cookie(slow.headers(), "sid");
    assert!(
        cookie
            .as_deref()
            .is_none_or(|cookie| cookie.starts_with("sid=;")),
        "no cookie of a live session: {cookie:?}"
    );
    assert_eq!(list(&app, &phone).await.0, StatusCode::UNAUTHORIZED);
    assert!(
        session_keys(&redis).is_empty(),
        "{:?}",
        session_keys(&redis)
    );
}

/// Milliseconds since the Unix epoch, as `__created` holds them.
fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

/// `__created` and `PTTL` of the one session key in Redis.
fn the_session(redis: &RedisServer) -> (String, u64, i64) {
    let keys = session_keys(redis);
    assert_eq!(keys.len(), 1, "one session: {keys:?}");
    let mut connection = redis.connection();
    let created: String = redis::cmd("HGET")
        .arg(&keys[0])
        .arg("__created")
        .query(&mut connection)
        .expect("HGET");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query(&mut connection)
        .expect("PTTL");
    (keys[0].clone(), created.parse().expect("ms"), ttl)
}

/// Makes the session at `key` `age` old, as if it had been created then.
fn age_session(redis: &RedisServer, key: &str, age: Duration) -> u64 {
    let created = now_ms() - u64::try_from(age.as_millis()).expect("fits");
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("__created")
        .arg(created)
        .query(&mut redis.connection())
        .expect("HSET");
    created
}

#[tokio::test]
async fn signing_in_starts_the_absolute_lifetime_anew_and_a_renewal_keeps_it() {
    let redis = RedisServer::start();
    let app = spawn_app_with_routes(
        redis.url(),
        |settings| {
            settings.session.absolute_timeout_secs = 8 * 3600;
            settings.session.idle_timeout_secs = 1800;
        },
        renew_route,
    )
    .await;
    let visitor = device("V");
    app.count(&visitor).await;
    // An anonymous session 7 h 59 min old (or one an attacker planted).
    let (anonymous, _, _) = the_session(&redis);
    age_session(&redis, &anonymous, Duration::from_secs(8 * 3600 - 60));

    let before = now_ms();
    sign_in(&app, &visitor, "ada").await;
    let (signed_in, created, ttl) = the_session(&redis);
    assert!(
        created >= before,
        "the lifetime counts from the sign-in: __created {created}, sign-in at {before}"
    );
    assert!(
        ttl > 1_700_000,
        "a fresh idle timeout, not the minute the anonymous session had left: {ttl} ms"
    );

    // A plain renewal is no new authentication: the deadline stays.
    let old = age_session(&redis, &signed_in, Duration::from_secs(8 * 3600 - 60));
    let renewed = visitor
        .post(app.url("/test/renew"))
        .send()
        .await
        .expect("POST");
    assert_eq!(renewed.status(), StatusCode::OK);
    let (moved, created, ttl) = the_session(&redis);
    assert_ne!(moved, signed_in, "a fresh id");
    assert_eq!(created, old, "the renewal keeps the creation time");
    assert!(ttl <= 60_000, "still ends at the same deadline: {ttl} ms");
    assert_eq!(user_of(&app, &visitor).await, "ada");
}

/// The hash tag of `user`'s index keys: 32 hex digits of SHA-256.
fn user_tag(user: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(user.as_bytes())[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The handle of the session `client` holds, from its own list.
async fn own_handle(app: &TestApp, client: &reqwest::Client) -> String {
    let (_, body) = list(app, client).await;
    items(&body)
        .into_iter()
        .find(|item| item["current"] == true)
        .expect("listed")["handle"]
        .as_str()
        .expect("a handle")
        .to_owned()
}

#[tokio::test]
async fn no_key_but_a_sessions_starts_with_the_session_prefix() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let (laptop, phone) = (device("L"), device("P"));
    sign_in(&app, &laptop, "ada").await;
    sign_in(&app, &phone, "ada").await;
    for key in all_keys(&redis)
        .into_iter()
        .filter(|key| key.starts_with("sid_"))
    {
        let created: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("__created")
            .query(&mut redis.connection())
            .unwrap_or(None);
        assert!(created.is_some(), "{key} is not a session");
    }

    // A Nest node sent `Cookie: sid=user:{<tag>}` writes its counter there
    // (HSET count 1, EXPIRE 1800), and 30 idle minutes later the key is gone.
    let planted = format!("sid_user:{{{}}}", user_tag("ada"));
    let mut connection = redis.connection();
    let _: i64 = redis::cmd("HSET")
        .arg(&planted)
        .arg("count")
        .arg(1)
        .query(&mut connection)
        .expect("HSET");
    let _: i64 = redis::cmd("EXPIRE")
        .arg(&planted)
        .arg(1800)
        .query(&mut connection)
        .expect("EXPIRE");
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&planted)
        .arg(1)
        .query(&mut connection)
        .expect("PEXPIRE: half an hour later");
    tokio::time::sleep(Duration::from_millis(20)).await;

    let response = post(&app, &laptop, "/logout/everywhere").await;
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["revoked"], 2, "{body}");
    assert_eq!(
        user_of(&app, &phone).await,
        serde_json::Value::Null,
        "the phone is signed out"
    );
}

#[tokio::test]
async fn sessions_signed_in_under_the_old_index_layout_are_listed_and_revoked() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let (laptop, phone, tablet, desk) = (device("L"), device("P"), device("T"), device("D"));
    for client in [&laptop, &phone, &tablet] {
        sign_in(&app, client, "ada").await;
    }
    let tablet_handle = own_handle(&app, &tablet).await;
    // What the previous version wrote: the same index, under the session
    // prefix.
    let tag = user_tag("ada");
    let mut connection = redis.connection();
    for suffix in ["", ":created"] {
        let () = redis::cmd("RENAME")
            .arg(format!("user_sessions:{{{tag}}}{suffix}"))
            .arg(format!("sid_user:{{{tag}}}{suffix}"))
            .query(&mut connection)
            .expect("RENAME to the old layout");
    }
    // Signed in after the upgrade: the new layout.
    sign_in(&app, &desk, "ada").await;

    let (_, body) = list(&app, &laptop).await;
    assert_eq!(items(&body).len(), 4, "old and new entries: {body}");
    assert_eq!(
        delete(&app, &laptop, &tablet_handle).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(user_of(&app, &tablet).await, serde_json::Value::Null);
    let response = post(&app, &laptop, "/logout/everywhere").await;
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["revoked"], 3, "laptop, phone and desk: {body}");
    for client in [&laptop, &phone, &desk] {
        assert_eq!(user_of(&app, client).await, serde_json::Value::Null);
    }
    assert!(session_keys(&redis).is_empty(), "{:?}", all_keys(&redis));
}

fn config_set(redis: &RedisServer, name: &str, value: &str) {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(&mut redis.connection())
        .expect("CONFIG SET");
}

#[tokio::test]
async fn revocations_end_every_session_they_name_when_redis_is_full() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let devices = [device("L"), device("P"), device("T"), device("D")];
    for client in &devices {
        sign_in(&app, client, "ada").await;
    }
    let [laptop, phone, tablet, desk] = &devices;
    let tablet_handle = own_handle(&app, tablet).await;

    // Full, under noeviction (the default policy): every write that needs
    // memory is refused.
    config_set(&redis, "maxmemory", "1");
    let refused: Result<(), _> = redis::cmd("SET")
        .arg("probe")
        .arg("x")
        .query(&mut redis.connection());
    let refused = refused.expect_err("a full Redis refuses writes");
    assert!(refused.to_string().contains("OOM"), "{refused}");

    assert_eq!(
        delete(&app, laptop, &tablet_handle).await,
        StatusCode::NO_CONTENT
    );
    let others = post(&app, laptop, "/logout/others").await;
    assert_eq!(others.status(), StatusCode::OK);
    let others: serde_json::Value = others.json().await.expect("JSON");
    assert_eq!(others["revoked"], 2, "the phone and the desk: {others}");
    let everywhere = post(&app, laptop, "/logout/everywhere").await;
    assert_eq!(everywhere.status(), StatusCode::OK);
    let everywhere: serde_json::Value = everywhere.json().await.expect("JSON");
    assert_eq!(everywhere["revoked"], 1, "the laptop: {everywhere}");
    assert!(
        session_keys(&redis).is_empty(),
        "every session named is ended, while Redis is still full: {:?}",
        session_keys(&redis)
    );

    config_set(&redis, "maxmemory", "0");
    for client in [laptop, phone, tablet, desk] {
        assert_eq!(user_of(&app, client).await, serde_json::Value::Null);
    }
}

#[tokio::test]
async fn old_layout_keys_a_nest_node_was_made_to_write_do_not_break_listing_or_revoking() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis).await;
    let (laptop, phone, tablet) = (device("L"), device("P"), device("T"));
    for client in [&laptop, &phone, &tablet] {
        sign_in(&app, client, "ada").await;
    }
    let phone_handle = own_handle(&app, &phone).await;
    // Cookies `sid=user:{<tag>}` and `sid=user:{<tag>}:created` sent to a
    // Nest node: its counter where the old layout kept the index.
    let tag = user_tag("ada");
    for key in [
        format!("sid_user:{{{tag}}}"),
        format!("sid_user:{{{tag}}}:created"),
    ] {
        let _: i64 = redis::cmd("HSET")
            .arg(&key)
            .arg("count")
            .arg(1)
            .query(&mut redis.connection())
            .expect("HSET");
    }

    let (status, body) = list(&app, &laptop).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(items(&body).len(), 3);
    assert_eq!(
        delete(&app, &laptop, &phone_handle).await,
        StatusCode::NO_CONTENT
    );
    let response = post(&app, &laptop, "/logout/everywhere").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["revoked"], 2, "the laptop and the tablet: {body}");
    for client in [&laptop, &phone, &tablet] {
        assert_eq!(user_of(&app, client).await, serde_json::Value::Null);
    }
}
