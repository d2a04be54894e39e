//! Client connections and origin connections are bounded: a connection that sends no complete
//! request is closed, an idle one is shut down, the number open at once is capped, one HTTP/2
//! connection cannot open more than its streams allow, and the origin never sees more
//! connections than configured.

pub mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame (length 0, type 4, flags 0, stream 0).
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Reads until the peer closes the connection (bounded by [`WAIT`]); a reset counts as closed.
async fn closed_by_peer(mut s: TcpStream, what: &str) {
    within(what, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
}

#[tokio::test]
async fn connections_that_send_no_complete_request_are_closed_after_header_read() {
    let clock = clock();
    let (_origin, p, c) =
        serve_with(&clock, |cfg| cfg.timeouts.header_read = Duration::from_millis(300), |_, _| Reply::ok("x")).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push((TcpStream::connect(p.addr()).await.unwrap(), "silent"));
    }
    let mut h2_silent = TcpStream::connect(p.addr()).await.unwrap();
    h2_silent.write_all(&[PREFACE, SETTINGS].concat()).await.unwrap();
    silent.push((h2_silent, "HTTP/2 preface, then silence"));
    let mut half = TcpStream::connect(p.addr()).await.unwrap();
    half.write_all(&PREFACE[..10]).await.unwrap();
    silent.push((half, "half an HTTP/2 preface"));
    let mut open_headers = TcpStream::connect(p.addr()).await.unwrap();
    // HEADERS on stream 1 with END_STREAM but not END_HEADERS: a CONTINUATION must follow.
    let headers_frame = [0, 0, 1, 1, 0x1, 0, 0, 0, 1, 0x82];
    open_headers.write_all(&[PREFACE, SETTINGS, &headers_frame].concat()).await.unwrap();
    silent.push((open_headers, "HEADERS without END_HEADERS"));
    let n = silent.len() as u64;
    for (s, what) in silent {
        closed_by_peer(s, what).await;
    }
    assert_eq!(p.stats().no_request.load(Ordering::Relaxed), n);
    assert_eq!(c.get("/a").await.status, 200);
}

#[tokio::test]
async fn past_max_connections_new_connections_wait_for_one_to_close() {
    let clock = clock();
    let (_origin, p, c) = serve_with(&clock, |cfg| cfg.limits.max_connections = 3, |_, _| Reply::ok("x")).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(p.addr()).await.unwrap());
    }
    let stats = p.stats().clone();
    eventually("three connections open", async || stats.open.load(Ordering::Relaxed) == 3).await;
    let waiting = tokio::spawn(async move { c.get("/a").await.status });
    eventually("the accept loop at its limit", async || stats.at_limit.load(Ordering::Relaxed) >= 1).await;
    assert!(!waiting.is_finished(), "a fourth connection was served while three were open");
    drop(held.pop());
    assert_eq!(within("the waiting request", waiting).await.unwrap(), 200);
}

#[tokio::test]
async fn an_idle_http2_connection_is_shut_down_after_client_idle() {
    let clock = clock();
    let (_origin, p, _c) =
        serve_with(&clock, |cfg| cfg.timeouts.client_idle = Duration::from_millis(300), |_, _| Reply::ok("x")).await;
    let mut h2 = H2::connect(p.addr()).await;
    assert_eq!(h2.send("GET", "/a", &[], bytes::Bytes::new()).await.status, 200);
    h2.ended().await;
    assert_eq!(p.stats().idle_closed.load(Ordering::Relaxed), 1);
}

/// SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2) as the proxy announces it.
async fn announced_max_streams(addr: std::net::SocketAddr) -> u32 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[PREFACE, SETTINGS].concat()).await.unwrap();
    within("the server's SETTINGS", async {
        let mut head = [0u8; 9];
        loop {
            s.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            // SETTINGS, not an acknowledgement.
            if head[3] == 4 && head[4] & 1 == 0 {
                return payload
                    .chunks(6)
                    .find(|p| u16::from_be_bytes([p[0], p[1]]) == 3)
                    .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
                    .expect("SETTINGS_MAX_CONCURRENT_STREAMS announced");
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_http2_connection_may_open_100_streams_at_once_by_default() {
    let clock = clock();
    let (_origin, p, _c) = serve(&clock, |_, _| Reply::ok("x")).await;
    assert_eq!(announced_max_streams(p.addr()).await, 100);
    let (_origin, p, _c) = serve_with(&clock, |cfg| cfg.limits.max_concurrent_streams = 7, |_, _| Reply::ok("x")).await;
    assert_eq!(announced_max_streams(p.addr()).await, 7);
}

#[tokio::test]
async fn past_origin_connections_a_request_waits_origin_queue_then_gets_503() {
    let clock = clock();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| {
            cfg.limits.origin_connections = 2;
            cfg.timeouts.origin_queue = Duration::from_millis(200);
        },
        move |_, _| Reply::ok("slow").gate(g.clone()),
    )
    .await;
    let c = Arc::new(c);
    let mut held = Vec::new();
    for path in ["/a", "/b"] {
        let c = c.clone();
        held.push(tokio::spawn(async move { c.get(path).await.status }));
    }
    origin.wait_count(2).await;
    let r = c.get("/c").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; detail=origin-busy");
    gate.notify_waiters();
    for h in held {
        assert_eq!(within("held request", h).await.unwrap(), 200);
    }
    assert_eq!((origin.count(), origin.connections()), (2, 2));
}

#[tokio::test]
async fn a_request_waiting_for_an_origin_connection_gets_the_next_one_freed() {
    let clock = clock();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.limits.origin_connections = 1,
        move |req, _| {
            let reply = Reply::ok(req.path().to_string()).cc("max-age=60");
            if req.path() == "/slow" {
                reply.gate(g.clone())
            } else {
                reply
            }
        },
    )
    .await;
    let c = Arc::new(c);
    let c1 = c.clone();
    let slow = tokio::spawn(async move { c1.get("/slow").await.text() });
    origin.wait_count(1).await;
    let c2 = c.clone();
    let queued = tokio::spawn(async move { c2.get("/fast").await.text() });
    gate.notify_one();
    assert_eq!(within("slow", slow).await.unwrap(), "/slow");
    assert_eq!(within("queued", queued).await.unwrap(), "/fast");
    assert_eq!((origin.count(), origin.connections()), (2, 1));
}
