//! Origin faults a production node meets: refused, tarpitted, reset mid-body, short bodies, a
//! missing last chunk, 5xx, an unasked 101, broken framing. Each gets a clear answer, nothing
//! incomplete or misframed is stored, and the next request is served.
//!
//! Covered elsewhere: a closed port is 502 and nothing stored
//! (`forwarding::origin_port_closed_gives_502_and_nothing_is_stored`), an origin that never
//! answers is 504 after `timeouts.first_byte`
//! (`forwarding::origin_that_never_answers_gives_504_after_first_byte_timeout`), a body cut
//! short (`storability::truncated_body_is_not_stored`,
//! `coalescing::a_body_cut_short_is_never_announced_as_stored`), a fill that fails fails every
//! client (`coalescing::failed_fill_fails_every_client_and_stores_nothing`), a body that stalls
//! past `timeouts.idle` (`coalescing::an_origin_body_stalled_past_the_idle_timeout_fails_and_stores_nothing`),
//! 5xx without freshness (`storability::server_error_without_freshness_is_not_stored`), stale
//! served when every connection is closed or every answer is 5xx
//! (`stale::origin_closing_every_connection_every_key_is_served_stale`,
//! `stale::origin_answering_5xx_to_everything_every_key_is_served_stale`), an unasked 101
//! (`bad_input::an_unasked_101_from_the_origin_is_502_and_not_stored`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::*;

/// A proxy in front of a raw origin answering every request with `answer`.
async fn behind(answer: &'static [u8]) -> (RawOrigin, edgecache::Running, Client) {
    let origin = RawOrigin::start(move |_| answer.to_vec()).await;
    let p = start_proxy(origin.addr(), &clock(), |cfg| cfg.timeouts.idle = Duration::from_millis(500)).await;
    let c = Client::new(p.addr());
    (origin, p, c)
}

/// The chunked body's last chunk never comes (the connection closes after the data): the client
/// sees the transfer fail, and nothing is stored.
#[tokio::test]
async fn origin_fault_a_missing_last_chunk_is_never_stored() {
    let (origin, _p, c) =
        behind(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await;
    for n in 1..=2 {
        let r = c.try_send("GET", "/chunks", &[], bytes::Bytes::new()).await;
        assert!(r.is_err(), "request {n}: an incomplete body was presented as complete: {r:?}");
    }
    assert_eq!(origin.count(), 2);
}

/// Broken framing in the origin's head: each is 502 (or the transfer fails), and never stored.
#[tokio::test]
async fn origin_fault_broken_framing_is_an_error_and_never_stored() {
    let cases: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\ncache-control: max-age=60\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\ncache-control: max-age=60\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ncontent-length: five\r\ncache-control: max-age=60\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncache-control: max-age=60\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\ncontent-length: 5\r\ncache-control: max-age=60\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded: 2\r\ncontent-length: 5\r\ncache-control: max-age=60\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nx-a: \x00\r\ncontent-length: 5\r\ncache-control: max-age=60\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncache-control: max-age=60",
        b"garbage\r\n\r\n",
        b"",
    ];
    for answer in cases {
        let (origin, _p, c) = behind(answer).await;
        for n in 1..=2 {
            if let Ok(r) = c.try_send("GET", "/f", &[], bytes::Bytes::new()).await {
                assert!(!r.is_hit(), "{:?} request {n}: {r:?}", String::from_utf8_lossy(answer));
            }
        }
        assert_eq!(origin.count(), 2, "{:?} was stored", String::from_utf8_lossy(answer));
    }
}

/// Content-Length and Transfer-Encoding together in a response (RFC 9112 §6.3: chunked wins):
/// read as chunked, the rest of the connection's bytes never make a second response.
#[tokio::test]
async fn origin_fault_content_length_with_chunked_is_read_as_chunked() {
    let (origin, _p, c) = behind(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\ncache-control: max-age=60\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let r = c.get("/te").await;
    assert_eq!((r.status, r.text()), (200, "hello".to_string()), "{r:?}");
    assert_eq!(origin.count(), 1);
}

/// An origin that resets the connection (RST) in the middle of a body.
#[tokio::test]
async fn origin_fault_a_reset_mid_body_fails_the_transfer_and_stores_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 100000\r\n\r\npartial")
                    .await;
                let _ = s.flush().await;
                // Linger 0: close sends RST instead of FIN.
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    let p = start_proxy(addr, &clock(), |_| {}).await;
    let c = Client::new(p.addr());
    for n in 1..=2 {
        let r = c.try_send("GET", "/reset", &[], bytes::Bytes::new()).await;
        assert!(r.as_ref().map_or(true, |r| r.status == 502), "request {n}: {r:?}");
    }
    assert_eq!(stored_urls(&p), 0);
}

/// A tarpit: the origin trickles its head a byte at a time, forever. The client gets 504 once
/// `timeouts.first_byte` has passed, however lively the trickle.
#[tokio::test]
async fn origin_fault_a_tarpit_head_is_cut_off_at_first_byte() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                for b in b"HTTP/1.1 200 OK\r\nx-slow: ".iter().chain(std::iter::repeat(&b'z')).take(10_000) {
                    if s.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    let p = start_proxy(addr, &clock(), |cfg| cfg.timeouts.first_byte = Duration::from_millis(500)).await;
    let c = Client::new(p.addr());
    let started = std::time::Instant::now();
    let r = c.get("/tarpit").await;
    assert_eq!((r.status, r.cache_status()), (504, "edgecache; fwd=uri-miss; detail=origin-timeout"));
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
}

/// A keep-alive origin that closes an idle connection without saying so: the next request on
/// that pooled connection must not fail the client.
#[tokio::test]
async fn origin_fault_a_pooled_connection_closed_by_the_origin_is_not_a_client_error() {
    let (origin, _p, c) = behind(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncache-control: no-store\r\n\r\nok").await;
    for n in 1..=5 {
        let r = c.get(&format!("/k{n}")).await;
        assert_eq!(r.status, 200, "request {n}: {}", r.cache_status());
    }
    assert_eq!(origin.count(), 5);
}
