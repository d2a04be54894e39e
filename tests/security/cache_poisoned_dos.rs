//! Cache-poisoned denial of service (CPDoS, Nguyen et al., CCS 2019): a request the origin
//! answers with an error — an oversized header (HHO), a meta character (HMC), a method override
//! (HMO) — must never leave that error stored for everyone else. The proxy's own errors are
//! `no-store` and never stored; an origin error is stored only when the origin itself gives it
//! explicit freshness (RFC 9111 §3), never by a default TTL.
//!
//! Covered elsewhere: override fields stripped
//! (`forwarding::unkeyed_override_fields_are_stripped_and_x_forwarded_host_set`), a head over
//! `max_header_size` is 431 and not forwarded (`bad_input::oversized_header_block_is_431`),
//! control bytes refused by the parser (`bad_input::garbage_request_fields_do_not_break_the_proxy`),
//! 5xx without freshness not stored (`storability::server_error_without_freshness_is_not_stored`).

use crate::common::*;

/// An origin with a smaller header limit than the proxy's, that chokes on a meta character and
/// that honours a method override, as the frameworks in the CPDoS paper do. Its errors carry no
/// freshness, as real ones do; its pages are cacheable.
fn fragile(req: &Seen, n: usize) -> Reply {
    let head: usize = req.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if head > 2048 {
        return Reply::status(400).body("Request Header Or Cookie Too Large");
    }
    if req.headers.values().any(|v| v.as_bytes().contains(&b'\\')) {
        return Reply::status(400).body("bad meta character");
    }
    if req.header("x-http-method-override").is_some() {
        return Reply::status(405).body("method not allowed");
    }
    Reply::ok(format!("page #{n}")).cc("max-age=60")
}

/// HHO: the attacker's oversized (for the origin, not for the proxy) header gets the origin's
/// 400; the next visitor gets the page, and the one after a hit.
#[tokio::test]
async fn cpdos_hho_an_origin_error_for_an_oversized_header_is_not_stored() {
    let (origin, _p, c) = serve(&clock(), fragile).await;
    let big = "x".repeat(4000);
    assert_eq!(c.get_with("/p", &[("x-oversized", &big)]).await.status, 400);
    let victim = c.get("/p").await;
    assert_eq!((victim.status, victim.cache_status()), (200, MISS_STORED));
    assert!(c.get("/p").await.is_hit());
    assert_eq!(origin.count(), 2);
}

/// HMC: a meta character the origin refuses.
#[tokio::test]
async fn cpdos_hmc_an_origin_error_for_a_meta_character_is_not_stored() {
    let (origin, _p, c) = serve(&clock(), fragile).await;
    assert_eq!(c.get_with("/p", &[("x-meta", "\\")]).await.status, 400);
    let victim = c.get("/p").await;
    assert_eq!((victim.status, victim.cache_status()), (200, MISS_STORED));
    assert_eq!(origin.count(), 2);
}

/// HMO: a method override would make the origin answer 405 to a GET; the field never reaches
/// it, so the page stored is the page.
#[tokio::test]
async fn cpdos_hmo_a_method_override_never_reaches_the_origin() {
    let (origin, _p, c) = serve(&clock(), fragile).await;
    let attacker = c.get_with("/p", &[("x-http-method-override", "POST")]).await;
    assert_eq!((attacker.status, attacker.cache_status()), (200, MISS_STORED));
    let victim = c.get("/p").await;
    assert_eq!((victim.status, victim.is_hit()), (200, true));
    assert_eq!(origin.count(), 1);
}

/// Errors of the proxy's own (a head too large, a malformed request) are `no-store`, never
/// stored, and leave the URL's next request a normal miss.
#[tokio::test]
async fn cpdos_the_proxys_own_errors_are_never_stored() {
    let (origin, p, c) = serve_with(&clock(), |cfg| cfg.limits.max_header_bytes = 8192, fragile).await;
    let mut huge = b"GET /p HTTP/1.1\r\nHost: h.example\r\nX-Big: ".to_vec();
    huge.extend_from_slice("b".repeat(20_000).as_bytes());
    huge.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let r = raw_request(p.addr(), &huge).await;
    assert_eq!(r.status, 431);
    let r =
        raw_request(p.addr(), b"GET /p HTTP/1.1\r\nHost: h.example\r\nHost: x.example\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!((r.status, r.header("cache-control")), (400, Some("no-store")));
    let victim = c.get_with("/p", &[("host", "h.example")]).await;
    assert_eq!((victim.status, victim.cache_status()), (200, MISS_STORED));
    assert_eq!(origin.count(), 1);
}

/// Every error status an origin sends without freshness, heuristically cacheable ones included
/// (404, 405, 410, 414, 501: RFC 9110 §15.1): never stored, so one client's error never reaches
/// another.
#[tokio::test]
async fn cpdos_origin_errors_without_freshness_are_never_stored() {
    let codes = [400u16, 403, 404, 405, 410, 413, 414, 431, 500, 501, 502, 503, 504];
    let (origin, _p, c) = serve(&clock(), move |req, _| {
        let code: u16 = req.path().trim_start_matches('/').parse().unwrap();
        Reply::status(code).body("error")
    })
    .await;
    for code in codes {
        let path = format!("/{code}");
        c.get(&path).await;
        let second = c.get(&path).await;
        assert_eq!((second.status, second.is_hit()), (code, false), "{code}");
        assert_eq!(origin.count_path(&path), 2, "{code}");
    }
}
