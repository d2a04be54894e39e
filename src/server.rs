//! The accept loop and each client connection: HTTP/1.1 and h2c on one port (hyper-util auto),
//! header-size limits, a bounded number of connections, deadlines for connections that send no
//! request or sit idle, one access-log line per request, a panic contained to the request that
//! raised it, and graceful shutdown with a hard deadline.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::Config;
use crate::proxy::{Answer, Proxy};

mod access;
use access::{AccessLog, LoggedBody};

/// A proxy serving on a bound address, stopped with [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    proxy: Arc<Proxy>,
    stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy itself (its memory tier, for inspection).
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// The listener's counters.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// Stops accepting, lets in-flight requests finish within `timeouts.shutdown`, and waits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What the listener did, for tests and metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Client connections open now.
    pub open: AtomicUsize,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Times the accept loop stopped at `limits.max_connections` (new connections then wait in
    /// the listen backlog until one closes).
    pub at_limit: AtomicU64,
    /// Failed `accept` calls (for example out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Connections closed because no complete request arrived within `timeouts.header_read`
    /// of being accepted.
    pub no_request: AtomicU64,
    /// Connections closed after `timeouts.client_idle` without a request.
    pub idle_closed: AtomicU64,
    /// Panics contained to one request: raised while handling it (answered 500) or while
    /// sending its body (the response cut off, as for any failed body).
    pub panics: AtomicU64,
}

/// Binds `cfg.listen` and serves in a background task.
pub async fn start(cfg: Config, clock: Arc<dyn Clock>) -> io::Result<Running> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let cfg = Arc::new(cfg);
    let proxy = Arc::new(Proxy::new(cfg.clone(), clock));
    let stats = Arc::new(ServerStats::default());
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(serve_with_stats(listener, proxy.clone(), cfg, stats.clone(), async {
        let _ = rx.await;
    }));
    Ok(Running { addr, proxy, stats, stop: Some(tx), task })
}

/// Serves connections from `listener` until `shutdown` completes, then drains in-flight
/// connections for at most `timeouts.shutdown`.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, cfg: Arc<Config>, shutdown: impl Future<Output = ()>) {
    serve_with_stats(listener, proxy, cfg, Arc::default(), shutdown).await
}

/// What a connection task is told by the accept loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish the requests in progress, then close (HTTP/2: GOAWAY).
    Draining,
    /// The shutdown deadline passed: close now.
    Closing,
}

async fn serve_with_stats(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    cfg: Arc<Config>,
    stats: Arc<ServerStats>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.timeouts.header_read)
        .max_buf_size(cfg.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.limits.max_header_bytes as u32)
        .max_concurrent_streams(cfg.limits.max_concurrent_streams);
    let builder = Arc::new(builder);
    // One permit per open connection: at the limit, the loop stops accepting and new
    // connections wait in the kernel's listen backlog, as nginx and HAProxy do.
    let max = cfg.limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let n = stats.at_limit.fetch_add(1, Ordering::Relaxed) + 1;
                if backoff.may_log() {
                    tracing::warn!(max_connections = max, times = n, "limits.max_connections reached; not accepting");
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff.reset();
                    x
                }
                Err(e) => {
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                    backoff.failed(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            builder: builder.clone(),
            proxy: proxy.clone(),
            cfg: cfg.clone(),
            stats: stats.clone(),
            phase: phase_rx.clone(),
            _permit: permit,
        };
        // A span per connection at debug level: disabled by default, it costs a level check.
        tokio::spawn(conn.serve(stream, peer).instrument(tracing::debug_span!("connection", %peer)));
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    let _ = phase_tx.send(Phase::Draining);
    // Every connection holds a permit until it ends: all of them back means all closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(cfg.timeouts.shutdown) => {
            tracing::warn!(deadline = ?cfg.timeouts.shutdown, "shutdown deadline reached; closing remaining connections");
            let _ = phase_tx.send(Phase::Closing);
        }
    }
}

/// How an accept loop that fails (out of file descriptors, most often) waits before the next
/// try, and how often it says so.
#[derive(Default)]
struct AcceptBackoff {
    wait: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.wait = Duration::ZERO;
    }

    /// At most one log line a second.
    fn may_log(&mut self) -> bool {
        let now = Instant::now();
        if self.last_log.is_some_and(|t| now.duration_since(t) < Self::LOG_EVERY) {
            return false;
        }
        self.last_log = Some(now);
        true
    }

    async fn failed(&mut self, e: io::Error) {
        // A connection the peer reset before it was accepted says nothing about this process.
        if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
            return;
        }
        self.unlogged += 1;
        if self.may_log() {
            tracing::warn!(error = %e, failures = self.unlogged, "accept failed; backing off");
            self.unlogged = 0;
        }
        self.wait = (self.wait * 2).clamp(Self::FIRST, Self::MAX);
        tokio::time::sleep(self.wait).await;
    }
}

/// Requests of one connection: how many are in progress, and how many have started; and what a
/// panic in one of them is counted in and logged with.
struct Activity {
    active: AtomicUsize,
    started: AtomicU64,
    stats: Arc<ServerStats>,
    peer: SocketAddr,
}

/// A request in progress on its connection, until its response body is done or dropped.
pub struct InProgress(Arc<Activity>);

impl InProgress {
    fn begin(activity: &Arc<Activity>) -> InProgress {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.active.fetch_add(1, Ordering::Relaxed);
        InProgress(activity.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handles one request, containing a panic to it: the request is answered 500
/// (`detail=internal-error`), the panic counted in [`ServerStats::panics`] and logged with the
/// request's method, target and peer; the process, the connection and its other requests go on
/// (without this, the panic would end the connection's task: every request on it lost, unlogged).
///
/// Asserting unwind safety holds because what a panicking request leaves behind is either its
/// own (dropped with its future) or shared state that tolerates it: every `Mutex` in the proxy
/// is locked with `unwrap_or_else(PoisonError::into_inner)`, the rest is atomics and moka.
async fn handle_contained(proxy: &Arc<Proxy>, req: Request<Incoming>, peer: SocketAddr, stats: &ServerStats) -> Answer {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let handled = AssertUnwindSafe(async move {
        #[cfg(test)]
        if let Some(answer) = tests::injected(&req) {
            return answer;
        }
        proxy.handle(req, peer).await
    });
    match handled.catch_unwind().await {
        Ok(answer) => answer,
        Err(panic) => {
            stats.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%method, %uri, %peer, panic = panic_message(&*panic), "request handling panicked; answered 500");
            Proxy::internal_error()
        }
    }
}

/// The message a panic was raised with, when it is text.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("-")
}

/// One client connection and what it needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    proxy: Arc<Proxy>,
    cfg: Arc<Config>,
    stats: Arc<ServerStats>,
    phase: watch::Receiver<Phase>,
    /// The connection's place under `limits.max_connections`, given back when it ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection until it ends, the client leaves it silent or idle too long, or
    /// the shutdown closes it.
    ///
    /// A connection must send a complete request head (HTTP/2: a complete stream) within
    /// `timeouts.header_read` of being accepted: before that, hyper-util's protocol detection
    /// waits without a deadline of its own, and a client that sends nothing (or half an HTTP/2
    /// preface, or HEADERS without END_HEADERS) would hold its file descriptor forever. After
    /// that, a connection with no request in progress and none started for `timeouts.client_idle`
    /// is shut down gracefully (HTTP/2: GOAWAY); one that is draining (idle, or the process is
    /// shutting down) and has not ended `timeouts.header_read` later is closed.
    async fn serve(mut self, stream: TcpStream, peer: SocketAddr) {
        let activity = Arc::new(Activity {
            active: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            stats: self.stats.clone(),
            peer,
        });
        let access = self.cfg.log.access;
        let proxy = self.proxy.clone();
        let act = activity.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            let in_progress = InProgress::begin(&act);
            async move {
                // Read only for the access log: without it, no clock is read per request here.
                let log_head = access.then(|| {
                    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                    (req.method().clone(), path, Instant::now())
                });
                let (resp, cs) = handle_contained(&proxy, req, peer, &in_progress.0.stats).await;
                let log = log_head.map(|(method, path, start)| {
                    Box::new(AccessLog { method, path, status: resp.status().as_u16(), cache: cs, start, peer })
                });
                let expected = log
                    .as_ref()
                    .and_then(|_| resp.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok());
                Ok::<_, Infallible>(resp.map(|b| LoggedBody::new(b, expected, log, in_progress)))
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        let header_read = self.cfg.timeouts.header_read;
        let client_idle = self.cfg.timeouts.client_idle;
        let accepted = tokio::time::Instant::now();
        // Looked at every `tick`: a request seen started, or in progress, makes the connection
        // busy as of that look; idle is then noticed between one and two `client_idle` after.
        let tick = header_read.min(client_idle);
        let mut deadline = accepted + tick;
        let mut busy_at = accepted;
        let mut seen = 0;
        let mut drain_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                // The connection first: it is what wakes this task nearly every time.
                biased;
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    break;
                }
                changed = self.phase.changed() => {
                    let phase = if changed.is_ok() { *self.phase.borrow_and_update() } else { Phase::Closing };
                    match phase {
                        Phase::Serving => {}
                        Phase::Draining => {
                            if drain_since.is_none() {
                                drain_since = Some(tokio::time::Instant::now());
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                        Phase::Closing => break,
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = tokio::time::Instant::now();
                    let started = activity.started.load(Ordering::Relaxed);
                    if started != seen || activity.active.load(Ordering::Relaxed) > 0 {
                        seen = started;
                        busy_at = now;
                    }
                    if started == 0 {
                        if now >= accepted + header_read {
                            self.stats.no_request.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "no complete request within timeouts.header_read; closing");
                            break;
                        }
                    } else if let Some(since) = drain_since {
                        if now >= since + header_read {
                            break;
                        }
                    } else if now >= busy_at + client_idle {
                        self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        drain_since = Some(now);
                        conn.as_mut().graceful_shutdown();
                    }
                    deadline = now + tick;
                }
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    //! Panic containment, end to end: a panic is injected only here, in the library's own test
    //! build (`cfg(test)`), so no build of the binary, and no integration test's build, has a
    //! path from the network to a panic.

    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::clock::ManualClock;
    use crate::proxy::ProxyBody;
    use crate::status::CacheStatus;

    /// The test-only request field that makes the handler panic (`handler`), or answer with a
    /// body that panics once its head is sent (`body`).
    const INJECT: &str = "x-edgecache-test-panic";

    pub(super) fn injected(req: &Request<Incoming>) -> Option<Answer> {
        match req.headers().get(INJECT)?.as_bytes() {
            b"handler" => panic!("injected panic in a request handler"),
            b"body" => {
                let resp = http::Response::builder()
                    .header(http::header::CONTENT_LENGTH, 10)
                    .body(ProxyBody::Panics)
                    .expect("response");
                Some((resp, CacheStatus::default()))
            }
            _ => None,
        }
    }

    const BOUND: Duration = Duration::from_secs(10);

    async fn proxy() -> Running {
        let cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
        start(cfg, Arc::new(ManualClock::new())).await.expect("start")
    }

    /// Reads until `done` holds for what arrived, or the peer closes (`true` with it).
    async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) -> bool {
        let mut chunk = [0u8; 4096];
        tokio::time::timeout(BOUND, async {
            while !done(buf) {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            false
        })
        .await
        .expect("bounded read")
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    async fn options(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        read_until(&mut s, &mut buf, |_| false).await;
        text(&buf)
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_counted_and_the_connection_goes_on() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        s.write_all(b"GET /boom HTTP/1.1\r\nHost: a\r\nx-edgecache-test-panic: handler\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let end = |b: &[u8]| text(b).ends_with("internal error\n");
        assert!(!read_until(&mut s, &mut buf, end).await, "closed before the 500: {}", text(&buf));
        let head = text(&buf);
        assert!(head.starts_with("HTTP/1.1 500"), "{head}");
        assert!(head.contains("cache-status: edgecache; fwd=bypass; detail=internal-error"), "{head}");
        assert_eq!(p.stats().panics.load(Ordering::Relaxed), 1);
        // The same connection serves its next request.
        s.write_all(b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut next = Vec::new();
        read_until(&mut s, &mut next, |_| false).await;
        assert!(text(&next).starts_with("HTTP/1.1 200"), "{}", text(&next));
        p.shutdown().await;
    }

    #[tokio::test]
    async fn a_panicking_body_cuts_its_response_off_and_is_counted() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        s.write_all(b"GET /boom HTTP/1.1\r\nHost: a\r\nx-edgecache-test-panic: body\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        // The connection closes before the body (Content-Length: 10) is complete; hyper may not
        // even have sent the head, since the body's first frame is what panicked.
        assert!(read_until(&mut s, &mut buf, |_| false).await);
        let got = text(&buf);
        let body = got.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert!(body.len() < 10, "a cut-off body must not look complete: {got}");
        assert_eq!(p.stats().panics.load(Ordering::Relaxed), 1);
        // Every other connection is served.
        assert!(options(p.addr()).await.starts_with("HTTP/1.1 200"));
        p.shutdown().await;
    }

    #[tokio::test]
    async fn a_panic_on_one_http2_stream_leaves_the_others_served() {
        let p = proxy().await;
        let stream = TcpStream::connect(p.addr()).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        // only-if-cached: answered by the proxy itself (504), no origin needed.
        let req = |inject: Option<&str>| {
            let mut b = http::Request::builder()
                .uri(format!("http://{}/x", p.addr()))
                .header(http::header::CACHE_CONTROL, "only-if-cached");
            if let Some(v) = inject {
                b = b.header(INJECT, v);
            }
            b.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap()
        };
        let panicked = tokio::time::timeout(BOUND, send.send_request(req(Some("handler")))).await.unwrap().unwrap();
        assert_eq!(panicked.status(), 500);
        let next = tokio::time::timeout(BOUND, send.send_request(req(None))).await.unwrap().unwrap();
        assert_eq!(next.status(), 504);
        assert_eq!(p.stats().panics.load(Ordering::Relaxed), 1);
        p.shutdown().await;
    }
}
