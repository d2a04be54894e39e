//! The accept loops (one per listener, `listeners`) and each client connection: HTTP/1.1 and
//! h2c on a cleartext port, HTTP/1.1 and HTTP/2 (ALPN) over TLS (hyper-util auto), header-size
//! limits, a bounded number of connections across all listeners, deadlines for connections that
//! send no request (the TLS handshake included) or sit idle, one access-log line per request,
//! and graceful shutdown with a hard deadline.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{Endpoint, Proxy};
use crate::reload::Live;
use crate::tls::Report;

mod access;
pub mod combined;
mod listeners;
use access::{AccessLog, LoggedBody};
use listeners::Bound;
pub use listeners::{Certificates, Listeners};

/// A proxy serving on bound addresses, stopped with [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    /// The `[[listener]]` tables' addresses, in the file's order.
    listener_addrs: Vec<SocketAddr>,
    certificates: Certificates,
    live: Arc<Live>,
    stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// The admin listener, when configured: its address, its stop and its task.
    admin: Option<(SocketAddr, Option<oneshot::Sender<()>>, JoinHandle<()>)>,
}

impl Running {
    /// The address of `listen` (when served; else of the first `[[listener]]`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address bound for `cfg.listeners[i]`.
    pub fn listener_addr(&self, i: usize) -> SocketAddr {
        self.listener_addrs[i]
    }

    /// Reloads the TLS listeners' certificates from their files (see [`Certificates::reload`]).
    pub fn reload_certificates(&self) -> Vec<Report> {
        self.certificates.reload()
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _, _)| *addr)
    }

    /// The proxy in use now (its memory tier, for inspection).
    pub fn proxy(&self) -> Arc<Proxy> {
        self.live.current()
    }

    /// The proxy in use and its reloads.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The listener's counters.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// Stops accepting, lets in-flight requests finish within `timeouts.shutdown`, and waits;
    /// the admin listener stops with it.
    pub async fn shutdown(mut self) {
        self.stop_all();
        let _ = (&mut self.task).await;
        if let Some((_, _, task)) = self.admin.as_mut() {
            let _ = task.await;
        }
    }

    fn stop_all(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.admin.as_mut().and_then(|(_, stop, _)| stop.take()) {
            let _ = stop.send(());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_all();
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
    /// TLS handshakes that failed (the client refused the certificate, offered nothing this
    /// server speaks, or is not speaking TLS).
    pub tls_failed: AtomicU64,
    /// The accept loops are running (false before they start and once shutdown began).
    pub listening: AtomicBool,
}

/// Binds `cfg.listen` (when served), every `[[listener]]` and `admin.listen` (when
/// configured), and serves in background tasks.
pub async fn start(cfg: Config, clock: Arc<dyn Clock>) -> io::Result<Running> {
    let listeners = Listeners::bind(&cfg).await?;
    let admin = match &cfg.admin {
        Some(a) => Some(crate::admin::bind(a).await.map_err(io::Error::other)?.0),
        None => None,
    };
    let proxy = Proxy::new(Arc::new(cfg), clock);
    start_on(listeners, admin, Arc::new(Live::new(proxy, None, Box::new(|_| {}))))
}

/// Serves `live` on `listeners`, and the admin calls on `admin` when given, in background tasks.
pub fn start_on(listeners: Listeners, admin: Option<TcpListener>, live: Arc<Live>) -> io::Result<Running> {
    let mut addrs = listeners.addrs().into_iter().map(|(a, _)| a);
    let addr = addrs.next().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no listener"))?;
    let listen_enabled = live.current().config().listen_enabled;
    let listener_addrs = if listen_enabled { addrs.collect() } else { [addr].into_iter().chain(addrs).collect() };
    let certificates = listeners.certificates().clone();
    let stats = live.current().metrics().server.clone();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(serve(listeners, live.clone(), async {
        let _ = rx.await;
    }));
    let admin = match admin {
        Some(l) => {
            let admin_addr = l.local_addr()?;
            let (stop, stopped) = oneshot::channel::<()>();
            let steps = Arc::new(crate::reload::Steps::config(live.clone()).with_certificates(certificates.clone()));
            let admin = crate::admin::Admin::new(live.clone(), steps);
            let task = tokio::spawn(crate::admin::serve(l, admin, async {
                let _ = stopped.await;
            }));
            Some((admin_addr, Some(stop), task))
        }
        None => None,
    };
    Ok(Running { addr, listener_addrs, certificates, live, stats, stop: Some(tx), task, admin })
}

/// How long a draining connection with no request in progress is left open for its client's
/// next request, whose response then says `Connection: close`; after it the connection is
/// closed while idle. A client that sends a request just as an idle connection closes sees
/// the close (RFC 9112 §9.3.1 lets it retry); a client that keeps sending does not.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// What a connection task is told by the accept loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish the requests in progress, then close (HTTP/2: GOAWAY).
    Draining,
    /// The shutdown deadline passed: close now.
    Closing,
}

/// The connection settings of `cfg`.
fn builder(cfg: &Config) -> Arc<auto::Builder<TokioExecutor>> {
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
    Arc::new(builder)
}

/// Serves connections from every listener of `listeners` until `shutdown` completes, then
/// drains in-flight connections for at most `timeouts.shutdown`. Each request is handled by the
/// proxy `live` holds when it arrives; each connection takes the connection settings in use
/// when it is accepted.
pub async fn serve(listeners: Listeners, live: Arc<Live>, shutdown: impl Future<Output = ()>) {
    let first = live.current();
    let stats = first.metrics().server.clone();
    let cfg = first.config().clone();
    drop(first);
    // One permit per open connection, across all listeners: at the limit, the loops stop
    // accepting and new connections wait in the kernel's listen backlog, as nginx and HAProxy do.
    let max = cfg.limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let expiry = tokio::spawn(listeners.certificates().clone().warn_daily());
    stats.listening.store(true, Ordering::Relaxed);
    let accept = Accept { live, stats: stats.clone(), slots: slots.clone(), phase: phase_rx };
    let (stop_tx, stop_rx) = watch::channel(false);
    let loops = futures_util::future::join_all(listeners.bound.into_iter().map(|b| accept.serve(b, stop_rx.clone())));
    let stop = async {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    futures_util::future::join(loops, stop).await;
    stats.listening.store(false, Ordering::Relaxed);
    expiry.abort();
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

/// What every accept loop shares.
struct Accept {
    live: Arc<Live>,
    stats: Arc<ServerStats>,
    slots: Arc<Semaphore>,
    phase: watch::Receiver<Phase>,
}

impl Accept {
    /// Accepts connections on `bound` until `stop` turns true, each served by a task of its own;
    /// then closes the listener.
    async fn serve(&self, bound: Bound, mut stop: watch::Receiver<bool>) {
        let Bound { listener, endpoint, tls, .. } = bound;
        let mut backoff = AcceptBackoff::default();
        // The settings of the proxy in use: a reload's apply to the connections accepted after it.
        let mut cfg = self.live.current().config().clone();
        let mut builder = builder(&cfg);
        loop {
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    let n = self.stats.at_limit.fetch_add(1, Ordering::Relaxed) + 1;
                    if backoff.may_log() {
                        let max = cfg.limits.max_connections;
                        tracing::warn!(
                            max_connections = max,
                            times = n,
                            "limits.max_connections reached; not accepting"
                        );
                    }
                    tokio::select! {
                        p = self.slots.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                        _ = stopped(&mut stop) => break,
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
                        self.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                        drop(permit);
                        backoff.failed(e).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => break,
            };
            let accepted = tokio::time::Instant::now();
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            self.stats.open.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let proxy = self.live.current();
            if !Arc::ptr_eq(proxy.config(), &cfg) {
                // Reloaded: new connections take the new settings.
                cfg = proxy.config().clone();
                builder = self::builder(&cfg);
            }
            let conn = Connection {
                builder: builder.clone(),
                live: self.live.clone(),
                metrics: proxy.metrics().clone(),
                cfg: cfg.clone(),
                stats: self.stats.clone(),
                phase: self.phase.clone(),
                endpoint,
                _permit: permit,
            };
            // A span per connection at debug level: disabled by default, it costs a level check.
            let span = tracing::debug_span!("connection", %peer);
            match &tls {
                None => tokio::spawn(conn.serve(stream, peer, accepted).instrument(span)),
                Some(acceptor) => {
                    tokio::spawn(conn.serve_tls(acceptor.clone(), stream, peer, accepted).instrument(span))
                }
            };
        }
    }
}

/// Completes once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
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

/// Requests of one connection: how many are in progress, and how many have started; whether
/// the connection is draining; and where its requests are counted.
struct Activity {
    active: AtomicUsize,
    started: AtomicU64,
    /// Set when the connection drains: HTTP/1.1 responses then say `Connection: close`, so the
    /// client sends its next request on a new connection instead of racing the close.
    draining: AtomicBool,
    /// The connection speaks HTTP/2 (drained with GOAWAY at once).
    h2: AtomicBool,
    metrics: Arc<Metrics>,
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

/// What woke a connection's task.
enum Wake {
    /// The connection ended.
    Ended(Result<(), Box<dyn std::error::Error + Send + Sync>>),
    /// The accept loop changed phase (draining, closing).
    Phase,
    /// The connection's deadline came.
    Tick,
}

/// One client connection and what it needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    /// The configuration in use when it was accepted: its timeouts.
    cfg: Arc<Config>,
    stats: Arc<ServerStats>,
    phase: watch::Receiver<Phase>,
    /// How its listener's requests are served.
    endpoint: Endpoint,
    /// The connection's place under `limits.max_connections`, given back when it ends.
    _permit: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connection {
    /// The TLS handshake, then [`Connection::serve`]. The handshake counts in the time a
    /// connection has to send its first request (`timeouts.header_read` from `accepted`); a
    /// connection still in its handshake when the shutdown begins is closed.
    async fn serve_tls(
        mut self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        accepted: tokio::time::Instant,
    ) {
        let deadline = accepted + self.cfg.timeouts.header_read;
        let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
        let stream = tokio::select! {
            r = handshake => match r {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    self.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.stats.no_request.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "no TLS handshake within timeouts.header_read; closing");
                    return;
                }
            },
            _ = self.phase.wait_for(|p| *p != Phase::Serving) => return,
        };
        self.serve(stream, peer, accepted).await
    }

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
    async fn serve<S>(mut self, stream: S, peer: SocketAddr, accepted: tokio::time::Instant)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity {
            active: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            metrics: self.metrics.clone(),
        });
        let live = self.live.clone();
        let endpoint = self.endpoint;
        let act = activity.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            // The proxy in use when the request arrives: it finishes on it, reloaded or not.
            let proxy = live.current();
            let in_progress = InProgress::begin(&act);
            async move {
                let start = Instant::now();
                let h1 = req.version() < http::Version::HTTP_2;
                if !h1 {
                    in_progress.0.h2.store(true, Ordering::Relaxed);
                }
                let log_head =
                    proxy.config().log.access.then(|| AccessLog::head(&req, proxy.config().log.access_format));
                let (mut resp, cs) = proxy.handle_on(req, peer, endpoint).await;
                if h1 && in_progress.0.draining.load(Ordering::Relaxed) {
                    resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                let log = log_head.map(|head| {
                    let site = cs.site.map(|id| proxy.sites().get(id).name().clone());
                    Box::new(AccessLog { head, status: resp.status().as_u16(), site, peer })
                });
                let expected = log
                    .as_ref()
                    .and_then(|_| resp.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok());
                Ok::<_, Infallible>(resp.map(|b| LoggedBody::new(b, cs, start, expected, log, in_progress)))
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        let header_read = self.cfg.timeouts.header_read;
        let client_idle = self.cfg.timeouts.client_idle;
        // Looked at every `tick`: a request seen started, or in progress, makes the connection
        // busy as of that look; idle is then noticed between one and two `client_idle` after.
        let tick = header_read.min(client_idle);
        let deadline = accepted + tick;
        // Draining, and the graceful shutdown of the connection not yet asked for.
        let mut draining_h1 = false;
        let mut busy_at = accepted;
        let mut seen = 0;
        let mut drain_since: Option<tokio::time::Instant> = None;
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        // Polled once after it is set, then only looked at: the timer and the phase's waiter keep
        // the waker they got, and every other wake-up of this task (nearly all of them: the
        // connection's) costs two loads instead of two polls.
        let mut sleep_armed = false;
        let mut phase = self.phase.clone();
        loop {
            let wake = {
                let changed = self.phase.changed();
                tokio::pin!(changed);
                let mut changed_armed = false;
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Ended(r));
                    }
                    if !changed_armed {
                        if changed.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Wake::Phase);
                        }
                        changed_armed = true;
                    } else if phase.has_changed().unwrap_or(true) {
                        return Poll::Ready(Wake::Phase);
                    }
                    if !sleep_armed {
                        if sleep.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Wake::Tick);
                        }
                        sleep_armed = true;
                    } else if sleep.is_elapsed() {
                        return Poll::Ready(Wake::Tick);
                    }
                    Poll::Pending
                })
                .await
            };
            match wake {
                Wake::Ended(r) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    break;
                }
                Wake::Phase => {
                    let _ = self.phase.borrow_and_update();
                    let now = match phase.has_changed() {
                        Ok(_) => *phase.borrow_and_update(),
                        Err(_) => Phase::Closing,
                    };
                    match now {
                        Phase::Serving => {}
                        Phase::Draining => {
                            if drain_since.is_none() {
                                let now = tokio::time::Instant::now();
                                drain_since = Some(now);
                                activity.draining.store(true, Ordering::Relaxed);
                                if activity.h2.load(Ordering::Relaxed) {
                                    // GOAWAY: the client knows which streams were not served.
                                    conn.as_mut().graceful_shutdown();
                                } else {
                                    // HTTP/1.1: closed at a tick with no request in progress,
                                    // unless a response that says close ends it first.
                                    draining_h1 = true;
                                    sleep.as_mut().reset(now + DRAIN_IDLE);
                                    sleep_armed = false;
                                }
                            }
                        }
                        Phase::Closing => break,
                    }
                }
                Wake::Tick => {
                    let now = tokio::time::Instant::now();
                    let started = activity.started.load(Ordering::Relaxed);
                    if started != seen || activity.active.load(Ordering::Relaxed) > 0 {
                        seen = started;
                        busy_at = now;
                    }
                    if draining_h1 && activity.active.load(Ordering::Relaxed) == 0 {
                        draining_h1 = false;
                        conn.as_mut().graceful_shutdown();
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
                    sleep.as_mut().reset(now + if drain_since.is_some() { DRAIN_IDLE } else { tick });
                    sleep_armed = false;
                }
            }
        }
    }
}
