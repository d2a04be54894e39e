//! Malformed and unusual input, from clients (raw bytes) and from the origin: answered with the
//! right error, never a panic, never a shared hit built from garbage.

pub mod common;

use bytes::Bytes;
use common::*;

/// Response header fields: (name, raw value).
type Fields = Vec<(&'static str, &'static [u8])>;

const BAD_REQUEST: &str = "edgecache; fwd=bypass; detail=bad-request";

async fn proxy_and_origin() -> (Origin, edgecache::Running) {
    let clock = clock();
    let (origin, p, _c) = serve(&clock, |req, n| Reply::ok(format!("{}#{n}", req.path())).cc("max-age=60")).await;
    (origin, p)
}

#[tokio::test]
async fn missing_host_is_400() {
    let (origin, p) = proxy_and_origin().await;
    let r = raw_request(p.addr(), b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("cache-status"), Some(BAD_REQUEST));
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn duplicate_host_is_400() {
    let (origin, p) = proxy_and_origin().await;
    let r =
        raw_request(p.addr(), b"GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("cache-status"), Some(BAD_REQUEST));
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn invalid_host_is_400() {
    let (origin, p) = proxy_and_origin().await;
    for host in [&b"exa mple.com"[..], b"a/b", b"a:99999", b"a:x", b"[zz]", b"a@b", b"\xff\xfe", b""] {
        let mut req = b"GET /a HTTP/1.1\r\nHost: ".to_vec();
        req.extend_from_slice(host);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let r = raw_request(p.addr(), &req).await;
        assert_eq!(r.status, 400, "Host {:?}", String::from_utf8_lossy(host));
    }
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn absolute_form_authority_wins_over_host() {
    let (origin, p) = proxy_and_origin().await;
    let r = raw_request(
        p.addr(),
        b"GET http://Example.com/x?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = origin.last();
    assert_eq!(seen.header("host"), Some("example.com"));
    assert_eq!(seen.path(), "/x?q=1");
    // Stored under the authority's key, not under Host's.
    let c = Client::new(p.addr());
    assert!(c.get_with("/x?q=1", &[("host", "example.com")]).await.is_hit());
    assert_eq!(c.get_with("/x?q=1", &[("host", "other.example")]).await.cache_status(), MISS_STORED);
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn userinfo_in_the_target_is_400() {
    let (origin, p) = proxy_and_origin().await;
    let r = raw_request(
        p.addr(),
        b"GET http://user@example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn oversized_header_block_is_431() {
    let clock = clock();
    let (origin, p, c) = serve_with(&clock, |cfg| cfg.limits.max_header_bytes = 8192, |_, _| Reply::ok("x")).await;
    let small = "s".repeat(4000);
    assert_eq!(c.get_with("/a", &[("x-big", &small)]).await.status, 200);
    let mut req = b"GET /a HTTP/1.1\r\nHost: h.example\r\nX-Big: ".to_vec();
    req.extend_from_slice("b".repeat(20_000).as_bytes());
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let r = raw_request(p.addr(), &req).await;
    assert_eq!(r.status, 431);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn unknown_methods_are_forwarded_and_invalidate() {
    let (origin, p) = proxy_and_origin().await;
    let c = Client::new(p.addr());
    c.get("/a").await;
    assert!(c.get("/a").await.is_hit());
    let r = c.send("PURGEX", "/a", &[], Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_status(), "edgecache; fwd=bypass; fwd-status=200; detail=method");
    assert_eq!(origin.last().method.as_str(), "PURGEX");
    // An unknown method is not safe: its success invalidates the URL.
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
}

#[tokio::test]
async fn an_absolute_form_target_of_another_scheme_is_400() {
    let (origin, p) = proxy_and_origin().await;
    for target in ["ftp://example.com/x", "https://example.com/x", "gopher://example.com/x"] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
        let r = raw_request(p.addr(), req.as_bytes()).await;
        assert_eq!(r.status, 400, "{target}");
        assert_eq!(r.header("cache-status"), Some(BAD_REQUEST), "{target}");
    }
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn an_authority_form_target_outside_connect_is_400() {
    let (origin, p) = proxy_and_origin().await;
    let r =
        raw_request(p.addr(), b"GET example.com:80 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("cache-status"), Some(BAD_REQUEST));
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn an_unasked_101_from_the_origin_is_502_and_not_stored() {
    let origin = RawOrigin::start(|_| {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n".to_vec()
    })
    .await;
    let p = start_proxy(origin.addr(), &clock(), |_| {}).await;
    let c = Client::new(p.addr());
    for n in 1..=2 {
        let r = c.get("/ws").await;
        assert_eq!(r.status, 502, "request {n}");
        assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; detail=origin-invalid", "request {n}");
    }
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn connect_is_refused() {
    let (origin, p) = proxy_and_origin().await;
    let r = raw_request(
        p.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn options_asterisk_is_answered_by_the_proxy() {
    let (origin, p) = proxy_and_origin().await;
    let r = raw_request(p.addr(), b"OPTIONS * HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")), "Allow lists the methods");
    assert_eq!(origin.count(), 0, "server-wide OPTIONS is not forwarded");
}

#[tokio::test]
async fn garbage_freshness_from_the_origin_never_gives_another_client_a_hit() {
    let clock = clock();
    // What another client's request for the same URL gets: the response was not stored, as it
    // has no usable freshness (nor a validator) or may not be shared.
    const NOT_FRESH: &str = "edgecache; fwd=uri-miss; fwd-status=200; detail=no-freshness";
    const PRIVATE: &str = "edgecache; fwd=uri-miss; fwd-status=200; detail=private";
    let cases: Vec<(&str, Fields, &str)> = vec![
        ("/cc-word", vec![("cache-control", b"max-age=abc")], NOT_FRESH),
        ("/cc-negative", vec![("cache-control", b"max-age=-1")], NOT_FRESH),
        ("/cc-fraction", vec![("cache-control", b"max-age=1.5")], NOT_FRESH),
        ("/cc-bare", vec![("cache-control", b"max-age")], NOT_FRESH),
        ("/cc-double-eq", vec![("cache-control", b"max-age==60")], NOT_FRESH),
        ("/cc-open-quote", vec![("cache-control", b"max-age=\"60")], NOT_FRESH),
        ("/cc-bytes", vec![("cache-control", b"max-age=\xff60")], NOT_FRESH),
        ("/cc-bad-smaxage", vec![("cache-control", b"s-maxage=zz, max-age=60")], NOT_FRESH),
        ("/cc-empty-private", vec![("cache-control", b"max-age=60, private=")], PRIVATE),
        ("/cc-commas", vec![("cache-control", b",,, ,private,,max-age=60")], PRIVATE),
        ("/expires-garbage", vec![("expires", b"next tuesday")], NOT_FRESH),
        ("/expires-twice", vec![("expires", b"Thu, 01 Jan 2099 00:00:00 GMT"), ("expires", b"0")], NOT_FRESH),
        ("/lm-garbage", vec![("last-modified", b"a while ago")], NOT_FRESH),
    ];
    let table = cases.clone();
    let (origin, p, alice) = serve(&clock, move |req, n| {
        let (_, headers, _) = table.iter().find(|(path, _, _)| *path == req.path()).expect("known path");
        headers.iter().fold(Reply::ok(format!("for request {n}")), |r, (k, v)| r.header(k, v))
    })
    .await;
    let bob = Client::new(p.addr());
    for (i, (path, headers, expected)) in cases.iter().enumerate() {
        let r = alice.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        let r = bob.get(path).await;
        let text = format!("for request {}", 2 * i + 2);
        assert_eq!((r.status, r.text(), r.cache_status()), (200, text, *expected), "{path} {headers:?}");
        assert_eq!(origin.count_path(path), 2, "{path}");
    }
}

#[tokio::test]
async fn garbage_request_fields_do_not_break_the_proxy() {
    let (origin, p) = proxy_and_origin().await;
    let c = Client::new(p.addr());
    c.get("/a").await;
    for (name, value) in [
        ("cache-control", "max-age=abc, min-fresh=zz, max-stale=-1"),
        ("cache-control", "max-stale=\", no-cache=\"x"),
        ("cache-control", "=,=,=="),
        ("pragma", "no-cache=\"\""),
        ("if-modified-since", "yesterday"),
        ("if-none-match", "W/, \", *x"),
        ("range", "bytes=oops"),
        ("accept-encoding", ",;;q=,"),
    ] {
        // Each is ignored: the stored response is served as if the field were absent.
        let r = c.get_with("/a", &[(name, value)]).await;
        assert_eq!((r.status, r.text(), r.cache_status()), (200, "/a#1".into(), hit(60).as_str()), "{name}: {value:?}");
    }
    // Control bytes in a field value: refused by the HTTP parser, before the proxy sees a request.
    let r = raw_request(
        p.addr(),
        b"GET /a HTTP/1.1\r\nHost: h.example\r\nCache-Control: \x01\x02\x7f\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.header("cache-status")), (400, None));
    let r = raw_request(p.addr(), b"GARBAGE\r\n\r\n").await;
    assert_eq!((r.status, r.header("cache-status")), (400, None));
    let r = c.get("/a").await;
    assert_eq!((r.status, r.cache_status()), (200, hit(60).as_str()), "the proxy stopped working");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off_after_header_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let clock = clock();
    let (origin, p, _c) = serve_with(
        &clock,
        |cfg| cfg.timeouts.header_read = std::time::Duration::from_millis(300),
        |_, _| Reply::ok("x"),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: h.example\r\nX-Slow: ").await.unwrap();
    let mut buf = Vec::new();
    // The proxy closes the connection well before the 10s default, without an answer.
    let read = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .expect("the connection was still open after 3s (header_read = 300ms)");
    assert_eq!(read.map_err(|e| e.kind()), Ok(0), "answered: {:?}", String::from_utf8_lossy(&buf));
    assert_eq!(origin.count(), 0);
}
