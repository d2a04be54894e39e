//! Byte ranges (RFC 9110 §14) served from a complete stored response.
//!
//! One range per request is served as `206`; a request for several ranges gets the whole
//! representation (`200`), which RFC 9110 §14.2 allows.

use http::header::{HeaderMap, IF_RANGE};

use crate::clock::Millis;

/// What to send for a `Range` request against a stored body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Ignore the range: send the whole representation.
    Full,
    /// Send bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// No requested byte exists: `416`.
    Unsatisfiable,
}

/// Evaluates `range` (the request's `Range` value) and its `If-Range` (§13.1.5) against a stored
/// body of `len` bytes with the given `etag` (matched only when strong) and `last_modified`
/// (the stored `Last-Modified` when it is a strong validator, else `None`: a date then never
/// matches; asked only for an `If-Range` with a date). `now` places a two-digit year.
pub fn evaluate(
    range: &str,
    req: &HeaderMap,
    len: u64,
    etag: Option<&str>,
    last_modified: impl FnOnce() -> Option<Millis>,
    now: Millis,
) -> RangeAnswer {
    if let Some(if_range) = req.get(IF_RANGE) {
        let Ok(v) = if_range.to_str() else { return RangeAnswer::Full };
        let v = v.trim();
        let matches = if v.starts_with('"') {
            // Strong comparison: weak tags never match.
            etag.is_some_and(|e| !e.starts_with("W/") && e == v)
        } else {
            crate::clock::http_date(v.as_bytes(), now).is_some_and(|d| last_modified() == Some(d))
        };
        if !matches {
            return RangeAnswer::Full;
        }
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else { return RangeAnswer::Full };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeAnswer::Full };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        if !digits(last) {
            return RangeAnswer::Full;
        }
        let n: u64 = last.parse().unwrap_or(u64::MAX);
        if n == 0 || len == 0 {
            return RangeAnswer::Unsatisfiable;
        }
        return RangeAnswer::Partial { start: len.saturating_sub(n), end: len - 1 };
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return RangeAnswer::Full;
    }
    let start: u64 = first.parse().unwrap_or(u64::MAX);
    let end: u64 = if last.is_empty() { u64::MAX } else { last.parse().unwrap_or(u64::MAX) };
    if end < start {
        return RangeAnswer::Full;
    }
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial { start, end: end.min(len - 1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(range: &str, len: u64) -> RangeAnswer {
        evaluate(range, &HeaderMap::new(), len, None, || None, 0)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(ev("bytes=0-1", 10), RangeAnswer::Partial { start: 0, end: 1 });
        assert_eq!(ev("bytes=1-", 10), RangeAnswer::Partial { start: 1, end: 9 });
        assert_eq!(ev("bytes=-1", 10), RangeAnswer::Partial { start: 9, end: 9 });
        assert_eq!(ev("bytes=-50", 10), RangeAnswer::Partial { start: 0, end: 9 });
        assert_eq!(ev("bytes=5-100", 10), RangeAnswer::Partial { start: 5, end: 9 });
        assert_eq!(ev("bytes=10-", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(ev("bytes=0-1,3-4", 10), RangeAnswer::Full);
        assert_eq!(ev("items=0-1", 10), RangeAnswer::Full);
        assert_eq!(ev("bytes=x-1", 10), RangeAnswer::Full);
        assert_eq!(ev("bytes=3-1", 10), RangeAnswer::Full);
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let mut h = HeaderMap::new();
        h.insert(IF_RANGE, "\"v1\"".parse().unwrap());
        assert_eq!(
            evaluate("bytes=0-1", &h, 10, Some("\"v1\""), || None, 0),
            RangeAnswer::Partial { start: 0, end: 1 }
        );
        assert_eq!(evaluate("bytes=0-1", &h, 10, Some("\"v2\""), || None, 0), RangeAnswer::Full);
        assert_eq!(evaluate("bytes=0-1", &h, 10, Some("W/\"v1\""), || None, 0), RangeAnswer::Full);
    }
}
