//! The access log: one line per request, formatted on the worker by a small
//! hand-written middleware and written by a thread of its own.
//!
//! A line reads as actix's `Logger` wrote it through env_logger before:
//!
//! ```text
//! [2026-12-01T10:00:00.123Z INFO  actix_web::middleware::logger] 127.0.0.1 "GET /count HTTP/1.1" 200 11 0.253412ms sid=3f2a9c1e "curl/8.5.0"
//! ```
//!
//! the client's IP address, the request line, the status, the body's bytes, the
//! time (to the end of a streamed body; for a sized body, to when the
//! response is ready, before it is sent, unlike `Logger`), `sid=` with eight hex digits of a hash of the
//! session cookie (`-` without one; never the id), and the `User-Agent`.
//! Same destination (stderr), same header, same target, so log collection,
//! greps and `RUST_LOG` directives that named actix's logger still work. The
//! only differences: no colours on a terminal, and `"`, `\`, control
//! characters and line separators in the request line or the `User-Agent`
//! are escaped (`\"`, `\\`, `\t`, `\u{1b}`: [`session::log_text`], the
//! rule every log line of the app follows), so a client cannot forge a
//! field or a line.
//!
//! Why not `Logger`: it interprets its format string per request (a
//! `String` per field) and writes each line through env_logger, a
//! `write(2)` on the worker thread. Here the worker formats its line by
//! hand into a reused buffer and queues it; [`AccessLogWriter`]'s thread
//! adds the header, batches lines into a buffer that it writes out whole,
//! and hands the line buffers back. Counted by callgrind on `GET /count`
//! (one worker, one request at a time), the log costs the worker about
//! 3,500 instructions per request and the writer thread 1,100, against
//! 27,000 on the worker, and a `write(2)`, for `Logger`.
//!
//! The guarantees:
//! - **Nothing dropped.** The queue is bounded ([`QUEUE_LINES`]): when the
//!   writer falls that far behind (stderr blocked by a stalled log
//!   collector), a worker waits for room, as it waited on `write(2)`
//!   before, rather than losing the line or growing memory without bound.
//! - **Nothing interleaved.** Each line goes into the buffer with one
//!   `write_all`, and the buffer ([`BATCH_BYTES`], `PIPE_BUF`) is written out
//!   only between lines, so every `write(2)` holds whole lines, atomically
//!   on a pipe, beside other writers of stderr. (A line longer than
//!   `PIPE_BUF` on its own, from a client sending kilobytes of path or
//!   `User-Agent`, is still written whole by this thread, but the kernel no
//!   longer promises that no other writer's bytes land inside it.)
//! - **Lost only with stderr.** A write that stderr refuses (closed, or
//!   non-blocking and full) loses its line: there is nowhere to report it.
//! - **Flushed on shutdown.** [`AccessLogWriter::finish`] (or its `Drop`)
//!   closes the queue, lets the thread write everything queued, and joins
//!   it. `Application::run_until_stopped` calls it once the server has
//!   stopped and the last in-flight request is done. A line sent after that
//!   (only a handle kept past its writer can) goes through `log` instead.
//!
//! Lines reach stderr within [`POLL_EVERY`] of their request, so they can
//! trail the other log lines by that much; a process killed outright
//! (`SIGKILL`) loses at most those.

use std::future::{Future, Ready, ready};
use std::io::{self, BufWriter, Write};
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Version;
use actix_web::http::header::{COOKIE, HeaderMap, USER_AGENT};
use actix_web::web::Bytes;
use actix_web::{Error, HttpRequest};

use session::log_text::{Escaped, push_escaped};

use crate::telemetry::short_hash_bits;

/// The log target: actix's `Logger` logged under it, so `RUST_LOG`
/// directives and log filters that named it keep working.
pub(crate) const TARGET: &str = "actix_web::middleware::logger";

/// Lines the queue holds before a worker waits for the writer: about a
/// megabyte, a fifth of a second at 40k requests/s.
pub(crate) const QUEUE_LINES: usize = 8192;

/// The writer's buffer, written out between lines only. `PIPE_BUF`: a
/// `write(2)` of at most this much to a pipe is atomic, so a batch never
/// interleaves with another writer's line (env_logger's, from a worker).
const BATCH_BYTES: usize = 4096;

/// How long the writer sleeps between two drains of the queue while
/// requests come in. Sleeping, rather than blocking on the queue, is what
/// keeps the workers' side cheap: a worker that queues a line for a writer
/// blocked on the queue has to wake it (a futex call, a context switch on a
/// busy core), once per line under load.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// Empty drains in a row after which the writer blocks on the queue
/// instead (an idle server costs no wake-ups; its next line wakes it).
const IDLE_POLLS: u32 = 3;

/// Emptied line buffers kept for reuse, at most this many: enough for the
/// lines of several drains at full speed.
const SPARE_BUFFERS: usize = 1024;

/// A buffer that grew past this (a long URL, a long `User-Agent`) is freed
/// rather than kept, so the spares stay small.
const SPARE_CAPACITY: usize = 1024;

/// One line on its way to the writer: its text, without the header.
#[derive(Debug)]
struct Line {
    /// When the request ended, for the header's timestamp.
    at: SystemTime,
    /// The line after the header, without the newline: UTF-8 (the
    /// `User-Agent` is decoded lossily).
    text: Vec<u8>,
}

/// A handle on the writer's queue: what each worker's middleware holds.
/// Clones share one queue.
#[derive(Clone, Debug)]
pub(crate) struct AccessLog {
    /// The sending end, `None` once [`AccessLogWriter::finish`] closed the
    /// queue. Workers share the read lock; closing takes the write lock, so
    /// a line is either queued before the close, and written, or sent
    /// through `log`: never queued into a closed channel and lost.
    queue: Arc<RwLock<Option<SyncSender<Line>>>>,
    /// Buffers of written lines, emptied, back from the writer thread. A
    /// worker takes one for its next line rather than allocating: a buffer
    /// freed on another thread than the one that allocated it would send
    /// every allocation down the allocator's slow path.
    spares: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AccessLog {
    /// An empty buffer for a line of about `capacity` bytes.
    fn buffer(&self, capacity: usize) -> Vec<u8> {
        let spare = self
            .spares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut buffer = spare.unwrap_or_default();
        buffer.reserve(capacity);
        buffer
    }

    /// Queues `text` (one line, no newline) for the writer, waiting if the
    /// queue is full; once the writer has finished, logs it through `log`
    /// instead.
    fn write(&self, text: Vec<u8>) {
        if let Err(line) = self.send(Line {
            at: SystemTime::now(),
            text,
        }) {
            log::info!(target: TARGET, "{}", String::from_utf8_lossy(&line.text));
        }
    }

    /// Queues `line`, waiting for room. The line back if the queue is
    /// closed or its thread is gone.
    fn send(&self, line: Line) -> Result<(), Line> {
        let queue = self.queue.read().unwrap_or_else(PoisonError::into_inner);
        match queue.as_ref() {
            Some(sender) => sender.send(line).map_err(|error| error.0),
            None => Err(line),
        }
    }
}

/// The writer thread, as a guard: dropping it, or [`finish`], writes out
/// everything queued and joins the thread.
///
/// [`finish`]: AccessLogWriter::finish
#[derive(Debug)]
pub(crate) struct AccessLogWriter {
    /// The queue the handles share.
    log: AccessLog,
    /// The thread, until joined.
    thread: Option<JoinHandle<()>>,
}

impl AccessLogWriter {
    /// A writer to stderr, where env_logger writes the other lines.
    ///
    /// # Errors
    ///
    /// The OS refused a thread.
    pub(crate) fn to_stderr() -> io::Result<Self> {
        Self::spawn(Box::new(io::stderr()), QUEUE_LINES)
    }

    /// A writer to `sink`, with room for `capacity` queued lines.
    ///
    /// # Errors
    ///
    /// The OS refused a thread.
    pub(crate) fn spawn(sink: Box<dyn Write + Send>, capacity: usize) -> io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(capacity);
        let spares = Arc::new(Mutex::new(Vec::new()));
        let returned = Arc::clone(&spares);
        let thread = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_lines(&receiver, sink, &returned))?;
        Ok(Self {
            log: AccessLog {
                queue: Arc::new(RwLock::new(Some(sender))),
                spares,
            },
            thread: Some(thread),
        })
    }

    /// A handle for a worker's middleware.
    pub(crate) fn handle(&self) -> AccessLog {
        self.log.clone()
    }

    /// Closes the queue, waits until every line queued is written and
    /// flushed, and joins the thread.
    pub(crate) fn finish(mut self) {
        self.close();
    }

    fn close(&mut self) {
        // Dropping the only sender closes the channel; the thread drains it
        // to the end and returns. A worker still waiting for room holds the
        // read lock, and gets its line queued first.
        drop(
            self.log
                .queue
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::warn!("the access log's writer thread panicked");
        }
    }
}

impl Drop for AccessLogWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread: drains the queue into the buffer, flushes it once the
/// queue is empty, sleeps [`POLL_EVERY`], again; after [`IDLE_POLLS`] empty
/// drains, blocks until a line comes. Returns once the queue is closed and
/// empty, everything written.
fn write_lines(
    receiver: &Receiver<Line>,
    sink: Box<dyn Write + Send>,
    spares: &Mutex<Vec<Vec<u8>>>,
) {
    let mut out = BufWriter::with_capacity(BATCH_BYTES, sink);
    let mut header = Header::default();
    let mut scratch = Vec::with_capacity(512);
    // Buffers of the lines written since the last flush, to hand back.
    let mut emptied = Vec::new();
    // Whether a line was written since the last flush: not the same as
    // `emptied` being non-empty, since a big line's buffer is not kept.
    let mut wrote = false;
    let mut idle = 0;
    loop {
        let closed = loop {
            match receiver.try_recv() {
                Ok(line) => {
                    write_line(&mut out, &mut header, &mut scratch, line, &mut emptied);
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        // The queue is empty: write out what is buffered.
        if wrote {
            // Errors writing stderr have nowhere to go; the next batch tries again.
            let _ = out.flush();
            give_back(&mut emptied, spares);
            wrote = false;
            idle = 0;
        } else {
            idle += 1;
        }
        if closed {
            return;
        }
        if idle < IDLE_POLLS {
            std::thread::sleep(POLL_EVERY);
            continue;
        }
        match receiver.recv() {
            Ok(line) => {
                write_line(&mut out, &mut header, &mut scratch, line, &mut emptied);
                wrote = true;
            }
            // Closed, and everything before written and flushed.
            Err(_) => return,
        }
    }
}

/// Hands the emptied buffers back for reuse, up to [`SPARE_BUFFERS`]; the
/// rest are freed.
fn give_back(emptied: &mut Vec<Vec<u8>>, spares: &Mutex<Vec<Vec<u8>>>) {
    let mut spares = spares.lock().unwrap_or_else(PoisonError::into_inner);
    let room = SPARE_BUFFERS.saturating_sub(spares.len());
    spares.extend(emptied.drain(..).take(room));
    emptied.clear();
}

/// Header, text and newline assembled in `scratch`, then one `write_all`:
/// the buffer only ever holds, and writes out, whole lines.
/// Keeps the line's buffer, emptied, in `emptied` unless it grew too big.
fn write_line(
    out: &mut impl Write,
    header: &mut Header,
    scratch: &mut Vec<u8>,
    mut line: Line,
    emptied: &mut Vec<Vec<u8>>,
) {
    scratch.clear();
    header.write(line.at, scratch);
    scratch.extend_from_slice(&line.text);
    scratch.push(b'\n');
    let _ = out.write_all(scratch);
    if line.text.capacity() <= SPARE_CAPACITY {
        line.text.clear();
        emptied.push(line.text);
    }
}

/// env_logger's default header as `main.rs` configures it
/// (`format_timestamp_millis`): `[<RFC 3339 UTC, ms> INFO  <target>] `.
/// Keeps the date and time of the last second it formatted.
#[derive(Default)]
struct Header {
    /// The Unix second `date_time` shows.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    date_time: String,
}

impl Header {
    fn write(&mut self, at: SystemTime, out: &mut Vec<u8>) {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since_epoch.as_secs();
        if self.second != Some(second) {
            self.date_time = date_time(second);
            self.second = Some(second);
        }
        out.push(b'[');
        out.extend_from_slice(self.date_time.as_bytes());
        out.push(b'.');
        push_decimal(out, u64::from(since_epoch.subsec_millis()), 3);
        out.extend_from_slice(b"Z INFO  ");
        out.extend_from_slice(TARGET.as_bytes());
        out.extend_from_slice(b"] ");
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix second: Howard Hinnant's
/// `civil_from_days`, for the proleptic Gregorian calendar.
fn date_time(unix_second: u64) -> String {
    let days = unix_second / 86_400;
    let of_day = unix_second % 86_400;
    // Days since 0000-03-01, so that a leap day ends its 400-year era.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The middleware: `.wrap(AccessLogMiddleware::new(handle, cookie_name))`,
/// outermost, so the time includes every other layer.
#[derive(Clone)]
pub(crate) struct AccessLogMiddleware {
    /// The queue; `None` logs nothing (the server wraps the middleware in
    /// `Condition` then, which skips it altogether).
    log: Option<AccessLog>,
    /// The session cookie, whose value is shown hashed.
    cookie_name: Arc<str>,
}

impl AccessLogMiddleware {
    pub(crate) fn new(log: Option<AccessLog>, cookie_name: &str) -> Self {
        Self {
            log,
            cookie_name: cookie_name.into(),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for AccessLogMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, CountedBody>>;
    type Error = Error;
    type Transform = AccessLogService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AccessLogService {
            service,
            log: self.log.clone(),
            cookie_name: Arc::clone(&self.cookie_name),
        }))
    }
}

/// [`AccessLogMiddleware`] around one worker's service.
pub(crate) struct AccessLogService<S> {
    service: S,
    log: Option<AccessLog>,
    cookie_name: Arc<str>,
}

type AccessLogFuture<B> =
    Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B, CountedBody>>, Error>>>>;

impl<S, B> Service<ServiceRequest> for AccessLogService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, CountedBody>>;
    type Error = Error;
    type Future = AccessLogFuture<B>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let response = self.service.call(request);
        let log = self.log.clone();
        let cookie_name = Arc::clone(&self.cookie_name);
        Box::pin(async move {
            let response = response.await;
            let Some(log) = log else {
                return response.map(|response| response.map_into_left_body());
            };
            let response = match response {
                Ok(response) => response,
                Err(error) => {
                    // Only a middleware fails this way (a handler's error is
                    // already a response); actix answers with its status.
                    log::debug!(
                        target: TARGET,
                        "a request failed without a response: {}",
                        Escaped(&error)
                    );
                    return Err(error);
                }
            };
            let pending = PendingLine::new(
                &log,
                response.request(),
                response.status().as_u16(),
                &cookie_name,
            );
            Ok(response.map_body(move |_, body| match body.size() {
                BodySize::Sized(bytes) => {
                    log.write(pending.finish(bytes, started.elapsed()));
                    EitherBody::left(body)
                }
                BodySize::None => {
                    log.write(pending.finish(0, started.elapsed()));
                    EitherBody::left(body)
                }
                // A stream: its bytes are counted as they go, and the line
                // written when it ends, as `Logger` did.
                BodySize::Stream => EitherBody::right(CountedBody {
                    body: BoxBody::new(body),
                    bytes: 0,
                    line: Some((log, pending, started)),
                }),
            }))
        })
    }
}

/// A streamed body, counted; its line is written when it is dropped.
pub(crate) struct CountedBody {
    body: BoxBody,
    /// Bytes sent so far.
    bytes: u64,
    /// What the line needs, until it is written.
    line: Option<(AccessLog, PendingLine, Instant)>,
}

impl MessageBody for CountedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.body).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            this.bytes += chunk.len() as u64;
        }
        next
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        if let Some((log, pending, started)) = self.line.take() {
            log.write(pending.finish(self.bytes, started.elapsed()));
        }
    }
}

/// A line with everything but the bytes and the time, which go at `gap`.
struct PendingLine {
    text: Vec<u8>,
    gap: usize,
}

impl PendingLine {
    fn new(log: &AccessLog, request: &HttpRequest, status: u16, cookie_name: &str) -> Self {
        let path = request.path();
        let query = request.query_string();
        let agent = request
            .headers()
            .get(USER_AGENT)
            .map(|agent| agent.as_bytes());
        let mut text = log.buffer(112 + path.len() + query.len() + agent.map_or(1, <[u8]>::len));
        // `%a`: the peer's IP, without its port.
        match request.peer_addr() {
            Some(peer) => push_ip(&mut text, peer.ip()),
            None => text.push(b'-'),
        }
        text.extend_from_slice(b" \"");
        text.extend_from_slice(request.method().as_str().as_bytes());
        text.push(b' ');
        push_escaped(&mut text, path);
        if !query.is_empty() {
            text.push(b'?');
            push_escaped(&mut text, query);
        }
        text.push(b' ');
        text.extend_from_slice(version_name(request.version()).as_bytes());
        text.extend_from_slice(b"\" ");
        push_decimal(&mut text, u64::from(status), 1);
        text.push(b' ');
        let gap = text.len();
        text.extend_from_slice(b" sid=");
        match cookie_value(request.headers(), cookie_name) {
            Some(value) => push_hex(&mut text, short_hash_bits(value)),
            None => text.push(b'-'),
        }
        text.extend_from_slice(b" \"");
        match agent {
            Some(agent) => push_escaped(&mut text, &String::from_utf8_lossy(agent)),
            None => text.push(b'-'),
        }
        text.push(b'"');
        Self { text, gap }
    }

    /// The whole line: `bytes` and `elapsed` in milliseconds, to six
    /// places (`Logger`'s `%b %Dms`), put in the gap.
    fn finish(mut self, bytes: u64, elapsed: Duration) -> Vec<u8> {
        // u64 nanoseconds: 584 years.
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let end = self.text.len();
        push_decimal(&mut self.text, bytes, 1);
        self.text.push(b' ');
        push_decimal(&mut self.text, nanos / 1_000_000, 1);
        self.text.push(b'.');
        push_decimal(&mut self.text, nanos % 1_000_000, 6);
        self.text.extend_from_slice(b"ms");
        // Written at the end, moved into the gap.
        let written = self.text.len() - end;
        self.text[self.gap..].rotate_right(written);
        self.text
    }
}

/// The decimal digits of `n`, zero-padded to at least `width` (at most
/// 20): by hand, as `fmt` costs several times more per line.
fn push_decimal(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let width = width.clamp(1, digits.len());
    let mut at = digits.len();
    while n > 0 || digits.len() - at < width {
        at -= 1;
        // A digit: n % 10 < 10.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[at..]);
}

/// `{:08x}` of `bits`, by hand.
fn push_hex(out: &mut Vec<u8>, bits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..8).rev() {
        out.push(HEX[(bits >> (shift * 4)) as usize & 0xf]);
    }
}

/// `%a`'s text of an IP address: dotted quad, or RFC 5952 for IPv6.
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (at, octet) in v4.octets().into_iter().enumerate() {
                if at > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet), 1);
            }
        }
        std::net::IpAddr::V6(v6) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// `{:?}` of the version, without the formatting machinery.
fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The value of the first `name=value` pair in the `Cookie` headers, as
/// sent (trimmed, not decoded); `None` if there is none, or if it is not
/// UTF-8.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers
        .get_all(COOKIE)
        .flat_map(|header| header.as_bytes().split(|&byte| byte == b';'))
        .find_map(|pair| {
            let equals = pair.iter().position(|&byte| byte == b'=')?;
            let (key, value) = (&pair[..equals], &pair[equals + 1..]);
            (key.trim_ascii() == name.as_bytes()).then(|| value.trim_ascii())
        })?;
    std::str::from_utf8(value).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use actix_web::body::{BodySize, MessageBody};
    use actix_web::web::Bytes;
    use actix_web::{App, HttpResponse, test as actix_test, web};

    use super::{
        AccessLog, AccessLogMiddleware, AccessLogWriter, BATCH_BYTES, Header, Line, QUEUE_LINES,
        TARGET, date_time,
    };
    use crate::telemetry::short_hash;

    /// A sink that keeps every `write` call's bytes, each call apart.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Recorded {
        fn calls(&self) -> Vec<Vec<u8>> {
            self.0.lock().expect("not poisoned").clone()
        }
        fn text(&self) -> String {
            String::from_utf8(self.calls().concat()).expect("UTF-8")
        }
    }

    /// The lines of `text`, each without the header it must start with.
    fn bodies(text: &str) -> Vec<&str> {
        text.lines()
            .map(|line| {
                let (header, body) = line.split_once("] ").expect("a header");
                assert!(
                    header.starts_with('[') && header.ends_with(&format!("Z INFO  {TARGET}")),
                    "{line}"
                );
                body
            })
            .collect()
    }

    #[test]
    fn lines_from_many_threads_all_arrive_whole_in_order_and_none_is_lost() {
        let sink = Recorded::default();
        // A small queue, so that writers wait for room too.
        let writer = AccessLogWriter::spawn(Box::new(sink.clone()), 16).expect("a thread");
        let (threads, per_thread) = (8, 2_000);
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let log = writer.handle();
                scope.spawn(move || {
                    for n in 0..per_thread {
                        // Lengths vary, so lines straddle every batch boundary.
                        let padding = "x".repeat((n * 7 + thread) % 300);
                        log.write(format!("t{thread} n{n} {padding}").into_bytes());
                    }
                });
            }
        });
        writer.finish();

        let calls = sink.calls();
        for call in &calls {
            assert!(call.ends_with(b"\n"), "a write(2) holds whole lines only");
            assert!(call.len() <= BATCH_BYTES, "one batch per write(2)");
        }
        let text = sink.text();
        let mut next = HashMap::new();
        for body in bodies(&text) {
            let mut fields = body.split(' ');
            let thread = fields.next().expect("thread");
            let n: usize = fields.next().expect("n")[1..].parse().expect("a number");
            let padding = fields.next().expect("padding");
            assert!(fields.next().is_none(), "one line per line: {body}");
            let thread_n: usize = thread[1..].parse().expect("a thread number");
            assert_eq!(padding.len(), (n * 7 + thread_n) % 300, "whole: {body}");
            let expected = next.entry(thread_n).or_insert(0);
            assert_eq!(n, *expected, "thread {thread_n}'s lines in order");
            *expected += 1;
        }
        assert_eq!(next.len(), threads);
        assert!(next.values().all(|&count| count == per_thread), "{next:?}");
    }

    /// A sink whose first write waits until the test opens the gate: lines
    /// pile up in the queue behind it.
    struct Gated {
        gate: Option<mpsc::Receiver<()>>,
        out: Recorded,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = self.gate.take() {
                let _ = gate.recv();
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn everything_queued_is_written_once_the_guard_is_dropped() {
        let (open, gate) = mpsc::channel();
        let out = Recorded::default();
        let sink = Gated {
            gate: Some(gate),
            out: out.clone(),
        };
        let writer = AccessLogWriter::spawn(Box::new(sink), QUEUE_LINES).expect("a thread");
        let log = writer.handle();
        let lines = 3_000;
        for n in 0..lines {
            log.write(format!("line {n}").into_bytes());
        }
        open.send(()).expect("the writer waits at the gate");
        drop(writer);

        let text = out.text();
        let expected: Vec<String> = (0..lines).map(|n| format!("line {n}")).collect();
        assert_eq!(bodies(&text), expected);
    }

    #[test]
    fn a_line_is_written_out_once_the_queue_is_empty_not_only_at_shutdown() {
        let sink = Recorded::default();
        let writer = AccessLogWriter::spawn(Box::new(sink.clone()), 16).expect("a thread");
        let log = writer.handle();
        // Twice: once while the writer polls, once after it has gone idle
        // and blocks on the queue.
        for round in 0..2 {
            log.write(format!("round {round}").into_bytes());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while bodies(&sink.text()).len() <= round {
                assert!(
                    std::time::Instant::now() < deadline,
                    "line {round} still buffered: {:?}",
                    sink.text()
                );
                std::thread::yield_now();
            }
            if round == 0 {
                // Until the writer blocks on the queue (its idle polls are over).
                std::thread::sleep(super::POLL_EVERY * (super::IDLE_POLLS + 2));
            }
        }
        assert_eq!(bodies(&sink.text()), ["round 0", "round 1"]);
        writer.finish();
    }

    #[test]
    fn a_line_too_big_to_keep_its_buffer_is_written_out_too_once_the_queue_is_empty() {
        let sink = Recorded::default();
        let writer = AccessLogWriter::spawn(Box::new(sink.clone()), 16).expect("a thread");
        let big = "y".repeat(super::SPARE_CAPACITY + 100);
        writer.handle().write(big.clone().into_bytes());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while bodies(&sink.text()).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the big line is still buffered"
            );
            std::thread::yield_now();
        }
        assert_eq!(bodies(&sink.text()), [big]);
        writer.finish();
    }

    #[test]
    fn written_buffers_come_back_empty_for_reuse_but_big_ones_are_freed() {
        let writer = AccessLogWriter::spawn(Box::new(Recorded::default()), 16).expect("a thread");
        let log = writer.handle();
        for n in 0..10 {
            let mut text = log.buffer(64);
            text.extend_from_slice(format!("line {n}").as_bytes());
            log.write(text);
        }
        log.write(vec![b'x'; super::SPARE_CAPACITY + 1]);
        writer.finish();

        let spares = log.spares.lock().expect("not poisoned");
        assert_eq!(spares.len(), 10, "the big one is not kept");
        assert!(
            spares
                .iter()
                .all(|spare| spare.is_empty() && spare.capacity() >= 64)
        );
    }

    #[test]
    fn a_line_sent_after_the_writer_finished_comes_back_rather_than_vanishing() {
        let writer = AccessLogWriter::spawn(Box::new(Recorded::default()), 4).expect("a thread");
        let log: AccessLog = writer.handle();
        writer.finish();
        let line = Line {
            at: SystemTime::now(),
            text: b"late".to_vec(),
        };
        let returned = log.send(line).expect_err("the queue is closed");
        assert_eq!(returned.text, b"late");
    }

    #[test]
    fn timestamps_are_utc_rfc_3339_to_the_second() {
        assert_eq!(date_time(0), "1970-01-01T00:00:00");
        assert_eq!(date_time(951_782_399), "2000-02-28T23:59:59");
        assert_eq!(date_time(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(date_time(951_868_800), "2000-03-01T00:00:00");
        assert_eq!(date_time(1_709_164_800), "2024-02-29T00:00:00");
        assert_eq!(date_time(1_798_761_599), "2026-12-31T23:59:59");
        assert_eq!(date_time(4_107_542_400), "2100-03-01T00:00:00");
    }

    /// An env_logger configured as `main.rs` configures it, without colour,
    /// writing into the returned buffer.
    fn env_logger_like_main() -> (env_logger::Logger, Recorded) {
        let out = Recorded::default();
        let logger = env_logger::Builder::new()
            .filter_level(log::LevelFilter::Info)
            .format_timestamp_millis()
            .write_style(env_logger::WriteStyle::Never)
            .target(env_logger::Target::Pipe(Box::new(out.clone())))
            .build();
        (logger, out)
    }

    #[test]
    fn the_header_is_env_logger_s_as_main_configures_it() {
        use log::Log;
        let (logger, out) = env_logger_like_main();
        let before = SystemTime::now();
        logger.log(
            &log::Record::builder()
                .target(TARGET)
                .level(log::Level::Info)
                .args(format_args!("the same line"))
                .build(),
        );
        let after = SystemTime::now();
        let theirs = out.text();

        let ours = |at| {
            let mut line = Vec::new();
            Header::default().write(at, &mut line);
            line.extend_from_slice(b"the same line\n");
            String::from_utf8(line).expect("UTF-8")
        };
        let (earliest, latest) = (ours(before), ours(after));
        // Fixed-width RFC 3339 sorts as time does: theirs lies in between.
        assert_eq!(theirs.len(), earliest.len(), "{theirs:?} / {earliest:?}");
        assert!(earliest <= theirs && theirs <= latest, "{theirs:?}");
        assert_eq!(theirs[24..], earliest[24..], "the same after the timestamp");

        let mut millis = Vec::new();
        Header::default().write(UNIX_EPOCH + Duration::from_millis(1_234), &mut millis);
        assert_eq!(
            String::from_utf8(millis).expect("UTF-8"),
            format!("[1970-01-01T00:00:01.234Z INFO  {TARGET}] ")
        );
    }

    /// `body` of a line: `peer "request line" status bytes time sid= "agent"`.
    struct Fields<'a> {
        peer: &'a str,
        request: &'a str,
        status: &'a str,
        bytes: &'a str,
        millis: &'a str,
        sid: &'a str,
        agent: &'a str,
    }

    fn fields(body: &str) -> Fields<'_> {
        let (peer, rest) = body.split_once(" \"").expect("a peer");
        let (request, rest) = rest.split_once("\" ").expect("a request line");
        let mut parts = rest.splitn(5, ' ');
        let mut next = || parts.next().expect("a field");
        let (status, bytes, millis, sid, agent) = (next(), next(), next(), next(), next());
        Fields {
            peer,
            request,
            status,
            bytes,
            millis: millis.strip_suffix("ms").expect("ms"),
            sid: sid.strip_prefix("sid=").expect("sid="),
            agent: agent
                .strip_prefix('"')
                .and_then(|agent| agent.strip_suffix('"'))
                .expect("a quoted agent"),
        }
    }

    /// Serves `App` with the middleware on one request, and returns the
    /// lines written.
    async fn lines_for(request: actix_test::TestRequest) -> String {
        let sink = Recorded::default();
        let writer = AccessLogWriter::spawn(Box::new(sink.clone()), 16).expect("a thread");
        {
            let app = actix_test::init_service(
                App::new()
                    .wrap(AccessLogMiddleware::new(Some(writer.handle()), "sid"))
                    .route("/count", web::get().to(|| async { "{\"count\":1}" }))
                    .route(
                        "/stream",
                        web::get().to(|| async {
                            HttpResponse::Ok().body(TwoChunks(vec!["abc", "defgh"]))
                        }),
                    ),
            )
            .await;
            let response = actix_test::call_service(&app, request.to_request()).await;
            let body = actix_test::read_body(response).await;
            assert!(!body.is_empty());
        }
        writer.finish();
        sink.text()
    }

    /// A body of two chunks, 8 bytes, whose size is not known up front.
    struct TwoChunks(Vec<&'static str>);

    impl MessageBody for TwoChunks {
        type Error = std::convert::Infallible;

        fn size(&self) -> BodySize {
            BodySize::Stream
        }

        fn poll_next(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Bytes, Self::Error>>> {
            let chunks = &mut self.get_mut().0;
            Poll::Ready(
                (!chunks.is_empty()).then(|| Ok(Bytes::from_static(chunks.remove(0).as_bytes()))),
            )
        }
    }

    #[actix_web::test]
    async fn a_request_makes_one_line_with_every_field_and_only_a_hash_of_the_sid() {
        let sid = "3f2a9c1e-4b7d-4e2a-9c1e-3f2a9c1e4b7d";
        let request = actix_test::TestRequest::get()
            .uri("/count?x=1")
            .peer_addr("10.1.2.3:4567".parse().expect("an address"))
            .insert_header(("cookie", format!("theme=dark; sid={sid}")))
            .insert_header(("user-agent", "curl/8.5.0"));

        let text = lines_for(request).await;

        let lines = bodies(&text);
        assert_eq!(lines.len(), 1, "{text}");
        let line = fields(lines[0]);
        assert_eq!(line.peer, "10.1.2.3", "the IP, as `Logger`'s `%a`");
        assert_eq!(line.request, "GET /count?x=1 HTTP/1.1");
        assert_eq!(line.status, "200");
        assert_eq!(line.bytes, "11");
        let (whole, fraction) = line.millis.split_once('.').expect("a fraction");
        assert!(
            whole.parse::<u64>().is_ok() && fraction.len() == 6,
            "{text}"
        );
        assert_eq!(line.sid, short_hash(sid));
        assert!(line.sid.len() == 8 && line.sid.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(line.agent, "curl/8.5.0");
        assert!(!text.contains(sid), "{text}");
    }

    #[actix_web::test]
    async fn without_a_cookie_or_an_agent_the_line_shows_dashes() {
        let text = lines_for(actix_test::TestRequest::get().uri("/count")).await;

        let lines = bodies(&text);
        assert_eq!(lines.len(), 1, "{text}");
        let line = fields(lines[0]);
        assert_eq!((line.peer, line.sid, line.agent), ("-", "-", "-"), "{text}");
    }

    #[actix_web::test]
    async fn a_streamed_body_is_counted_to_its_end() {
        let text = lines_for(actix_test::TestRequest::get().uri("/stream")).await;

        let lines = bodies(&text);
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(fields(lines[0]).bytes, "8", "{text}");
    }

    #[actix_web::test]
    async fn quotes_and_control_bytes_from_the_client_cannot_forge_a_field() {
        let request = actix_test::TestRequest::get()
            .uri("/count")
            .insert_header(("user-agent", "a\" 500 \\ \tb"));

        let text = lines_for(request).await;

        let lines = bodies(&text);
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(fields(lines[0]).agent, r#"a\" 500 \\ \tb"#, "{text}");
        assert_eq!(fields(lines[0]).status, "200");
    }

    #[test]
    fn numbers_and_addresses_read_as_fmt_writes_them() {
        let text = |push: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            push(&mut out);
            String::from_utf8(out).expect("UTF-8")
        };
        for n in [0, 7, 10, 999, 1_000_000, u64::MAX] {
            assert_eq!(text(&|out| super::push_decimal(out, n, 1)), n.to_string());
            assert_eq!(
                text(&|out| super::push_decimal(out, n, 6)),
                format!("{n:06}")
            );
        }
        for bits in [0, 0xa, 0xdead_beef, u32::MAX] {
            assert_eq!(
                text(&|out| super::push_hex(out, bits)),
                format!("{bits:08x}")
            );
        }
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let parsed = ip.parse().expect("an address");
            assert_eq!(text(&|out| super::push_ip(out, parsed)), ip);
        }
        let line = super::PendingLine {
            text: b"a  b".to_vec(),
            gap: 2,
        };
        let finished = line.finish(11, Duration::from_nanos(1_253_412));
        assert_eq!(finished, b"a 11 1.253412ms b", "Logger's `%b %Dms`");
        assert_eq!(
            text(&|out| super::push_escaped(out, "é\"\\\u{7f}")),
            r#"é\"\\\u{7f}"#,
            "UTF-8 whole, the rest escaped"
        );
    }

    #[test]
    fn the_sid_is_read_from_any_cookie_header() {
        use actix_web::http::header::{COOKIE, HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1;  sidx=2"));
        headers.append(COOKIE, HeaderValue::from_static("b=3; sid = 4 ; sid=5"));
        assert_eq!(super::cookie_value(&headers, "sid"), Some("4"));
        assert_eq!(super::cookie_value(&headers, "none"), None);
    }
}
