//! Invalidation (RFC 9111 §4.4): a non-error response to an unsafe method invalidates the
//! target URI and the same-origin URIs in `Location` and `Content-Location`.

pub mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;

/// The reply the origin gives to the next unsafe request (200 `done` when empty).
type Next = Arc<Mutex<Option<Reply>>>;

/// Every GET is `{path}#{n}` for 60s (n counted per path); unsafe methods get what `Next` holds.
async fn setup() -> (Origin, edgecache::Running, Client, Next) {
    let clock = clock();
    let next: Next = Arc::default();
    let n2 = next.clone();
    let counts: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let (origin, p, c) = serve(&clock, move |req, _| {
        if req.method == http::Method::GET || req.method == http::Method::HEAD {
            let mut counts = counts.lock().unwrap();
            let n = counts.entry(req.path().to_string()).or_insert(0);
            *n += 1;
            return Reply::ok(format!("{}#{n}", req.path())).cc("max-age=60");
        }
        n2.lock().unwrap().take().unwrap_or_else(|| Reply::ok("done"))
    })
    .await;
    (origin, p, c, next)
}

async fn fill(c: &Client, paths: &[&str]) {
    for p in paths {
        c.get(p).await;
        assert!(c.get(p).await.is_hit(), "{p} was not stored");
    }
}

/// GET `path`: a fresh hit when `yes`, else a miss fetched and stored again.
async fn assert_hit(c: &Client, path: &str, yes: bool) {
    let expected = if yes { hit(60) } else { MISS_STORED.to_string() };
    assert_eq!(c.get(path).await.cache_status(), expected, "{path}");
}

#[tokio::test]
async fn unsafe_methods_with_success_invalidate_the_target() {
    let (origin, _p, c, _next) = setup().await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        fill(&c, &["/a"]).await;
        let before = origin.count();
        let r = c.send(method, "/a", &[], Bytes::from_static(b"x")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.cache_status(), "edgecache; fwd=bypass; fwd-status=200; detail=method");
        assert_eq!(origin.last().method.as_str(), method);
        let r = c.get("/a").await;
        assert_eq!(r.cache_status(), MISS_STORED, "{method} did not invalidate");
        assert_eq!(origin.count(), before + 2);
    }
}

#[tokio::test]
async fn same_origin_location_and_content_location_are_invalidated() {
    let (_origin, p, c, next) = setup().await;
    fill(&c, &["/b", "/c", "/d"]).await;
    *next.lock().unwrap() =
        Some(Reply::status(201).header("location", "/b").header("content-location", format!("http://{}/c", p.addr())));
    assert_eq!(c.post("/submit", "x").await.status, 201);
    assert_hit(&c, "/b", false).await;
    assert_hit(&c, "/c", false).await;
    assert_hit(&c, "/d", true).await;

    // Authorities are compared normalized: case and the default port do not matter.
    let host = [("host", "example.com")];
    c.get_with("/e", &host).await;
    assert!(c.get_with("/e", &host).await.is_hit());
    *next.lock().unwrap() = Some(Reply::ok("").header("location", "http://EXAMPLE.com:80/e"));
    c.send("POST", "/submit", &host, Bytes::from_static(b"x")).await;
    let r = c.get_with("/e", &host).await;
    assert_eq!(r.cache_status(), MISS_STORED, "http://EXAMPLE.com:80/e was not invalidated");
}

#[tokio::test]
async fn location_on_another_host_is_not_invalidated() {
    let (_origin, p, c, next) = setup().await;
    fill(&c, &["/b", "/c"]).await;
    let other_port = p.addr().port().wrapping_add(1).max(1);
    *next.lock().unwrap() = Some(
        Reply::status(201)
            .header("location", "http://other.example/b")
            .header("content-location", format!("http://127.0.0.1:{other_port}/c")),
    );
    c.post("/submit", "x").await;
    assert_hit(&c, "/b", true).await;
    assert_hit(&c, "/c", true).await;
}

#[tokio::test]
async fn relative_location_is_resolved_against_the_target() {
    // RFC 9110 §10.2.2: a relative Location is resolved against the target URI, so
    // `item` from POST /dir/submit names /dir/item.
    let (_origin, _p, c, next) = setup().await;
    fill(&c, &["/dir/item"]).await;
    *next.lock().unwrap() = Some(Reply::status(201).header("location", "item"));
    c.post("/dir/submit", "x").await;
    assert_hit(&c, "/dir/item", false).await;
}

#[tokio::test]
async fn error_responses_to_unsafe_methods_do_not_invalidate() {
    let (_origin, _p, c, next) = setup().await;
    fill(&c, &["/a", "/b"]).await;
    for code in [500, 503, 404, 409] {
        *next.lock().unwrap() = Some(Reply::status(code).header("location", "/b"));
        let r = c.post("/a", "x").await;
        assert_eq!(r.status, code);
        assert_hit(&c, "/a", true).await;
        assert_hit(&c, "/b", true).await;
    }
}

#[tokio::test]
async fn redirect_responses_to_unsafe_methods_invalidate() {
    let (_origin, _p, c, next) = setup().await;
    fill(&c, &["/a"]).await;
    *next.lock().unwrap() = Some(Reply::status(303).header("location", "/elsewhere"));
    assert_eq!(c.post("/a", "x").await.status, 303);
    assert_hit(&c, "/a", false).await;
}

#[tokio::test]
async fn safe_methods_do_not_invalidate() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |req, n| {
        Reply::ok(format!("{}#{n}", req.path()))
            .cc("max-age=60")
            .header("content-location", "/a")
            .header("location", "/a")
    })
    .await;
    fill(&c, &["/a"]).await;
    c.get("/other").await;
    c.head_with("/other2", &[]).await;
    c.send("OPTIONS", "/a", &[], Bytes::new()).await;
    let r = c.get("/a").await;
    assert!(r.is_hit(), "{}", r.cache_status());
    assert_eq!(r.text(), "/a#1");
    assert_eq!(origin.count_path("/a"), 2, "GET /a once, OPTIONS /a once");
}

#[tokio::test]
async fn invalidation_removes_every_variant() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |req, n| {
        if req.method == http::Method::POST {
            return Reply::ok("done");
        }
        Reply::ok(format!("{n}")).cc("max-age=60").header("vary", "accept-language")
    })
    .await;
    for lang in ["en", "fr"] {
        c.get_with("/a", &[("accept-language", lang)]).await;
    }
    c.post("/a", "x").await;
    // The URL is gone with all its variants: the first is a miss of the URL, the second one of
    // the variant.
    for (lang, fwd) in [("en", "uri-miss"), ("fr", "vary-miss")] {
        let r = c.get_with("/a", &[("accept-language", lang)]).await;
        assert_eq!(r.cache_status(), format!("edgecache; fwd={fwd}; fwd-status=200; stored"), "{lang}");
    }
    assert_eq!(origin.count(), 5);
}
