//! Conditional requests answered from the store (RFC 9110 §13, RFC 9111 §4.3.2).

use http::header::{self, HeaderMap, HeaderName};

use crate::clock::Millis;

/// Fields a 304 carries (RFC 9110 §15.4.5), besides those the cache adds (`Age`, `Cache-Status`).
pub const NOT_MODIFIED_FIELDS: &[HeaderName] = &[
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
    header::VIA,
];

/// Whether a conditional GET or HEAD is answered 304 rather than with the selected response:
/// only a 2xx response is compared (RFC 9110 §13.2.1: preconditions are ignored when the answer
/// without them would not be 2xx), `If-None-Match` before `If-Modified-Since` (§13.2.2), and
/// `last_modified` is the response's `Last-Modified`, else its `Date` (RFC 9111 §4.3.2). `now`
/// places a two-digit year in `If-Modified-Since`.
pub fn answer_not_modified(
    req: &HeaderMap,
    status: http::StatusCode,
    etag: Option<&[u8]>,
    last_modified: Millis,
    now: Millis,
) -> bool {
    status.is_success() && is_conditional(req) && not_modified(req, etag, last_modified, now)
}

/// True when the request has a precondition this cache evaluates.
pub fn is_conditional(req: &HeaderMap) -> bool {
    req.contains_key(header::IF_NONE_MATCH) || req.contains_key(header::IF_MODIFIED_SINCE)
}

/// Would a GET/HEAD with these request fields get 304 for a stored 2xx response with the given
/// `ETag` field value and `last_modified` time (its `Last-Modified`, else its `Date`: RFC 9111
/// §4.3.2)? (RFC 9110 §13.2.2: `If-None-Match` first; when it is present, `If-Modified-Since` is
/// ignored.)
pub fn not_modified(req: &HeaderMap, etag: Option<&[u8]>, last_modified: Millis, now: Millis) -> bool {
    if let Some(first) = req.get(header::IF_NONE_MATCH) {
        // The usual case: the client sends back the one tag it was given, byte for byte.
        if etag.is_some_and(|e| first.as_bytes() == e && is_entity_tag(e)) {
            return true;
        }
        let Some(etag) = etag.and_then(|v| std::str::from_utf8(v).ok()) else {
            // "*" matches any current representation.
            return req.get_all(header::IF_NONE_MATCH).iter().any(|v| v.to_str().is_ok_and(|s| s.trim() == "*"));
        };
        let Some(ours) = opaque_tag(etag.trim()) else {
            return false;
        };
        return req
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|list| list.trim() == "*" || EntityTags::new(list).any(|t| t == ours));
    }
    // RFC 9110 §13.1.3: "A recipient MUST ignore the If-Modified-Since header field if the
    // received field value is not a valid HTTP-date, the field value has more than one member
    // ..." (two field lines are two members).
    let mut ims = req.get_all(header::IF_MODIFIED_SINCE).iter();
    match (ims.next(), ims.next()) {
        (Some(one), None) => crate::clock::http_date(one.as_bytes(), now).is_some_and(|ims| last_modified <= ims),
        _ => false,
    }
}

/// True when `b` is one whole entity-tag (RFC 9110 §8.8.3): `"x"` or `W/"x"`, no `"` inside.
fn is_entity_tag(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"W/").unwrap_or(b);
    b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' && !b[1..b.len() - 1].contains(&b'"')
}

/// The opaque part of an entity-tag (`W/"x"` and `"x"` both give `"x"`): weak comparison.
fn opaque_tag(tag: &str) -> Option<&str> {
    let t = tag.strip_prefix("W/").unwrap_or(tag);
    (t.len() >= 2 && t.starts_with('"') && t.ends_with('"')).then_some(t)
}

/// Entity-tags of an `If-None-Match` list, commas inside quotes respected.
struct EntityTags<'a> {
    rest: &'a str,
}

impl<'a> EntityTags<'a> {
    fn new(s: &'a str) -> Self {
        EntityTags { rest: s }
    }
}

impl<'a> Iterator for EntityTags<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let s = self.rest.trim_start_matches([',', ' ', '\t']);
            if s.is_empty() {
                return None;
            }
            let body = s.strip_prefix("W/").unwrap_or(s);
            let start = s.len() - body.len();
            if let Some(after) = body.strip_prefix('"') {
                if let Some(end) = after.find('"') {
                    let tag = &body[..end + 2];
                    self.rest = &after[end + 1..];
                    let _ = start;
                    return Some(tag);
                }
                self.rest = "";
                return None;
            }
            // Not an entity-tag: skip to the next comma.
            match s.find(',') {
                Some(i) => self.rest = &s[i + 1..],
                None => self.rest = "",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers as req;
    use http::HeaderValue;

    #[test]
    fn weak_comparison_and_lists() {
        let etag = b"W/\"a1\"".as_slice();
        assert!(not_modified(&req(&[("if-none-match", "\"a1\"")]), Some(etag), 0, 0));
        assert!(not_modified(&req(&[("if-none-match", "\"x\", W/\"a1\"")]), Some(etag), 0, 0));
        assert!(not_modified(&req(&[("if-none-match", "\"x,y\", \"a1\"")]), Some(etag), 0, 0));
        assert!(not_modified(&req(&[("if-none-match", "*")]), Some(etag), 0, 0));
        assert!(!not_modified(&req(&[("if-none-match", "\"a2\"")]), Some(etag), 0, 0));
        assert!(!not_modified(&req(&[("if-none-match", "a1")]), Some(etag), 0, 0));
        // The same bytes as the stored tag match only when they are an entity-tag.
        assert!(not_modified(&req(&[("if-none-match", "W/\"a1\"")]), Some(etag), 0, 0));
        assert!(!not_modified(&req(&[("if-none-match", "a1")]), Some(b"a1".as_slice()), 0, 0));
        assert!(!not_modified(&req(&[("if-none-match", "\"a\"b\"")]), Some(b"\"a\"b\"".as_slice()), 0, 0));
        assert!(!not_modified(&req(&[("if-none-match", "W/")]), Some(b"W/".as_slice()), 0, 0));
        // A later field can match when the first does not.
        assert!(not_modified(&req(&[("if-none-match", "\"x\""), ("if-none-match", "\"a1\"")]), Some(etag), 0, 0));
        // A tag with obs-text (RFC 9110 §8.8.3: bytes 0x80-0xFF) sent back unchanged matches.
        let obs = b"\"a\xff\"".as_slice();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_bytes(obs).unwrap());
        assert!(not_modified(&h, Some(obs), 0, 0));
        assert!(!not_modified(&h, Some(b"\"a\xfe\"".as_slice()), 0, 0));
    }

    #[test]
    fn inm_takes_precedence_over_ims() {
        let etag = b"\"a1\"".as_slice();
        let h = req(&[("if-none-match", "\"zz\""), ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert!(!not_modified(&h, Some(etag), 0, 0));
    }

    #[test]
    fn if_modified_since() {
        let t = crate::clock::to_millis(httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap());
        let h = req(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert!(not_modified(&h, None, t, 0));
        assert!(!not_modified(&h, None, t + 1000, 0));
        assert!(!not_modified(&req(&[("if-modified-since", "yesterday")]), None, t, 0));
        let twice = req(&[
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(!not_modified(&twice, None, t, 0), "more than one member: ignored");
    }
}
