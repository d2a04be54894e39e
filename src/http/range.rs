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
    if !if_range_matches(req, etag, last_modified, now) {
        return RangeAnswer::Full;
    }
    match spec(range) {
        Some(spec) => spec.resolve(len),
        None => RangeAnswer::Full,
    }
}

/// True when the request has no `If-Range`, or one that matches (§13.1.5): an entity-tag equal to
/// the strong `etag`, or a date equal to the strong `last_modified`.
pub fn if_range_matches(
    req: &HeaderMap,
    etag: Option<&str>,
    last_modified: impl FnOnce() -> Option<Millis>,
    now: Millis,
) -> bool {
    let Some(if_range) = req.get(IF_RANGE) else { return true };
    let Ok(v) = if_range.to_str() else { return false };
    let v = v.trim();
    if v.starts_with('"') {
        // Strong comparison: weak tags never match.
        etag.is_some_and(|e| !e.starts_with("W/") && e == v)
    } else {
        crate::clock::http_date(v.as_bytes(), now).is_some_and(|d| last_modified() == Some(d))
    }
}

/// One byte range (RFC 9110 §14.1.2), before the length it applies to is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// `first-last` (`last` absent: to the end).
    From(u64, Option<u64>),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// The single byte range of a `Range` value; `None` for several ranges, another unit, or a
/// value that does not parse (the range is then ignored).
pub fn spec(range: &str) -> Option<Spec> {
    let spec = range.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        return digits(last).then(|| Spec::Suffix(last.parse().unwrap_or(u64::MAX)));
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return None;
    }
    let start: u64 = first.parse().unwrap_or(u64::MAX);
    let end = (!last.is_empty()).then(|| last.parse().unwrap_or(u64::MAX));
    if end.is_some_and(|end| end < start) {
        return None;
    }
    Some(Spec::From(start, end))
}

impl Spec {
    /// The bytes this range selects of a representation of `len` bytes.
    pub fn resolve(self, len: u64) -> RangeAnswer {
        match self {
            Spec::Suffix(n) if n == 0 || len == 0 => RangeAnswer::Unsatisfiable,
            Spec::Suffix(n) => RangeAnswer::Partial { start: len.saturating_sub(n), end: len - 1 },
            Spec::From(start, _) if start >= len => RangeAnswer::Unsatisfiable,
            Spec::From(start, end) => RangeAnswer::Partial { start, end: end.unwrap_or(u64::MAX).min(len - 1) },
        }
    }
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
