//! `spawn_app()`: the real application on port 0, talking to a real Redis.

use app::settings::Settings;
use app::startup::Application;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde::Deserialize;
use session::SessionId;
use testkit::RedisServer;

/// One running app node.
pub(crate) struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub(crate) address: String,
    /// What it sends as `X-Served-By`.
    pub(crate) node_name: String,
    /// `http://127.0.0.1:<port>` of its metrics listener, if it has one.
    pub(crate) metrics_address: Option<String>,
}

/// What `GET /count` answered.
#[derive(Debug)]
pub(crate) struct CountReply {
    pub(crate) status: StatusCode,
    pub(crate) count: Option<i64>,
    pub(crate) served_by: Option<String>,
    /// The `sid` the response set, if it set one.
    pub(crate) sid: Option<String>,
    pub(crate) headers: HeaderMap,
}

#[derive(Deserialize)]
struct CountBody {
    count: i64,
}

/// An app node on `redis`, with default settings but for the port and name.
pub(crate) async fn spawn_app(redis: &RedisServer) -> TestApp {
    spawn_app_with(redis.url(), |_| {}).await
}

/// An app node on the Redis at `redis_url`, with `customize` applied to the
/// loaded settings (which is how tests set a short TTL, a second node name...).
pub(crate) async fn spawn_app_with(
    redis_url: String,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_with_routes(redis_url, customize, |_| {}).await
}

/// [`spawn_app_with`], plus `extra_routes` behind the same session
/// middleware: routes that only tests need (one that holds a request in
/// flight, one that fails after writing).
pub(crate) async fn spawn_app_with_routes<F>(
    redis_url: String,
    customize: impl FnOnce(&mut Settings),
    extra_routes: F,
) -> TestApp
where
    F: Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static,
{
    let mut settings = Settings::load().expect("config/default.toml loads");
    settings.server.host = "127.0.0.1".to_owned();
    settings.server.port = 0;
    settings.server.workers = 2;
    settings.server.node_name = format!("node-{}", &SessionId::generate().as_str()[..6]);
    settings.redis.url = redis_url;
    // Port 0 here too: tests run in parallel.
    settings.server.metrics_addr = "127.0.0.1:0".to_owned();
    customize(&mut settings);
    let node_name = settings.server.node_name.clone();
    let application = Application::build_with_routes(settings, extra_routes)
        .await
        .expect("the app starts");
    let address = format!("http://127.0.0.1:{}", application.port());
    let metrics_address = application
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    tokio::spawn(application.run_until_stopped());
    TestApp {
        address,
        node_name,
        metrics_address,
    }
}

/// A client that keeps cookies, as a browser does.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("a client")
}

/// A client that keeps nothing: every header is the test's choice.
pub(crate) fn bare_client() -> reqwest::Client {
    reqwest::Client::new()
}

impl TestApp {
    /// `POST /login {"user": user}` with `client`: the status and the body.
    pub(crate) async fn login(
        &self,
        client: &reqwest::Client,
        user: &str,
    ) -> (StatusCode, serde_json::Value) {
        let response = client
            .post(self.url("/login"))
            .json(&serde_json::json!({ "user": user }))
            .send()
            .await
            .expect("POST /login");
        let status = response.status();
        (status, response.json().await.unwrap_or_default())
    }

    /// `GET /me` with `client`: the body.
    pub(crate) async fn me(&self, client: &reqwest::Client) -> serde_json::Value {
        let response = client.get(self.url("/me")).send().await.expect("GET /me");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("a JSON body")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The status of `GET path` with `client`.
    pub(crate) async fn status_of(&self, client: &reqwest::Client, path: &str) -> StatusCode {
        client
            .get(self.url(path))
            .send()
            .await
            .expect("GET")
            .status()
    }

    /// `GET /count` with `client`'s own cookies.
    pub(crate) async fn count(&self, client: &reqwest::Client) -> CountReply {
        let response = client
            .get(self.url("/count"))
            .send()
            .await
            .expect("GET /count");
        CountReply::read(response).await
    }

    /// `GET /count` with exactly this `Cookie` header (raw bytes allowed).
    pub(crate) async fn count_with_cookie(&self, cookie: &[u8]) -> CountReply {
        let value = reqwest::header::HeaderValue::from_bytes(cookie).expect("a header value");
        let response = bare_client()
            .get(self.url("/count"))
            .header(reqwest::header::COOKIE, value)
            .send()
            .await
            .expect("GET /count");
        CountReply::read(response).await
    }

    /// `GET /count` for the session `sid`, with no cookie jar.
    pub(crate) async fn count_as(&self, sid: &str) -> CountReply {
        self.count_with_cookie(format!("sid={sid}").as_bytes())
            .await
    }
}

impl CountReply {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let served_by = headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sid = set_cookie(&headers, "sid").map(|cookie| {
            cookie
                .split(';')
                .next()
                .and_then(|pair| pair.strip_prefix("sid="))
                .unwrap_or_default()
                .to_owned()
        });
        let count = response
            .json::<CountBody>()
            .await
            .ok()
            .map(|body| body.count);
        Self {
            status,
            count,
            served_by,
            sid,
            headers,
        }
    }
}

/// The whole `Set-Cookie` value for cookie `name`, if the response set it.
pub(crate) fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The user fields of `sid_<id>` straight from Redis (`HGETALL`, metadata
/// left out), sorted.
pub(crate) fn stored_fields(redis: &RedisServer, sid: &str) -> Vec<(String, String)> {
    let mut fields = stored_hash(redis, sid);
    fields.retain(|(name, _)| !name.starts_with("__"));
    fields
}

/// Every field of `sid_<id>`, metadata (`__created`, `__seen`) included, sorted.
pub(crate) fn stored_hash(redis: &RedisServer, sid: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = testkit::redis::cmd("HGETALL")
        .arg(format!("sid_{sid}"))
        .query(&mut redis.connection())
        .expect("HGETALL");
    fields.sort();
    fields
}

/// `TTL sid_<id>` straight from Redis (-2: no such key).
pub(crate) fn stored_ttl(redis: &RedisServer, sid: &str) -> i64 {
    testkit::redis::cmd("TTL")
        .arg(format!("sid_{sid}"))
        .query(&mut redis.connection())
        .expect("TTL")
}

/// Every key in Redis.
pub(crate) fn all_keys(redis: &RedisServer) -> Vec<String> {
    testkit::redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection())
        .expect("KEYS")
}

/// The real `app` binary in a process of its own: its own metrics recorder,
/// its own signals.
pub(crate) struct AppProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    pub(crate) port: u16,
    /// The port given to its metrics listener (`server.metrics_addr`).
    pub(crate) metrics_port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The thread that copies stderr into `log`; it ends at EOF, when the
    /// process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl AppProcess {
    /// Starts the binary on a free port, and its metrics listener on
    /// another, with `env` (on top of Redis at `redis_url` and one worker)
    /// and waits until `/healthz` answers.
    pub(crate) async fn start(redis_url: &str, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let port = testkit::free_port();
        let metrics_port = testkit::free_port();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
            .env("APP__REDIS__URL", redis_url)
            .env("APP__SERVER__PORT", port.to_string())
            .env(
                "APP__SERVER__METRICS_ADDR",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("APP__SERVER__WORKERS", "1")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the app binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("not poisoned").push(line);
            }
        });
        let base = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the app did not come up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self {
            child,
            base,
            port,
            metrics_port,
            log,
            reader: Some(reader),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `path` on its metrics listener.
    pub(crate) fn metrics_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics_port)
    }

    /// Everything the process has logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("not poisoned").join("\n")
    }

    /// Sends SIGTERM, by PID, as an orchestrator would.
    pub(crate) fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit, and for [`log`] to hold
    /// everything it wrote; its exit code.
    ///
    /// [`log`]: AppProcess::log
    pub(crate) async fn exit_code(&mut self, limit: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "the app did not exit");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        // Its last lines may still be in the pipe: read it to the end.
        while self
            .reader
            .as_ref()
            .is_some_and(|reader| !reader.is_finished())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the app's stderr stayed open"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        status.code()
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
