//! Partial content (RFC 9111 §3.3, §3.4; RFC 9110 §14): `206` responses stored as pieces, ranges
//! answered from them, pieces combined into a complete response, and ranges of objects not
//! stored fetched in aligned slices (`cache.slice_size`).

pub mod common;

use std::sync::{Arc, Mutex};

use common::*;

/// The slice size of these tests.
const SLICE: u64 = 1024;

/// An origin serving `body` with byte ranges (one range per request, as RFC 9110 §14.2 allows),
/// `ETag: "{tag}"` of the current `tag` (changed through the returned handle) and max-age=60.
/// It ignores `If-Range`, as a server may that does not support it.
fn ranged(body: &'static [u8]) -> (Arc<Mutex<&'static str>>, impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) {
    let tag = Arc::new(Mutex::new("v1"));
    let current = tag.clone();
    let handler = move |req: &Seen, _: usize| {
        let tag = format!("\"{}\"", current.lock().unwrap());
        let whole = || Reply::ok(body).cc("max-age=60").header("etag", &tag);
        let Some(spec) = req.header("range").and_then(|r| r.strip_prefix("bytes=")) else { return whole() };
        let len = body.len();
        let (first, last) = spec.split_once('-').expect("a byte range");
        let (start, end) = match (first.parse::<usize>(), last.parse::<usize>()) {
            (Ok(s), Ok(e)) => (s, e.min(len - 1)),
            (Ok(s), Err(_)) => (s, len - 1),
            (Err(_), Ok(n)) => (len.saturating_sub(n), len - 1),
            _ => return whole(),
        };
        Reply::status(206)
            .body(&body[start..=end])
            .cc("max-age=60")
            .header("etag", &tag)
            .header("content-range", format!("bytes {start}-{end}/{len}"))
    };
    (tag, handler)
}

/// 3000 bytes: slices 0-1023, 1024-2047, 2048-2999.
static BODY: [u8; 3000] = {
    let mut b = [0u8; 3000];
    let mut i = 0;
    while i < 3000 {
        b[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    b
};

/// A proxy with 1 KiB slices in front of [`ranged`]`(BODY)`.
async fn slicing(max_object: u64) -> (Arc<Mutex<&'static str>>, Origin, edgecache::Running, Client) {
    let clock = clock();
    let (tag, handler) = ranged(&BODY);
    let (origin, p, c) = serve_with(
        &clock,
        |cfg| {
            cfg.cache.slice_bytes = SLICE;
            cfg.cache.max_object_bytes = max_object;
        },
        handler,
    )
    .await;
    (tag, origin, p, c)
}

/// RFC 9111 §3.3: "A cache MAY complete a stored incomplete response by making a subsequent range
/// request"; a range of an object not stored is asked for as the aligned slice that holds it.
#[tokio::test]
async fn a_range_of_an_object_not_stored_is_fetched_as_its_aligned_slice() {
    let (_tag, origin, _p, c) = slicing(8 << 20).await;
    let r = c.get_with("/a", &[("range", "bytes=1100-1199")]).await;
    assert_eq!(
        (r.status, r.header("content-range"), &r.body[..], origin.last().header("range")),
        (206, Some("bytes 1100-1199/3000"), &BODY[1100..1200], Some("bytes=1024-2047"))
    );
}

/// RFC 9111 §3.3: "A cache MUST NOT use an incomplete response to answer requests unless ... the
/// request is partial and specifies a range wholly within the complete portion."
#[tokio::test]
async fn a_range_within_a_stored_slice_is_a_hit() {
    let (_tag, origin, _p, c) = slicing(8 << 20).await;
    c.get_with("/a", &[("range", "bytes=1100-1199")]).await;
    let r = c.get_with("/a", &[("range", "bytes=1024-1030")]).await;
    assert_eq!((r.status, &r.body[..], r.cache_status()), (206, &BODY[1024..1031], hit(60).as_str()));
    assert_eq!(origin.count(), 1);
}

/// RFC 9111 §3.4: "A cache MAY combine these ranges into a single stored response, and reuse that
/// response to satisfy later requests, if they all share the same strong validator".
#[tokio::test]
async fn slices_that_add_up_are_combined_into_a_complete_response() {
    let (_tag, origin, _p, c) = slicing(8 << 20).await;
    let r = c.get_with("/a", &[("range", "bytes=0-")]).await;
    assert_eq!((r.status, r.body.len()), (206, 3000), "the client's range spans the three slices");
    let r = c.get("/a").await;
    assert_eq!((r.status, &r.body[..], r.cache_status()), (200, &BODY[..], hit(60).as_str()));
    assert_eq!(origin.count(), 3);
}

/// Slices are what makes an object larger than `max_object_size` cacheable: each is stored as
/// a piece of its own, and a range they hold is a hit.
#[tokio::test]
async fn an_object_larger_than_max_object_size_is_cached_in_slices() {
    let (_tag, origin, _p, c) = slicing(2048).await;
    c.get_with("/a", &[("range", "bytes=0-")]).await;
    let r = c.get_with("/a", &[("range", "bytes=1000-2999")]).await;
    assert_eq!((r.status, &r.body[..], r.cache_status()), (206, &BODY[1000..], hit(60).as_str()));
    assert_eq!(origin.count(), 3);
}

/// Slices are stored in the memory tier and weighed like every stored object.
#[tokio::test]
async fn slices_count_against_the_memory_budget() {
    let (_tag, _origin, p, c) = slicing(2048).await;
    let before = p.proxy().memory().weighted_size();
    c.get_with("/a", &[("range", "bytes=0-")]).await;
    let grown = p.proxy().memory().weighted_size() - before;
    assert!((3000..3000 + 4096).contains(&grown), "3000 bytes of slices weigh {grown}");
}

/// RFC 9111 §3.3: "a 206 (Partial Content) response MAY be stored as if it were an incomplete 200
/// (OK) response". A suffix range of an object of unknown length is forwarded as asked.
#[tokio::test]
async fn a_stored_206_answers_a_range_it_holds() {
    let clock = clock();
    let (origin, _p, c) = serve(&clock, |_, n| {
        Reply::status(206).body(format!("0123{n}")).cc("max-age=3600").header("content-range", "bytes 4-8/10")
    })
    .await;
    let r = c.get_with("/a", &[("range", "bytes=-6")]).await;
    assert_eq!((r.status, r.text().as_str(), origin.last().header("range")), (206, "01231", Some("bytes=-6")));
    let r = c.get_with("/a", &[("range", "bytes=6-8")]).await;
    assert_eq!((r.status, r.text().as_str(), r.header("content-range")), (206, "231", Some("bytes 6-8/10")));
}

/// RFC 9111 §3.4: pieces are combined only if "they all share the same strong validator"; a
/// piece of another representation replaces the stored ones, never mixes with them.
#[tokio::test]
async fn a_piece_with_another_etag_replaces_the_stored_pieces() {
    let (tag, origin, _p, c) = slicing(2048).await;
    c.get_with("/a", &[("range", "bytes=0-10")]).await;
    *tag.lock().unwrap() = "v2";
    let r = c.get_with("/a", &[("range", "bytes=1100-1110")]).await;
    assert_eq!((r.status, r.header("etag")), (206, Some("\"v2\"")));
    let r = c.get_with("/a", &[("range", "bytes=0-10")]).await;
    assert_eq!((r.header("etag"), r.cache_status()), (Some("\"v2\""), "edgecache; fwd=partial; fwd-status=206"));
    assert_eq!(origin.count(), 3);
}

/// RFC 9110 §13.1.5: a range is sent only "if the representation is unchanged"; an `If-Range`
/// that does not match the stored pieces' strong validator goes to the origin, which sends the
/// whole representation.
#[tokio::test]
async fn if_range_not_matching_the_stored_pieces_goes_to_the_origin() {
    let (_tag, origin, _p, c) = slicing(8 << 20).await;
    c.get_with("/a", &[("range", "bytes=0-10")]).await;
    let r = c.get_with("/a", &[("range", "bytes=0-10"), ("if-range", "\"v0\"")]).await;
    assert_eq!(
        (r.cache_status(), origin.last().header("if-range")),
        ("edgecache; fwd=bypass; fwd-status=206; detail=partial", Some("\"v0\""))
    );
}

/// RFC 9110 §13.1.5: with `If-Range`, the range is wanted only "if the representation is
/// unchanged", which only the origin can tell of an object not stored: the request goes as asked.
#[tokio::test]
async fn if_range_on_an_object_not_stored_goes_to_the_origin_as_asked() {
    let (_tag, origin, _p, c) = slicing(8 << 20).await;
    c.get_with("/a", &[("range", "bytes=1100-1199"), ("if-range", "\"v0\"")]).await;
    let seen = origin.last();
    assert_eq!((seen.header("range"), seen.header("if-range")), (Some("bytes=1100-1199"), Some("\"v0\"")));
}

/// A response that may not be stored (RFC 9111 §3: `private` for a shared cache) marks its URL
/// hit-for-pass: the next range goes to the origin as asked, not as a slice.
#[tokio::test]
async fn a_range_of_a_url_whose_pieces_may_not_be_stored_goes_as_asked() {
    let clock = clock();
    let (origin, _p, c) = serve_with(
        &clock,
        |cfg| cfg.cache.slice_bytes = SLICE,
        |_, _| Reply::status(206).body("0123456789").cc("private").header("content-range", "bytes 0-9/3000"),
    )
    .await;
    c.get_with("/a", &[("range", "bytes=0-9")]).await;
    c.get_with("/a", &[("range", "bytes=0-9")]).await;
    assert_eq!(origin.last().header("range"), Some("bytes=0-9"));
}
