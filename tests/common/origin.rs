//! The origins: [`Origin`] (hyper, records and counts every request, answers with a closure or a
//! route table) and [`RawOrigin`] (raw TCP: records every request's bytes, answers with exact
//! bytes, part of them held back, or none at all).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use edgecache::clock::{Clock, ManualClock};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::{find, within};
// ---------------------------------------------------------------------------------------------
// The in-process origin
// ---------------------------------------------------------------------------------------------

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Request target.
    pub uri: Uri,
    /// Header fields.
    pub headers: HeaderMap,
    /// The complete body.
    pub body: Bytes,
}

impl Seen {
    /// The path and query.
    pub fn path(&self) -> &str {
        self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    }

    /// A header value as text (first field line).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every field line of `name`, as text.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
    }
}

/// What the origin answers: built with [`Reply::ok`] / [`Reply::status`] and chained setters.
#[derive(Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    chunk: Option<usize>,
    date: bool,
    gate: Option<Arc<Notify>>,
}

impl Reply {
    /// 200 with `body` (and a `Content-Length`).
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Reply::status(200).body(body)
    }

    /// `code` with an empty body.
    pub fn status(code: u16) -> Self {
        Reply {
            status: StatusCode::from_u16(code).expect("status code"),
            headers: Vec::new(),
            body: Bytes::new(),
            chunk: None,
            date: true,
            gate: None,
        }
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Appends a header field (any bytes allowed in a field value).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(value.as_ref()).expect("header value"),
        ));
        self
    }

    /// Shortcut for `Cache-Control`.
    pub fn cc(self, value: &str) -> Self {
        self.header("cache-control", value)
    }

    /// Sends the body chunked, in pieces of `size` bytes (no `Content-Length`).
    pub fn chunked(mut self, size: usize) -> Self {
        self.chunk = Some(size.max(1));
        self
    }

    /// Does not add the clock's `Date` (a `Date` set with [`Reply::header`] is always kept).
    pub fn no_date(mut self) -> Self {
        self.date = false;
        self
    }

    /// Holds the response until `gate` is notified.
    pub fn gate(mut self, gate: Arc<Notify>) -> Self {
        self.gate = Some(gate);
        self
    }
}

type Handler = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;
type OriginBody = BoxBody<Bytes, Infallible>;

/// An HTTP/1.1 origin on `127.0.0.1:0` that records every request and answers with a closure.
/// Its `Date` comes from the test's [`ManualClock`].
pub struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    count: watch::Receiver<usize>,
    connections: Arc<AtomicUsize>,
}

/// Builds an [`Origin`] from a route table (exact path, query included or not).
pub struct Routes {
    clock: Arc<ManualClock>,
    routes: Vec<(String, Handler)>,
}

impl Routes {
    /// Adds a route. `n` given to the handler counts requests to this route (1 for the first).
    /// A route matches the exact path-and-query, or the path when the route has no `?`.
    pub fn route(mut self, path: &str, f: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Self {
        self.routes.push((path.to_string(), Arc::new(f)));
        self
    }

    /// Starts the origin; unknown paths get 404 `no-store`.
    pub async fn start(self) -> Origin {
        let counters: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let routes = self.routes;
        Origin::start(&self.clock, move |req, _| {
            let path = req.path();
            let bare = path.split('?').next().unwrap_or(path);
            let Some((name, f)) =
                routes.iter().find(|(p, _)| p == path).or_else(|| routes.iter().find(|(p, _)| p == bare))
            else {
                return Reply::status(404).cc("no-store").body("no such route\n");
            };
            let n = {
                let mut c = counters.lock().unwrap();
                let n = c.entry(name.clone()).or_insert(0);
                *n += 1;
                *n
            };
            f(req, n)
        })
        .await
    }
}

impl Origin {
    /// A route table builder.
    pub fn routes(clock: &Arc<ManualClock>) -> Routes {
        Routes { clock: clock.clone(), routes: Vec::new() }
    }

    /// Starts an origin whose handler gets each request and its 1-based number.
    pub async fn start(
        clock: &Arc<ManualClock>,
        handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        Origin::start_on(listener, clock, handler)
    }

    /// [`Origin::start`] on `listener` (a [`ClosedPort`] opened: a server that comes back).
    pub fn start_on(
        listener: TcpListener,
        clock: &Arc<ManualClock>,
        handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (tx, rx) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let handler: Handler = Arc::new(handler);
        let clock = clock.clone();
        let state = (seen.clone(), tx, handler, clock);
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (seen, tx, handler, clock) = state.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (seen, tx, handler, clock) = (seen.clone(), tx.clone(), handler.clone(), clock.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes());
                        let body = body.unwrap_or_default();
                        let req = Seen { method: parts.method, uri: parts.uri, headers: parts.headers, body };
                        let n = {
                            let mut s = seen.lock().unwrap();
                            s.push(req.clone());
                            s.len()
                        };
                        tx.send_replace(n);
                        let reply = handler(&req, n);
                        if let Some(gate) = &reply.gate {
                            gate.notified().await;
                        }
                        Ok::<_, Infallible>(build_response(reply, &clock))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .auto_date_header(false)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin { addr, seen, count: rx, connections }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Requests received so far for exactly this path (query included when given).
    pub fn count_path(&self, path: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.path() == path).count()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the origin received no request")
    }

    /// Waits (bounded) until the origin has received at least `n` requests.
    pub async fn wait_count(&self, n: usize) {
        let mut rx = self.count.clone();
        within("origin request count", rx.wait_for(|c| *c >= n)).await.expect("origin task alive");
    }
}

fn build_response(reply: Reply, clock: &ManualClock) -> Response<OriginBody> {
    let body: OriginBody = match reply.chunk {
        Some(size) => {
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> =
                reply.body.chunks(size).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
            StreamBody::new(futures_util::stream::iter(chunks)).boxed()
        }
        None => Full::new(reply.body).boxed(),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = reply.status;
    for (name, value) in reply.headers {
        resp.headers_mut().append(name, value);
    }
    if reply.date && !resp.headers().contains_key(http::header::DATE) {
        let d = httpdate::fmt_http_date(clock.now());
        resp.headers_mut().insert(http::header::DATE, HeaderValue::from_str(&d).unwrap());
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// The raw-TCP origin: every request's exact bytes, exact bytes back
// ---------------------------------------------------------------------------------------------

/// How a [`RawOrigin`] reads a request's body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bodies {
    /// By its framing (`Content-Length` or chunked), before answering.
    Framed,
    /// Answer as soon as the head is read, then discard `Content-Length` bytes.
    AnswerFirst,
}

/// One request as a [`RawOrigin`] received it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Its number among every request the origin received (1-based, in arrival order).
    pub n: usize,
    /// The request line and header fields, as text.
    pub head: String,
    /// The body, decoded from its framing (empty when the origin answers first).
    pub body: Vec<u8>,
    /// Every byte of the request as received: head, framing and body.
    pub raw: Vec<u8>,
    /// The connection it came on (1-based, in accept order).
    pub connection: usize,
}

impl RawRequest {
    /// The request line.
    pub fn line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }

    /// The request target.
    pub fn path(&self) -> &str {
        self.line().split(' ').nth(1).unwrap_or("")
    }

    /// The first value of the header field `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

type RawReply = Arc<dyn Fn(&RawRequest) -> Vec<u8> + Send + Sync>;

/// An HTTP/1.1 origin on raw TCP for byte-exact and misbehaving origins: it parses each request
/// itself, records its exact bytes, and writes back exactly the bytes its closure returns (none
/// at all: it closes without answering). Built with [`RawOrigin::builder`]; by default it reads
/// a request's body by its framing, answers, and closes the connection.
pub struct RawOrigin {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    count: watch::Receiver<usize>,
    accepted: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

/// How a [`RawOrigin`] behaves; [`RawBuilder::start`] or [`RawBuilder::silent`] starts it.
pub struct RawBuilder {
    bodies: Bodies,
    keep_alive: bool,
    hold_after: Option<usize>,
}

impl RawBuilder {
    /// Answers every request of a connection and keeps it open, instead of closing it after the
    /// first answer.
    pub fn keep_alive(mut self) -> Self {
        self.keep_alive = true;
        self
    }

    /// Answers as soon as a request's head is read, then discards `Content-Length` bytes: what
    /// nginx and Go servers do with a GET's body. A request announcing a length it does not send
    /// makes the origin eat the start of the next request on the connection.
    pub fn answer_first(mut self) -> Self {
        self.bodies = Bodies::AnswerFirst;
        self
    }

    /// Writes the first `n` bytes of every answer, then the rest (if any) once
    /// [`RawOrigin::release`] is called (at once, for an answer that starts after that); the
    /// connection stays open until then.
    pub fn hold_after(mut self, n: usize) -> Self {
        self.hold_after = Some(n);
        self
    }

    /// Starts the origin; `reply` gives the bytes of the answer to each request.
    pub async fn start(self, reply: impl Fn(&RawRequest) -> Vec<u8> + Send + Sync + 'static) -> RawOrigin {
        self.spawn(Some(Arc::new(reply))).await
    }

    /// Starts an origin that reads requests and never answers, holding every connection open
    /// until the peer closes it.
    pub async fn silent(self) -> RawOrigin {
        self.spawn(None).await
    }

    async fn spawn(self, reply: Option<RawReply>) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw origin");
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<RawRequest>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (count_tx, count) = watch::channel(0usize);
        let (release, released) = watch::channel(false);
        let conn = Arc::new(RawConn { how: self, reply, requests: requests.clone(), count: count_tx, released });
        let a = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let connection = a.fetch_add(1, Ordering::SeqCst) + 1;
                let conn = conn.clone();
                tokio::spawn(async move {
                    let _ = conn.serve(Wire { stream, buf: Vec::new() }, connection).await;
                });
            }
        });
        RawOrigin { addr, requests, count, accepted, release }
    }
}

impl RawOrigin {
    /// A builder: by default the origin reads a body by its framing, answers, and closes.
    pub fn builder() -> RawBuilder {
        RawBuilder { bodies: Bodies::Framed, keep_alive: false, hold_after: None }
    }

    /// Starts the default origin: `reply` gives the bytes of the answer to each request, and the
    /// connection is closed after them.
    pub async fn start(reply: impl Fn(&RawRequest) -> Vec<u8> + Send + Sync + 'static) -> RawOrigin {
        Self::builder().start(reply).await
    }

    /// Starts an origin that accepts connections and never answers.
    pub async fn hang() -> RawOrigin {
        Self::builder().silent().await
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `n` requests were received.
    pub async fn wait_count(&self, n: usize) {
        let mut rx = self.count.clone();
        within("raw origin request count", rx.wait_for(|c| *c >= n)).await.expect("origin task alive");
    }

    /// Lets every answer held by [`RawBuilder::hold_after`] (and every later one) go on.
    pub fn release(&self) {
        self.release.send_replace(true);
    }
}

/// What every connection of a [`RawOrigin`] shares.
struct RawConn {
    how: RawBuilder,
    reply: Option<RawReply>,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    count: watch::Sender<usize>,
    released: watch::Receiver<bool>,
}

impl RawConn {
    async fn serve(&self, mut wire: Wire, connection: usize) -> Option<()> {
        loop {
            let req = self.read(&mut wire, connection).await?;
            let length = req.header("content-length").and_then(|v| v.parse::<usize>().ok());
            let Some(reply) = &self.reply else {
                // Silent: hold the connection until the peer closes it.
                while wire.fill().await.is_some() {}
                return None;
            };
            let answer = reply(&req);
            let at = self.how.hold_after.map_or(answer.len(), |n| n.min(answer.len()));
            wire.stream.write_all(&answer[..at]).await.ok()?;
            if self.how.hold_after.is_some() {
                wire.stream.flush().await.ok()?;
                let mut released = self.released.clone();
                released.wait_for(|r| *r).await.ok()?;
                wire.stream.write_all(&answer[at..]).await.ok()?;
            }
            wire.stream.flush().await.ok()?;
            if self.how.bodies == Bodies::AnswerFirst {
                if let Some(n) = length {
                    wire.take(n).await?;
                }
            }
            if !self.how.keep_alive {
                let _ = wire.stream.shutdown().await;
                return Some(());
            }
        }
    }

    /// Reads the next request and records it.
    async fn read(&self, wire: &mut Wire, connection: usize) -> Option<RawRequest> {
        let head_bytes = wire.until(b"\r\n\r\n").await?;
        let head = String::from_utf8_lossy(&head_bytes).into_owned();
        let mut req = RawRequest { n: 0, head, body: Vec::new(), raw: head_bytes, connection };
        if self.how.bodies == Bodies::Framed {
            let chunked = req.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            if chunked {
                loop {
                    let line = wire.until(b"\r\n").await?;
                    req.raw.extend_from_slice(&line);
                    let text = String::from_utf8_lossy(&line);
                    let size = usize::from_str_radix(text.trim().split(';').next()?.trim(), 16).ok()?;
                    let data = wire.take(size + 2).await?;
                    req.raw.extend_from_slice(&data);
                    if size == 0 {
                        break;
                    }
                    req.body.extend_from_slice(&data[..size]);
                }
            } else if let Some(n) = req.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
                let data = wire.take(n).await?;
                req.raw.extend_from_slice(&data);
                req.body = data;
            }
        }
        let n = {
            let mut all = self.requests.lock().unwrap();
            req.n = all.len() + 1;
            all.push(req.clone());
            all.len()
        };
        self.count.send_replace(n);
        Some(req)
    }
}

/// Bytes read from a connection, consumed from the front.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Some(())
    }

    /// The bytes up to and including `delim`.
    async fn until(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(at) = find(&self.buf, delim) {
                return Some(self.buf.drain(..at + delim.len()).collect());
            }
            self.fill().await?;
        }
    }

    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Some(self.buf.drain(..n).collect())
    }
}

/// A loopback port held by a socket that is bound but never listens: a connect to it is refused,
/// and no other socket can take the port while this value lives (a port found free and then
/// released could be taken by the next test's listener or an outgoing connection).
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening on the port: from now on a connect to it is accepted.
    pub fn listen(self) -> TcpListener {
        self._socket.listen(1024).expect("listen on the held port")
    }
}

/// A [`ClosedPort`]; keep it alive while the port must stay closed.
pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = socket.local_addr().expect("local addr");
    ClosedPort { _socket: socket, addr }
}
