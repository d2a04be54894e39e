//! What a shared cache may store (RFC 9111 §3): each refusal names its reason in `Cache-Status`
//! and the next request goes to the origin again.

pub mod common;

use common::*;

/// Requests `/a` twice and checks that the origin saw both and that the first response was not
/// stored for `detail`.
async fn assert_not_stored(c: &Client, origin: &Origin, headers: &[(&str, &str)], detail: &str) {
    let r = c.get_with("/a", headers).await;
    assert_eq!(r.cache_status(), format!("edgecache; fwd=uri-miss; fwd-status={}; detail={detail}", r.status));
    let again = c.get_with("/a", headers).await;
    assert_eq!(again.cache_status(), r.cache_status(), "the second request");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn no_store_is_not_stored() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::ok("x").cc("max-age=60, no-store")).await;
    assert_not_stored(&c, &origin, &[], "no-store").await;
}

/// RFC 9111 §5.2.2.3: "When a cache that implements the must-understand directive receives a
/// response that includes it, the cache SHOULD ignore the no-store directive if it understands
/// the status code."
#[tokio::test]
async fn must_understand_with_an_understood_status_overrides_no_store() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("no-store, must-understand, max-age=60")).await;
    c.get("/a").await;
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str(), r.cache_status()), (200, "v1", hit(60).as_str()));
    assert_eq!(origin.count(), 1);
}

/// RFC 9111 §5.2.2.3: "The must-understand response directive limits caching of the response to
/// a cache that understands and conforms to the requirements for that response's status code."
#[tokio::test]
async fn must_understand_with_a_status_not_understood_is_not_stored() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, _| Reply::status(226).body("delta").cc("must-understand, max-age=60")).await;
    assert_not_stored(&c, &origin, &[], "status").await;
}

#[tokio::test]
async fn no_store_directive_name_is_case_insensitive() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::ok("x").cc("max-age=60, NO-STORE")).await;
    assert_not_stored(&c, &origin, &[], "no-store").await;
}

#[tokio::test]
async fn private_is_not_stored_by_a_shared_cache() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::ok("mine").cc("private, max-age=60")).await;
    assert_not_stored(&c, &origin, &[], "private").await;
}

#[tokio::test]
async fn qualified_private_stores_the_response_without_the_named_fields() {
    // RFC 9111 §5.2.2.7: a shared cache must not store the listed fields; the rest may be stored.
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| {
        Reply::ok("x").cc("max-age=60, private=\"X-User\"").header("x-user", "alice").header("x-other", "1")
    })
    .await;
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), MISS_STORED);
    assert_eq!(r.header("x-user"), Some("alice"), "the client that asked gets its field");
    let r = c.get("/a").await;
    assert!(r.is_hit());
    assert_eq!(r.header("x-user"), None, "a private field was served from the shared cache");
    assert_eq!(r.header("x-other"), Some("1"));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn set_cookie_is_not_stored_and_never_reaches_another_client() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, n| Reply::ok("x").cc("max-age=60").header("set-cookie", format!("session=client{n}"))).await;
    let r = c.get("/a").await;
    assert_eq!(r.header("set-cookie"), Some("session=client1"));
    assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=200; detail=set-cookie");
    let r = c.get("/a").await;
    assert_eq!(r.header("set-cookie"), Some("session=client2"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn set_cookie_is_stored_when_configured() {
    let clock = clock();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.cache.store_set_cookie = true,
        |_, _| Reply::ok("x").cc("max-age=60").header("set-cookie", "a=b"),
    )
    .await;
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
    assert!(c.get("/a").await.is_hit());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn vary_star_is_not_stored() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::ok("x").cc("max-age=60").header("vary", "accept, *")).await;
    assert_not_stored(&c, &origin, &[], "vary-star").await;
}

#[tokio::test]
async fn authorization_request_is_not_stored_without_explicit_permission() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::ok("secret").cc("max-age=60")).await;
    assert_not_stored(&c, &origin, &[("authorization", "Bearer t1")], "authorization").await;
    // And an anonymous client is not served the authorized response.
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), MISS_STORED);
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn authorization_request_is_stored_with_public_s_maxage_or_must_revalidate() {
    for cc in ["public, max-age=60", "s-maxage=60", "max-age=60, must-revalidate"] {
        let clock = clock();
        let (origin, _p, c) = serve(&clock, move |_, _| Reply::ok("shared").cc(cc)).await;
        let auth = [("authorization", "Bearer t1")];
        assert_eq!(c.get_with("/a", &auth).await.cache_status(), MISS_STORED, "{cc}");
        assert!(c.get_with("/a", &auth).await.is_hit(), "{cc}");
        assert_eq!(origin.count(), 1, "{cc}");
    }
}

#[tokio::test]
async fn a_206_to_a_plain_request_is_not_stored() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, _| Reply::status(206).body("ell").cc("max-age=60").header("content-range", "bytes 1-3/5"))
            .await;
    assert_not_stored(&c, &origin, &[], "partial").await;
}

#[tokio::test]
async fn too_large_with_content_length_streams_through_and_is_not_stored() {
    let clock = clock();
    let big = vec![b'z'; 64 * 1024];
    let body = big.clone();
    let (origin, proxy, c) = serve_with(
        &clock,
        |cfg| cfg.cache.max_object_bytes = 1024,
        move |_, _| Reply::ok(body.clone()).cc("max-age=60"),
    )
    .await;
    let r = c.get("/a").await;
    assert_eq!(r.body.len(), big.len());
    assert_eq!(&r.body[..], &big[..]);
    assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=200; detail=too-large");
    let r = c.get("/a").await;
    assert_eq!(r.body.len(), big.len());
    assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=200; detail=too-large");
    assert_eq!(origin.count(), 2);
    assert_eq!(stored_urls(&proxy), 0);
}

#[tokio::test]
async fn too_large_chunked_streams_through_and_is_not_stored() {
    let clock = clock();
    let big: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let body = big.clone();
    let (origin, proxy, c) = serve_with(
        &clock,
        |cfg| cfg.cache.max_object_bytes = 1024,
        move |_, _| Reply::ok(body.clone()).cc("max-age=60").chunked(4096),
    )
    .await;
    // Without a Content-Length the size is known only at the end of the body, after the head
    // went out: the head says nothing of storing, and nothing is stored.
    for _ in 0..2 {
        let r = c.get("/a").await;
        assert_eq!((r.status, r.cache_status()), (200, "edgecache; fwd=uri-miss; fwd-status=200"));
        assert_eq!(&r.body[..], &big[..]);
    }
    assert_eq!(origin.count(), 2);
    assert_eq!(stored_urls(&proxy), 0);
}

#[tokio::test]
async fn chunked_response_within_the_limit_is_stored_whole() {
    let clock = clock();
    let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let body = big.clone();
    let (origin, _p, c) = serve(&clock, move |_, _| Reply::ok(body.clone()).cc("max-age=60").chunked(1000)).await;
    assert_eq!(&c.get("/a").await.body[..], &big[..]);
    let r = c.get("/a").await;
    assert!(r.is_hit());
    assert_eq!(&r.body[..], &big[..]);
    assert_eq!(r.header("content-length"), Some("10000"));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn redirect_without_freshness_is_not_stored() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::status(302).header("location", "/b")).await;
    assert_not_stored(&c, &origin, &[], "status").await;
}

#[tokio::test]
async fn redirect_with_explicit_freshness_is_stored() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::status(302).header("location", "/b").cc("max-age=60")).await;
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=302; stored");
    let r = c.get("/a").await;
    assert_eq!((r.status, r.header("location")), (302, Some("/b")));
    assert!(r.is_hit());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn server_error_without_freshness_is_not_stored() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::status(500).body("boom")).await;
    assert_not_stored(&c, &origin, &[], "status").await;
}

#[tokio::test]
async fn server_error_with_explicit_freshness_is_stored() {
    // RFC 9111 §3 allows it; this cache does (status.rs: only "not understood" codes are refused).
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::status(503).body("down").cc("max-age=5")).await;
    assert_eq!(c.get("/a").await.cache_status(), "edgecache; fwd=uri-miss; fwd-status=503; stored");
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str()), (503, "down"));
    assert!(r.is_hit());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn not_found_is_heuristically_cacheable() {
    let clock = clock();
    let lm = date_at(&clock, -1000);
    let (origin, _p, c) = serve(&clock, move |_, _| Reply::status(404).body("gone").header("last-modified", &lm)).await;
    assert_eq!(c.get("/a").await.cache_status(), "edgecache; fwd=uri-miss; fwd-status=404; stored");
    let r = c.get("/a").await;
    assert_eq!((r.status, r.cache_status()), (404, hit(100).as_str()));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn request_no_store_is_honoured() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::ok("x").cc("max-age=60")).await;
    assert_not_stored(&c, &origin, &[("cache-control", "no-store")], "request-no-store").await;
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
}

#[tokio::test]
async fn truncated_body_is_not_stored() {
    let clock = clock();
    let origin = RawOrigin::start(|req| {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nCache-Control: max-age=60\r\n\
                    Connection: close\r\n\r\n";
        let body = if req.n == 1 {
            "x".repeat(50) // then the connection closes: 50 of 100 bytes
        } else {
            "y".repeat(100)
        };
        format!("{head}{body}").into_bytes()
    })
    .await;
    let proxy = start_proxy(origin.addr(), &clock, |_| {}).await;
    let c = Client::new(proxy.addr());
    // A small body is awaited whole before the head goes out: cut short, it is a 502.
    let first = c.get("/a").await;
    assert_eq!(
        (first.status, first.cache_status()),
        (502, "edgecache; fwd=uri-miss; fwd-status=200; detail=incomplete")
    );
    assert_eq!(stored_urls(&proxy), 0);
    let r = c.get("/a").await;
    assert_eq!(r.text(), "y".repeat(100));
    assert_eq!(r.cache_status(), MISS_STORED, "the truncated body was stored");
    assert_eq!(origin.count(), 2);
    // The complete one is stored.
    let r = c.get("/a").await;
    assert!(r.is_hit());
    assert_eq!(r.text(), "y".repeat(100));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn post_responses_are_not_stored() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=60")).await;
    let r = c.post("/a", "data").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=bypass; fwd-status=200; detail=method");
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn no_content_204_is_stored_and_served_without_a_body() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::status(204).cc("max-age=60").header("x-a", "1")).await;
    let r = c.get("/a").await;
    assert_eq!((r.status, r.cache_status()), (204, "edgecache; fwd=uri-miss; fwd-status=204; stored"));
    let r = c.get("/a").await;
    assert_eq!((r.status, r.cache_status()), (204, hit(60).as_str()));
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-a"), Some("1"));
    // RFC 9110 §8.6: no Content-Length in a 204.
    assert_eq!(r.header("content-length"), None);
    assert_eq!(origin.count(), 1);
}
