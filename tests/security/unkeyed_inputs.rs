//! Unkeyed inputs: nothing outside the cache key may change what the origin answers with, or a
//! response made for one request is stored for all of them (web cache poisoning through
//! rewrite and override fields, and "fat" requests whose body the origin reads).
//!
//! Covered elsewhere: every rewrite and override field stripped and `X-Forwarded-Host` set by
//! the proxy (`forwarding::unkeyed_override_fields_are_stripped_and_x_forwarded_host_set`);
//! `X-Forwarded-For` replaced unless from a trusted proxy
//! (`forwarding::x_forwarded_for_from_anyone_else_is_replaced`); a GET or HEAD with a body
//! forwarded with it and never stored (`request_framing::a_get_with_a_body_reaches_the_origin_with_exactly_that_body_and_is_not_stored`,
//! `request_framing::a_head_with_a_body_is_forwarded_with_it`,
//! `request_framing::an_http2_get_with_a_body_is_forwarded_with_it_and_not_stored`).

use crate::common::*;

/// Fields frameworks read to rewrite the URL, host, scheme or method, with an attacker's value.
const OVERRIDES: &[(&str, &str)] = &[
    ("x-original-url", "/evil"),
    ("x-rewrite-url", "/evil"),
    ("x-http-method-override", "DELETE"),
    ("x-http-method", "DELETE"),
    ("x-method-override", "DELETE"),
    ("x-host", "evil.example"),
    ("x-forwarded-server", "evil.example"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-scheme", "nothttps"),
    ("x-forwarded-proto", "nothttps"),
    ("x-forwarded-port", "1337"),
    ("x-forwarded-prefix", "/evil"),
    ("forwarded", "host=evil.example;proto=nothttps"),
];

/// An origin that, like a framework honouring override fields, reflects every one it receives
/// into a cacheable page.
fn reflecting(req: &Seen, n: usize) -> Reply {
    let mut page = format!("page #{n}\n");
    for (name, _) in OVERRIDES {
        for v in req.header_all(name) {
            page.push_str(&format!("{name}: {v}\n"));
        }
    }
    Reply::ok(page).cc("max-age=60")
}

/// The attacker's request carries every override field; the page stored from it, served to the
/// next visitor, holds none of the attacker's values.
#[tokio::test]
async fn unkeyed_inputs_override_fields_cannot_poison_the_stored_page() {
    let (origin, _p, c) = serve(&clock(), reflecting).await;
    let attack: Vec<(&str, &str)> = [&[("host", "shop.example")][..], OVERRIDES].concat();
    let poisoned = c.get_with("/home", &attack).await;
    assert!(!poisoned.text().contains("evil") && !poisoned.text().contains("nothttps"), "{}", poisoned.text());
    let victim = c.get_with("/home", &[("host", "shop.example")]).await;
    assert!(victim.is_hit());
    assert!(!victim.text().contains("evil") && !victim.text().contains("nothttps"), "{}", victim.text());
    assert_eq!(origin.count(), 1);
}

/// `X-Forwarded-Proto` and `X-Forwarded-Host` reach the origin as the proxy sets them, so an
/// origin that builds redirects from them (the classic poisoned redirect) cannot be steered.
#[tokio::test]
async fn unkeyed_inputs_x_forwarded_proto_and_host_are_the_proxys_own() {
    let (origin, _p, c) = serve(&clock(), reflecting).await;
    c.get_with(
        "/r",
        &[("host", "shop.example"), ("x-forwarded-proto", "nothttps"), ("x-forwarded-host", "evil.example")],
    )
    .await;
    let seen = origin.last();
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["http".to_string()]);
    assert_eq!(seen.header_all("x-forwarded-host"), vec!["shop.example".to_string()]);
}

/// Parameter cloaking with a fat GET: a body that a framework merges into the query parameters
/// reaches the origin (it is passed, never answered from the cache) and its answer is never
/// stored under the URL without that body.
#[tokio::test]
async fn unkeyed_inputs_a_fat_get_never_stores_what_its_body_changed() {
    let (origin, p, c) = serve(&clock(), |req, n| {
        Reply::ok(format!("#{n} callback={}", String::from_utf8_lossy(&req.body))).cc("max-age=60")
    })
    .await;
    let fat =
        b"GET /jsonp HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 11\r\nConnection: close\r\n\r\nalert(1)//x";
    let r = raw_request(p.addr(), fat).await;
    assert_eq!(r.header("cache-status"), Some("edgecache; fwd=bypass; fwd-status=200; detail=request-body"));
    let victim = c.get_with("/jsonp", &[("host", "shop.example")]).await;
    assert_eq!((victim.text(), victim.cache_status()), ("#2 callback=".to_string(), MISS_STORED));
    assert_eq!(origin.count(), 2);
}
