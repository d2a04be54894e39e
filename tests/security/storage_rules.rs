//! `Set-Cookie`, `Authorization` and `Cookie`: what one client's credentials produce never
//! reaches another client from the store.
//!
//! Covered elsewhere: a response with `Set-Cookie` is not stored and its cookie never reaches
//! another client (`storability::set_cookie_is_not_stored_and_never_reaches_another_client`), nor
//! when it is stored by configuration (`storability::set_cookie_is_stored_when_configured`);
//! responses to requests with `Authorization` are stored only with `public`, `s-maxage` or
//! `must-revalidate` (`storability::authorization_request_is_not_stored_without_explicit_permission`,
//! `storability::authorization_request_is_stored_with_public_s_maxage_or_must_revalidate`);
//! `private` and qualified `private="…"` (`storability::private_is_not_stored_by_a_shared_cache`,
//! `storability::qualified_private_stores_the_response_without_the_named_fields`).

use std::sync::Arc;

use tokio::sync::Notify;

use crate::common::*;

/// A stale page revalidated on behalf of one client, with that client's `Cookie`: the origin's
/// 304 carries a `Set-Cookie` for that client. It reaches that client; the refreshed response
/// now has a `Set-Cookie`, so it is not stored, and the next client gets a page of its own.
fn renewing(gate: Option<Arc<Notify>>) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    move |req, n| {
        if req.header("if-none-match").is_some() {
            let who = req.header("cookie").unwrap_or("nobody").to_string();
            let r = Reply::status(304)
                .header("etag", "\"v1\"")
                .cc("max-age=60")
                .header("set-cookie", format!("renewed={who}"));
            // Only the first client's revalidation is held, so others can join it.
            return match &gate {
                Some(g) if who.contains("alice") => r.gate(g.clone()),
                _ => r,
            };
        }
        Reply::ok(format!("page #{n}")).header("etag", "\"v1\"").cc("max-age=60")
    }
}

#[tokio::test]
async fn storage_a_set_cookie_on_a_304_reaches_only_the_client_that_revalidated() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, renewing(None)).await;
    assert_eq!(c.get("/p").await.cache_status(), MISS_STORED);
    advance(&clock, 61);
    let alice = c.get_with("/p", &[("cookie", "session=alice")]).await;
    assert_eq!(alice.header("set-cookie"), Some("renewed=session=alice"), "the client that revalidated");
    let bob = c.get("/p").await;
    assert_eq!(bob.header("set-cookie"), None, "another client got the first one's cookie");
    assert_eq!((bob.text(), bob.cache_status()), ("page #3".to_string(), MISS_STORED));
    assert_eq!(origin.count(), 3);
}

/// The same 304 while other clients wait on that revalidation (coalesced): they must not be
/// served the refreshed response the 304 made for the first client, cookie included; each goes
/// to the origin on its own, as for any response that turns out not shareable.
#[tokio::test]
async fn storage_a_set_cookie_on_a_coalesced_304_never_reaches_the_waiters() {
    let clock = clock();
    let gate = Arc::new(Notify::new());
    let (origin, p, c) = serve(&clock, renewing(Some(gate.clone()))).await;
    assert_eq!(c.get("/p").await.cache_status(), MISS_STORED);
    advance(&clock, 61);
    let c = Arc::new(c);
    let a = c.clone();
    let alice = tokio::spawn(async move { a.get_with("/p", &[("cookie", "session=alice")]).await });
    origin.wait_count(2).await;
    let key = edgecache::store::CacheKey::new("http", &p.addr().to_string(), "/p");
    let mut bobs = Vec::new();
    for _ in 0..3 {
        let b = c.clone();
        bobs.push(tokio::spawn(async move { b.get("/p").await }));
    }
    eventually("the others wait on the revalidation", async || p.proxy().joined(&key) == Some(3)).await;
    gate.notify_one();
    let alice = within("alice", alice).await.unwrap();
    assert_eq!(alice.header("set-cookie"), Some("renewed=session=alice"));
    for b in bobs {
        let bob = within("bob", b).await.unwrap();
        // Its own revalidation may get a cookie of its own; never the first client's.
        let cookie = bob.header("set-cookie");
        assert!(!cookie.is_some_and(|c| c.contains("alice")), "a waiter got {cookie:?}: {}", bob.cache_status());
    }
}

/// `Vary: Cookie`: an origin that personalises by cookie keeps each client's page apart.
#[tokio::test]
async fn storage_vary_cookie_keeps_each_clients_page_apart() {
    let (origin, _p, c) = serve(&clock(), |req, n| {
        Reply::ok(format!("for {} #{n}", req.header("cookie").unwrap_or("anonymous")))
            .cc("max-age=60")
            .header("vary", "Cookie")
    })
    .await;
    assert_eq!(c.get_with("/me", &[("cookie", "s=alice")]).await.text(), "for s=alice #1");
    assert_eq!(c.get_with("/me", &[("cookie", "s=bob")]).await.text(), "for s=bob #2");
    assert_eq!(c.get("/me").await.text(), "for anonymous #3");
    assert_eq!(c.get_with("/me", &[("cookie", "s=alice")]).await.text(), "for s=alice #1");
    assert_eq!(origin.count(), 3);
}

/// A request with `Authorization` whose response is stored (the origin said `public`) is keyed
/// like any other: a later request with other credentials gets the public page, never a page
/// made for the credentials unless the origin marked it shareable. Here the origin answers a
/// credentialed request privately: nothing is stored, the next anonymous client gets its own.
#[tokio::test]
async fn storage_a_page_made_for_credentials_never_reaches_an_anonymous_client() {
    let (origin, _p, c) = serve(&clock(), |req, n| match req.header("authorization") {
        Some(a) => Reply::ok(format!("secret of {a} #{n}")).cc("max-age=60"),
        None => Reply::ok(format!("public #{n}")).cc("max-age=60"),
    })
    .await;
    assert_eq!(c.get_with("/doc", &[("authorization", "Bearer alice")]).await.text(), "secret of Bearer alice #1");
    let anonymous = c.get("/doc").await;
    assert_eq!((anonymous.text(), anonymous.cache_status()), ("public #2".to_string(), MISS_STORED));
    assert_eq!(origin.count(), 2);
}
