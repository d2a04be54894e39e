//! Revalidation of stored responses (RFC 9111 §4.3): conditional requests built from the stored
//! validators, 304 merges, full replacements, `no-cache` and `must-revalidate`.

pub mod common;

use common::*;

/// `/a`: first a 200 `hello` with ETag `"v1"`, Last-Modified and max-age=10; afterwards 304
/// when the request carries `If-None-Match: "v1"`, else a new version.
fn validating(lm: String) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    move |req, n| {
        if n > 1 && req.header("if-none-match") == Some("\"v1\"") {
            return Reply::status(304).cc("max-age=10").header("etag", "\"v1\"");
        }
        Reply::ok(if n == 1 { "hello".to_string() } else { format!("v{n}") })
            .cc("max-age=10")
            .header("etag", "\"v1\"")
            .header("last-modified", &lm)
    }
}

#[tokio::test]
async fn stale_entry_is_revalidated_with_the_stored_validators_not_the_clients() {
    let clock = clock();
    let lm = date_at(&clock, -100);
    let (origin, _p, c) = serve(&clock, validating(lm.clone())).await;
    c.get("/a").await;
    advance(&clock, 11);
    let r = c
        .get_with("/a", &[("if-none-match", "\"client-tag\""), ("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT")])
        .await;
    let seen = origin.last();
    assert_eq!(seen.header_all("if-none-match"), vec!["\"v1\"".to_string()]);
    assert_eq!(seen.header("if-modified-since"), Some(lm.as_str()));
    // The client's own condition does not match the stored tag: it gets the full stored body.
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn stale_conditional_request_matching_the_stored_tag_gets_304() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, validating(date_at(&clock, -100))).await;
    c.get("/a").await;
    advance(&clock, 11);
    let r = c.get_with("/a", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn last_modified_alone_is_used_as_validator() {
    let clock = clock();
    let lm = date_at(&clock, -100);
    let lm2 = lm.clone();
    let (origin, _p, c) = serve(&clock, move |req, n| {
        if req.header("if-modified-since") == Some(lm2.as_str()) {
            return Reply::status(304).cc("max-age=10");
        }
        Reply::ok(format!("v{n}")).cc("max-age=10").header("last-modified", &lm2)
    })
    .await;
    c.get("/a").await;
    advance(&clock, 11);
    let r = c.get_with("/a", &[("if-none-match", "\"client\"")]).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v1", "edgecache; fwd=stale; fwd-status=304; stored"));
    let seen = origin.last();
    assert_eq!(seen.header("if-modified-since"), Some(lm.as_str()));
    assert_eq!(seen.header("if-none-match"), None, "the client's If-None-Match reached the origin");
}

/// RFC 9110 §13.1.3: "If-Modified-Since = HTTP-date"; a stored `Last-Modified` that is not an
/// HTTP date is no modification date, and is never sent back as one.
#[tokio::test]
async fn an_invalid_last_modified_is_never_sent_as_if_modified_since() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=10").header("last-modified", "a while ago")).await;
    c.get("/a").await;
    advance(&clock, 11);
    c.get("/a").await;
    assert_eq!(origin.last().header_all("if-modified-since"), Vec::<String>::new());
}

#[tokio::test]
async fn origin_304_updates_stored_headers_and_freshness_but_not_content_length() {
    let clock = clock();
    let c2 = clock.clone();
    let origin = RawOrigin::start(move |req| {
        let date = date_at(&c2, 0);
        let text = if req.n == 1 {
            format!(
                "HTTP/1.1 200 OK\r\nDate: {date}\r\nCache-Control: max-age=10\r\nETag: \"v1\"\r\n\
                 X-Old: kept\r\nX-Rev: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            )
        } else {
            format!(
                "HTTP/1.1 304 Not Modified\r\nDate: {date}\r\nCache-Control: max-age=100\r\nETag: \"v1\"\r\n\
                 X-New: yes\r\nX-Rev: 2\r\nContent-Length: 999\r\nConnection: close\r\n\r\n"
            )
        };
        text.into_bytes()
    })
    .await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    c.get("/a").await;
    advance(&clock, 11);
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
    assert_eq!(origin.requests()[1].header("if-none-match"), Some("\"v1\""));
    for r in [r, c.get("/a").await] {
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        assert_eq!(r.header("content-length"), Some("5"));
        assert_eq!(r.header("x-new"), Some("yes"), "a field of the 304 was not merged");
        assert_eq!(r.header("x-rev"), Some("2"), "a field of the 304 did not replace the stored one");
        assert_eq!(r.header("x-old"), Some("kept"));
        assert_eq!(r.header("cache-control"), Some("max-age=100"));
    }
    // Freshness comes from the 304: fresh for 100s from now.
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), hit(100));
    advance(&clock, 99);
    assert_eq!(c.get("/a").await.cache_status(), hit(1));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn origin_200_replaces_the_stored_entry() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, n| {
        Reply::ok(format!("v{n}")).cc("max-age=10").header("etag", format!("\"e{n}\"")).header("x-n", n.to_string())
    })
    .await;
    c.get("/a").await;
    advance(&clock, 11);
    let r = c.get("/a").await;
    assert_eq!(origin.last().header("if-none-match"), Some("\"e1\""));
    assert_eq!((r.text().as_str(), r.cache_status()), ("v2", "edgecache; fwd=stale; fwd-status=200; stored"));
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v2", hit(10).as_str()));
    assert_eq!((r.header("etag"), r.header("x-n")), (Some("\"e2\""), Some("2")));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn response_no_cache_is_stored_but_revalidated_on_every_use() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |req, _| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::status(304).cc("no-cache, max-age=600").header("etag", "\"v1\"");
        }
        Reply::ok("hello").cc("no-cache, max-age=600").header("etag", "\"v1\"")
    })
    .await;
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
    for i in 2..=4 {
        let r = c.get("/a").await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
        assert_eq!(origin.count(), i);
        assert_eq!(origin.last().header("if-none-match"), Some("\"v1\""));
    }
}

#[tokio::test]
async fn must_revalidate_is_never_served_stale_even_with_max_stale() {
    for cc in ["max-age=10, must-revalidate", "max-age=10, proxy-revalidate", "s-maxage=10"] {
        let clock = clock();
        let (origin, _p, c) = serve(&clock, move |_, n| Reply::ok(format!("v{n}")).cc(cc)).await;
        c.get("/a").await;
        advance(&clock, 20);
        let r = c.get_with("/a", &[("cache-control", "max-stale=100")]).await;
        assert_eq!(r.text(), "v2", "{cc}: served stale");
        assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=200; stored", "{cc}");
        assert_eq!(origin.count(), 2, "{cc}");
    }
}

#[tokio::test]
async fn server_error_during_revalidation_keeps_the_stored_entry() {
    let clock = clock();
    // No grace: the 500 passes through (stale serving on errors is tested in stale.rs).
    let no_grace = |cfg: &mut edgecache::Config| cfg.stale.grace = std::time::Duration::ZERO;
    let (origin, _p, c) = serve_with(&clock, no_grace, |req, n| match n {
        1 => Reply::ok("hello").cc("max-age=10").header("etag", "\"v1\""),
        2 => Reply::status(500).body("boom"),
        _ if req.header("if-none-match") == Some("\"v1\"") => Reply::status(304).cc("max-age=10"),
        _ => Reply::ok("lost").cc("max-age=10"),
    })
    .await;
    c.get("/a").await;
    advance(&clock, 11);
    let r = c.get("/a").await;
    assert_eq!(r.status, 500);
    // Still stored: the next request revalidates it rather than missing.
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("hello", "edgecache; fwd=stale; fwd-status=304; stored"));
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn stale_entry_is_served_when_the_origin_is_unreachable() {
    let clock = clock();
    let origin = RawOrigin::start(|req| match req.n {
        1 => b"HTTP/1.1 200 OK\r\nCache-Control: max-age=10\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            .to_vec(),
        _ => Vec::new(), // close without answering
    })
    .await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    c.get("/a").await;
    // Within the default grace (10 s past expiry).
    advance(&clock, 15);
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.cache_status(), "edgecache; hit; fwd=stale; ttl=-5; detail=stale-if-error");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn must_revalidate_entry_is_not_served_when_the_origin_is_unreachable() {
    let clock = clock();
    let origin = RawOrigin::start(|req| match req.n {
        1 => b"HTTP/1.1 200 OK\r\nCache-Control: max-age=10, must-revalidate\r\nContent-Length: 5\r\n\
               Connection: close\r\n\r\nhello"
            .to_vec(),
        _ => Vec::new(),
    })
    .await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    c.get("/a").await;
    advance(&clock, 30);
    let r = c.get("/a").await;
    assert_eq!(r.status, 502);
    assert_ne!(r.text(), "hello");
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; detail=origin-unreachable");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn qualified_private_fields_of_a_304_are_not_stored() {
    // §5.2.2.7: fields named by private="..." are never stored by a shared cache, and that holds
    // for fields arriving on a 304 as well as on the original 200.
    let clock = clock();
    let (origin, p, alice) = serve(&clock, |req, n| {
        let user = if n == 1 { "alice" } else { "bob" };
        let cc = "max-age=10, private=\"x-user\"";
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::status(304).cc(cc).header("etag", "\"v1\"").header("x-user", user);
        }
        Reply::ok("hello").cc(cc).header("etag", "\"v1\"").header("x-user", user)
    })
    .await;
    alice.get("/a").await;
    advance(&clock, 11);
    let r = alice.get("/a").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
    let carol = Client::new(p.addr());
    let r = carol.get("/a").await;
    assert!(r.is_hit());
    assert_eq!(r.header("x-user"), None, "a private field from the 304 was stored and shared");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn age_on_a_304_is_counted_in_the_refreshed_freshness() {
    // §4.3.4: the 304's header fields replace the stored ones; an upstream Age of 50 on the 304
    // means the refreshed response is already 50s old.
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |req, _| {
        if req.header("if-none-match") == Some("\"v1\"") {
            return Reply::status(304).cc("max-age=100").header("etag", "\"v1\"").header("age", "50");
        }
        Reply::ok("hello").cc("max-age=100").header("etag", "\"v1\"")
    })
    .await;
    c.get("/a").await;
    advance(&clock, 101);
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
    let r = c.get("/a").await;
    assert_eq!((r.age(), r.cache_status()), (Some(50), hit(50).as_str()));
    assert_eq!(origin.count(), 2);
}
