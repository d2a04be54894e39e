//! Web cache deception (Gil, 2017; Mirheidari et al., 2020/2022): a victim is lured to
//! `/account/anything.css`, the origin ignores the suffix and answers with the victim's page,
//! and a cache that stores by file extension hands it to the attacker. edgecache stores by the
//! origin's headers alone, never by what a path looks like, and forwards exactly the path it keys,
//! so no delimiter or encoding makes the origin read another path than the one stored.
//!
//! Covered elsewhere: `Set-Cookie` responses never stored
//! (`storability::set_cookie_is_not_stored_and_never_reaches_another_client`), `private` never
//! stored (`storability::private_is_not_stored_by_a_shared_cache`), requests with
//! `Authorization` (`storability::authorization_request_is_not_stored_without_explicit_permission`).

use crate::common::*;

/// An application that serves the logged-in user's page for any path under `/account`, with no
/// cache headers at all (the usual case the attack needs), and static files cacheable.
fn app(req: &Seen, n: usize) -> Reply {
    if req.path().starts_with("/account") {
        let user = req.header("cookie").unwrap_or("anonymous");
        return Reply::ok(format!("private page of {user} #{n}")).header("content-type", "text/html");
    }
    Reply::ok(format!("static #{n}")).cc("max-age=60").header("content-type", "text/css")
}

#[tokio::test]
async fn web_cache_deception_a_static_looking_suffix_is_no_reason_to_store() {
    let (origin, _p, c) = serve(&clock(), app).await;
    for path in ["/account/x.css", "/account/x.js", "/account/x.png", "/account/.css", "/account/x.css?v=1"] {
        let victim = c.get_with(path, &[("cookie", "session=alice")]).await;
        assert!(victim.text().contains("alice"), "{path}");
        let attacker = c.get(path).await;
        assert!(!attacker.text().contains("alice"), "{path}: the attacker got {}", attacker.text());
        assert!(!attacker.is_hit(), "{path}");
    }
    assert_eq!(origin.count(), 10);
}

/// Path confusion: delimiters and encodings some origins read differently (`;`, encoded `/`,
/// `?`, `#`, NUL, newline). Each path reaches the origin exactly as keyed, and is its own entry.
#[tokio::test]
async fn web_cache_deception_delimiters_and_encodings_reach_the_origin_as_keyed() {
    let (origin, p, _c) = serve(&clock(), |req, n| Reply::ok(format!("{} #{n}", req.path())).cc("max-age=60")).await;
    let paths = [
        "/account;x.css",
        "/account%3Bx.css",
        "/account%2Fx.css",
        "/account%3Fx.css",
        "/account%23x.css",
        "/account%00x.css",
        "/account%0Ax.css",
        "/account/..%2Fx.css",
        "/account%2F..%2Fstatic.css",
    ];
    for (i, path) in paths.iter().enumerate() {
        let req = format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n");
        let r = raw_request(p.addr(), req.as_bytes()).await;
        assert_eq!(String::from_utf8_lossy(&r.body), format!("{path} #{}", i + 1), "{path}");
        assert_eq!(origin.last().path(), *path);
    }
    // Each is stored under its own path: asked again, each is a hit with its own body.
    for (i, path) in paths.iter().enumerate() {
        let req = format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n");
        let r = raw_request(p.addr(), req.as_bytes()).await;
        assert_eq!(String::from_utf8_lossy(&r.body), format!("{path} #{}", i + 1), "{path}");
    }
    assert_eq!(origin.count(), paths.len());
}
