//! Forwarding (RFC 9110 §7.6): hop-by-hop fields, `Via`, `X-Forwarded-*`, `Host`, request bodies,
//! and what the client gets when the origin is unreachable or too slow.

pub mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;

const HOP_BY_HOP: &[&str] =
    &["x-secret", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection"];

#[tokio::test]
async fn hop_by_hop_request_fields_are_not_forwarded() {
    let clock = clock();
    let (origin, p, _c) = serve(&clock, |_, _| Reply::ok("x")).await;
    // Raw bytes, so that no client library drops a field before the proxy sees it.
    let r = raw_request(
        p.addr(),
        b"GET /a HTTP/1.1\r\nHost: h.example\r\nConnection: x-secret, close\r\nX-Secret: s3cr3t\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: x-t\r\nUpgrade: example/1\r\n\
          Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nX-Kept: 1\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = origin.last();
    for name in HOP_BY_HOP {
        assert_eq!(seen.header(name), None, "{name} reached the origin");
    }
    assert!(!seen.header_all("connection").iter().any(|v| v.contains("x-secret")));
    assert_eq!(seen.header("x-kept"), Some("1"));
}

#[tokio::test]
async fn hop_by_hop_response_fields_are_not_forwarded_nor_stored() {
    let clock = clock();
    let (_origin, _p, c) = serve(&clock, |_, _| {
        Reply::ok("x")
            .cc("max-age=60")
            .header("connection", "x-internal")
            .header("x-internal", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"o\"")
            .header("x-kept", "1")
    })
    .await;
    let miss = c.get("/a").await;
    let hit = c.get("/a").await;
    assert!(hit.is_hit());
    for r in [miss, hit] {
        for name in ["x-internal", "keep-alive", "proxy-authenticate"] {
            assert_eq!(r.header(name), None, "{name} reached the client ({})", r.cache_status());
        }
        assert_eq!(r.header("x-kept"), Some("1"));
    }
}

#[tokio::test]
async fn via_and_x_forwarded_fields_are_added() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, n| {
        let r = Reply::ok("x");
        if n == 2 {
            r.header("via", "1.1 upstream")
        } else {
            r
        }
    })
    .await;
    let r = c.get("/a").await;
    let seen = origin.last();
    assert_eq!(seen.header("via"), Some("1.1 edgecache"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("via"), Some("1.1 edgecache"));

    let r = c.get_with("/b", &[("via", "1.0 fred"), ("x-forwarded-for", "10.0.0.1")]).await;
    let seen = origin.last();
    assert_eq!(seen.header("via"), Some("1.0 fred, 1.1 edgecache"));
    // The client is not a trusted proxy: what it claims is replaced by its own address.
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("via"), Some("1.1 upstream, 1.1 edgecache"));
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_is_kept_and_extended() {
    let clock = clock();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.forwarding.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()],
        |_, _| Reply::ok("x"),
    )
    .await;
    c.get_with("/a", &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(origin.last().header("x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    c.get("/b").await;
    assert_eq!(origin.last().header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn x_forwarded_for_from_anyone_else_is_replaced() {
    let clock = clock();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.forwarding.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()],
        |_, _| Reply::ok("x"),
    )
    .await;
    c.get_with("/a", &[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(origin.last().header_all("x-forwarded-for"), vec!["127.0.0.1".to_string()]);
}

#[tokio::test]
async fn host_is_normalized_forwarded_and_part_of_the_key() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |req, n| Reply::ok(format!("{}#{n}", req.header("host").unwrap_or("?"))).cc("max-age=60")).await;
    let r = c.get_with("/a", &[("host", "Example.COM:80")]).await;
    assert_eq!(r.text(), "example.com#1");
    assert_eq!(origin.last().header("host"), Some("example.com"));
    assert!(c.get_with("/a", &[("host", "example.com")]).await.is_hit());
    assert!(c.get_with("/a", &[("host", "example.com.")]).await.is_hit());
    let r = c.get_with("/a", &[("host", "other.example")]).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("other.example#2", MISS_STORED));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn path_and_query_are_forwarded_verbatim_and_keyed_exactly() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |req, n| Reply::ok(format!("{}#{n}", req.path())).cc("max-age=60")).await;
    for path in ["/a", "/a?", "/a?x=1", "/a?x=2", "/a%2Fb", "/a/b"] {
        let r = c.get(path).await;
        assert_eq!(r.cache_status(), MISS_STORED, "{path}");
        assert_eq!(origin.last().path(), path);
    }
    for path in ["/a", "/a?", "/a?x=1", "/a?x=2", "/a%2Fb", "/a/b"] {
        assert!(c.get(path).await.is_hit(), "{path}");
    }
    assert_eq!(origin.count(), 6);
}

#[tokio::test]
async fn request_bodies_are_forwarded_complete() {
    let clock = clock();
    let (origin, p, c) = serve(&clock, |req, _| Reply::ok(format!("got {}", req.body.len()))).await;
    let body: Vec<u8> = (0..(2 << 20) as u32).map(|i| (i % 253) as u8).collect();
    let r = c.send("POST", "/up", &[("content-type", "application/octet-stream")], Bytes::from(body.clone())).await;
    assert_eq!(r.text(), format!("got {}", body.len()));
    let seen = origin.last();
    assert_eq!(seen.method, http::Method::POST);
    assert!(seen.body == body, "the origin received a different body");
    assert_eq!(seen.header("content-type"), Some("application/octet-stream"));

    // A chunked request body, byte-exact.
    let raw = raw_request(
        p.addr(),
        b"POST /chunked HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(&origin.last().body[..], b"hello world");
    assert_eq!(origin.last().path(), "/chunked");
}

#[tokio::test]
async fn origin_port_closed_gives_502_and_nothing_is_stored() {
    let clock = clock();
    let closed = closed_port();
    let p = start_proxy(closed.addr(), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    for _ in 0..2 {
        let r = c.get("/a").await;
        assert_eq!(r.status, 502);
        assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; detail=origin-unreachable");
    }
    let r = c.post("/a", "x").await;
    assert_eq!((r.status, r.cache_status()), (502, "edgecache; fwd=bypass; detail=origin-unreachable"));
    assert_eq!(stored_urls(&p), 0);
}

#[tokio::test]
async fn origin_that_never_answers_gives_504_after_first_byte_timeout() {
    let clock = clock();
    let origin = RawOrigin::hang().await;
    let p = start_proxy(origin.addr(), &clock, |cfg| cfg.timeouts.first_byte = Duration::from_millis(300)).await;
    let c = Client::new(p.addr());
    for i in 1..=2 {
        let start = Instant::now();
        let r = c.get("/a").await;
        assert_eq!(r.status, 504);
        assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; detail=origin-timeout", "request {i}");
        assert!(start.elapsed() >= Duration::from_millis(300), "answered before the timeout");
        assert_eq!(origin.count(), i, "the request did not reach the origin");
    }
    assert_eq!(stored_urls(&p), 0);
}

#[tokio::test]
async fn upstream_cache_status_is_kept_after_ours() {
    let clock = clock();
    let (_origin, _p, c) =
        serve(&clock, |_, _| Reply::ok("x").cc("max-age=60").header("cache-status", "upstream; hit")).await;
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=200; stored, upstream; hit");
    assert_eq!(r.headers.get_all("cache-status").iter().count(), 1);
    // Stored with the response: a hit says it after ours too.
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), format!("{}, upstream; hit", hit(60)));
    assert_eq!(r.headers.get_all("cache-status").iter().count(), 1);
    // A 304 from the store carries the 304 field set only (RFC 9110 §15.4.5), and ours.
    let r = c.get_with("/a", &[("if-modified-since", &date_at(&clock, 0))]).await;
    assert_eq!((r.status, r.cache_status()), (304, hit(60).as_str()));
    assert_eq!(r.headers.get_all("cache-status").iter().count(), 1);
}

#[tokio::test]
async fn an_empty_upstream_cache_status_gives_way_to_ours() {
    let clock = clock();
    let (_origin, _p, c) = serve(&clock, |_, _| Reply::ok("x").cc("max-age=60").header("cache-status", "")).await;
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=200; stored");
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), hit(60));
    assert_eq!(r.headers.get_all("cache-status").iter().count(), 1);
}

#[tokio::test]
async fn date_is_added_when_the_origin_sends_none() {
    let clock = clock();
    let origin = RawOrigin::start(|_| {
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec()
    })
    .await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    let r = c.get("/a").await;
    assert_eq!(r.header("date"), Some(date_at(&clock, 0).as_str()));
    advance(&clock, 5);
    let r = c.get("/a").await;
    assert_eq!((r.age(), r.cache_status()), (Some(5), hit(55).as_str()));
}

#[tokio::test]
async fn origin_status_and_body_pass_through() {
    let clock = clock();
    let (_origin, _p, c) = serve(&clock, |_, _| Reply::status(418).body("teapot").header("x-a", "1")).await;
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str(), r.header("x-a")), (418, "teapot", Some("1")));
}

#[tokio::test]
async fn concurrent_requests_are_all_answered() {
    let clock = clock();
    let (origin, p, _c) = serve(&clock, |req, _| Reply::ok(req.path().to_string()).cc("max-age=60")).await;
    let c = std::sync::Arc::new(Client::new(p.addr()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let c = c.clone();
        tasks.spawn(async move {
            let path = format!("/p{}", i % 8);
            let r = c.get(&path).await;
            assert_eq!((r.status, r.text()), (200, path));
        });
    }
    within("64 concurrent requests", async {
        while let Some(res) = tasks.join_next().await {
            res.expect("request task");
        }
    })
    .await;
    // One origin request per path: the others joined it, or were hits once it was stored.
    assert_eq!(origin.count(), 8);
    for i in 0..8 {
        assert!(c.get(&format!("/p{i}")).await.is_hit());
    }
}

#[tokio::test]
async fn stalled_request_body_gives_408_after_request_body_timeout() {
    let clock = clock();
    let (origin, p, _c) = serve_with(
        &clock,
        |cfg| cfg.timeouts.request_body = Duration::from_millis(300),
        |req, _| Reply::ok(format!("got {}", req.body.len())),
    )
    .await;
    // Content-Length promises 10 bytes, 5 arrive, and the client keeps the connection open.
    let r = raw_request(p.addr(), b"POST /up HTTP/1.1\r\nHost: h.example\r\nContent-Length: 10\r\n\r\nhello").await;
    assert_eq!(r.status, 408);
    assert_eq!(r.header("cache-status"), Some("edgecache; fwd=bypass; detail=request-timeout"));
    assert!(origin.requests().iter().all(|s| s.body.len() != 10), "the origin got a completed body");
}

#[tokio::test]
async fn unkeyed_override_fields_are_stripped_and_x_forwarded_host_set() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::ok("x")).await;
    let overrides = [
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("x-host", "evil.example"),
        ("x-forwarded-server", "evil.example"),
        ("x-http-host-override", "evil.example"),
        ("x-original-host", "evil.example"),
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-scheme", "https"),
        ("x-forwarded-port", "443"),
        ("forwarded", "host=evil.example"),
        ("x-forwarded-host", "evil.example"),
    ];
    c.get_with("/a", &[&[("host", "Shop.example")][..], &overrides[..]].concat()).await;
    let seen = origin.last();
    for (name, _) in &overrides[..overrides.len() - 1] {
        assert_eq!(seen.header(name), None, "{name} reached the origin");
    }
    assert_eq!(seen.header_all("x-forwarded-host"), vec!["shop.example".to_string()]);
}

/// RFC 9110 §15.2: "A client MUST be able to parse one or more 1xx responses received prior to a
/// final response"; RFC 9111 §3: interim responses are never stored. hyper 1.x's server cannot
/// send a 1xx (other than its automatic `100 Continue`), so a `103 Early Hints` from the origin
/// is consumed here (see the README), and the final response is forwarded and stored without
/// the hints' fields.
#[tokio::test]
async fn an_interim_103_is_consumed_and_the_final_response_stored() {
    let clock = clock();
    let origin = RawOrigin::start(|_| {
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            .to_vec()
    })
    .await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    c.get("/a").await;
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str(), r.cache_status(), r.header("link")), (200, "ok", hit(60).as_str(), None));
    assert_eq!(origin.count(), 1);
}
