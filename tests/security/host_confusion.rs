//! Host confusion: the host a response is stored under is exactly the host it was fetched for,
//! whatever mix of `Host`, absolute-form, HTTP/2 `:authority`, case, trailing dot and port a
//! client sends.
//!
//! Covered elsewhere: a missing or duplicate `Host` (400: `bad_input::missing_host_is_400`,
//! `bad_input::duplicate_host_is_400`), invalid hosts including userinfo in `Host`
//! (`bad_input::invalid_host_is_400`), absolute-form authority over `Host`, keyed and forwarded
//! alike (`bad_input::absolute_form_authority_wins_over_host`), userinfo in the target
//! (`bad_input::userinfo_in_the_target_is_400`), other schemes and authority-form (400:
//! `bad_input::an_absolute_form_target_of_another_scheme_is_400`,
//! `bad_input::an_authority_form_target_outside_connect_is_400`), `Host` normalised, forwarded
//! and keyed (`forwarding::host_is_normalized_forwarded_and_part_of_the_key`).

use crate::common::*;
use bytes::Bytes;

/// An origin whose answer names the host it was asked for, cacheable for a minute.
async fn by_host() -> (Origin, edgecache::Running, Client) {
    serve(&clock(), |req, n| Reply::ok(format!("{} #{n}", req.header("host").unwrap_or("-"))).cc("max-age=60")).await
}

/// Pingora's default cache key left the host out (two sites behind one proxy shared entries):
/// here two hosts never share an entry, for any path.
#[tokio::test]
async fn host_confusion_pingora_host_less_key_two_sites_never_share_an_entry() {
    let (origin, _p, c) = by_host().await;
    for path in ["/", "/a", "/a?x=1"] {
        let a = c.get_with(path, &[("host", "a.example")]).await;
        let b = c.get_with(path, &[("host", "b.example")]).await;
        assert!(a.text().starts_with("a.example "), "{path}: {}", a.text());
        assert!(b.text().starts_with("b.example "), "{path}: {}", b.text());
        assert!(c.get_with(path, &[("host", "b.example")]).await.text().starts_with("b.example "));
    }
    assert_eq!(origin.count(), 6);
}

/// Case, a trailing dot and the default port spell one host: one entry, and the origin is asked
/// with the one normal form (never with the client's spelling, which it could read otherwise).
#[tokio::test]
async fn host_confusion_spellings_of_one_host_share_one_entry_and_forward_one_host() {
    let (origin, _p, c) = by_host().await;
    let first = c.get_with("/s", &[("host", "Shop.Example")]).await;
    assert_eq!(first.text(), "shop.example #1");
    for spelling in
        ["shop.example", "SHOP.EXAMPLE", "shop.example.", "shop.example:80", "shop.example.:80", "shop.example:080"]
    {
        let r = c.get_with("/s", &[("host", spelling)]).await;
        assert_eq!((r.text(), r.is_hit()), ("shop.example #1".to_string(), true), "{spelling}");
    }
    assert_eq!(origin.count(), 1);
}

/// A host that is only the trailing dot of a fully-qualified name (`.`, `.:80`) has no name left
/// once normalised: 400, never forwarded with an empty `Host` (which an origin may answer with
/// its default site) nor keyed under an empty host; nor a host whose last label is empty (`a..`),
/// which has no one normal form. Found by `fuzz::cache_key_host_normalisation_*`.
#[tokio::test]
async fn host_confusion_a_host_that_is_only_a_dot_is_refused() {
    let (origin, p, _c) = by_host().await;
    for host in [".", ".:80", ".:8080", "..", "a..", "a..:8080"] {
        let req = format!("GET /d HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_request(p.addr(), req.as_bytes()).await.status, 400, "Host: {host}");
    }
    let r = raw_request(p.addr(), b"GET http://./d HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 400);
    assert_eq!(origin.count(), 0);
}

/// Another port is another site (RFC 9110 §4.3.2: the origin is scheme, host and port).
#[tokio::test]
async fn host_confusion_another_port_is_another_site() {
    let (origin, _p, c) = by_host().await;
    assert_eq!(c.get_with("/p", &[("host", "shop.example")]).await.text(), "shop.example #1");
    assert_eq!(c.get_with("/p", &[("host", "shop.example:8080")]).await.text(), "shop.example:8080 #2");
    assert_eq!(c.get_with("/p", &[("host", "shop.example:8080")]).await.text(), "shop.example:8080 #2");
    assert_eq!(origin.count(), 2);
}

/// VSV00018 (Varnish, absolute-form parsing): a target that does not start with `/` must not
/// reach the origin as written, where an origin accepting absolute-form would read another host
/// than the one keyed. Here it is refused, or turned into origin-form with the host taken out of
/// it (and keyed under that host).
#[tokio::test]
async fn host_confusion_vsv00018_targets_not_in_origin_form_never_reach_the_origin_as_written() {
    let (origin, p, _c) = by_host().await;
    for target in ["*", "example.com/x", "http:/x", "@evil.example/x"] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n");
        let r = raw_request(p.addr(), req.as_bytes()).await;
        assert_eq!(r.status, 400, "GET {target}");
    }
    assert_eq!(origin.count(), 0);
    // A bare authority in absolute-form: the root path, under that host.
    let r =
        raw_request(p.addr(), b"GET http://Other.example HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(String::from_utf8_lossy(&r.body), "other.example #1");
    let seen = origin.last();
    assert_eq!((seen.path(), seen.header("host")), ("/", Some("other.example")));
}

/// HTTP/2: `:authority` and a `Host` field that disagree. The authority wins (RFC 9113 §8.3.1),
/// for the key and for the origin alike; the `Host` field is never what the origin reads.
#[tokio::test]
async fn host_confusion_http2_authority_wins_over_a_disagreeing_host_field() {
    let (origin, p, c) = by_host().await;
    let mut h2 = H2::connect(p.addr()).await;
    let authority = p.addr().to_string();
    let r = h2.send("GET", "/h2", &[("host", "evil.example")], Bytes::new()).await;
    assert_eq!(r.text(), format!("{authority} #1"));
    assert_eq!(origin.last().header_all("host"), vec![authority.clone()]);
    // Nothing was stored under the Host field's name.
    assert_eq!(c.get_with("/h2", &[("host", "evil.example")]).await.text(), "evil.example #2");
}
