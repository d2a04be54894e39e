//! Conditional requests answered from the store (RFC 9111 §4.3.2, RFC 9110 §13) and HEAD
//! answered from a stored GET.

pub mod common;

use common::*;

/// An origin for `/a`: ETag `"v1"`, Last-Modified 100s before T0, max-age=60, body `hello`.
async fn etag_origin(
    tag: &'static str,
) -> (std::sync::Arc<edgecache::clock::ManualClock>, Origin, edgecache::Running, Client) {
    let clock = clock();
    let lm = date_at(&clock, -100);
    let (origin, p, c) =
        serve(&clock, move |_, _| Reply::ok("hello").cc("max-age=60").header("etag", tag).header("last-modified", &lm))
            .await;
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), MISS_STORED);
    (clock, origin, p, c)
}

fn assert_304(r: &Resp) {
    assert_eq!(r.status, 304, "{}", r.cache_status());
    assert!(r.body.is_empty(), "a 304 has no body");
    assert!(r.is_hit(), "{}", r.cache_status());
}

#[tokio::test]
async fn if_none_match_with_the_stored_etag_gives_304_from_the_cache() {
    let (clock, origin, _p, c) = etag_origin("\"v1\"").await;
    let stored_date = date_at(&clock, 0);
    advance(&clock, 5);
    let r = c.get_with("/a", &[("if-none-match", "\"v1\"")]).await;
    assert_304(&r);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(r.header("date"), Some(stored_date.as_str()));
    assert_eq!(r.age(), Some(5));
    assert_eq!(r.cache_status(), hit(55));
    assert_eq!(origin.count(), 1, "the origin was contacted");
}

#[tokio::test]
async fn non_matching_if_none_match_gives_the_full_response() {
    let (_clock, origin, _p, c) = etag_origin("\"v1\"").await;
    let r = c.get_with("/a", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert!(r.is_hit());
    // An unquoted tag is not an entity-tag and never matches.
    let r = c.get_with("/a", &[("if-none-match", "v1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn if_none_match_uses_weak_comparison() {
    let (_clock, _origin, _p, c) = etag_origin("W/\"x\"").await;
    assert_304(&c.get_with("/a", &[("if-none-match", "\"x\"")]).await);
    assert_304(&c.get_with("/a", &[("if-none-match", "W/\"x\"")]).await);
    let (_clock, origin, _p, c) = etag_origin("\"y\"").await;
    assert_304(&c.get_with("/a", &[("if-none-match", "W/\"y\"")]).await);
    assert_eq!(c.get_with("/a", &[("if-none-match", "W/\"x\"")]).await.status, 200);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn if_none_match_lists_match_any_member() {
    let (_clock, origin, _p, c) = etag_origin("\"v1\"").await;
    assert_304(&c.get_with("/a", &[("if-none-match", "\"a\", \"v1\"")]).await);
    assert_304(&c.get_with("/a", &[("if-none-match", "\"a,b\",W/\"v1\"")]).await);
    assert_304(&c.get_with("/a", &[("if-none-match", "\"a\""), ("if-none-match", "\"v1\"")]).await);
    let r = c.get_with("/a", &[("if-none-match", "\"a\", \"b\"")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn if_none_match_star_matches_any_stored_response() {
    let (_clock, origin, _p, c) = etag_origin("\"v1\"").await;
    assert_304(&c.get_with("/a", &[("if-none-match", "*")]).await);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn if_modified_since_compares_with_last_modified() {
    let (clock, origin, _p, c) = etag_origin("\"v1\"").await;
    for (offset, expect) in [(-100, 304), (-50, 304), (-101, 200), (-200, 200)] {
        let ims = date_at(&clock, offset);
        let r = c.get_with("/a", &[("if-modified-since", &ims)]).await;
        assert_eq!(r.status, expect, "If-Modified-Since {offset}s");
        assert!(r.is_hit());
        if expect == 304 {
            assert!(r.body.is_empty());
            assert_eq!(r.header("etag"), Some("\"v1\""));
        } else {
            assert_eq!(r.text(), "hello");
        }
    }
    let r = c.get_with("/a", &[("if-modified-since", "yesterday")]).await;
    assert_eq!(r.status, 200, "an invalid date is ignored");
    assert_eq!(origin.count(), 1);
}

/// RFC 9110 §5.6.7: a recipient "MUST accept all three HTTP-date formats"; RFC 9111 §4.2 asks a
/// cache to match dates case-insensitively.
#[tokio::test]
async fn if_modified_since_is_read_in_every_http_date_format_and_case() {
    let (clock, origin, _p, c) = etag_origin("\"v1\"").await;
    let lm = date_at(&clock, -100);
    let [rfc850, asctime] = obsolete_dates(&lm);
    for ims in [rfc850.to_lowercase(), asctime.to_uppercase(), lm.to_uppercase()] {
        let r = c.get_with("/a", &[("if-modified-since", &ims)]).await;
        assert_eq!((r.status, r.cache_status()), (304, hit(60).as_str()), "If-Modified-Since: {ims}");
    }
    assert_eq!(origin.count(), 1);
}

/// RFC 9111 §4.3.2: "If a request contains an If-Modified-Since header field and the Last-Modified
/// header field is not present in a selected stored response, a cache SHOULD use the stored
/// response's Date field value (or, if no Date field is present, the time that the stored
/// response was received) to evaluate the conditional." (Already so before issue 24.)
#[tokio::test]
async fn without_last_modified_if_modified_since_is_compared_with_date() {
    let clock = clock();
    let c2 = clock.clone();
    let (origin, _p, c) =
        serve(&clock, move |_, _| Reply::ok("hello").cc("max-age=60").no_date().header("date", date_at(&c2, -10)))
            .await;
    c.get("/a").await;
    for ims in [-10, -5] {
        let r = c.get_with("/a", &[("if-modified-since", &date_at(&clock, ims))]).await;
        assert_eq!((r.status, r.cache_status()), (304, hit(50).as_str()), "If-Modified-Since {ims}s, Date -10s");
    }
    assert_eq!(origin.count(), 1);
}

/// RFC 9110 §13.1.3: "A recipient MUST ignore the If-Modified-Since header field if the received
/// field value is not a valid HTTP-date, the field value has more than one member, ..."
#[tokio::test]
async fn if_modified_since_with_more_than_one_member_is_ignored() {
    let (clock, origin, _p, c) = etag_origin("\"v1\"").await;
    let ims = date_at(&clock, 0);
    let r = c.get_with("/a", &[("if-modified-since", &ims), ("if-modified-since", &ims)]).await;
    assert_eq!((r.status, r.text().as_str(), r.cache_status()), (200, "hello", hit(60).as_str()));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn if_none_match_takes_precedence_over_if_modified_since() {
    let (clock, _origin, _p, c) = etag_origin("\"v1\"").await;
    let ims = date_at(&clock, 0);
    let r = c.get_with("/a", &[("if-none-match", "\"zz\""), ("if-modified-since", &ims)]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let (_clock, origin, _p, c) = etag_origin("\"v1\"").await;
    let r = c.head_with("/a", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert!(r.is_hit(), "{}", r.cache_status());
    assert_eq!(origin.count(), 1);
    // And the stored body is intact afterwards.
    assert_eq!(c.get("/a").await.text(), "hello");
}

#[tokio::test]
async fn head_on_a_miss_fetches_with_get_and_stores_for_later_gets() {
    let clock = clock();
    let (origin, p, c) = serve(&clock, |_, _| Reply::ok("hello").cc("max-age=60")).await;
    let r = c.head_with("/a", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.cache_status(), MISS_STORED);
    assert_eq!(origin.last().method, http::Method::GET);
    eventually("the GET fetched for HEAD is stored", async || stored_urls(&p) == 1).await;
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.is_hit()), ("hello", true));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn conditional_on_a_miss_is_answered_locally_and_the_object_stored() {
    let clock = clock();
    let (origin, p, c) = serve(&clock, |_, _| Reply::ok("hello").cc("max-age=60").header("etag", "\"v1\"")).await;
    let r = c.get_with("/a", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.cache_status(), MISS_STORED);
    let seen = origin.last();
    assert_eq!(seen.header("if-none-match"), None, "the client's validator reached the origin");
    assert_eq!(seen.header("if-modified-since"), None);
    eventually("the full response is stored", async || stored_urls(&p) == 1).await;
    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str(), r.is_hit()), (200, "hello", true));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn conditional_on_a_miss_that_does_not_match_gets_the_full_response() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, _| Reply::ok("hello").cc("max-age=60").header("etag", "\"v2\"")).await;
    let r = c.get_with("/a", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert!(c.get("/a").await.is_hit());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn a_stored_error_response_is_never_turned_into_304() {
    let clock = clock();
    let (origin, _p, c) =
        serve(&clock, |_, _| Reply::status(404).body("missing").cc("max-age=60").header("etag", "\"e404\"")).await;
    c.get("/a").await;
    let r = c.get_with("/a", &[("if-none-match", "\"e404\"")]).await;
    assert_eq!((r.status, r.text().as_str()), (404, "missing"));
    assert!(r.is_hit());
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn if_match_and_if_unmodified_since_bypass_the_cache() {
    let (clock, origin, _p, c) = etag_origin("\"v1\"").await;
    for (name, value) in [("if-match", "\"v1\"".to_string()), ("if-unmodified-since", date_at(&clock, 0))] {
        let before = origin.count();
        let r = c.get_with("/a", &[(name, &value)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.cache_status(), "edgecache; fwd=bypass; fwd-status=200; detail=precondition", "{name}");
        assert_eq!(origin.count(), before + 1);
        assert_eq!(origin.last().header(name), Some(value.as_str()), "{name} must reach the origin");
    }
    assert!(c.get("/a").await.is_hit(), "the stored entry survives");
}

/// An origin for `/a`: body `hello`, max-age=60, the given extra fields.
async fn range_origin(
    fields: &[(&'static str, String)],
) -> (std::sync::Arc<edgecache::clock::ManualClock>, Origin, edgecache::Running, Client) {
    let clock = clock();
    let fields = fields.to_vec();
    let (origin, p, c) =
        serve(&clock, move |_, _| fields.iter().fold(Reply::ok("hello").cc("max-age=60"), |r, (n, v)| r.header(n, v)))
            .await;
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
    (clock, origin, p, c)
}

#[tokio::test]
async fn a_range_is_served_from_the_stored_response() {
    let (_clock, origin, _p, c) = range_origin(&[]).await;
    let r = c.get_with("/a", &[("range", "bytes=1-3")]).await;
    assert_eq!((r.status, r.text().as_str()), (206, "ell"));
    assert_eq!(r.header("content-range"), Some("bytes 1-3/5"));
    assert!(r.is_hit(), "{}", r.cache_status());
    let r = c.get_with("/a", &[("range", "bytes=9-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */5"));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn if_range_with_an_entity_tag_needs_a_strong_match() {
    let (_clock, _origin, _p, c) = range_origin(&[("etag", "\"v1\"".to_string())]).await;
    for (if_range, expect) in [("\"v1\"", 206), ("\"v2\"", 200), ("W/\"v1\"", 200)] {
        let r = c.get_with("/a", &[("range", "bytes=1-3"), ("if-range", if_range)]).await;
        assert_eq!(r.status, expect, "If-Range {if_range}");
        assert_eq!(r.text(), if expect == 206 { "ell" } else { "hello" });
    }
}

#[tokio::test]
async fn if_range_with_a_date_matches_only_a_strong_last_modified() {
    let clock = clock();
    // Last-Modified ten seconds before Date: strong (RFC 9110 §8.8.2.2).
    let lm = date_at(&clock, -10);
    let (_clock, _origin, _p, c) = range_origin(&[("last-modified", lm.clone())]).await;
    let r = c.get_with("/a", &[("range", "bytes=1-3"), ("if-range", &lm)]).await;
    assert_eq!((r.status, r.text().as_str()), (206, "ell"));
    let other = date_at(&clock, -20);
    let r = c.get_with("/a", &[("range", "bytes=1-3"), ("if-range", &other)]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));

    // Last-Modified equal to Date: the representation may have changed within that second.
    let now = date_at(&clock, 0);
    let (_clock, _origin, _p, c) = range_origin(&[("last-modified", now.clone())]).await;
    let r = c.get_with("/a", &[("range", "bytes=1-3"), ("if-range", &now)]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "a weak Last-Modified matched");
}

#[tokio::test]
async fn if_range_with_a_date_never_matches_a_response_without_last_modified() {
    let (clock, _origin, _p, c) = range_origin(&[]).await;
    // The stored Date is what If-Modified-Since falls back to, but not a validator for If-Range.
    let date = date_at(&clock, 0);
    let r = c.get_with("/a", &[("range", "bytes=1-3"), ("if-range", &date)]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
}
