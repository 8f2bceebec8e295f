//! `/metrics` in the Prometheus text format, on a listener of its own
//! (`server.metrics_addr`), the per-request metrics, and the hash the
//! access log (`access_log.rs`) shows for a session cookie.
//!
//! The libraries record through the `metrics` facade (names in
//! `redis_client::metric_names` and `session::metric_names`); this module
//! installs the recorder, `metrics-exporter-prometheus`, once per process,
//! and adds what only the app knows: requests by route and status, and the
//! pool's gauges at scrape time.

use std::cell::RefCell;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::Server;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::middleware::Next;
use actix_web::{App, Error, HttpResponse, HttpServer, web};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use redis_client::RedisService;

/// Counter, labels `method` (a standard method, or `other`), `route` (the
/// pattern, e.g. `/count`, or `unmatched`) and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram, label `route`: time from the request reaching the app to its
/// response, session commit included.
pub const HTTP_REQUEST_SECONDS: &str = "http_request_duration_seconds";
/// Gauges: the Redis pool's connections, those idle, and callers waiting.
pub const POOL_SIZE: &str = "redis_pool_connections";
/// See [`POOL_SIZE`].
pub const POOL_AVAILABLE: &str = "redis_pool_idle_connections";
/// See [`POOL_SIZE`].
pub const POOL_WAITING: &str = "redis_pool_waiting_callers";

/// Latency buckets in seconds: loopback Redis answers in tens of
/// microseconds, a stalled one in the 1 s response timeout.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// How often histogram samples are folded into buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What `/metrics` needs: the recorder's handle and, with the Redis store,
/// the pool to read gauges from.
#[derive(Clone)]
pub struct Telemetry {
    handle: PrometheusHandle,
    redis: Option<RedisService>,
}

/// Installs the Prometheus recorder on first use and returns its handle;
/// later calls (several apps in one test process) share it. Call it before
/// anything records, so that start-up's round trips are counted too.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Only an empty bucket list fails, and ours is not empty; were it
            // to, histograms would render as summaries instead.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                log::warn!("another metrics recorder was installed first: /metrics stays empty");
            }
            // Histograms keep raw samples until upkeep folds them into their
            // buckets: without it, memory grows with every request between
            // scrapes (the benchmark's RSS check found this).
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                log::warn!("no metrics upkeep thread ({error}): histograms fold at scrapes only");
            }
            handle
        })
        .clone()
}

impl Telemetry {
    /// `/metrics` for the recorder [`install_recorder`] installed, with
    /// `redis`'s pool gauges if there is one.
    pub fn new(redis: Option<RedisService>) -> Self {
        Self {
            handle: install_recorder(),
            redis,
        }
    }

    fn render(&self) -> String {
        if let Some(redis) = &self.redis {
            let status = redis.pool_status();
            metrics::gauge!(POOL_SIZE).set(status.size as f64);
            metrics::gauge!(POOL_AVAILABLE).set(status.available as f64);
            metrics::gauge!(POOL_WAITING).set(status.waiting as f64);
        }
        self.handle.render()
    }
}

/// The metrics listener (`server.metrics_addr`): `GET /metrics` and nothing
/// else, apart from the public routes, so that a load balancer fronting
/// those never exposes the metrics. One worker: a scrape every few seconds
/// needs no more. It handles no signal: `Application::run_until_stopped`
/// stops it after the main server.
///
/// # Errors
///
/// The listener cannot be served (the OS refused it).
pub(crate) fn metrics_server(
    listener: TcpListener,
    telemetry: web::Data<Telemetry>,
) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(telemetry.clone())
            .route("/metrics", web::get().to(metrics_endpoint))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(METRICS_SHUTDOWN_SECS)
    .listen(listener)?;
    Ok(server.run())
}

/// A scrape in flight when the app stops gets this long to finish.
const METRICS_SHUTDOWN_SECS: u64 = 1;

/// `GET /metrics`: the Prometheus text format. Touches no session.
async fn metrics_endpoint(telemetry: web::Data<Telemetry>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(telemetry.render())
}

/// Middleware: counts every request by route and status, and times it.
pub(crate) async fn record_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = method_label(request.method());
    let response = next.call(request).await?;
    let status = response.status().as_u16();
    RequestMetrics::with(method, response.request(), status, |handles| {
        handles.duration.record(started.elapsed());
        handles.requests.increment(1);
    });
    Ok(response)
}

/// The request metrics' handles for one (method, route, status).
struct RequestMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// One worker's handles, found by the request's path while the path IS the
/// route's pattern (a static route such as `/count`).
struct StaticRoute {
    method: &'static str,
    status: u16,
    path: Box<str>,
    handles: RequestMetrics,
}

/// Handles for at most this many (method, static route, status) per worker.
/// Past it, requests take the slow path: still counted, only slower.
const STATIC_ROUTES_CACHED: usize = 64;

impl RequestMetrics {
    /// Runs `record` with the handles for this request, cached per thread.
    ///
    /// The common case, a static route, is a short scan comparing the path,
    /// with no allocation and no hashing: registering handles per request,
    /// or keying a map by `HttpRequest::match_pattern` (which walks the
    /// router again and allocates), cost every request. Only paths equal to their pattern
    /// are cached, so the cache is bounded by the app's routes, however
    /// many distinct paths clients send.
    fn with(
        method: &'static str,
        request: &actix_web::HttpRequest,
        status: u16,
        record: impl FnOnce(&RequestMetrics),
    ) {
        thread_local! {
            static CACHED: RefCell<Vec<StaticRoute>> = const { RefCell::new(Vec::new()) };
        }
        let path = request.path();
        CACHED.with_borrow_mut(|cached| {
            let hit = cached.iter().find(|entry| {
                entry.status == status && entry.method == method && *entry.path == *path
            });
            if let Some(entry) = hit {
                return record(&entry.handles);
            }
            // Dynamic routes (`/users/{id}`) and unmatched paths: the
            // registry's own lookup, labels by pattern, never by path.
            let route = request.match_pattern();
            let handles = RequestMetrics::register(method, route.as_deref(), status);
            record(&handles);
            if route.as_deref() == Some(path) && cached.len() < STATIC_ROUTES_CACHED {
                cached.push(StaticRoute {
                    method,
                    status,
                    path: path.into(),
                    handles,
                });
            }
        });
    }

    fn register(method: &'static str, route: Option<&str>, status: u16) -> Self {
        let route = route.unwrap_or("unmatched").to_owned();
        Self {
            requests: metrics::counter!(
                HTTP_REQUESTS_TOTAL,
                "method" => method,
                "route" => route.clone(),
                "status" => status.to_string()
            ),
            duration: metrics::histogram!(HTTP_REQUEST_SECONDS, "route" => route),
        }
    }
}

/// The method as a label: anything but the standard methods is `other`, so a
/// client inventing methods cannot grow the metrics without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Eight hex digits of a keyed-by-nothing SipHash, which the access log
/// shows for the session cookie: the same on every node,
/// so one session's lines can be followed across nodes, and 32 bits, so
/// nothing of the 122-bit id can be recovered from it.
pub fn short_hash(text: &str) -> String {
    format!("{:08x}", short_hash_bits(text))
}

/// The 32 bits [`short_hash`] shows in hex.
pub(crate) fn short_hash_bits(text: &str) -> u32 {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(text);
    // The top half of 64 bits: fits.
    (hash >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::{install_recorder, record_request, short_hash};
    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpResponse, test as actix_test, web};
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

    /// The value of the `http_requests_total` sample whose labels include
    /// every one of `labels` (rendered as `name="value"`), or 0.
    fn requests_total(rendered: &str, labels: &[&str]) -> f64 {
        rendered
            .lines()
            .filter(|line| line.starts_with("http_requests_total{"))
            .filter(|line| labels.iter().all(|label| line.contains(label)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    #[actix_web::test]
    async fn requests_are_labelled_by_route_pattern_never_by_path() {
        let handle = install_recorder();
        // More static routes than the per-thread cache holds: the ones past
        // it take the slow path and must count the same.
        let statics: Vec<String> = (0..70).map(|i| format!("/label-test-{i}")).collect();
        let registered = statics.clone();
        let app = actix_test::init_service(
            App::new()
                .wrap(from_fn(record_request))
                .route("/label-test-items/{id}", web::get().to(HttpResponse::Ok))
                .configure(move |config| {
                    for path in &registered {
                        config.route(path, web::get().to(HttpResponse::Ok));
                    }
                }),
        )
        .await;
        let mut paths: Vec<String> = (0..3).map(|i| format!("/label-test-items/{i}")).collect();
        for path in &statics {
            paths.push(path.clone());
            paths.push(path.clone());
        }
        paths.extend((0..5).map(|i| format!("/label-test-nowhere-{i}")));
        for path in &paths {
            let request = actix_test::TestRequest::get().uri(path).to_request();
            actix_test::call_service(&app, request).await;
        }

        let rendered = handle.render();
        let dynamic = ["route=\"/label-test-items/{id}\"", "status=\"200\""];
        assert_eq!(requests_total(&rendered, &dynamic), 3.0, "{rendered}");
        for path in &statics {
            let route = format!("route=\"{path}\"");
            let counted = requests_total(&rendered, &[&route, "status=\"200\""]);
            assert_eq!(counted, 2.0, "{path}");
        }
        assert!(
            !rendered.contains("/label-test-items/1") && !rendered.contains("label-test-nowhere"),
            "labels are patterns, never paths: {rendered}"
        );
        // 404s are shared with other tests in this process: at least ours.
        let unmatched = ["route=\"unmatched\"", "status=\"404\""];
        assert!(requests_total(&rendered, &unmatched) >= 5.0, "{rendered}");
    }

    #[test]
    fn the_short_hash_is_stable_and_reveals_no_id() {
        let id = "3f2a9c1e-4b7d-4e2a-9c1e-3f2a9c1e4b7d";
        let top = BuildHasherDefault::<DefaultHasher>::default().hash_one(id) >> 32;
        assert_eq!(
            short_hash(id),
            format!("{top:08x}"),
            "`{{:08x}}` of the top half"
        );
        assert_eq!(short_hash(id), short_hash(id));
        assert_eq!(short_hash(id).len(), 8);
        assert!(!id.contains(&short_hash(id)));
        assert_ne!(short_hash(id), short_hash("another"));
    }
}
