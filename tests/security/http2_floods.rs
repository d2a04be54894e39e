//! HTTP/2 floods: frames that cost the server work and the attacker nothing. Each is cut off by
//! the connection (GOAWAY or close) within a bound, the work it started stays bounded, and other
//! clients are served meanwhile.
//!
//! Covered elsewhere: at most `limits.max_concurrent_streams` (100) streams open per connection
//! (`connections::an_http2_connection_may_open_100_streams_at_once_by_default`), a HEADERS
//! without END_HEADERS and then silence is closed after `timeouts.header_read`
//! (`connections::connections_that_send_no_complete_request_are_closed_after_header_read`), an
//! idle HTTP/2 connection gets GOAWAY after `timeouts.client_idle`
//! (`connections::an_idle_http2_connection_is_shut_down_after_client_idle`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;
use crate::h2::*;

/// GOAWAY error codes (RFC 9113 §7).
const PROTOCOL_ERROR: u32 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A proxy in front of an origin whose every answer waits for `gate` (so work started by a
/// flood stays in flight and can be counted), and a connection that has sent the preface.
async fn setup() -> (Origin, edgecache::Running, Arc<tokio::sync::Notify>, TcpStream) {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let (origin, p, _c) = serve(&clock(), move |_, _| Reply::ok("x").cc("max-age=60").gate(g.clone())).await;
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat()).await.unwrap();
    (origin, p, gate, s)
}

/// Another client, on its own connection, gets its answer while the flood's work is in flight.
async fn others_are_served(p: &edgecache::Running, gate: &tokio::sync::Notify) {
    let c = Client::new(p.addr());
    let r = tokio::spawn(async move { c.get("/other").await.status });
    // The gate holds every origin answer: release them all until the other client's returns.
    let status = within("another client served during the flood", async {
        let mut r = r;
        loop {
            gate.notify_waiters();
            tokio::select! {
                s = &mut r => return s.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    })
    .await;
    assert_eq!(status, 200);
}

/// Writes `frames` until the server stops reading or closes; how many were written.
async fn flood(s: &mut TcpStream, frames: impl Iterator<Item = Vec<u8>>) -> usize {
    let mut sent = 0;
    for f in frames {
        match tokio::time::timeout(Duration::from_secs(2), s.write_all(&f)).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    sent
}

/// CVE-2023-44487 (Rapid Reset): streams opened and cancelled at once, 10,000 of them. The
/// connection is told to go away, and the requests that reached the origin are a small fraction.
#[tokio::test]
async fn http2_flood_cve_2023_44487_rapid_reset() {
    let (origin, p, gate, mut s) = setup().await;
    let authority = p.addr().to_string();
    let frames = (0..10_000u32).map(|i| {
        let id = 2 * i + 1;
        let mut f = frame(HEADERS, END_HEADERS | END_STREAM, id, &get(&authority, &format!("/rr{i}")));
        f.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        f
    });
    let sent = flood(&mut s, frames).await;
    let code = goaway(&mut s, WAIT).await;
    assert_eq!(code, Some(ENHANCE_YOUR_CALM), "after {sent} streams");
    assert!(origin.count() <= 200, "{} of {sent} cancelled streams reached the origin", origin.count());
    others_are_served(&p, &gate).await;
}

/// CVE-2025-8671 (MadeYouReset): the client makes the server reset streams itself with a
/// frame that is a stream error (RFC 9113 §5.4.2), so no client reset is counted: a
/// WINDOW_UPDATE that overflows the stream's window (§6.9.1), or one of 0 (§6.9).
#[tokio::test]
async fn http2_flood_cve_2025_8671_made_you_reset() {
    for (what, increment) in [("window overflow", 0x7fff_ffffu32), ("zero increment", 0)] {
        let (origin, p, gate, mut s) = setup().await;
        let authority = p.addr().to_string();
        let frames = (0..10_000u32).map(|i| {
            let id = 2 * i + 1;
            let mut f = frame(HEADERS, END_HEADERS | END_STREAM, id, &get(&authority, &format!("/myr{i}")));
            f.extend(frame(WINDOW_UPDATE, 0, id, &increment.to_be_bytes()));
            f
        });
        let sent = flood(&mut s, frames).await;
        let code = goaway(&mut s, WAIT).await;
        // h2 counts the resets it makes (ENHANCE_YOUR_CALM past 1,024), and treats a zero
        // increment as a connection error outright (PROTOCOL_ERROR): either ends the flood.
        assert!(matches!(code, Some(PROTOCOL_ERROR | ENHANCE_YOUR_CALM)), "{what}: {code:?} after {sent} streams");
        assert!(origin.count() <= 1100, "{what}: {} of {sent} reset streams reached the origin", origin.count());
        others_are_served(&p, &gate).await;
    }
}

/// CVE-2024-27316 and its kin (VU#421644, CONTINUATION flood): one header block that never
/// ends, sent as endless CONTINUATION frames. Bounded by `limits.max_header_size`: the
/// connection is closed long before 16 MiB of header block is read.
#[tokio::test]
async fn http2_flood_vu421644_continuation_flood() {
    let (origin, p, gate, mut s) = setup().await;
    let authority = p.addr().to_string();
    let padding = field(b"x-pad", &[b'a'; 1000]);
    let first = std::iter::once(frame(HEADERS, END_STREAM, 1, &get(&authority, "/cont")));
    let rest = std::iter::repeat_with(|| frame(CONTINUATION, 0, 1, &padding)).take(16 * 1024);
    let sent = flood(&mut s, first.chain(rest)).await;
    let closed = crate::closed_within(&mut s, WAIT).await;
    assert!(closed, "the connection was still open after {sent} CONTINUATION frames");
    assert_eq!(origin.count(), 0);
    others_are_served(&p, &gate).await;
}

/// Stream-ID and flow-control abuse on one connection (`DATA` on a closed stream, a window past
/// 2^31-1): a connection error, GOAWAY, and nothing else affected.
#[tokio::test]
async fn http2_flood_protocol_errors_end_only_their_connection() {
    let (_origin, p, gate, mut s) = setup().await;
    let authority = p.addr().to_string();
    let mut bytes = frame(HEADERS, END_HEADERS | END_STREAM, 1, &get(&authority, "/pe"));
    bytes.extend(frame(DATA, 0, 1, b"after end of stream"));
    bytes.extend(frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()));
    bytes.extend(frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()));
    s.write_all(&bytes).await.unwrap();
    assert!(goaway(&mut s, WAIT).await.is_some(), "no GOAWAY after protocol errors");
    others_are_served(&p, &gate).await;
}
