//! Slow and silent clients: slowloris (a head trickled in forever), connections that say
//! nothing, slow bodies and slow readers hold a connection for a bounded time, and never starve
//! normal clients for longer than that bound.
//!
//! Covered elsewhere: silent connections, half an HTTP/2 preface and an unfinished HEADERS are
//! closed after `timeouts.header_read` (`connections::connections_that_send_no_complete_request_are_closed_after_header_read`),
//! a head that stops arriving (`bad_input::a_request_head_that_never_ends_is_cut_off_after_header_read`),
//! an idle HTTP/2 connection (`connections::an_idle_http2_connection_is_shut_down_after_client_idle`),
//! a stalled request body is 408 (`forwarding::stalled_request_body_gives_408_after_request_body_timeout`),
//! at most `limits.max_connections` open at once (`connections::past_max_connections_new_connections_wait_for_one_to_close`).

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::closed_within;
use crate::common::*;

const HEADER_READ: Duration = Duration::from_millis(300);

/// Slowloris: a byte of the head every 50 ms keeps the connection busy but never completes a
/// request; it is closed once `timeouts.header_read` has passed since it was accepted, however
/// lively the trickle.
#[tokio::test]
async fn slowloris_a_trickled_head_is_closed_after_header_read() {
    let (origin, p, _c) =
        serve_with(&clock(), |cfg| cfg.timeouts.header_read = HEADER_READ, |_, _| Reply::ok("x")).await;
    let s = TcpStream::connect(p.addr()).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: h.example\r\nX-A: ".iter().chain(std::iter::repeat(&b'a'));
        for b in head.take(400) {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut rd, &mut buf)).await;
    assert!(closed.is_ok(), "still open after {WAIT:?} of trickle");
    assert!(started.elapsed() < HEADER_READ * 10, "closed only after {:?}", started.elapsed());
    trickle.abort();
    assert_eq!(origin.count(), 0);
}

/// Slowloris at the connection limit: every slot held by a trickling connection delays a normal
/// client by about `timeouts.header_read`, not more.
#[tokio::test]
async fn slowloris_at_the_connection_limit_delays_a_normal_client_by_header_read_at_most() {
    let (_origin, p, c) = serve_with(
        &clock(),
        |cfg| {
            cfg.timeouts.header_read = HEADER_READ;
            cfg.limits.max_connections = 20;
        },
        |_, _| Reply::ok("x"),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: h.example\r\nX-A: a").await.unwrap();
        held.push(s);
    }
    let started = Instant::now();
    assert_eq!(c.get("/a").await.status, 200);
    assert!(started.elapsed() < HEADER_READ * 10, "a normal client waited {:?}", started.elapsed());
    for mut s in held {
        assert!(closed_within(&mut s, WAIT).await);
    }
}

/// A slow upload (a byte every 100 ms, each pause under `timeouts.request_body`) is passed
/// through as it arrives and ends when it ends; the origin gets exactly the body sent.
#[tokio::test]
async fn slow_body_a_trickled_upload_is_forwarded_whole_and_holds_one_origin_connection() {
    let (origin, p, c) = serve_with(
        &clock(),
        |cfg| cfg.timeouts.request_body = Duration::from_millis(500),
        |req, _| Reply::ok(format!("got {}", req.body.len())),
    )
    .await;
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: h.example\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"u").await.unwrap();
    }
    let mut out = Vec::new();
    within("the upload's answer", tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out)).await.unwrap();
    assert!(String::from_utf8_lossy(&out).ends_with("got 10"), "{}", String::from_utf8_lossy(&out));
    // Meanwhile others were served by other origin connections.
    assert_eq!(c.get("/a").await.status, 200);
    assert_eq!(origin.requests().iter().filter(|r| r.method == "POST").count(), 1);
}

/// A client that asks for a large response and never reads it: the response stays bounded in
/// the proxy (backpressure, not buffering), and the connection ends when the client goes away;
/// everyone else is served meanwhile.
#[tokio::test]
async fn slow_reader_a_client_that_never_reads_does_not_stop_others() {
    let big = bytes::Bytes::from(vec![b'b'; 4 << 20]);
    let (_origin, p, c) = serve(&clock(), move |_, _| Reply::ok(big.clone()).cc("no-store")).await;
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: h.example\r\n\r\n").await.unwrap();
        stalled.push(s);
    }
    for _ in 0..20 {
        assert_eq!(c.get("/small").await.status, 200);
    }
    let open = p.stats().open.load(std::sync::atomic::Ordering::Relaxed);
    drop(stalled);
    let stats = p.stats().clone();
    eventually("stalled connections closed once their clients left", async || {
        stats.open.load(std::sync::atomic::Ordering::Relaxed) < open
    })
    .await;
}
