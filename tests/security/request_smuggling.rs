//! Request smuggling: whatever framing a client sends, the proxy and the origin agree on where
//! each request ends, because the proxy forwards only what it parsed, framed by the bytes it
//! actually read; an ambiguous request is refused before it costs an origin connection. Bodies
//! of requests answered without the origin (errors, `OPTIONS *`, hits) are never read as the
//! next request; an `Upgrade` is never tunnelled without the origin's 101.
//!
//! Covered elsewhere: a GET or HEAD with a body can not poison the next request on a pooled
//! origin connection (`request_framing::a_get_with_a_body_cannot_poison_the_next_request_on_the_origin_connection`),
//! a malformed chunked body is 400 and costs no origin connection
//! (`request_framing::a_malformed_chunked_body_is_400_and_costs_no_origin_connection`), a
//! transfer coding other than chunked is 501 (`request_framing::a_transfer_coding_other_than_chunked_is_501_before_the_origin`),
//! an unasked 101 from the origin is 502 (`bad_input::an_unasked_101_from_the_origin_is_502_and_not_stored`).

use crate::common::*;
use crate::{exchange, statuses};

fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// An origin keeping one connection alive, reading each body by its framing, answering with
/// the request's path: a desynchronised connection shows as a path nobody asked for.
async fn origin() -> (RawOrigin, edgecache::Running) {
    let origin = RawOrigin::builder().keep_alive().start(|r| ok(r.path())).await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    (origin, p)
}

/// What a victim gets after the attack: its own path, over the same origin connection.
async fn victim_gets_its_own_answer(p: &edgecache::Running, origin: &RawOrigin) {
    let r = raw_request(p.addr(), b"GET /victim HTTP/1.1\r\nHost: s.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(String::from_utf8_lossy(&r.body), "/victim");
    let paths: Vec<String> = origin.requests().iter().map(|r| r.path().to_string()).collect();
    assert!(!paths.iter().any(|p| p.contains("smuggled")), "the origin read a smuggled request: {paths:?}");
}

/// `Content-Length` and `Transfer-Encoding: chunked` together (RFC 9112 §6.1: chunked wins, or
/// refuse): the classic CL.TE / TE.CL. Either refused, or forwarded framed by the chunked body
/// alone, so the bytes after it are never a request on the origin connection.
#[tokio::test]
async fn smuggling_cl_te_never_desynchronises_the_origin_connection() {
    let (origin, p) = origin().await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: s.example\r\n\r\n";
    let cl_te = format!(
        "POST /a HTTP/1.1\r\nHost: s.example\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let te_cl = format!(
        "POST /b HTTP/1.1\r\nHost: s.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nConnection: close\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    for attack in [cl_te, te_cl] {
        let out = exchange(p.addr(), attack.as_bytes()).await;
        assert!(matches!(statuses(&out).first(), Some(200 | 400)), "{out}");
        victim_gets_its_own_answer(&p, &origin).await;
    }
}

/// Two `Content-Length` fields that disagree (or a list of them): refused, never forwarded.
#[tokio::test]
async fn smuggling_duplicate_content_lengths_are_refused() {
    let (origin, p) = origin().await;
    for lengths in
        ["Content-Length: 5\r\nContent-Length: 6", "Content-Length: 5, 6", "Content-Length: 5\r\nContent-Length: 5, 6"]
    {
        let req = format!("POST /a HTTP/1.1\r\nHost: s.example\r\n{lengths}\r\nConnection: close\r\n\r\nhello!");
        assert_eq!(statuses(&exchange(p.addr(), req.as_bytes()).await), [400], "{lengths}");
    }
    assert_eq!(origin.count(), 0);
    victim_gets_its_own_answer(&p, &origin).await;
}

/// Odd transfer codings and spellings (obfuscated TE): 400 or 501, never forwarded.
#[tokio::test]
async fn smuggling_odd_transfer_encodings_are_refused() {
    let (origin, p) = origin().await;
    for te in [
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunk",
        "Transfer-Encoding : chunked",
        "Transfer-Encoding: \u{b}chunked",
        "Transfer-Encoding: \"chunked\"",
        "Transfer_Encoding: chunked\r\nContent-Length: x",
    ] {
        let req =
            format!("POST /a HTTP/1.1\r\nHost: s.example\r\n{te}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        let got = statuses(&exchange(p.addr(), req.as_bytes()).await);
        assert!(matches!(got.as_slice(), [400] | [501]), "{te:?}: {got:?}");
    }
    assert_eq!(origin.count(), 0);
}

/// Varnish VSV00016 and Squid's chunked advisories (e.g. CVE-2023-46846): chunk sizes and
/// extensions two parsers read differently. Each is refused, or forwarded re-framed so the
/// origin reads exactly the body the proxy read.
#[tokio::test]
async fn smuggling_vsv00016_lenient_chunk_parsing_never_reaches_the_origin_as_sent() {
    let (origin, p) = origin().await;
    for body in [
        "5 \r\nhello\r\n0\r\n\r\n",
        "5\t;x\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "+5\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "00000000000000000000005\r\nhello\r\n0\r\n\r\n",
        "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5;a=\"\r\n\"\r\nhello\r\n0\r\n\r\n",
        "5\nhello\n0\n\n",
        "5\r\nhelloXX0\r\n\r\n",
        "5\r\nhello\r\n0\r\nX-Trailer: 1\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    ] {
        let req = format!(
            "POST /c HTTP/1.1\r\nHost: s.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
        );
        let out = exchange(p.addr(), req.as_bytes()).await;
        match statuses(&out).as_slice() {
            [400] => {}
            [200] => {
                let seen = origin.requests().last().cloned().expect("forwarded");
                assert_eq!(seen.body, b"hello", "{body:?}: the origin read another body");
            }
            other => panic!("{body:?}: {other:?} {out}"),
        }
    }
    victim_gets_its_own_answer(&p, &origin).await;
}

/// Obsolete line folding and bare LF line ends: refused, or normalised before forwarding (the
/// origin sees CRLF only, so a fold can not hide a field from one of the two parsers).
#[tokio::test]
async fn smuggling_obs_fold_and_bare_lf_never_reach_the_origin_as_sent() {
    let (origin, p) = origin().await;
    for req in [
        &b"GET /f HTTP/1.1\r\nHost: s.example\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"[..],
        b"GET /f HTTP/1.1\r\nHost: s.example\r\nX-A: 1\r\n\tcontinued\r\nConnection: close\r\n\r\n",
        b"GET /lf HTTP/1.1\nHost: s.example\nConnection: close\n\n",
        b"GET /lf2 HTTP/1.1\r\nHost: s.example\nConnection: close\r\n\r\n",
    ] {
        let out = exchange(p.addr(), req).await;
        assert!(matches!(statuses(&out).as_slice(), [200] | [400]), "{:?}: {out}", String::from_utf8_lossy(req));
    }
    for seen in origin.requests() {
        let raw = String::from_utf8_lossy(&seen.raw).into_owned();
        assert!(!raw.replace("\r\n", "").contains('\n'), "a bare LF reached the origin: {raw:?}");
        assert!(!raw.contains("\r\n ") && !raw.contains("\r\n\t"), "a folded line reached the origin: {raw:?}");
    }
    victim_gets_its_own_answer(&p, &origin).await;
}

/// `Connection: Content-Length` asks for the framing field to be dropped as hop-by-hop; the body
/// still reaches the origin framed, and nothing after it is a request.
#[tokio::test]
async fn smuggling_connection_content_length_never_unframes_a_body() {
    let (origin, p) = origin().await;
    let req =
        b"POST /h HTTP/1.1\r\nHost: s.example\r\nConnection: Content-Length, close\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(statuses(&exchange(p.addr(), req).await), [200]);
    let seen = origin.requests().last().cloned().unwrap();
    assert_eq!(seen.body, b"hello");
    assert!(
        seen.header("content-length") == Some("5") || seen.header("transfer-encoding") == Some("chunked"),
        "forwarded without framing: {}",
        seen.head
    );
    victim_gets_its_own_answer(&p, &origin).await;
}

/// Varnish VSV00008 and Pingora's CVE-2025-4366: a request answered without reading its body (a
/// synthetic answer, a cache hit) left the body on the client connection, where it was read as
/// the next request. Here the body of a request answered locally or from the store is read or
/// the connection closed: the bytes inside it are never a request.
#[tokio::test]
async fn smuggling_vsv00008_pingora_cve_2025_4366_a_body_on_a_local_answer_or_a_hit_is_never_a_request() {
    let (origin, p) = origin().await;
    raw_request(p.addr(), b"GET /hit HTTP/1.1\r\nHost: s.example\r\nConnection: close\r\n\r\n").await;
    let inner = "GET /smuggled HTTP/1.1\r\nHost: s.example\r\n\r\n";
    for first in [
        format!("OPTIONS * HTTP/1.1\r\nHost: s.example\r\nContent-Length: {}\r\n\r\n{inner}", inner.len()),
        format!("GET /hit HTTP/1.1\r\nHost: s.example\r\nContent-Length: {}\r\n\r\n{inner}", inner.len()),
        format!("GET /hit HTTP/1.1\r\nHost: s.example\r\nHost: x.example\r\nContent-Length: {}\r\n\r\n{inner}", inner.len()),
        format!("GET /hit HTTP/1.1\r\nHost: s.example\r\nCache-Control: only-if-cached\r\nContent-Length: {}\r\n\r\n{inner}", inner.len()),
        format!("HEAD /hit HTTP/1.1\r\nHost: s.example\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len()),
    ] {
        let pipelined = format!("{first}GET /next HTTP/1.1\r\nHost: s.example\r\nConnection: close\r\n\r\n");
        let out = exchange(p.addr(), pipelined.as_bytes()).await;
        assert!(!out.contains("/smuggled"), "{first:?}: {out}");
    }
    victim_gets_its_own_answer(&p, &origin).await;
}

/// `Upgrade` without the origin's 101: the proxy does not tunnel, so the bytes the client sends
/// after its request are read as HTTP, and the origin never sees the `Upgrade` (hop-by-hop).
#[tokio::test]
async fn smuggling_an_upgrade_without_101_is_never_a_tunnel() {
    let (origin, p) = origin().await;
    let req = b"GET /ws HTTP/1.1\r\nHost: s.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nGET /next HTTP/1.1\r\nHost: s.example\r\nConnection: close\r\n\r\n";
    let out = exchange(p.addr(), req).await;
    assert_eq!(statuses(&out), [200, 200], "{out}");
    assert!(out.ends_with("/next"), "{out}");
    let ws = origin.requests().into_iter().find(|r| r.path() == "/ws").expect("forwarded");
    assert_eq!(ws.header("upgrade"), None);
    // h2c upgrade (RFC 7540 §3.2, removed by RFC 9113): answered over HTTP/1.1, never switched.
    let h2c = b"GET /h2c HTTP/1.1\r\nHost: s.example\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    let out = exchange(p.addr(), h2c).await;
    assert_eq!(statuses(&out), [200], "{out}");
}
