//! Vary (RFC 9111 §4.1): variants stored side by side and selected by the request's fields,
//! with list fields normalized before comparison.

pub mod common;

use common::*;

/// `Cache-Status` of a request whose URL is stored, but not for its values of the `Vary` fields.
const VARY_MISS: &str = "edgecache; fwd=vary-miss; fwd-status=200; stored";

/// An origin that answers with the request's `header` value (or `none`) and `Vary: header`.
fn echo_vary(header: &'static str) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    move |req, n| {
        let v = req.header(header).unwrap_or("none");
        Reply::ok(format!("{v}#{n}")).cc("max-age=60").header("vary", header)
    }
}

#[tokio::test]
async fn two_variants_are_stored_side_by_side() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, echo_vary("accept-language")).await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];

    let r = c.get_with("/a", &en).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("en#1", MISS_STORED));
    let r = c.get_with("/a", &fr).await;
    assert_eq!(r.text(), "fr#2");
    assert_eq!(r.cache_status(), VARY_MISS);

    for _ in 0..2 {
        let r = c.get_with("/a", &en).await;
        assert_eq!((r.text().as_str(), r.cache_status()), ("en#1", hit(60).as_str()));
        let r = c.get_with("/a", &fr).await;
        assert_eq!((r.text().as_str(), r.cache_status()), ("fr#2", hit(60).as_str()));
    }
    assert_eq!(origin.count(), 2);
    assert_eq!(origin.requests()[1].header("accept-language"), Some("fr"));
}

#[tokio::test]
async fn accept_encoding_order_and_spacing_do_not_make_a_new_variant() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, echo_vary("accept-encoding")).await;
    let r = c.get_with("/a", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(r.cache_status(), MISS_STORED);
    for same in ["br,gzip", "BR, GZIP", "gzip,   br"] {
        let r = c.get_with("/a", &[("accept-encoding", same)]).await;
        assert!(r.is_hit(), "{same:?}: {}", r.cache_status());
        assert_eq!(r.text(), "gzip, br#1");
    }
    // Two field lines are one list.
    let r = c.get_with("/a", &[("accept-encoding", "br"), ("accept-encoding", "gzip")]).await;
    assert!(r.is_hit(), "split field lines: {}", r.cache_status());
    assert_eq!(origin.count(), 1);
    // A different set is a different variant.
    let r = c.get_with("/a", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.cache_status(), VARY_MISS);
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn absent_and_present_fields_are_different_variants() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, echo_vary("accept-language")).await;
    assert_eq!(c.get("/a").await.text(), "none#1");
    let r = c.get_with("/a", &[("accept-language", "en")]).await;
    assert_eq!(r.text(), "en#2");
    assert_eq!(r.cache_status(), VARY_MISS);
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.is_hit()), ("none#1", true));
    let r = c.get_with("/a", &[("accept-language", "en")]).await;
    assert_eq!((r.text().as_str(), r.is_hit()), ("en#2", true));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn empty_field_differs_from_absent_field() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, echo_vary("x-tenant")).await;
    c.get("/a").await;
    let r = c.get_with("/a", &[("x-tenant", "")]).await;
    assert_eq!(r.cache_status(), VARY_MISS, "an empty x-tenant matched an absent one");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn other_fields_are_case_sensitive() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, echo_vary("x-tenant")).await;
    c.get_with("/a", &[("x-tenant", "acme")]).await;
    let r = c.get_with("/a", &[("x-tenant", "ACME")]).await;
    assert_eq!(r.text(), "ACME#2", "x-tenant values must not be case-folded");
    assert!(c.get_with("/a", &[("x-tenant", "acme")]).await.is_hit());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn vary_on_several_fields_needs_all_to_match() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, n| Reply::ok(format!("{n}")).cc("max-age=60").header("vary", "Accept-Language, X-Tenant"))
            .await;
    let both = [("accept-language", "en"), ("x-tenant", "a")];
    c.get_with("/a", &both).await;
    assert!(c.get_with("/a", &both).await.is_hit());
    let r = c.get_with("/a", &[("accept-language", "en"), ("x-tenant", "b")]).await;
    assert_eq!(r.cache_status(), VARY_MISS);
    assert_eq!(c.get_with("/a", &[("accept-language", "en")]).await.cache_status(), VARY_MISS);
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn max_variants_drops_the_oldest() {
    let clock = clock();
    let (origin, _p, c) = serve_with(&clock, |cfg| cfg.cache.max_variants = 2, echo_vary("accept-language")).await;
    for lang in ["en", "fr", "de"] {
        c.get_with("/a", &[("accept-language", lang)]).await;
    }
    assert_eq!(origin.count(), 3);
    assert!(c.get_with("/a", &[("accept-language", "de")]).await.is_hit());
    assert!(c.get_with("/a", &[("accept-language", "fr")]).await.is_hit());
    let r = c.get_with("/a", &[("accept-language", "en")]).await;
    assert_eq!(r.cache_status(), VARY_MISS);
    assert_eq!(origin.count(), 4);
}

#[tokio::test]
async fn a_refetched_variant_replaces_only_itself() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |req, n| {
        let v = req.header("accept-language").unwrap_or("none");
        // fr lives 10s, en 100s.
        let cc = if v == "fr" { "max-age=10" } else { "max-age=100" };
        Reply::ok(format!("{v}#{n}")).cc(cc).header("vary", "accept-language")
    })
    .await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    c.get_with("/a", &en).await;
    c.get_with("/a", &fr).await;
    advance(&clock, 20);
    assert_eq!(c.get_with("/a", &fr).await.text(), "fr#3");
    let r = c.get_with("/a", &en).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("en#1", hit(80).as_str()));
    assert_eq!(c.get_with("/a", &fr).await.text(), "fr#3");
    assert_eq!(origin.count(), 3);
}

/// An origin that negotiates `Accept-Language` among `de` and `en` by quality values, says the
/// language in `Content-Language`, and `Vary: Accept-Language`.
fn negotiating(req: &Seen, n: usize) -> Reply {
    let al = req.header("accept-language").unwrap_or("");
    let lang = if al.find("en").is_some_and(|en| al.find("de").is_none_or(|de| en < de)) { "en" } else { "de" };
    Reply::ok(format!("{lang}#{n}")).cc("max-age=60").header("vary", "accept-language").header("content-language", lang)
}

/// RFC 9111 §4.1 lets selecting fields match after "normalizing both header field values in a way
/// that is known to have identical semantics, according to the header field's specification";
/// RFC 9110 §12.5.4: Accept-Language's ranges are chosen by quality value. A stored variant in
/// the language that a request prefers above every other range is the one the origin selects.
#[tokio::test]
async fn accept_language_preferring_the_stored_language_reuses_the_variant() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, negotiating).await;
    assert_eq!(c.get_with("/a", &[("accept-language", "de, en")]).await.text(), "de#1");
    let r = c.get_with("/a", &[("accept-language", "fr;q=0.5, de;q=1.0")]).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("de#1", hit(60).as_str()));
    assert_eq!(origin.count(), 1);
}

/// The rule never guesses: when the request's first choice is not the stored language, the
/// origin is asked, even if the stored language is listed.
#[tokio::test]
async fn accept_language_preferring_another_language_is_a_vary_miss() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, negotiating).await;
    c.get_with("/a", &[("accept-language", "de")]).await;
    let r = c.get_with("/a", &[("accept-language", "en, de;q=0.5")]).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("en#2", VARY_MISS));
    assert_eq!(origin.count(), 2);
}
