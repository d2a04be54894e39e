//! Request coalescing: concurrent misses and revalidations of one key make one origin request,
//! whose response is streamed to every client (waiters that join mid-fill included); responses
//! that may not be shared, slow fills, disconnecting clients and failing origins.

pub mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use edgecache::store::CacheKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

/// `Cache-Status` of a client whose miss was collapsed into another client's stored fill.
/// `Cache-Status` of a miss whose body streams on after its head (over 64 KiB, or of unknown
/// length): the head cannot know yet whether it will be stored, and says nothing of it.
const MISS_STREAMED: &str = "edgecache; fwd=uri-miss; fwd-status=200";
const COLLAPSED_STREAMED: &str = "edgecache; fwd=uri-miss; fwd-status=200; collapsed";

/// A body of `len` bytes that is not a repetition of a short pattern.
fn body_of(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect::<Vec<u8>>().into()
}

/// Awaits every task (bounded), panicking on a task that panicked.
async fn join_all<T: Send + 'static>(what: &str, tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    within(what, async {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.expect("client task"));
        }
        out
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// An origin that holds its response mid-body, and a client that reads a response in steps
// ---------------------------------------------------------------------------------------------

/// An origin that, for every request, writes `first` (a response head and the start of its
/// body), waits until [`RawOrigin::release`], then writes `rest` and closes. An empty `rest` under
/// a larger `Content-Length` is a body that ends early.
async fn held(first: Vec<u8>, rest: Vec<u8>) -> RawOrigin {
    let at = first.len();
    let answer = [first, rest].concat();
    RawOrigin::builder().hold_after(at).start(move |_| answer.clone()).await
}

/// A response head for `body_len` bytes, `max-age=60`.
fn head_for(body_len: usize) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// A GET over a raw connection, read in steps: the head and the first bytes of the body can be
/// seen while the rest has not arrived.
struct Stepwise {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Stepwise {
    async fn get(proxy: SocketAddr, path: &str) -> Self {
        let mut s = within("connect", TcpStream::connect(proxy)).await.expect("connect");
        // The same Host the pooled client sends, so both use the same cache key.
        let req = format!("GET {path} HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        Stepwise { s, buf: Vec::new() }
    }

    /// Reads until the head and at least `n` bytes after it have arrived.
    async fn read_past_head(&mut self, n: usize) {
        within("response head and first body bytes", async {
            loop {
                if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                    if self.buf.len() >= end + 4 + n {
                        return;
                    }
                }
                let mut chunk = [0u8; 16384];
                match self.s.read(&mut chunk).await {
                    Ok(0) | Err(_) => panic!("connection ended early: {:?}", self.head()),
                    Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                }
            }
        })
        .await
    }

    /// The response head received so far, as text.
    fn head(&self) -> String {
        let end = find(&self.buf, b"\r\n\r\n").unwrap_or(self.buf.len());
        String::from_utf8_lossy(&self.buf[..end]).into_owned()
    }

    /// Reads until the connection ends; returns the head, the body (chunked framing decoded) and
    /// whether the framing says the body is complete.
    async fn finish(mut self) -> (String, Vec<u8>, bool) {
        within("response end", async {
            let mut chunk = [0u8; 16384];
            while let Ok(k) = self.s.read(&mut chunk).await {
                if k == 0 {
                    break;
                }
                self.buf.extend_from_slice(&chunk[..k]);
            }
        })
        .await;
        let head = self.head();
        let start = (head.len() + 4).min(self.buf.len());
        let rest = &self.buf[start..];
        let lower = head.to_ascii_lowercase();
        let field = |name: &str| {
            lower.split("\r\n").find_map(|l| l.strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()))
        };
        if let Some(len) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
            return (head, rest[..len.min(rest.len())].to_vec(), rest.len() >= len);
        }
        if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let (body, complete) = dechunk(rest);
            return (head, body, complete);
        }
        (head, rest.to_vec(), false)
    }
}

/// Decodes chunked framing; the flag says whether the last chunk was seen.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else { return (out, false) };
        let line = String::from_utf8_lossy(&rest[..eol]).into_owned();
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16) else {
            return (out, false);
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            return (out, true);
        }
        if rest.len() < size + 2 {
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            return (out, false);
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_for_one_key_make_one_origin_request() {
    const N: usize = 200;
    let clock = clock();
    let body = body_of(256 << 10);
    let b = body.clone();
    // The origin holds its answer until every client has joined the fill in flight.
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let (origin, p, c) =
        serve(&clock, move |_, _| Reply::ok(b.clone()).cc("max-age=60").chunked(32 << 10).gate(g.clone())).await;
    let c = Arc::new(c);
    let tasks = (0..N)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get("/big").await })
        })
        .collect();
    let key = CacheKey::new("http", &p.addr().to_string(), "/big");
    eventually("199 clients waiting on the first one's fill", async || p.proxy().joined(&key) == Some(N - 1)).await;
    gate.notify_one();
    let resps = join_all("200 concurrent GETs", tasks).await;
    assert_eq!(origin.count_path("/big"), 1, "concurrent misses were not coalesced");
    for r in &resps {
        assert_eq!(r.status, 200);
        assert!(r.body == body, "a client got {} bytes, not the whole body", r.body.len());
    }
    let collapsed = resps.iter().filter(|r| r.cache_status().contains("collapsed")).count();
    let others: Vec<_> = resps.iter().map(|r| r.cache_status()).filter(|s| !s.contains("collapsed")).collect();
    assert_eq!(collapsed, 199, "not collapsed: {others:?}");
    for r in &resps {
        let expected = if r.cache_status().contains("collapsed") { COLLAPSED_STREAMED } else { MISS_STREAMED };
        assert_eq!(r.cache_status(), expected);
    }
    eventually("the coalesced fill is stored", async || stored_urls(&p) == 1).await;
    let r = c.get("/big").await;
    assert_eq!(r.cache_status(), hit(60));
    assert!(r.body == body);
    assert_eq!(origin.count_path("/big"), 1);
}

/// A chunk of chunked framing.
fn chunk(data: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", data.len()).into_bytes(), data.to_vec(), b"\r\n".to_vec()].concat()
}

#[tokio::test]
async fn request_during_a_fill_that_outgrew_the_limit_fetches_on_its_own() {
    let clock = clock();
    let full = body_of(128 << 10);
    let (first, rest) = full.split_at(48 << 10);
    let head =
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let origin = held([head.to_vec(), chunk(first)].concat(), [chunk(rest), b"0\r\n\r\n".to_vec()].concat()).await;
    // The first part alone is past what may be stored: the fill keeps no bytes for late joiners.
    let p = start_proxy(origin.addr(), &clock, |cfg| cfg.cache.max_object_bytes = 16 << 10).await;

    let mut a = Stepwise::get(p.addr(), "/a").await;
    a.read_past_head(first.len()).await;
    // The fill has left the table of fills in flight (and marked the key hit-for-pass): B cannot
    // be given the bytes already passed, and asks the origin itself instead of waiting.
    let mut b = Stepwise::get(p.addr(), "/a").await;
    b.read_past_head(0).await;
    origin.wait_count(2).await; // B's own origin request
    origin.release();

    for (who, s) in [("first", a), ("later", b)] {
        let (head, body, complete) = s.finish().await;
        assert!(head.starts_with("HTTP/1.1 200"), "{who}: {head}");
        assert!(!head.contains("collapsed"), "{who}: {head}");
        assert!(complete, "{who}: body framing incomplete");
        assert!(body == full.as_ref(), "{who}: got {} bytes, not the whole body", body.len());
    }
    assert_eq!(origin.count(), 2);
    assert_eq!(stored_urls(&p), 0);
}

#[tokio::test]
async fn waiter_joining_mid_fill_gets_the_whole_body() {
    let clock = clock();
    let full = body_of(128 << 10);
    let (first, rest) = full.split_at(48 << 10);
    let origin = held([head_for(full.len()), first.to_vec()].concat(), rest.to_vec()).await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;

    let mut a = Stepwise::get(p.addr(), "/a").await;
    // The first part is through the proxy: the origin now holds the rest of the body.
    a.read_past_head(first.len()).await;
    let mut b = Stepwise::get(p.addr(), "/a").await;
    // B joins mid-fill: it gets the head and the bytes so far at once, before the origin goes on.
    b.read_past_head(first.len()).await;
    assert!(b.head().contains(&format!("cache-status: {COLLAPSED_STREAMED}\r\n")), "{}", b.head());
    assert!(!a.head().contains("collapsed"), "{}", a.head());
    origin.release();

    for (who, s) in [("first", a), ("joined mid-fill", b)] {
        let (head, body, complete) = s.finish().await;
        assert!(head.starts_with("HTTP/1.1 200"), "{who}: {head}");
        assert!(complete, "{who}: body framing incomplete");
        assert!(body == full.as_ref(), "{who}: got {} bytes, not the whole body", body.len());
    }
    assert_eq!(origin.count(), 1);
    eventually("the fill is stored", async || stored_urls(&p) == 1).await;
    let r = Client::new(p.addr()).get("/a").await;
    assert_eq!((r.cache_status(), r.body.len()), (hit(60).as_str(), full.len()));
    assert!(r.body == full);
    assert_eq!(origin.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn response_that_may_not_be_shared_under_concurrency_then_hit_for_pass() {
    const N: usize = 20;
    let clock = clock();
    // The first answer is held until the other requests wait behind it.
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let (origin, p, c) = serve(&clock, move |_, n| {
        let reply = Reply::ok(format!("private {n}")).cc("private, max-age=60");
        if n == 1 {
            reply.gate(g.clone())
        } else {
            reply
        }
    })
    .await;
    let c = Arc::new(c);
    let tasks = (0..N)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get("/me").await })
        })
        .collect();
    let key = CacheKey::new("http", &p.addr().to_string(), "/me");
    eventually("the other requests waiting on the first", async || p.proxy().joined(&key) == Some(N - 1)).await;
    gate.notify_one();
    let resps = join_all("concurrent requests for a private response", tasks).await;
    let mut bodies: Vec<String> = resps.iter().map(|r| r.text()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), N, "a private response was handed to more than one client: {bodies:?}");
    for r in &resps {
        assert_eq!(r.status, 200);
        assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=200; detail=private");
    }
    assert_eq!(origin.count(), N, "every client gets its own origin response");

    // Hit-for-pass: straight to the origin, one request each, nothing collapsed.
    for i in 1..=3 {
        let r = c.get("/me").await;
        assert_eq!(r.text(), format!("private {}", N + i));
        assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=200; detail=private");
        assert_eq!(origin.count(), N + i);
    }
}

#[tokio::test]
async fn waiter_past_the_wait_limit_goes_to_the_origin_alone() {
    let clock = clock();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let limit = |cfg: &mut edgecache::Config| cfg.coalescing.wait_limit = Duration::from_millis(200);
    let (origin, _p, c) = serve_with(&clock, limit, move |_, n| {
        let reply = Reply::ok(format!("v{n}")).cc("max-age=60");
        if n == 1 {
            reply.gate(g.clone())
        } else {
            reply
        }
    })
    .await;
    let c = Arc::new(c);
    let c1 = c.clone();
    let first = tokio::spawn(async move { c1.get("/a").await });
    origin.wait_count(1).await; // the first request is held at the origin

    let start = Instant::now();
    let r = c.get("/a").await;
    assert!(start.elapsed() >= Duration::from_millis(200), "did not wait for the fill: {:?}", start.elapsed());
    assert_eq!((r.status, r.text().as_str()), (200, "v2"));
    assert_eq!(r.cache_status(), MISS_STORED);
    assert_eq!(origin.count(), 2);
    assert!(!first.is_finished(), "the held request finished early");

    gate.notify_one();
    let r = within("the held request", first).await.expect("client task");
    assert_eq!((r.status, r.text().as_str()), (200, "v1"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn first_client_disconnecting_mid_body_does_not_cancel_the_fill() {
    let clock = clock();
    let full = body_of(96 << 10);
    let (first, rest) = full.split_at(32 << 10);
    let origin = held([head_for(full.len()), first.to_vec()].concat(), rest.to_vec()).await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;

    let mut a = Stepwise::get(p.addr(), "/a").await;
    a.read_past_head(first.len()).await;
    let mut b = Stepwise::get(p.addr(), "/a").await;
    b.read_past_head(first.len()).await;
    assert!(b.head().contains("collapsed"), "{}", b.head());
    drop(a); // the client that started the fill goes away
    origin.release();

    let (_, body, complete) = b.finish().await;
    assert!(complete && body == full.as_ref(), "the waiter got {} bytes (complete: {complete})", body.len());
    eventually("the fill is stored", async || stored_urls(&p) == 1).await;
    let r = Client::new(p.addr()).get("/a").await;
    assert_eq!(r.cache_status(), hit(60));
    assert!(r.body == full);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn first_client_aborted_before_the_response_does_not_cancel_the_fill() {
    let clock = clock();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let body = body_of(64 << 10);
    let b = body.clone();
    let (origin, p, c) =
        serve(&clock, move |_, _| Reply::ok(b.clone()).cc("max-age=60").chunked(8 << 10).gate(g.clone())).await;
    // A starts the fill, and closes its connection while the origin holds the answer.
    let a = Stepwise::get(p.addr(), "/a").await;
    origin.wait_count(1).await;
    drop(a);
    // The connection's end at the proxy drops A's request, and with it the fill's driver, in the
    // same poll of the connection's task: on this one-thread runtime, once it is counted closed,
    // the fill is running on its own.
    let open = &p.stats().open;
    eventually("A's connection closed at the proxy", async || open.load(std::sync::atomic::Ordering::Relaxed) == 0)
        .await;
    let key = CacheKey::new("http", &p.addr().to_string(), "/a");
    assert_eq!(p.proxy().joined(&key), Some(0), "A's fill is no longer in flight");
    let c = Arc::new(c);
    let cb = c.clone();
    let b_task = tokio::spawn(async move { cb.get("/a").await });
    eventually("B waiting on A's fill", async || p.proxy().joined(&key) == Some(1)).await;
    gate.notify_one();

    let r = within("the second client", b_task).await.expect("client task");
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the second client got {} bytes", r.body.len());
    assert_eq!(r.cache_status(), COLLAPSED_STREAMED);
    eventually("the fill is stored", async || stored_urls(&p) == 1).await;
    assert_eq!(c.get("/a").await.cache_status(), hit(60));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn failed_fill_fails_every_client_and_stores_nothing() {
    let clock = clock();
    const LEN: usize = 100_000;
    let first = body_of(40_000);
    // Content-Length 100000, 40000 bytes, then the connection closes.
    let origin = held([head_for(LEN), first.to_vec()].concat(), Vec::new()).await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;
    let c = Arc::new(Client::new(p.addr()));

    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = Stepwise::get(p.addr(), "/a").await;
        s.read_past_head(first.len()).await;
        streams.push(s);
    }
    assert_eq!(origin.count(), 1, "the waiters were not coalesced");
    let pooled: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.try_send("GET", "/a", &[], Bytes::new()).await })
        })
        .collect();
    origin.release();

    for (i, s) in streams.into_iter().enumerate() {
        let (head, body, complete) = s.finish().await;
        assert!(head.starts_with("HTTP/1.1 200"), "client {i}: {head}");
        assert!(!complete, "client {i}: a truncated body ({} bytes) was presented as complete", body.len());
        assert!(body.len() < LEN, "client {i}: got {} bytes", body.len());
    }
    for (i, r) in join_all("pooled clients", pooled).await.into_iter().enumerate() {
        match r {
            Err(_) => {}
            Ok(r) => {
                panic!("pooled client {i}: {} with {} bytes presented as a complete response", r.status, r.body.len())
            }
        }
    }
    assert_eq!(stored_urls(&p), 0);
    let before = origin.count();
    let r = c.try_send("GET", "/a", &[], Bytes::new()).await;
    assert!(r.is_err(), "a truncated body was presented as complete");
    assert_eq!(origin.count(), before + 1, "the next request did not go to the origin");
    assert_eq!(stored_urls(&p), 0);
}

#[tokio::test]
async fn an_origin_body_stalled_past_the_idle_timeout_fails_and_stores_nothing() {
    let clock = clock();
    const LEN: usize = 100_000;
    let first = body_of(40_000);
    // The origin sends part of the body and then nothing, holding the connection open.
    let origin = held([head_for(LEN), first.to_vec()].concat(), Vec::new()).await;
    let p = start_proxy(origin.addr(), &clock, |cfg| cfg.timeouts.idle = Duration::from_millis(300)).await;

    let mut s = Stepwise::get(p.addr(), "/a").await;
    s.read_past_head(first.len()).await;
    // Nothing more arrives: the proxy gives up after the idle timeout and ends the response.
    let (head, body, complete) = s.finish().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!complete, "a truncated body ({} bytes) was presented as complete", body.len());
    assert_eq!(body.len(), first.len());
    assert_eq!(stored_urls(&p), 0);
    assert_eq!(origin.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_keys_expiring_together_are_revalidated_once_each() {
    const KEYS: usize = 1000;
    let clock = clock();
    // A key's revalidation is held at the origin until its gate opens.
    let gates: Vec<Arc<Notify>> = (0..KEYS).map(|_| Arc::new(Notify::new())).collect();
    let g = gates.clone();
    let (origin, p, c) = serve(&clock, move |req, _| {
        let path = req.path().to_string();
        let etag = format!("\"{}\"", path.replace('/', "-"));
        if req.header("if-none-match") == Some(etag.as_str()) {
            let i: usize = path.trim_start_matches("/k/").parse().expect("key path");
            return Reply::status(304).cc("max-age=10").header("etag", &etag).gate(g[i].clone());
        }
        Reply::ok(format!("body of {path}")).cc("max-age=10").header("etag", &etag)
    })
    .await;
    let c = Arc::new(c);
    let sem = Arc::new(Semaphore::new(64));

    let mut tasks = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.get(&format!("/k/{i}")).await;
            drop(permit);
            r
        }));
    }
    for r in join_all("priming", tasks).await {
        assert_eq!(r.cache_status(), MISS_STORED);
    }
    eventually("every key stored", async || stored_urls(&p) == KEYS as u64).await;
    assert_eq!(origin.count(), KEYS);

    advance(&clock, 11);
    // Each key's gate opens once the key's two other requests wait on its revalidation, in key
    // order, as the requests are sent: one revalidates, two are collapsed into it.
    let host = p.addr().to_string();
    let open_gates = async {
        for (i, gate) in gates.iter().enumerate() {
            let key = CacheKey::new("http", &host, &format!("/k/{i}"));
            let what = format!("/k/{i}: two requests waiting on its revalidation");
            eventually(&what, async || p.proxy().joined(&key) == Some(2)).await;
            gate.notify_one();
        }
    };
    // Three requests per key, the three of a key next to each other, 64 in flight at most.
    let mut tasks = Vec::with_capacity(3 * KEYS);
    let requests = within("spawning 3000 requests", async {
        for i in 0..KEYS {
            for _ in 0..3 {
                let permit = sem.clone().acquire_owned().await.unwrap();
                let c = c.clone();
                tasks.push(tokio::spawn(async move {
                    let r = c.get(&format!("/k/{i}")).await;
                    drop(permit);
                    (i, r)
                }));
            }
        }
    });
    tokio::join!(open_gates, requests);
    let mut statuses = vec![Vec::new(); KEYS];
    for (i, r) in join_all("3000 requests", tasks).await {
        assert_eq!((r.status, r.text()), (200, format!("body of /k/{i}")));
        statuses[i].push(r.cache_status().to_string());
    }
    let revalidated = "edgecache; fwd=stale; fwd-status=304; stored";
    let collapsed = format!("{revalidated}; collapsed");
    let expected = [revalidated, collapsed.as_str(), collapsed.as_str()];
    let other: Vec<_> = statuses
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| {
            s.sort();
            (s != &expected).then_some((i, s.clone()))
        })
        .collect();
    assert!(other.is_empty(), "keys whose three requests were not one revalidation and two collapsed: {other:?}");
    let mut per_key = vec![0usize; KEYS];
    for s in origin.requests() {
        let i: usize = s.path().trim_start_matches("/k/").parse().expect("key path");
        per_key[i] += 1;
    }
    let over: Vec<_> =
        per_key.iter().enumerate().filter(|(_, n)| **n != 2).map(|(i, n)| (i, n, &statuses[i])).collect();
    assert!(over.is_empty(), "keys not revalidated exactly once (key, origin requests, Cache-Status): {over:?}");
    assert_eq!(origin.count() - KEYS, KEYS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalescing_off_sends_every_miss_to_the_origin() {
    let clock = clock();
    let off = |cfg: &mut edgecache::Config| cfg.coalescing.enabled = false;
    // Every answer is held until all ten requests are at the origin: they overlap.
    let gates: Vec<Arc<Notify>> = (0..10).map(|_| Arc::new(Notify::new())).collect();
    let g = gates.clone();
    let (origin, _p, c) =
        serve_with(&clock, off, move |_, n| Reply::ok(format!("v{n}")).cc("max-age=60").gate(g[n - 1].clone())).await;
    let c = Arc::new(c);
    let tasks = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get("/a").await })
        })
        .collect();
    origin.wait_count(10).await;
    for gate in &gates {
        gate.notify_one();
    }
    for r in join_all("10 concurrent GETs", tasks).await {
        assert_eq!(r.status, 200);
        assert_eq!(r.cache_status(), MISS_STORED);
    }
    assert_eq!(origin.count(), 10);
}

/// RFC 9211 lets a cache say less, never more: a head sent while the body still streams cannot
/// know it will be stored. A body cut short is never announced as stored, and not stored.
#[tokio::test]
async fn a_body_cut_short_is_never_announced_as_stored() {
    let clock = clock();
    let first = body_of(80_000);
    // Content-Length 100000, 80000 bytes, then the origin holds and closes.
    let origin = held([head_for(100_000), first.to_vec()].concat(), Vec::new()).await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;
    let mut a = Stepwise::get(p.addr(), "/cut").await;
    a.read_past_head(first.len()).await;
    assert!(a.head().contains(&format!("cache-status: {MISS_STREAMED}\r\n")), "{}", a.head());
    origin.release();
    let (_, body, complete) = a.finish().await;
    assert!(!complete, "a short body presented as complete ({} bytes)", body.len());
    assert_eq!(stored_urls(&p), 0);
}

#[tokio::test]
async fn a_body_of_unknown_length_past_max_object_size_is_never_announced_as_stored() {
    let clock = clock();
    let body = body_of(48 << 10);
    let b = body.clone();
    let (_origin, p, c) = serve_with(
        &clock,
        |cfg| cfg.cache.max_object_bytes = 16 << 10,
        move |_, _| Reply::ok(b.clone()).cc("max-age=60").chunked(4 << 10),
    )
    .await;
    let r = c.get("/big").await;
    assert_eq!(r.cache_status(), MISS_STREAMED);
    assert!(r.body == body);
    assert_eq!(stored_urls(&p), 0);
}

/// A body of known length up to 64 KiB is complete before the head goes out, so the head can
/// say `stored`, even when the origin sends it in pieces.
#[tokio::test]
async fn a_small_body_sent_in_pieces_is_announced_as_stored_once_it_is() {
    let clock = clock();
    let full = body_of(60 << 10);
    let (first, rest) = full.split_at(20 << 10);
    let origin = held([head_for(full.len()), first.to_vec()].concat(), rest.to_vec()).await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    let answer = tokio::spawn(async move { c.get("/small").await });
    origin.wait_count(1).await;
    origin.release();
    let r = within("the response", answer).await.unwrap();
    assert_eq!(r.cache_status(), MISS_STORED);
    assert!(r.body == full);
    assert_eq!(stored_urls(&p), 1);
}
