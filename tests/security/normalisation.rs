//! Path and query normalisation: the key and the request forwarded to the origin are built from
//! the same bytes, so no spelling of a path (dot segments, encoded dots, `//`, case, a fragment,
//! query order) can be stored under one path and fetched from another.
//!
//! Covered elsewhere: path and query forwarded verbatim and keyed exactly, `/p` and `/p?` apart
//! (`forwarding::path_and_query_are_forwarded_verbatim_and_keyed_exactly`); the key encoding is
//! injective (`fuzz::cache_key_distinct_parts_never_share_a_key`).

use crate::common::*;

async fn echo() -> (Origin, edgecache::Running) {
    let (origin, p, _c) = serve(&clock(), |req, n| Reply::ok(format!("{} #{n}", req.path())).cc("max-age=60")).await;
    (origin, p)
}

async fn get(p: &edgecache::Running, target: &str) -> RawResp {
    let req = format!("GET {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n");
    raw_request(p.addr(), req.as_bytes()).await
}

/// Every spelling is forwarded as written and is an entry of its own: the proxy normalises
/// nothing the origin might not, so what it stores is what the origin said for that target.
#[tokio::test]
async fn normalisation_dot_segments_encoded_dots_and_double_slashes_are_forwarded_as_keyed() {
    let (origin, p) = echo().await;
    let targets = [
        "/a/b",
        "/a/../a/b",
        "/a/./b",
        "/a/%2e%2e/a/b",
        "/a/%2E/b",
        "/a//b",
        "//a/b",
        "/a/b/",
        "/A/b",
        "/a%2fb",
        "/a/b?x=1&y=2",
        "/a/b?y=2&x=1",
        "/a/b?x=1&x=2",
        "/a/b?",
    ];
    for (i, t) in targets.iter().enumerate() {
        let r = get(&p, t).await;
        assert_eq!(String::from_utf8_lossy(&r.body), format!("{t} #{}", i + 1), "{t}");
        assert_eq!(origin.last().path(), *t, "forwarded as keyed");
    }
    for (i, t) in targets.iter().enumerate() {
        let r = get(&p, t).await;
        assert_eq!(String::from_utf8_lossy(&r.body), format!("{t} #{}", i + 1), "{t} served another target's entry");
        assert_eq!(r.header("cache-status"), Some("edgecache; hit; ttl=60"), "{t}");
    }
    assert_eq!(origin.count(), targets.len());
}

/// Traffic Server's CVE-2021-27577: a fragment in the request target was handled differently for
/// the key and the origin. Here the fragment (which a client never sends: RFC 9112 §3.2) is
/// dropped from both alike when the target is parsed: the request is the fragment-less
/// target's, and shares its entry.
#[tokio::test]
async fn normalisation_ats_cve_2021_27577_a_fragment_is_never_keyed_apart_from_what_is_forwarded() {
    let (origin, p) = echo().await;
    get(&p, "/f").await;
    let r = get(&p, "/f#/evil").await;
    assert_eq!(String::from_utf8_lossy(&r.body), "/f #1");
    assert_eq!(r.header("cache-status"), Some("edgecache; hit; ttl=60"));
    // An encoded `#` is part of the path: another target, forwarded as written.
    let r = get(&p, "/f%23/evil").await;
    assert_eq!(String::from_utf8_lossy(&r.body), "/f%23/evil #2");
    assert_eq!(origin.count(), 2);
}
