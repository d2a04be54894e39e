//! The origins: [`Origin`] (hyper, records and counts every request, answers with a closure or a
//! route table) and [`RawOrigin`] (exact bytes, or no answer at all).

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
// A raw-TCP origin: exact bytes, then close
// ---------------------------------------------------------------------------------------------

/// An origin that reads a request head and writes exactly the bytes its closure returns, then
/// closes the connection; or, from [`RawOrigin::hang`], accepts and never answers.
pub struct RawOrigin {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
}

impl RawOrigin {
    /// `reply(n, head)` gives the bytes for the `n`th request (1-based).
    pub async fn start(reply: impl Fn(usize, &str) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw origin");
        let addr = listener.local_addr().unwrap();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (h, a) = (heads.clone(), accepted.clone());
        let reply = Arc::new(reply);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (h, reply) = (h.clone(), reply.clone());
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    let n = {
                        let mut heads = h.lock().unwrap();
                        heads.push(head.clone());
                        heads.len()
                    };
                    let bytes = reply(n, &head);
                    let _ = stream.write_all(&bytes).await;
                    let _ = stream.flush().await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        RawOrigin { addr, heads, accepted }
    }

    /// Accepts connections, reads what comes, and never answers.
    pub async fn hang() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw origin");
        let addr = listener.local_addr().unwrap();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (h, a) = (heads.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    if let Some(head) = read_head(&mut stream).await {
                        h.lock().unwrap().push(head);
                    }
                    // Hold the connection open without answering until the peer goes away.
                    let mut sink = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        RawOrigin { addr, heads, accepted }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Request heads received so far.
    pub fn count(&self) -> usize {
        self.heads.lock().unwrap().len()
    }

    /// The request heads, as text.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf[..end + 4]).into_owned());
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
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
}

/// A [`ClosedPort`]; keep it alive while the port must stay closed.
pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = socket.local_addr().expect("local addr");
    ClosedPort { _socket: socket, addr }
}

// ---------------------------------------------------------------------------------------------
// A wire-level origin: every request's exact bytes, keep-alive, two ways of reading bodies
// ---------------------------------------------------------------------------------------------

/// How a [`WireOrigin`] reads a request's body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bodies {
    /// By its framing (`Content-Length` or chunked), before answering.
    Framed,
    /// Answer as soon as the head is read, then discard `Content-Length` bytes: what nginx and
    /// Go servers do with a GET's body. A request announcing a length it does not send makes
    /// this origin eat the start of the next request on the connection.
    AnswerFirst,
}

/// One request as it crossed the wire.
#[derive(Debug, Clone)]
pub struct WireRequest {
    /// The request line and header fields, as text.
    pub head: String,
    /// The body, decoded from its framing (empty for [`Bodies::AnswerFirst`]).
    pub body: Vec<u8>,
    /// Every byte of the request as received: head, framing and body.
    pub raw: Vec<u8>,
    /// The connection it came on (1-based, in accept order).
    pub connection: usize,
}

impl WireRequest {
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

/// An HTTP/1.1 origin on raw TCP that parses requests itself, records each one's exact bytes,
/// and answers each with the bytes its closure returns, keeping the connection open.
pub struct WireOrigin {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<WireRequest>>>,
    count: watch::Receiver<usize>,
    accepted: Arc<AtomicUsize>,
}

type WireReply = Arc<dyn Fn(&WireRequest) -> Vec<u8> + Send + Sync>;

impl WireOrigin {
    /// Starts it; `reply` gives the bytes of the answer to each request.
    pub async fn start(bodies: Bodies, reply: impl Fn(&WireRequest) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind wire origin");
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<WireRequest>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let reply: WireReply = Arc::new(reply);
        let (r, a) = (requests.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let connection = a.fetch_add(1, Ordering::SeqCst) + 1;
                let (r, tx, reply) = (r.clone(), tx.clone(), reply.clone());
                tokio::spawn(async move {
                    let _ = serve_wire(stream, bodies, connection, r, tx, reply).await;
                });
            }
        });
        WireOrigin { addr, requests, count: rx, accepted }
    }

    /// A 200 with `body`, `Cache-Control: max-age=60` and a `Content-Length`.
    pub fn ok(body: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}", body.len())
            .into_bytes()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests parsed so far, in order.
    pub fn requests(&self) -> Vec<WireRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `n` requests were parsed.
    pub async fn wait_count(&self, n: usize) {
        let mut rx = self.count.clone();
        within("wire origin request count", rx.wait_for(|c| *c >= n)).await.expect("origin task alive");
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

async fn serve_wire(
    stream: TcpStream,
    bodies: Bodies,
    connection: usize,
    requests: Arc<Mutex<Vec<WireRequest>>>,
    count: Arc<watch::Sender<usize>>,
    reply: WireReply,
) -> Option<()> {
    let mut wire = Wire { stream, buf: Vec::new() };
    loop {
        let head_bytes = wire.until(b"\r\n\r\n").await?;
        let head = String::from_utf8_lossy(&head_bytes).into_owned();
        let mut req = WireRequest { head, body: Vec::new(), raw: head_bytes, connection };
        let length = req.header("content-length").and_then(|v| v.parse::<usize>().ok());
        let chunked = req.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if bodies == Bodies::Framed {
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
            } else if let Some(n) = length {
                let data = wire.take(n).await?;
                req.raw.extend_from_slice(&data);
                req.body = data;
            }
        }
        let answer = reply(&req);
        let n = {
            let mut all = requests.lock().unwrap();
            all.push(req);
            all.len()
        };
        count.send_replace(n);
        wire.stream.write_all(&answer).await.ok()?;
        if bodies == Bodies::AnswerFirst {
            if let Some(n) = length {
                wire.take(n).await?;
            }
        }
    }
}
