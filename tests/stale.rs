//! Serving stale responses: `stale-while-revalidate` (RFC 5861 §3, one background revalidation),
//! `stale-if-error` (RFC 5861 §4, from the response or the request), the configured grace, and
//! what `must-revalidate` forbids.

pub mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::sync::Notify;

/// `Cache-Status` of a synchronous revalidation confirmed by a 304.
const REVALIDATED: &str = "edgecache; fwd=stale; fwd-status=304; stored";

/// No grace: only `stale-if-error` windows allow serving stale on errors.
fn no_grace(cfg: &mut edgecache::Config) {
    cfg.stale.grace = Duration::ZERO;
}

/// `/a`: `hello` with ETag `"v1"` and `cc`; a 304 to `If-None-Match: "v1"`, held until the
/// gate is notified when `gate` names this request number.
fn validating(
    cc: &'static str,
    gate: Option<(usize, Arc<Notify>)>,
) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    move |req, n| {
        if req.header("if-none-match") == Some("\"v1\"") {
            let reply = Reply::status(304).cc(cc).header("etag", "\"v1\"");
            return match &gate {
                Some((hold, g)) if *hold == n => reply.gate(g.clone()),
                _ => reply,
            };
        }
        Reply::ok(if n == 1 { "hello".to_string() } else { format!("v{n}") }).cc(cc).header("etag", "\"v1\"")
    }
}

/// `Cache-Status` of a stale response served because the origin failed.
fn stale_if_error(fwd_status: Option<u16>, ttl: i64) -> String {
    match fwd_status {
        Some(code) => format!("edgecache; hit; fwd=stale; fwd-status={code}; ttl={ttl}; detail=stale-if-error"),
        None => format!("edgecache; hit; fwd=stale; ttl={ttl}; detail=stale-if-error"),
    }
}

// ---------------------------------------------------------------------------------------------
// stale-while-revalidate
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_while_revalidate_serves_stale_at_once_and_revalidates_once_in_the_background() {
    let clock = clock();
    let gate = Arc::new(Notify::new());
    let cc = "max-age=10, stale-while-revalidate=30";
    let (origin, p, c) = serve(&clock, validating(cc, Some((2, gate.clone())))).await;
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
    advance(&clock, 15);

    // The revalidation is held at the origin: the answer cannot have waited for it.
    let swr = "edgecache; hit; ttl=-5; detail=stale-while-revalidate";
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str(), r.cache_status()), (200, "hello", swr));
    assert_eq!(r.age(), Some(15));
    origin.wait_count(2).await;
    assert_eq!(origin.last().header("if-none-match"), Some("\"v1\""), "background request is not conditional");

    // More requests in the window while it is in flight: served stale, no second revalidation.
    let c = Arc::new(c);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get("/a").await })
        })
        .collect();
    for t in tasks {
        let r = within("request in the window", t).await.expect("client task");
        assert_eq!((r.status, r.text().as_str(), r.cache_status()), (200, "hello", swr));
    }
    assert_eq!(origin.count(), 2, "more than one background revalidation");

    let writes = p.proxy().memory().writes();
    gate.notify_one();
    // Once the 304 is merged and stored, the entry is fresh again (10 s from the 304's Date).
    eventually("the background revalidation is stored", async || p.proxy().memory().writes() == writes + 1).await;
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("hello", hit(10).as_str()));
    assert_eq!(r.age(), Some(0));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn stale_while_revalidate_window_ends_inclusively() {
    // 30 s past expiry is still in the window; 31 s is not.
    for (secs, background) in [(40, true), (41, false)] {
        let clock = clock();
        let (origin, _p, c) = serve(&clock, validating("max-age=10, stale-while-revalidate=30", None)).await;
        c.get("/a").await;
        advance(&clock, secs);
        let r = c.get("/a").await;
        assert_eq!(r.text(), "hello");
        if background {
            assert_eq!(r.cache_status(), "edgecache; hit; ttl=-30; detail=stale-while-revalidate");
            origin.wait_count(2).await;
        } else {
            assert_eq!(r.cache_status(), REVALIDATED, "{secs} s");
        }
        assert_eq!(origin.count(), 2, "{secs} s");
    }
}

#[tokio::test]
async fn past_the_stale_while_revalidate_window_revalidation_is_synchronous() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, validating("max-age=10, stale-while-revalidate=30", None)).await;
    c.get("/a").await;
    advance(&clock, 45);
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str(), r.cache_status()), (200, "hello", REVALIDATED));
    assert_eq!(origin.count(), 2);
    assert_eq!(c.get("/a").await.cache_status(), hit(10));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn must_revalidate_disables_stale_while_revalidate() {
    for cc in [
        "max-age=10, must-revalidate, stale-while-revalidate=30",
        "max-age=10, proxy-revalidate, stale-while-revalidate=30",
    ] {
        let clock = clock();
        let (origin, _p, c) = serve(&clock, validating(cc, None)).await;
        c.get("/a").await;
        advance(&clock, 15);
        let r = c.get("/a").await;
        assert_eq!((r.text().as_str(), r.cache_status()), ("hello", REVALIDATED), "{cc}");
        assert_eq!(origin.count(), 2, "{cc}");
    }
}

#[tokio::test]
async fn background_revalidation_with_new_content_replaces_the_entry() {
    let clock = clock();
    let (origin, p, c) = serve(&clock, |_, n| {
        Reply::ok(format!("v{n}")).cc("max-age=10, stale-while-revalidate=30").header("etag", format!("\"e{n}\""))
    })
    .await;
    c.get("/a").await;
    let writes = p.proxy().memory().writes();
    advance(&clock, 12);
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v1", "edgecache; hit; ttl=-2; detail=stale-while-revalidate"));
    eventually("the new content is stored", async || p.proxy().memory().writes() == writes + 1).await;
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v2", hit(10).as_str()));
    assert_eq!(origin.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// stale-if-error
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stale_if_error_serves_stale_on_a_5xx_within_its_window_only() {
    let clock = clock();
    let (origin, p, c) = serve_with(&clock, no_grace, |_, n| match n {
        1 => Reply::ok("hello").cc("max-age=10, stale-if-error=60").header("etag", "\"v1\""),
        _ => Reply::status(503).body("down"),
    })
    .await;
    c.get("/a").await;
    advance(&clock, 15);
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.cache_status(), stale_if_error(Some(503), -5));
    assert_eq!(origin.count(), 2);
    // The last second of the window.
    advance(&clock, 55);
    let r = c.get("/a").await;
    assert_eq!(
        (r.status, r.text().as_str(), r.cache_status()),
        (200, "hello", stale_if_error(Some(503), -60).as_str())
    );
    assert_eq!(origin.count(), 3);

    // Past the window: the 503 passes through, and is not stored.
    advance(&clock, 10);
    for i in 4..=5 {
        let r = c.get("/a").await;
        assert_eq!((r.status, r.text().as_str()), (503, "down"));
        assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=503; detail=status");
        assert_eq!(origin.count(), i);
    }
    assert_eq!(stored_urls(&p), 1, "only the stale 200 is stored");
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_closes_the_connection() {
    let clock = clock();
    let origin = RawOrigin::start(|req| match req.n {
        1 => b"HTTP/1.1 200 OK\r\nCache-Control: max-age=10, stale-if-error=60\r\nContent-Length: 5\r\n\
               Connection: close\r\n\r\nhello"
            .to_vec(),
        _ => Vec::new(), // closes without answering
    })
    .await;
    let p = start_proxy(origin.addr(), &clock, no_grace).await;
    let c = Client::new(p.addr());
    c.get("/a").await;
    advance(&clock, 30);
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.cache_status(), stale_if_error(None, -20));
    assert_eq!(origin.count(), 2, "the origin was not asked");

    advance(&clock, 50);
    let r = c.get("/a").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; detail=origin-unreachable");
}

#[tokio::test]
async fn request_stale_if_error_allows_serving_stale() {
    let clock = clock();
    let (origin, _p, c) = serve_with(&clock, no_grace, |_, n| match n {
        1 => Reply::ok("hello").cc("max-age=10").header("etag", "\"v1\""),
        _ => Reply::status(503).body("down"),
    })
    .await;
    c.get("/a").await;
    advance(&clock, 30);
    let r = c.get("/a").await;
    assert_eq!((r.status, r.cache_status()), (503, "edgecache; fwd=stale; fwd-status=503; detail=status"));
    // 20 s stale: a 10 s window is not enough, 60 s is.
    let r = c.get_with("/a", &[("cache-control", "stale-if-error=10")]).await;
    assert_eq!(r.status, 503);
    let r = c.get_with("/a", &[("cache-control", "stale-if-error=60")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.cache_status(), stale_if_error(Some(503), -20));
    assert_eq!(origin.count(), 4);
}

#[tokio::test]
async fn grace_serves_stale_on_errors_for_ten_seconds_past_expiry() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, n| match n {
        1 => Reply::ok("hello").cc("max-age=10").header("etag", "\"v1\""),
        _ => Reply::status(503).body("down"),
    })
    .await;
    c.get("/a").await;
    advance(&clock, 15);
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str(), r.cache_status()), (200, "hello", stale_if_error(Some(503), -5).as_str()));
    advance(&clock, 5);
    let r = c.get("/a").await;
    assert_eq!((r.status, r.cache_status()), (200, stale_if_error(Some(503), -10).as_str()));
    advance(&clock, 1);
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str()), (503, "down"));
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=503; detail=status");
    assert_eq!(origin.count(), 4);
}

#[tokio::test]
async fn must_revalidate_lets_the_error_through_despite_grace() {
    for cc in ["max-age=10, must-revalidate", "max-age=10, proxy-revalidate", "s-maxage=10"] {
        let clock = clock();
        let (origin, _p, c) = serve(&clock, move |_, n| match n {
            1 => Reply::ok("hello").cc(cc).header("etag", "\"v1\""),
            _ => Reply::status(503).body("down"),
        })
        .await;
        c.get("/a").await;
        advance(&clock, 15);
        let r = c.get("/a").await;
        assert_eq!((r.status, r.text().as_str()), (503, "down"), "{cc}");
        assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=503; detail=status", "{cc}");
        assert_eq!(origin.count(), 2, "{cc}");
    }
}

#[tokio::test]
async fn client_no_cache_is_not_answered_stale_on_error() {
    // RFC 9111 §4.2.4: the client asked for a validated response; it gets the error.
    let clock = clock();
    let (_origin, _p, c) = serve(&clock, |_, n| match n {
        1 => Reply::ok("hello").cc("max-age=10, stale-if-error=60").header("etag", "\"v1\""),
        _ => Reply::status(503).body("down"),
    })
    .await;
    c.get("/a").await;
    advance(&clock, 15);
    let r = c.get_with("/a", &[("cache-control", "no-cache")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.cache_status(), "edgecache; fwd=request; fwd-status=503; detail=status");
}

// ---------------------------------------------------------------------------------------------
// Origin down
// ---------------------------------------------------------------------------------------------

/// Primes `/k/0` .. `/k/{keys}`, then fires one request per key at once; returns the responses.
async fn request_every_key(c: &Arc<Client>, keys: usize) -> Vec<(usize, Resp)> {
    let tasks: Vec<_> = (0..keys)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { (i, c.get(&format!("/k/{i}")).await) })
        })
        .collect();
    within("one request per key", async {
        let mut out = Vec::with_capacity(keys);
        for t in tasks {
            out.push(t.await.expect("client task"));
        }
        out
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_answering_5xx_to_everything_every_key_is_served_stale() {
    const KEYS: usize = 50;
    let clock = clock();
    let down = Arc::new(AtomicBool::new(false));
    let d = down.clone();
    let (origin, p, c) = serve(&clock, move |req, _| {
        if d.load(Ordering::SeqCst) {
            return Reply::status(503).body("down");
        }
        Reply::ok(format!("body of {}", req.path())).cc("max-age=10, stale-if-error=60").header("etag", "\"v1\"")
    })
    .await;
    for i in 0..KEYS {
        assert_eq!(c.get(&format!("/k/{i}")).await.cache_status(), MISS_STORED);
    }
    assert_eq!(stored_urls(&p), KEYS as u64);
    down.store(true, Ordering::SeqCst);
    advance(&clock, 40);
    for (i, r) in request_every_key(&Arc::new(c), KEYS).await {
        assert_eq!((r.status, r.text()), (200, format!("body of /k/{i}")), "{}", r.cache_status());
        assert_eq!(r.cache_status(), stale_if_error(Some(503), -30), "/k/{i}");
    }
    assert_eq!(origin.count(), 2 * KEYS, "every key was revalidated once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_closing_every_connection_every_key_is_served_stale() {
    const KEYS: usize = 50;
    let clock = clock();
    // Down by a switch, not by a connection count: the pooled client may open a connection it
    // never uses, which would shift a count.
    let down = Arc::new(AtomicBool::new(false));
    let d = down.clone();
    let origin = RawOrigin::start(move |req| {
        if d.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let body = format!("body of {}", req.path());
        format!(
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=10, stale-if-error=60\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await;
    let p = start_proxy(origin.addr(), &clock, |_| {}).await;
    let c = Client::new(p.addr());
    for i in 0..KEYS {
        assert_eq!(c.get(&format!("/k/{i}")).await.cache_status(), MISS_STORED);
    }
    down.store(true, Ordering::SeqCst);
    advance(&clock, 40);
    for (i, r) in request_every_key(&Arc::new(c), KEYS).await {
        assert_eq!((r.status, r.text()), (200, format!("body of /k/{i}")), "{}", r.cache_status());
        assert_eq!(r.cache_status(), stale_if_error(None, -30), "/k/{i}");
    }
    assert_eq!(origin.count(), 2 * KEYS, "every key was revalidated once");
}
