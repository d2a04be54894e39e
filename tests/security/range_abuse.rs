//! Range abuse: ranges that overflow, overlap, repeat or make no sense are answered from a
//! stored body within its bounds, or with the whole body, or 416 — never bytes outside it, never
//! a multipart answer larger than the body, and a `206` is never stored as the whole.
//!
//! Covered elsewhere: a range the store cannot answer is forwarded and the 206 not stored
//! (`storability::range_requests_are_forwarded_and_206_is_not_stored`), a 206 to a plain
//! request not stored (`storability::a_206_to_a_plain_request_is_not_stored`), `If-Range`
//! (`conditional::if_range_with_an_entity_tag_needs_a_strong_match` and the date rows), every
//! `Range` text against every length (`fuzz::range_single_ranges_follow_rfc_9110`,
//! `fuzz::range_any_text_never_panics_and_stays_inside_the_body`).

use crate::common::*;

const BODY: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

async fn stored() -> (Origin, edgecache::Running, Client) {
    let (origin, p, c) = serve(&clock(), |_, _| Reply::ok(BODY).cc("max-age=60")).await;
    assert_eq!(c.get("/r").await.cache_status(), MISS_STORED);
    (origin, p, c)
}

/// The bytes of `BODY` a 206 claims, checked against `Content-Range` and the body itself.
fn check_partial(r: &Resp, range: &str) {
    let cr = r.header("content-range").unwrap_or_else(|| panic!("{range}: 206 without Content-Range"));
    let spec = cr.strip_prefix("bytes ").and_then(|s| s.split_once('/')).expect("Content-Range form");
    assert_eq!(spec.1, BODY.len().to_string(), "{range}");
    let (a, b) = spec.0.split_once('-').expect("first-last");
    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(a <= b && b < BODY.len(), "{range}: {cr}");
    assert_eq!(r.text(), &BODY[a..=b], "{range}");
}

/// nginx's CVE-2017-7529: a range whose arithmetic overflows read memory outside the cached
/// body. Here every overflowing or huge range is 206 within the body, the whole body, or 416.
#[tokio::test]
async fn range_abuse_nginx_cve_2017_7529_overflowing_ranges_stay_inside_the_body() {
    let (origin, _p, c) = stored().await;
    for range in [
        "bytes=-9223372036854775808",
        "bytes=-18446744073709551615",
        "bytes=-18446744073709551616",
        "bytes=-99999999999999999999999999",
        "bytes=0-18446744073709551615",
        "bytes=0-18446744073709551616",
        "bytes=18446744073709551615-",
        "bytes=18446744073709551616-18446744073709551617",
        "bytes=4-9223372036854775807",
        "bytes=9223372036854775807-9223372036854775808",
    ] {
        let r = c.get_with("/r", &[("range", range)]).await;
        match r.status {
            206 => check_partial(&r, range),
            200 => assert_eq!(r.text(), BODY, "{range}"),
            416 => {}
            s => panic!("{range}: status {s}"),
        }
    }
    assert_eq!(origin.count(), 1, "every range was answered from the store");
}

/// Apache's CVE-2011-3192 ("Apache Killer"): many overlapping ranges made a multipart answer far
/// larger than the body. Several ranges get the whole body, once.
#[tokio::test]
async fn range_abuse_apache_cve_2011_3192_overlapping_ranges_get_the_body_once() {
    let (_origin, _p, c) = stored().await;
    let many = format!("bytes={}", vec!["0-"; 500].join(","));
    let overlapping = format!("bytes={}", (0..200).map(|i| format!("{i}-{}", i + 30)).collect::<Vec<_>>().join(","));
    for range in [many, overlapping, "bytes=0-5,3-8".to_string(), "bytes=1-1,1-1".to_string()] {
        let r = c.get_with("/r", &[("range", &range)]).await;
        assert_eq!((r.status, r.body.len()), (200, BODY.len()), "{}", &range[..20.min(range.len())]);
    }
}

/// Negative, reversed and malformed ranges are ignored (the whole body) or unsatisfiable.
#[tokio::test]
async fn range_abuse_negative_reversed_and_malformed_ranges_never_give_wrong_bytes() {
    let (origin, _p, c) = stored().await;
    for range in [
        "bytes=-1-5",
        "bytes=5-1",
        "bytes=--5",
        "bytes=-",
        "bytes=-0",
        "bytes=0x10-",
        "bytes=+5-",
        "bytes=5",
        "bytes 5-6",
        "bits=0-5",
        "bytes=5-6;x",
        "bytes=٣-٥",
    ] {
        let r = c.get_with("/r", &[("range", range)]).await;
        match r.status {
            200 => assert_eq!(r.text(), BODY, "{range}"),
            206 => check_partial(&r, range),
            416 => assert_ne!(r.text(), BODY, "{range}"),
            s => panic!("{range}: status {s}"),
        }
    }
    assert_eq!(origin.count(), 1);
}

/// A range the store cannot answer goes to the origin; the 206 it returns is stored as a piece
/// of the representation its `Content-Range` names, never as the whole of it: the GET after it
/// is a miss that gets and stores the origin's complete response.
#[tokio::test]
async fn range_abuse_a_206_from_the_origin_is_never_stored_as_whole() {
    let (origin, _p, c) = serve(&clock(), |req, n| match req.header("range") {
        Some(_) => Reply::status(206).body("012").header("content-range", "bytes 0-2/38").cc("max-age=60"),
        None => Reply::ok(format!("{BODY}#{n}")).cc("max-age=60"),
    })
    .await;
    let partial = c.get_with("/w", &[("range", "bytes=0-2")]).await;
    assert_eq!((partial.status, partial.text()), (206, "012".to_string()));
    let whole = c.get("/w").await;
    assert_eq!((whole.text(), whole.cache_status()), (format!("{BODY}#2"), MISS_STORED));
    assert_eq!(origin.count(), 2);
}
