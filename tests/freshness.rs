//! Freshness (RFC 9111 §4.2, §5.2): lifetimes, age, and the request directives that limit what
//! a stored response may answer. Time moves only through the shared `ManualClock`.

pub mod common;

use common::*;

#[tokio::test]
async fn max_age_is_served_from_cache_until_it_expires_then_refetched() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=60")).await;

    let r = c.get("/a").await;
    assert_eq!((r.status, r.text().as_str()), (200, "v1"));
    assert_eq!(r.cache_status(), MISS_STORED);

    let r = c.get("/a").await;
    assert_eq!(r.text(), "v1");
    assert_eq!(r.cache_status(), hit(60));
    assert_eq!(origin.count(), 1);

    advance(&clock, 59);
    let r = c.get("/a").await;
    assert_eq!(r.text(), "v1");
    assert_eq!(r.cache_status(), hit(1));
    assert_eq!(r.age(), Some(59));
    assert_eq!(origin.count(), 1);

    advance(&clock, 1);
    let r = c.get("/a").await;
    assert_eq!(r.text(), "v2");
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=200; stored");
    assert_eq!(origin.count(), 2);
    // No validator was stored, so the refetch is unconditional.
    assert_eq!(origin.last().header("if-none-match"), None);

    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v2", hit(60).as_str()));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn s_maxage_beats_max_age_for_a_shared_cache() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=10, s-maxage=100")).await;
    c.get("/a").await;
    assert_eq!(c.get("/a").await.cache_status(), hit(100));
    advance(&clock, 50);
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v1", hit(50).as_str()));
    assert_eq!(origin.count(), 1);
    advance(&clock, 50);
    assert_eq!(c.get("/a").await.text(), "v2");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn expires_is_used_when_there_is_no_max_age() {
    let clock = clock();
    let c2 = clock.clone();
    let (origin, _proxy, c) =
        serve(&clock, move |_, n| Reply::ok(format!("v{n}")).header("expires", date_at(&c2, 100))).await;
    c.get("/a").await;
    assert_eq!(c.get("/a").await.cache_status(), hit(100));
    advance(&clock, 99);
    assert_eq!(c.get("/a").await.cache_status(), hit(1));
    assert_eq!(origin.count(), 1);
    advance(&clock, 1);
    assert_eq!(c.get("/a").await.text(), "v2");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn max_age_beats_expires() {
    let clock = clock();
    let c2 = clock.clone();
    let (origin, _proxy, c) =
        serve(&clock, move |_, n| Reply::ok(format!("v{n}")).cc("max-age=10").header("expires", date_at(&c2, 1000)))
            .await;
    c.get("/a").await;
    assert_eq!(c.get("/a").await.cache_status(), hit(10));
    advance(&clock, 10);
    assert_eq!(c.get("/a").await.text(), "v2");
    assert_eq!(origin.count(), 2);
}

/// RFC 9110 §5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST accept all
/// three HTTP-date formats." RFC 9111 §4.2: "a cache recipient SHOULD match the field value
/// case-insensitively." `Date` 20 s in the past and `Expires` 980 s ahead: a lifetime of 1000 s,
/// of which 20 are gone, when both are read.
#[tokio::test]
async fn expires_and_date_are_read_in_every_http_date_format_and_case() {
    let clock = clock();
    let (date, expires) = (date_at(&clock, -20), date_at(&clock, 980));
    let [date_850, date_asctime] = obsolete_dates(&date);
    let [expires_850, expires_asctime] = obsolete_dates(&expires);
    let cases = vec![
        ("/rfc850", date_850.clone(), expires_850.clone()),
        ("/asctime", date_asctime.clone(), expires_asctime.clone()),
        ("/upper", date.to_uppercase(), expires.to_uppercase()),
        ("/lower", date.to_lowercase(), expires.to_lowercase()),
        ("/rfc850-lower", date_850.to_lowercase(), expires_850.to_lowercase()),
        ("/asctime-upper", date_asctime.to_uppercase(), expires_asctime.to_uppercase()),
    ];
    let table = cases.clone();
    let (origin, _p, c) = serve(&clock, move |req, _| {
        let (_, date, expires) = table.iter().find(|(path, _, _)| *path == req.path()).expect("known path");
        Reply::ok("x").no_date().header("date", date).header("expires", expires)
    })
    .await;
    for (path, date, expires) in &cases {
        c.get(path).await;
        let r = c.get(path).await;
        assert_eq!((r.cache_status(), r.age()), (hit(980).as_str(), Some(20)), "Date: {date}, Expires: {expires}");
        assert_eq!(origin.count_path(path), 1, "{path}");
    }
}

/// RFC 9110 §5.6.7 and RFC 9111 §4.2.2: a `Last-Modified` in an obsolete format, in any case,
/// still gives a heuristic lifetime (10 % of the 1000 s since it).
#[tokio::test]
async fn last_modified_in_an_obsolete_format_gives_heuristic_freshness() {
    let clock = clock();
    let [rfc850, asctime] = obsolete_dates(&date_at(&clock, -1000));
    let lms = [("/rfc850", rfc850.to_uppercase()), ("/asctime", asctime.to_lowercase())];
    let table = lms.clone();
    let (_origin, _p, c) = serve(&clock, move |req, _| {
        let (_, lm) = table.iter().find(|(path, _)| *path == req.path()).expect("known path");
        Reply::ok("x").header("last-modified", lm)
    })
    .await;
    for (path, lm) in &lms {
        c.get(path).await;
        assert_eq!(c.get(path).await.cache_status(), hit(100), "Last-Modified: {lm}");
    }
}

#[tokio::test]
async fn invalid_expires_means_already_stale() {
    let clock = clock();
    let (origin, _proxy, c) =
        serve(&clock, |_, n| Reply::ok(format!("v{n}")).header("expires", "0").header("etag", "\"e1\"")).await;
    let r = c.get("/a").await;
    // Stored (it has a validator) but stale at once: the next use goes to the origin.
    assert_eq!(r.cache_status(), MISS_STORED);
    let r = c.get("/a").await;
    assert_eq!(r.text(), "v2");
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=200; stored");
    assert_eq!(origin.count(), 2);
    assert_eq!(origin.last().header("if-none-match"), Some("\"e1\""));
}

#[tokio::test]
async fn invalid_expires_without_validator_is_not_stored() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, |_, n| Reply::ok(format!("v{n}")).header("expires", "0")).await;
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; fwd-status=200; detail=no-freshness");
    let r = c.get("/a").await;
    assert_eq!(
        (r.text().as_str(), r.cache_status()),
        ("v2", "edgecache; fwd=uri-miss; fwd-status=200; detail=no-freshness")
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn directive_names_are_case_insensitive() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("Max-Age=60")).await;
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
    let r = c.get("/a").await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v1", hit(60).as_str()));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn heuristic_freshness_is_ten_percent_of_last_modified_age() {
    let clock = clock();
    let lm = date_at(&clock, -1000);
    let lm2 = lm.clone();
    let (origin, _proxy, c) = serve(&clock, move |req, n| {
        if n > 1 && req.header("if-modified-since") == Some(lm2.as_str()) {
            return Reply::status(304);
        }
        Reply::ok(format!("v{n}")).header("last-modified", &lm2)
    })
    .await;
    c.get("/a").await;
    assert_eq!(c.get("/a").await.cache_status(), hit(100));
    advance(&clock, 99);
    assert_eq!(c.get("/a").await.cache_status(), hit(1));
    assert_eq!(origin.count(), 1);
    advance(&clock, 1);
    let r = c.get("/a").await;
    assert_eq!(r.text(), "v1");
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=304; stored");
    assert_eq!(origin.last().header("if-modified-since"), Some(lm.as_str()));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn heuristic_freshness_is_capped_by_heuristic_max() {
    let clock = clock();
    let lm = date_at(&clock, -100_000);
    let (origin, _proxy, c) = serve_with(
        &clock,
        |cfg| cfg.cache.heuristic_max = std::time::Duration::from_secs(30),
        move |_, n| Reply::ok(format!("v{n}")).header("last-modified", &lm),
    )
    .await;
    c.get("/a").await;
    assert_eq!(c.get("/a").await.cache_status(), hit(30));
    advance(&clock, 30);
    assert_eq!(c.get("/a").await.cache_status(), "edgecache; fwd=stale; fwd-status=200; stored");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn heuristic_freshness_can_be_turned_off() {
    let clock = clock();
    let lm = date_at(&clock, -1000);
    let sent = lm.clone();
    let (origin, _proxy, c) = serve_with(
        &clock,
        |cfg| cfg.cache.heuristic_freshness = false,
        move |_, n| Reply::ok(format!("v{n}")).header("last-modified", &sent),
    )
    .await;
    // Kept for its validator, but never fresh.
    assert_eq!(c.get("/a").await.cache_status(), MISS_STORED);
    let r = c.get("/a").await;
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=200; stored");
    assert_eq!(origin.count(), 2);
    assert_eq!(origin.last().header("if-modified-since"), Some(lm.as_str()));
}

#[tokio::test]
async fn age_is_sent_on_hits_and_grows_with_the_clock() {
    let clock = clock();
    let (_origin, _proxy, c) = serve(&clock, |_, _| Reply::ok("x").cc("max-age=600")).await;
    let r = c.get("/a").await;
    assert_eq!(r.age(), None, "a fresh miss carries no Age");
    assert_eq!(c.get("/a").await.age(), Some(0));
    advance(&clock, 7);
    assert_eq!(c.get("/a").await.age(), Some(7));
    advance(&clock, 13);
    let r = c.get("/a").await;
    assert_eq!(r.age(), Some(20));
    assert_eq!(r.cache_status(), hit(580));
}

#[tokio::test]
async fn upstream_age_is_counted() {
    let clock = clock();
    let (origin, _proxy, c) =
        serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=100").header("age", "30")).await;
    let r = c.get("/a").await;
    assert_eq!(r.age(), Some(30));
    let r = c.get("/a").await;
    assert_eq!((r.age(), r.cache_status()), (Some(30), hit(70).as_str()));
    advance(&clock, 69);
    let r = c.get("/a").await;
    assert_eq!((r.age(), r.cache_status()), (Some(99), hit(1).as_str()));
    advance(&clock, 1);
    assert_eq!(c.get("/a").await.text(), "v2");
    assert_eq!(origin.count(), 2);
}

/// RFC 9111 §5.1: "If the field value (after discarding additional members, as per Section 5.6.1
/// of [HTTP]) is invalid (e.g., it contains something other than a non-negative integer), a
/// cache SHOULD ignore the field." A second field line is a second member of the list.
#[tokio::test]
async fn an_invalid_age_is_ignored_as_if_absent() {
    let clock = clock();
    let cases: &[(&str, &[&str])] = &[
        ("/word", &["abc"]),
        ("/negative", &["-7200"]),
        ("/fraction", &["1.5"]),
        ("/float", &["7200.0"]),
        ("/suffix", &["3600abc"]),
        ("/parameter", &["7200;foo=bar"]),
        ("/zero-twice", &["0, 0"]),
        ("/two-lines", &["0", "7200"]),
        ("/garbage-line-first", &["old", "7200"]),
    ];
    let table = cases.to_vec();
    let (origin, _p, c) = serve(&clock, move |req, _| {
        let (_, lines) = table.iter().find(|(path, _)| *path == req.path()).expect("known path");
        lines.iter().fold(Reply::ok("x").cc("max-age=3600"), |r, v| r.header("age", v))
    })
    .await;
    for (path, lines) in cases {
        c.get(path).await;
        let r = c.get(path).await;
        assert_eq!((r.cache_status(), r.header("age")), (hit(3600).as_str(), Some("0")), "Age: {lines:?}");
        assert_eq!(origin.count_path(path), 1, "{path}");
    }
}

#[tokio::test]
async fn apparent_age_from_an_old_date_is_counted() {
    let clock = clock();
    let c2 = clock.clone();
    let (_origin, _proxy, c) =
        serve(&clock, move |_, _| Reply::ok("x").cc("max-age=100").header("date", date_at(&c2, -20))).await;
    c.get("/a").await;
    let r = c.get("/a").await;
    assert_eq!((r.age(), r.cache_status()), (Some(20), hit(80).as_str()));
}

/// Origin for the request-directive tests: max-age=100 with an ETag; a conditional request for
/// that ETag gets 304, anything else a new version.
fn versioned(req: &Seen, n: usize) -> Reply {
    if req.header("if-none-match") == Some("\"e1\"") {
        return Reply::status(304).header("etag", "\"e1\"").cc("max-age=100");
    }
    Reply::ok(format!("v{n}")).cc("max-age=100").header("etag", format!("\"e{n}\""))
}

#[tokio::test]
async fn request_max_age_limits_the_acceptable_age() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=100")).await;
    c.get("/a").await;
    advance(&clock, 20);
    let r = c.get_with("/a", &[("cache-control", "max-age=30")]).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v1", hit(80).as_str()));
    let r = c.get_with("/a", &[("cache-control", "max-age=10")]).await;
    assert_eq!(r.text(), "v2");
    assert_eq!(r.cache_status(), "edgecache; fwd=request; fwd-status=200; stored");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn request_min_fresh_requires_remaining_freshness() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, versioned).await;
    c.get("/a").await;
    advance(&clock, 50);
    let r = c.get_with("/a", &[("cache-control", "min-fresh=40")]).await;
    assert_eq!(r.cache_status(), hit(50));
    let r = c.get_with("/a", &[("cache-control", "min-fresh=60")]).await;
    assert_eq!(r.cache_status(), "edgecache; fwd=request; fwd-status=304; stored");
    assert_eq!(r.text(), "v1");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn request_max_stale_allows_serving_stale() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=10")).await;
    c.get("/a").await;
    advance(&clock, 30); // stale by 20s
    let r = c.get_with("/a", &[("cache-control", "max-stale=30")]).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v1", hit(-20).as_str()));
    assert_eq!(r.age(), Some(30));
    let r = c.get_with("/a", &[("cache-control", "max-stale")]).await;
    assert_eq!((r.text().as_str(), r.cache_status()), ("v1", hit(-20).as_str()));
    assert_eq!(origin.count(), 1);
    let r = c.get_with("/a", &[("cache-control", "max-stale=10")]).await;
    assert_eq!(r.text(), "v2");
    assert_eq!(r.cache_status(), "edgecache; fwd=stale; fwd-status=200; stored");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn request_no_cache_revalidates_a_fresh_entry() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, versioned).await;
    c.get("/a").await;
    let r = c.get_with("/a", &[("cache-control", "no-cache")]).await;
    assert_eq!(r.cache_status(), "edgecache; fwd=request; fwd-status=304; stored");
    assert_eq!(r.text(), "v1");
    assert_eq!(origin.count(), 2);
    assert_eq!(origin.last().header("if-none-match"), Some("\"e1\""));
    // Refreshed: a plain request is a hit again.
    assert!(c.get("/a").await.is_hit());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn pragma_no_cache_without_cache_control_forces_revalidation() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, versioned).await;
    c.get("/a").await;
    let r = c.get_with("/a", &[("pragma", "no-cache")]).await;
    assert_eq!(r.cache_status(), "edgecache; fwd=request; fwd-status=304; stored");
    assert_eq!(origin.count(), 2);
    // With Cache-Control present, Pragma is ignored (RFC 9111 §5.4).
    let r = c.get_with("/a", &[("pragma", "no-cache"), ("cache-control", "max-stale=5")]).await;
    assert!(r.is_hit(), "{}", r.cache_status());
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn only_if_cached_gives_504_when_nothing_usable_is_stored() {
    let clock = clock();
    let (origin, _proxy, c) = serve(&clock, |_, n| Reply::ok(format!("v{n}")).cc("max-age=10")).await;
    let oic = [("cache-control", "only-if-cached")];
    let r = c.get_with("/a", &oic).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.cache_status(), "edgecache; detail=only-if-cached");
    assert_eq!(origin.count(), 0);

    c.get("/a").await;
    let r = c.get_with("/a", &oic).await;
    assert_eq!((r.status, r.text().as_str()), (200, "v1"));
    assert!(r.is_hit());

    advance(&clock, 11);
    let r = c.get_with("/a", &oic).await;
    assert_eq!(r.status, 504, "a stale entry may not answer only-if-cached");
    assert_eq!(origin.count(), 1);
}
