//! Targeted cache control: `CDN-Cache-Control` (RFC 9213), the edgecache-specific field
//! (`Edgecache-Control` by default) and `Surrogate-Control` (W3C Edge Architecture) replace
//! `Cache-Control` for this cache; which of them reach the client.

pub mod common;

use common::*;
use http::HeaderName;

/// `Cache-Status` of a miss not stored because of `no-store`.
const NOT_STORED: &str = "edgecache; fwd=uri-miss; fwd-status=200; detail=no-store";

/// Requests `/a` twice: the first is a stored miss, the second a hit with `ttl` left; one origin
/// request. Returns both responses.
async fn stored_with_ttl(c: &Client, origin: &Origin, ttl: i64) -> [Resp; 2] {
    let miss = c.get("/a").await;
    assert_eq!(miss.cache_status(), MISS_STORED);
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("x", hit(ttl).as_str()));
    assert_eq!(origin.count(), 1);
    [miss, r]
}

/// Requests `/a` twice: neither is stored, both reach the origin.
async fn not_stored(c: &Client, origin: &Origin) {
    for i in 1..=2 {
        let r = c.get("/a").await;
        assert_eq!(r.cache_status(), NOT_STORED);
        assert_eq!(origin.count(), i);
    }
}

// ---------------------------------------------------------------------------------------------
// CDN-Cache-Control
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cdn_cache_control_overrides_cache_control_no_store() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, _| Reply::ok("x").cc("no-store").header("cdn-cache-control", "max-age=60")).await;
    for r in stored_with_ttl(&c, &origin, 60).await {
        // Forwarded by default, for a CDN further down; Cache-Control is the client's as sent.
        assert_eq!(r.header("cdn-cache-control"), Some("max-age=60"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
}

#[tokio::test]
async fn cdn_cache_control_no_store_overrides_cache_control() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, _| Reply::ok("x").cc("max-age=60").header("cdn-cache-control", "no-store")).await;
    not_stored(&c, &origin).await;
}

#[tokio::test]
async fn cdn_cache_control_freshness_replaces_cache_control() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=600").header("cdn-cache-control", "max-age=5"))
            .await;
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
    advance(&clock, 4);
    assert_eq!(c.get("/a").await.cache_status(), hit(1));
    advance(&clock, 2);
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v2", "edgecache; fwd=stale; fwd-status=200; stored"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn cdn_cache_control_is_removed_downstream_when_configured() {
    let clock = clock();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.targeted.forward_cdn_cache_control = false,
        |_, _| Reply::ok("x").cc("no-store").header("cdn-cache-control", "max-age=60"),
    )
    .await;
    for r in stored_with_ttl(&c, &origin, 60).await {
        assert_eq!(r.header("cdn-cache-control"), None, "{}", r.cache_status());
    }
}

/// RFC 9213 §2.1: "If a targeted field in a given response is empty, or a parsing error is
/// encountered, that field SHOULD be ignored by the cache (i.e., it should behave as if the field
/// were not present, likely falling back to other cache-control mechanisms present)." The field
/// is a Structured Field Dictionary (RFC 8941), and its directives "MUST have the appropriate
/// value type": a value that is not one, or a directive of another type, leaves
/// `Cache-Control: max-age=30` in charge.
#[tokio::test]
async fn cdn_cache_control_that_is_no_valid_dictionary_is_ignored_as_a_whole() {
    let clock = clock();
    let values = ["max-age=10000, &&&&&", "max-age=\"10000\"", "max-age=10000, no-store=yes", "Max-Age=10000"];
    let (origin, _p, c) = serve(&clock, move |req, _| {
        let i: usize = req.path()[1..].parse().expect("an index");
        Reply::ok("x").cc("max-age=30").header("cdn-cache-control", values[i])
    })
    .await;
    for (i, value) in values.iter().enumerate() {
        let path = format!("/{i}");
        c.get(&path).await;
        assert_eq!(c.get(&path).await.cache_status(), hit(30), "CDN-Cache-Control: {value}");
    }
    assert_eq!(origin.count(), values.len());
}

/// RFC 9213 §2.1: targeted fields are Dictionaries, so a member without a value is the Boolean
/// true and parameters (`;x=y`) are ignored.
#[tokio::test]
async fn cdn_cache_control_members_with_parameters_apply() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| {
        Reply::ok("x").cc("no-store").header("cdn-cache-control", "public;x=1, max-age=60;y=\"z\"")
    })
    .await;
    stored_with_ttl(&c, &origin, 60).await;
}

// ---------------------------------------------------------------------------------------------
// The edgecache-specific field
// ---------------------------------------------------------------------------------------------

/// RFC 9213 §2.1 holds for this cache's own targeted field too: an invalid one is ignored and
/// the next field in the list (`CDN-Cache-Control`) applies.
#[tokio::test]
async fn an_invalid_edgecache_control_falls_back_to_cdn_cache_control() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| {
        Reply::ok("x")
            .cc("no-store")
            .header("cdn-cache-control", "max-age=60")
            .header("edgecache-control", "max-age=1.5")
    })
    .await;
    stored_with_ttl(&c, &origin, 60).await;
}

#[tokio::test]
async fn edgecache_control_beats_cdn_cache_control_and_cache_control() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, n| {
        Reply::ok(format!("v{n}"))
            .cc("max-age=3600")
            .header("cdn-cache-control", "max-age=600")
            .header("edgecache-control", "max-age=5")
    })
    .await;
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), MISS_STORED);
    assert_eq!(r.header("edgecache-control"), None, "the field for this cache reached the client");
    assert_eq!(r.header("cdn-cache-control"), Some("max-age=600"));
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), hit(5));
    assert_eq!(r.header("edgecache-control"), None, "the field for this cache was served from the store");
    advance(&clock, 6);
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v2", "edgecache; fwd=stale; fwd-status=200; stored"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn edgecache_control_no_store_beats_cdn_cache_control() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| {
        Reply::ok("x")
            .cc("max-age=60")
            .header("cdn-cache-control", "max-age=60")
            .header("edgecache-control", "no-store")
    })
    .await;
    not_stored(&c, &origin).await;
}

#[tokio::test]
async fn edgecache_control_is_forwarded_when_configured() {
    let clock = clock();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.targeted.forward_field = true,
        |_, _| Reply::ok("x").cc("no-store").header("edgecache-control", "max-age=5"),
    )
    .await;
    for r in stored_with_ttl(&c, &origin, 5).await {
        assert_eq!(r.header("edgecache-control"), Some("max-age=5"));
    }
}

#[tokio::test]
async fn the_field_name_is_configurable() {
    let clock = clock();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.targeted.field = Some(HeaderName::from_static("x-edge-control")),
        |_, _| {
            Reply::ok("x")
                .cc("no-store")
                .header("cdn-cache-control", "max-age=600")
                .header("x-edge-control", "max-age=7")
                .header("edgecache-control", "max-age=1")
        },
    )
    .await;
    for r in stored_with_ttl(&c, &origin, 7).await {
        assert_eq!(r.header("x-edge-control"), None);
        // Not this cache's field any more: an ordinary header, passed on.
        assert_eq!(r.header("edgecache-control"), Some("max-age=1"));
    }
}

#[tokio::test]
async fn without_an_own_field_cdn_cache_control_applies() {
    let clock = clock();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.targeted.field = None,
        |_, _| {
            Reply::ok("x")
                .cc("no-store")
                .header("cdn-cache-control", "max-age=600")
                .header("edgecache-control", "max-age=5")
        },
    )
    .await;
    for r in stored_with_ttl(&c, &origin, 600).await {
        assert_eq!(r.header("edgecache-control"), Some("max-age=5"));
    }
}

// ---------------------------------------------------------------------------------------------
// Surrogate-Control
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn surrogate_control_overrides_cache_control_and_is_removed_downstream() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, _| Reply::ok("x").cc("no-store").header("surrogate-control", "max-age=60")).await;
    for r in stored_with_ttl(&c, &origin, 60).await {
        assert_eq!(r.header("surrogate-control"), None, "Surrogate-Control reached the client");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
}

#[tokio::test]
async fn surrogate_control_no_store_overrides_cache_control() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, _| Reply::ok("x").cc("max-age=60").header("surrogate-control", "no-store")).await;
    not_stored(&c, &origin).await;
}

#[tokio::test]
async fn surrogate_control_for_another_device_is_ignored() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, _| Reply::ok("x").cc("max-age=5").header("surrogate-control", "max-age=60;other")).await;
    stored_with_ttl(&c, &origin, 5).await;

    let clock = common::clock();
    let (origin, _p, c) =
        serve(&clock, |_, _| Reply::ok("x").cc("max-age=5").header("surrogate-control", "no-store;other")).await;
    stored_with_ttl(&c, &origin, 5).await;
}

#[tokio::test]
async fn surrogate_control_targeted_at_edgecache_applies() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| {
        Reply::ok("x").cc("no-store").header("surrogate-control", "max-age=600;other, max-age=60;edgecache")
    })
    .await;
    stored_with_ttl(&c, &origin, 60).await;

    let clock = common::clock();
    let (origin, _p, c) = serve(&clock, |_, _| {
        Reply::ok("x").cc("max-age=60").header("surrogate-control", "no-store;other, no-store;edgecache")
    })
    .await;
    not_stored(&c, &origin).await;
}

#[tokio::test]
async fn surrogate_control_is_forwarded_when_configured() {
    let clock = clock();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.targeted.forward_surrogate_control = true,
        |_, _| Reply::ok("x").cc("no-store").header("surrogate-control", "max-age=60"),
    )
    .await;
    for r in stored_with_ttl(&c, &origin, 60).await {
        assert_eq!(r.header("surrogate-control"), Some("max-age=60"));
    }
}

#[tokio::test]
async fn cdn_cache_control_beats_surrogate_control() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| {
        Reply::ok("x")
            .cc("no-store")
            .header("cdn-cache-control", "max-age=30")
            .header("surrogate-control", "max-age=60")
    })
    .await;
    stored_with_ttl(&c, &origin, 30).await;
}

#[tokio::test]
async fn surrogate_capability_is_sent_to_the_origin() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::ok("x").cc("max-age=10").header("etag", "\"v1\"")).await;
    c.get("/a").await;
    assert_eq!(origin.last().header_all("surrogate-capability"), vec!["edgecache=\"Surrogate/1.0\"".to_string()]);
    // Revalidations too.
    advance(&clock, 11);
    c.get("/a").await;
    assert_eq!(origin.count(), 2);
    assert_eq!(origin.last().header_all("surrogate-capability"), vec!["edgecache=\"Surrogate/1.0\"".to_string()]);
}
