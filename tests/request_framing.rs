//! Request bodies and their framing: what reaches the origin is always framed by the bytes
//! actually sent, so no request can desynchronise a pooled origin connection (a GET or HEAD with
//! a body, over HTTP/1.1 and HTTP/2), a malformed body is refused before it costs an origin
//! connection, an unknown transfer coding is refused, and a slow upload is not mistaken for a
//! slow origin.

pub mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

/// The bytes that start the request the proxy forwards for `GET /victim` from a client that
/// sends `Host: s.example` then `X-P: …` (fields keep their order; `Host` is replaced in place).
const VICTIM_PREFIX: &str = "GET /victim HTTP/1.1\r\nhost: s.example\r\nx-p: ";

/// A 200 with `body`, `Cache-Control: max-age=60` and a `Content-Length`.
fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn echo_path(req: &RawRequest) -> Vec<u8> {
    ok(req.path())
}

/// An origin on one kept-alive connection that reads each body by its framing before answering
/// with the request's path.
async fn framed_origin() -> RawOrigin {
    RawOrigin::builder().keep_alive().start(echo_path).await
}

/// The attack found from outside: a GET whose `Content-Length` covers the start of the next
/// request on the pooled origin connection. An origin that answers at once and then discards
/// that many bytes (nginx, Go) would read the next client's `GET /victim` as `GET /poison`, and
/// the proxy would store `/poison`'s answer under `/victim`.
#[tokio::test]
async fn a_get_with_a_body_cannot_poison_the_next_request_on_the_origin_connection() {
    let origin = RawOrigin::builder().keep_alive().answer_first().start(echo_path).await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let body = "x".repeat(VICTIM_PREFIX.len());
    let a = format!(
        "GET /cold HTTP/1.1\r\nHost: s.example\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let first = raw_request(p.addr(), a.as_bytes()).await;
    let b = "GET /victim HTTP/1.1\r\nHost: s.example\r\nX-P: GET /poison HTTP/1.1\r\nConnection: close\r\n\r\n";
    let r = raw_request(p.addr(), b.as_bytes()).await;
    assert_eq!(String::from_utf8_lossy(&r.body), "/victim");
    assert_eq!(first.header("cache-status"), Some("edgecache; fwd=bypass; fwd-status=200; detail=request-body"));
    let again = raw_request(p.addr(), b"GET /victim HTTP/1.1\r\nHost: s.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(again.header("cache-status"), Some("edgecache; hit; ttl=60"));
    assert_eq!(String::from_utf8_lossy(&again.body), "/victim");
    // Both went over one origin connection, as the attack needs.
    assert_eq!(origin.accepted(), 1);
    let seen: Vec<String> = origin.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(seen, ["/cold", "/victim"]);
}

#[tokio::test]
async fn a_get_with_a_body_reaches_the_origin_with_exactly_that_body_and_is_not_stored() {
    let origin = framed_origin().await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let req = b"GET /q HTTP/1.1\r\nHost: s.example\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let r = raw_request(p.addr(), req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-status"), Some("edgecache; fwd=bypass; fwd-status=200; detail=request-body"));
    let first = &origin.requests()[0];
    assert_eq!(first.header("content-length"), Some("5"));
    assert_eq!(first.body, b"hello");
    assert!(first.raw.ends_with(b"\r\n\r\nhello"), "{:?}", String::from_utf8_lossy(&first.raw));
    // Not stored: the same URL without a body is a miss.
    let plain = Client::new(p.addr()).get_with("/q", &[("host", "s.example")]).await;
    assert_eq!(plain.cache_status(), MISS_STORED);
    assert_eq!(origin.requests().len(), 2);
}

#[tokio::test]
async fn a_chunked_get_body_is_forwarded_chunked() {
    let origin = framed_origin().await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let req = b"GET /c HTTP/1.1\r\nHost: s.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let r = raw_request(p.addr(), req).await;
    assert_eq!(r.header("cache-status"), Some("edgecache; fwd=bypass; fwd-status=200; detail=request-body"));
    let seen = &origin.requests()[0];
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen.header("content-length"), None);
    assert_eq!(seen.body, b"abcde");
}

#[tokio::test]
async fn a_head_with_a_body_is_forwarded_with_it() {
    let origin = RawOrigin::builder()
        .keep_alive()
        .start(|_| b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 4\r\n\r\n".to_vec())
        .await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let req = b"HEAD /h HTTP/1.1\r\nHost: s.example\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let r = raw_request(p.addr(), req).await;
    assert_eq!(r.header("cache-status"), Some("edgecache; fwd=bypass; fwd-status=200; detail=request-body"));
    let seen = &origin.requests()[0];
    assert_eq!(seen.line(), "HEAD /h HTTP/1.1");
    assert_eq!(seen.body, b"abc");
}

#[tokio::test]
async fn a_get_with_an_empty_body_is_an_ordinary_get() {
    let origin = framed_origin().await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let req = b"GET /e HTTP/1.1\r\nHost: s.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(p.addr(), req).await.header("cache-status"), Some(MISS_STORED));
    assert_eq!(raw_request(p.addr(), req).await.header("cache-status"), Some("edgecache; hit; ttl=60"));
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test]
async fn an_http2_get_with_a_body_is_forwarded_with_it_and_not_stored() {
    let origin = framed_origin().await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let mut h2 = H2::connect(p.addr()).await;
    let r = h2.send("GET", "/h2", &[("content-length", "5")], Bytes::from_static(b"hello")).await;
    assert_eq!(r.cache_status(), "edgecache; fwd=bypass; fwd-status=200; detail=request-body");
    let seen = &origin.requests()[0];
    assert_eq!(seen.header("content-length"), Some("5"));
    assert_eq!(seen.body, b"hello");
    let plain = h2.send("GET", "/h2", &[], Bytes::new()).await;
    assert_eq!(plain.cache_status(), MISS_STORED);
    assert_eq!(origin.requests()[1].header("content-length"), None);
}

#[tokio::test]
async fn a_post_is_framed_by_the_body_it_sends() {
    let origin = framed_origin().await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let c = Client::new(p.addr());
    let r = c.post("/form", "a=1&b=2").await;
    assert_eq!(r.status, 200);
    let seen = &origin.requests()[0];
    assert_eq!(seen.header("content-length"), Some("7"));
    assert_eq!(seen.body, b"a=1&b=2");
    // An empty POST keeps its declared zero length.
    let req = b"POST /empty HTTP/1.1\r\nHost: s.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(p.addr(), req).await.status, 200);
    assert_eq!(origin.requests()[1].header("content-length"), Some("0"));
}

/// A chunk size line that is not a hexadecimal number (RFC 9112 §7.1): 400 before any origin
/// connection is used, and the kept connection stays usable.
#[tokio::test]
async fn a_malformed_chunked_body_is_400_and_costs_no_origin_connection() {
    let origin = framed_origin().await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let c = Client::new(p.addr());
    assert_eq!(c.get("/warm").await.status, 200);
    for size in ["zz", "-5", "0x5", "fffffffffffffffff5"] {
        let req = format!(
            "POST /u HTTP/1.1\r\nHost: s.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {size}\r\nhello\r\n0\r\n\r\n"
        );
        let r = raw_request(p.addr(), req.as_bytes()).await;
        assert_eq!(r.status, 400, "chunk size {size:?}");
        assert_eq!(r.header("cache-status"), Some("edgecache; fwd=bypass; detail=bad-request"), "chunk size {size:?}");
    }
    // Bare LF line endings in the chunked framing.
    let req = b"POST /u HTTP/1.1\r\nHost: s.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                5\nhello\n0\n\n";
    let r = raw_request(p.addr(), req).await;
    assert_eq!(r.status, 400);
    assert_eq!(c.get("/after").await.status, 200);
    assert_eq!(origin.accepted(), 1);
    let seen: Vec<String> = origin.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(seen, ["/warm", "/after"]);
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_501_before_the_origin() {
    let origin = framed_origin().await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let req = b"POST /g HTTP/1.1\r\nHost: s.example\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n\
                3\r\nabc\r\n0\r\n\r\n";
    let r = raw_request(p.addr(), req).await;
    assert_eq!(r.status, 501);
    assert_eq!(r.header("cache-status"), Some("edgecache; fwd=bypass; detail=bad-request"));
    assert_eq!(origin.accepted(), 0);
}

/// The origin's first-byte timer runs while the origin has the next move, not while the client
/// is still sending: an upload longer than `timeouts.first_byte`, each pause within
/// `timeouts.request_body`, gets the origin's answer.
#[tokio::test]
async fn an_upload_slower_than_first_byte_is_not_an_origin_timeout() {
    let clock = clock();
    let (origin, p, _c) = serve_with(
        &clock,
        |cfg| {
            cfg.timeouts.first_byte = Duration::from_millis(300);
            cfg.timeouts.request_body = Duration::from_secs(10);
        },
        |req, _| Reply::ok(format!("got {}", req.body.len())),
    )
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let upload = tokio::spawn(async move {
        // The client's pauses are what is tested: 3 × 200 ms, twice the first-byte timeout.
        for part in ["aaaa", "bbbb", "cccc"] {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Bytes::from_static(part.as_bytes())).await.unwrap();
        }
    });
    let r = post_streamed(p.addr(), "/slow-upload", 12, rx).await;
    upload.await.unwrap();
    assert_eq!((r.0, r.1.as_str()), (200, "got 12"));
    assert_eq!(origin.last().body, Bytes::from_static(b"aaaabbbbcccc"));
}

#[tokio::test]
async fn an_origin_silent_after_the_upload_is_a_timeout() {
    let origin = RawOrigin::hang().await;
    let p = start_proxy(origin.addr(), &clock(), |cfg| cfg.timeouts.first_byte = Duration::from_millis(200)).await;
    let r = Client::new(p.addr()).post("/u", "payload").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.cache_status(), "edgecache; fwd=bypass; detail=origin-timeout");
}

/// POSTs `len` bytes to `path` through a plain HTTP/1.1 connection, the body taken from `parts`
/// as it comes; returns the status and the body as text.
async fn post_streamed(
    addr: std::net::SocketAddr,
    path: &str,
    len: usize,
    parts: tokio::sync::mpsc::Receiver<Bytes>,
) -> (u16, String) {
    use http_body_util::{BodyExt, StreamBody};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let frames = tokio_stream_of(parts);
    let mut req = http::Request::new(StreamBody::new(frames));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut().insert("host", "s.example".parse().unwrap());
    req.headers_mut().insert("content-length", len.into());
    within("streamed POST", async {
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await
}

type Frames = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> + Send>,
>;

fn tokio_stream_of(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Frames {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        let part = rx.recv().await?;
        Some((Ok(hyper::body::Frame::data(part)), rx))
    }))
}
