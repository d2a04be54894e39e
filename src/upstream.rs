//! The HTTP/1.1 client to the origin, over hyper's connection API and a pool of keep-alive
//! connections (`pool`), with its bodies (`body`) and the header rules for forwarding
//! (`headers`).

use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::FutureExt as _;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsConnector;

use crate::config::{Config, Origin, Timeouts};
use body::{BodyTimeout, ClientBodyError, UpBody, Upload};

pub mod balance;
pub mod body;
pub mod headers;
pub(crate) mod health;
mod pool;
pub use balance::OriginPool;
pub use pool::OriginIncoming;
use pool::{Checkout, Pool};

/// Why a request to the origin failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made: refused, or its handshake failed.
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    /// A connection failed after it was made (reset, closed) before a response head arrived.
    #[error("origin connection failed: {0}")]
    Reset(String),
    /// No response head within `timeouts.first_byte`, or no connection within `timeouts.connect`.
    #[error("origin timed out")]
    Timeout,
    /// Every allowed origin connection stayed busy for `timeouts.origin_queue`.
    #[error("origin connections all busy")]
    Busy,
    /// The origin answered with something that is not a response to this request.
    #[error("invalid response from origin: {0}")]
    Invalid(&'static str),
    /// The TLS handshake with an `https://` origin failed.
    #[error("origin TLS failed: {0}")]
    Tls(String),
    /// The client's request body stalled past `timeouts.request_body`.
    #[error("client request body timed out")]
    ClientBodyTimeout,
    /// The client's request body was malformed or cut off.
    #[error("{0}")]
    ClientBody(String),
    /// The fetch this request waited for went away without an answer (its task was dropped).
    #[error("the origin fetch was abandoned")]
    Abandoned,
    /// Every server of the site's pool is down (health checks, ejection): none was asked.
    #[error("every origin server is down")]
    Down,
}

/// A failed [`Upstream::try_send`]: the request is handed back when the origin received none of
/// it (the connection could not be made, or a new one closed before the request was written),
/// so that it can go to another server.
pub enum SendError {
    /// Nothing was sent.
    NotSent(UpstreamError, Box<Request<UpBody>>),
    /// The request was sent, or partly sent, or the failure is not the server's.
    Failed(UpstreamError),
}

/// The HTTP/1.1 client to one origin server, over a pool of keep-alive connections (TLS ones for
/// an `https://` server).
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    authority: Authority,
    /// For an `https://` origin: the TLS client and the name sent as SNI and verified.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The server name a TLS client sends (SNI), as text: the site's `origin_sni`, else the
    /// server's own name.
    sni: Arc<str>,
    connect: Duration,
    first_byte: Duration,
    queue: Duration,
}

impl Upstream {
    /// A client to `cfg.origin` configured from `cfg`.
    pub fn new(cfg: &Config) -> Self {
        Upstream::to_server(&cfg.origin, cfg.limits.origin_connections, &cfg.timeouts, None)
    }

    /// A client to `origin` with at most `max_connections` open, sending `sni` as the TLS server
    /// name (`None`: the origin's host).
    pub fn to_server(origin: &Origin, max_connections: usize, timeouts: &Timeouts, sni: Option<&str>) -> Self {
        let host = origin.authority.host().trim_start_matches('[').trim_end_matches(']');
        Upstream {
            pool: Pool::new(max_connections, timeouts.idle),
            authority: origin.authority.clone(),
            tls: origin.tls.as_ref().map(|t| {
                // A site's `origin_sni` replaces the name the URL gave, for SNI and verification.
                let name = sni.and_then(|s| Origin::server_name(s).ok()).unwrap_or_else(|| t.server_name.clone());
                (TlsConnector::from(t.client.clone()), name)
            }),
            sni: Arc::from(sni.unwrap_or(host)),
            connect: timeouts.connect,
            first_byte: timeouts.first_byte,
            queue: timeouts.origin_queue,
        }
    }

    /// `host:port` connected to.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The server name a TLS connection to this server sends (SNI).
    pub fn sni(&self) -> &str {
        &self.sni
    }

    /// Longest wait for a connection when every one allowed is busy (`timeouts.origin_queue`).
    pub fn queue(&self) -> Duration {
        self.queue
    }

    /// True when `other` is a handle on this same client and pool.
    pub fn same_as(&self, other: &Upstream) -> bool {
        Arc::ptr_eq(&self.pool, &other.pool)
    }

    /// The request target sent for `path_and_query`: origin-form (the client's own bytes, not
    /// copied).
    pub fn uri(&self, path_and_query: &PathAndQuery) -> Uri {
        Uri::from(path_and_query.clone())
    }

    /// Sends `req` (origin-form, with `Host`). The origin has `timeouts.first_byte` to answer
    /// once the request is sent; while a client's body is being uploaded, the same time to take
    /// each part of it (a pause on the client's side is bounded by the body's own timeout).
    ///
    /// A combinator when there is no body to upload (every GET): awaiting it moves one state
    /// into the caller's, where an `async fn` would add a state of its own around it.
    pub fn send(
        &self,
        req: Request<UpBody>,
    ) -> impl Future<Output = Result<Response<OriginIncoming>, UpstreamError>> + Send + '_ {
        match req.body() {
            UpBody::Empty => Either::Left(
                tokio::time::timeout(self.first_byte, self.send_on_a_connection(req))
                    .map(|r| r.unwrap_or_else(|_| Err(UpstreamError::Timeout))),
            ),
            UpBody::Stream(body) => {
                let upload = body.upload();
                Either::Right(Box::pin(self.send_uploading(req, upload)))
            }
        }
    }

    /// [`send`](Upstream::send) for a request without a body, handing the request back when
    /// the server received none of it.
    pub async fn try_send(&self, req: Request<UpBody>) -> Result<Response<OriginIncoming>, SendError> {
        debug_assert!(matches!(req.body(), UpBody::Empty), "a body cannot be sent twice");
        match tokio::time::timeout(self.first_byte, self.send_or_return(req)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Failed(UpstreamError::Timeout)),
        }
    }

    /// Sends `req` on a connection of its own, outside the pool and its limit, and closes it:
    /// a health check, which must not wait behind the requests it is meant to judge.
    pub async fn probe(&self, req: Request<UpBody>) -> Result<http::StatusCode, UpstreamError> {
        let mut sender = self.connect(None).await?;
        sender.ready().await.map_err(|e| classify(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| classify(&e))?;
        Ok(resp.status())
    }

    async fn send_uploading(
        &self,
        req: Request<UpBody>,
        upload: Arc<Upload>,
    ) -> Result<Response<OriginIncoming>, UpstreamError> {
        let response = self.send_on_a_connection(req);
        tokio::pin!(response);
        loop {
            let changed = upload.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match upload.state() {
                Upload::DONE => break,
                // The client's turn: its body's idle timeout bounds the wait.
                Upload::WITH_CLIENT => tokio::select! {
                    r = &mut response => return r,
                    _ = changed => {}
                },
                _ => tokio::select! {
                    r = &mut response => return r,
                    _ = changed => {}
                    _ = tokio::time::sleep(self.first_byte) => return Err(UpstreamError::Timeout),
                },
            }
        }
        tokio::time::timeout(self.first_byte, response).await.unwrap_or(Err(UpstreamError::Timeout))
    }

    /// Idle connections in the pool.
    #[cfg(test)]
    fn idle_connections(&self) -> usize {
        self.pool.idle()
    }

    /// One tick of the idle connections' reaper, as its timer would.
    #[cfg(test)]
    fn reap_idle(&self) {
        self.pool.reap()
    }

    async fn send_on_a_connection(&self, req: Request<UpBody>) -> Result<Response<OriginIncoming>, UpstreamError> {
        self.send_or_return(req).await.map_err(|e| match e {
            SendError::NotSent(e, _) | SendError::Failed(e) => e,
        })
    }

    async fn send_or_return(&self, mut req: Request<UpBody>) -> Result<Response<OriginIncoming>, SendError> {
        let deadline = tokio::time::Instant::now() + self.queue;
        loop {
            let (mut sender, reused) = match self.pool.checkout(deadline).await {
                Some(Checkout::Idle(sender)) => (sender, true),
                Some(Checkout::New(permit)) => match Box::pin(self.connect(Some(permit))).await {
                    Ok(sender) => (sender, false),
                    Err(e) => return Err(SendError::NotSent(e, Box::new(req))),
                },
                None => return Err(SendError::Failed(UpstreamError::Busy)),
            };
            // A connection goes back to the pool when its last response body has been read to
            // the end; hyper may not have marked it ready yet.
            if !sender.is_ready() && sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                let e = UpstreamError::Unreachable("origin closed a new connection".into());
                return Err(SendError::NotSent(e, Box::new(req)));
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // This proxy never asks for an upgrade (it removes `Upgrade`), so a 101 is
                    // not an answer to this request: its connection cannot be used again.
                    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        return Err(SendError::Failed(UpstreamError::Invalid(
                            "101 Switching Protocols without Upgrade",
                        )));
                    }
                    let pool = self.pool.clone();
                    return Ok(resp.map(|body| OriginIncoming::new(body, sender, pool)));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: a kept connection the origin had closed meanwhile. Another one.
                    Some(r) if reused => req = r,
                    // Not sent on a new connection: the server took the connection and closed it.
                    Some(r) => return Err(SendError::NotSent(classify(&e.into_error()), Box::new(r))),
                    None => return Err(SendError::Failed(classify(&e.into_error()))),
                },
            }
        }
    }

    /// A new connection to the origin (TCP, then TLS for an `https://` origin, both within
    /// `timeouts.connect`), its protocol driven by a task of its own that holds `permit` (its
    /// place under the pool's limit; `None` for a probe) for as long as the connection lives.
    async fn connect(&self, permit: Option<OwnedSemaphorePermit>) -> Result<SendRequest<UpBody>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.connect;
        let host = self.authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect((host, port))).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) => return Err(UpstreamError::Unreachable(format!("connect to {}: {e}", self.authority))),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let Some((connector, name)) = &self.tls else {
            return self.drive(stream, permit).await;
        };
        // Any failure of the handshake is the origin's TLS: the TCP connection was up.
        match tokio::time::timeout_at(deadline, connector.connect(name.clone(), stream)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => {
                Err(UpstreamError::Tls(format!("handshake with {} as {}: {e}", self.authority, name.to_str())))
            }
            Ok(Ok(stream)) => self.drive(stream, permit).await,
        }
    }

    /// HTTP/1.1 over `io`, driven by a task that holds `permit` until the connection ends.
    async fn drive<T>(&self, io: T, permit: Option<OwnedSemaphorePermit>) -> Result<SendRequest<UpBody>, UpstreamError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("handshake with {}: {e}", self.authority)))?;
        let pool = Arc::downgrade(&self.pool);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "origin connection ended");
            }
            drop(permit);
            if let Some(pool) = pool.upgrade() {
                pool.closed();
            }
        });
        Ok(sender)
    }
}

/// What a failed exchange with the origin was, from the error's causes: the client's body
/// (stalled or malformed), a timeout, or the origin failing.
fn classify(e: &hyper::Error) -> UpstreamError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if s.is::<BodyTimeout>() {
            return UpstreamError::ClientBodyTimeout;
        }
        if let Some(body) = s.downcast_ref::<ClientBodyError>() {
            return UpstreamError::ClientBody(body.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return UpstreamError::Timeout;
            }
            // A TLS alert or record error after the handshake (with TLS 1.3 a client
            // certificate the origin refuses is one): the error wraps rustls's, which its
            // `source()` skips.
            if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                return UpstreamError::Tls(format!("{e}: {tls}"));
            }
        }
        src = s.source();
    }
    if e.is_timeout() {
        return UpstreamError::Timeout;
    }
    let mut msg = e.to_string();
    if let Some(s) = e.source() {
        msg = format!("{msg}: {s}");
    }
    UpstreamError::Reset(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::header::{self, HeaderValue};

    use bytes::Bytes;
    use http_body::Body as _;
    use http_body_util::{BodyExt, Full};
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    /// A count that other tasks bump, and a way to wait until it reaches a number.
    #[derive(Default)]
    struct Counter {
        n: AtomicUsize,
        bumped: Notify,
    }

    impl Counter {
        fn bump(&self) {
            self.n.fetch_add(1, Ordering::SeqCst);
            self.bumped.notify_waiters();
        }

        fn get(&self) -> usize {
            self.n.load(Ordering::SeqCst)
        }

        async fn reach(&self, n: usize) {
            loop {
                // Registered before the check: a bump in between still wakes it.
                let bumped = self.bumped.notified();
                if self.get() >= n {
                    return;
                }
                bumped.await;
            }
        }
    }

    /// An HTTP/1.1 origin in this process: every response is `size` bytes (with
    /// `Connection: close` when `close`); it counts the connections it accepted and the ones
    /// that ended.
    struct TestOrigin {
        addr: std::net::SocketAddr,
        accepted: Arc<Counter>,
        closed: Arc<Counter>,
    }

    impl TestOrigin {
        async fn start(size: usize, close: bool) -> TestOrigin {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (accepted, closed) = (Arc::<Counter>::default(), Arc::<Counter>::default());
            let (a, c) = (accepted.clone(), closed.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    a.bump();
                    let c = c.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |_req| async move {
                            let mut resp = Response::new(Full::new(Bytes::from(vec![b'x'; size])));
                            if close {
                                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                        c.bump();
                    });
                }
            });
            TestOrigin { addr, accepted, closed }
        }

        fn upstream(&self) -> Upstream {
            upstream_to(self.addr)
        }

        fn accepted(&self) -> usize {
            self.accepted.get()
        }

        /// Waits until `n` connections have ended at the origin.
        async fn wait_closed(&self, n: usize) {
            self.closed.reach(n).await;
        }
    }

    fn upstream_to(addr: std::net::SocketAddr) -> Upstream {
        let origin = crate::config::Origin::parse(&format!("http://{addr}")).unwrap();
        Upstream::new(&Config { origin, ..Config::default() })
    }

    fn get(up: &Upstream, path: &'static str) -> Request<UpBody> {
        let mut req = Request::new(UpBody::Empty);
        *req.uri_mut() = up.uri(&PathAndQuery::from_static(path));
        req.headers_mut().insert(header::HOST, HeaderValue::from_static("h.example"));
        req
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_serves_the_next_request() {
        let origin = TestOrigin::start(1024, false).await;
        let up = origin.upstream();
        for n in 0..3 {
            let body = up.send(get(&up, "/a")).await.unwrap().into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), 1024, "request {n}");
            assert_eq!(up.idle_connections(), 1, "request {n}");
        }
        assert_eq!(origin.accepted(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_at_its_last_byte_gives_its_connection_back() {
        // hyper's server stops polling a body once it reports its end, without asking for it.
        let origin = TestOrigin::start(1024, false).await;
        let up = origin.upstream();
        for _ in 0..2 {
            let mut body = up.send(get(&up, "/a")).await.unwrap().into_body();
            let mut got = 0;
            while !body.is_end_stream() {
                got += body.frame().await.unwrap().unwrap().into_data().unwrap().len();
            }
            assert_eq!(got, 1024);
            drop(body);
            assert_eq!(up.idle_connections(), 1);
        }
        assert_eq!(origin.accepted(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_takes_its_connection_with_it() {
        let origin = TestOrigin::start(4 << 20, false).await;
        let up = origin.upstream();
        let mut body = up.send(get(&up, "/big")).await.unwrap().into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(up.idle_connections(), 0);
        origin.wait_closed(1).await;
        let body = up.send(get(&up, "/big")).await.unwrap().into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 4 << 20);
        assert_eq!(origin.accepted(), 2);
    }

    #[tokio::test]
    async fn a_connection_the_origin_closes_is_not_reused() {
        let origin = TestOrigin::start(16, true).await;
        let up = origin.upstream();
        for n in 1..=3 {
            let body = up.send(get(&up, "/a")).await.unwrap().into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), 16);
            assert_eq!(origin.accepted(), n);
        }
    }

    #[tokio::test]
    async fn a_kept_connection_the_origin_closed_meanwhile_is_replaced() {
        // The origin answers (keep-alive, as far as the response says), and closes the
        // connection only once it is idle in the pool: dead by the time the next request
        // wants it.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, closed) = (Arc::<Counter>::default(), Arc::<Counter>::default());
        let close_now = Arc::new(Notify::new());
        let (a, c, now) = (accepted.clone(), closed.clone(), close_now.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                a.bump();
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                now.notified().await;
                drop(stream);
                c.bump();
            }
        });
        let up = upstream_to(addr);
        for n in 1..=5 {
            let body = up.send(get(&up, "/a")).await.unwrap().into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            assert_eq!(up.idle_connections(), 1);
            close_now.notify_one();
            closed.reach(n).await;
        }
        assert_eq!(accepted.get(), 5);
    }

    #[tokio::test]
    async fn idle_connections_last_through_the_idle_timeout_only() {
        let origin = TestOrigin::start(16, false).await;
        let up = origin.upstream();
        up.send(get(&up, "/a")).await.unwrap().into_body().collect().await.unwrap();
        for _ in 0..pool::IDLE_TICKS {
            up.reap_idle();
        }
        assert_eq!(up.idle_connections(), 1, "closed before the idle timeout");
        up.reap_idle();
        assert_eq!(up.idle_connections(), 0, "kept past the idle timeout");
        origin.wait_closed(1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_connections_the_origin_retires() {
        // Like nginx's keepalive_requests: each connection serves three responses, the last
        // with `Connection: close`. 300 requests, 30 at a time, all answered in full.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::<Counter>::default();
        let a = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                a.bump();
                let served = Arc::<AtomicUsize>::default();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            let mut resp = Response::new(Full::new(Bytes::from(req.uri().path().to_owned())));
                            if n == 3 {
                                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        let up = Arc::new(upstream_to(addr));
        const PATHS: [&str; 4] = ["/a", "/b", "/c", "/d"];
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..30 {
            let up = up.clone();
            tasks.spawn(async move {
                for n in 0..10 {
                    let path = PATHS[(worker + n) % PATHS.len()];
                    let body = up.send(get(&up, path)).await.unwrap().into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(&body[..], path.as_bytes());
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        // Three requests per connection at most: at least 100 connections were made.
        assert!(accepted.get() >= 100);
        assert!(up.idle_connections() <= 30);
    }

    #[tokio::test]
    async fn an_origin_that_refuses_connections_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let up = upstream_to(addr);
        match up.send(get(&up, "/a")).await {
            Err(UpstreamError::Unreachable(msg)) => assert!(msg.contains(&addr.to_string()), "{msg}"),
            other => panic!("expected unreachable, got {:?}", other.map(|r| r.status())),
        }
    }
}
