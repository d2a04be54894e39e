//! `Cache-Control` parsing (RFC 9111 §5.2), for requests and responses alike.
//!
//! Directive names are case-insensitive (§5.2); values may be tokens or quoted strings, and a
//! comma inside a quoted string does not end the directive. When a directive appears twice, the
//! first occurrence is used (§4.2.1). A `delta-seconds` value that is not a plain run of digits
//! is invalid; an invalid freshness value makes the response stale (§4.2.1 "Caches are encouraged
//! to consider responses that have invalid freshness information ... to be stale"). Values larger
//! than 2^31 are clamped to 2^31 (§1.2.2).

use http::header::{HeaderMap, HeaderName};

/// Largest delta-seconds value kept (RFC 9111 §1.2.2).
pub const DELTA_MAX: u64 = 2_147_483_648;

/// A parsed delta-seconds argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// A valid value, clamped to [`DELTA_MAX`].
    Secs(u64),
    /// Present but not a valid delta-seconds (`max-age=abc`, `max-age=-1`, `max-age=1.5`).
    Invalid,
}

impl Delta {
    /// The value, with an invalid one read as `invalid_as`.
    pub fn or(self, invalid_as: u64) -> u64 {
        match self {
            Delta::Secs(s) => s,
            Delta::Invalid => invalid_as,
        }
    }
}

/// The directives this cache acts on. Unknown directives are ignored (§5.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age`
    pub max_age: Option<Delta>,
    /// `s-maxage`
    pub s_maxage: Option<Delta>,
    /// `max-stale`, with `Some(None)` for a bare `max-stale` (any staleness).
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh`
    pub min_fresh: Option<Delta>,
    /// `stale-while-revalidate` (RFC 5861)
    pub stale_while_revalidate: Option<Delta>,
    /// `stale-if-error` (RFC 5861)
    pub stale_if_error: Option<Delta>,
    /// Unqualified `no-cache` (or a qualified one with an empty list).
    pub no_cache: bool,
    /// Field names of a qualified `no-cache="a, b"`: those fields are not stored (§5.2.2.4).
    pub no_cache_fields: Vec<Box<str>>,
    /// `no-store`
    pub no_store: bool,
    /// Unqualified `private` (or a qualified one with an empty list).
    pub private: bool,
    /// Field names of a qualified `private="a, b"`: a shared cache does not store those fields
    /// (§5.2.2.7).
    pub private_fields: Vec<Box<str>>,
    /// `public`
    pub public: bool,
    /// `must-revalidate`
    pub must_revalidate: bool,
    /// `proxy-revalidate`
    pub proxy_revalidate: bool,
    /// `must-understand`
    pub must_understand: bool,
    /// `only-if-cached`
    pub only_if_cached: bool,
    /// `immutable` (RFC 8246)
    pub immutable: bool,
    /// `no-transform`
    pub no_transform: bool,
}

impl CacheControl {
    /// Parses every `name` field line of `headers` as one list.
    pub fn from_headers(headers: &HeaderMap, name: &HeaderName) -> Self {
        let mut cc = CacheControl::default();
        for value in headers.get_all(name) {
            // Byte-wise: a non-UTF-8 byte only makes the directive it is in unknown or invalid.
            cc.parse_into(value.as_bytes());
        }
        cc
    }

    /// Parses one field value.
    pub fn parse(value: &str) -> Self {
        let mut cc = CacheControl::default();
        cc.parse_into(value.as_bytes());
        cc
    }

    /// True when any directive was present in `headers` under `name`.
    pub fn present(headers: &HeaderMap, name: &HeaderName) -> bool {
        headers.get_all(name).iter().any(|v| !v.as_bytes().iter().all(|b| b.is_ascii_whitespace() || *b == b','))
    }

    fn parse_into(&mut self, value: &[u8]) {
        for (name, arg) in Directives::new(value) {
            // Lowercased on the stack: every directive this cache knows fits.
            let mut buf = [0u8; 24];
            let Some(lower) = buf.get_mut(..name.len()) else { continue };
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            match &*lower {
                b"max-age" => set_delta(&mut self.max_age, arg),
                b"s-maxage" => set_delta(&mut self.s_maxage, arg),
                b"min-fresh" => set_delta(&mut self.min_fresh, arg),
                b"stale-while-revalidate" => set_delta(&mut self.stale_while_revalidate, arg),
                b"stale-if-error" => set_delta(&mut self.stale_if_error, arg),
                // An invalid max-stale value allows no staleness.
                b"max-stale" if self.max_stale.is_none() => {
                    self.max_stale = Some(arg.map(|a| delta(a).or(0)));
                }
                b"no-cache" => field_list(arg, &mut self.no_cache, &mut self.no_cache_fields),
                b"no-store" => self.no_store = true,
                b"private" => field_list(arg, &mut self.private, &mut self.private_fields),
                b"public" => self.public = true,
                b"must-revalidate" => self.must_revalidate = true,
                b"proxy-revalidate" => self.proxy_revalidate = true,
                b"must-understand" => self.must_understand = true,
                b"only-if-cached" => self.only_if_cached = true,
                b"immutable" => self.immutable = true,
                b"no-transform" => self.no_transform = true,
                _ => {}
            }
        }
    }
}

/// A directive that is either unqualified or qualified with a quoted list of field names.
fn field_list(arg: Option<&[u8]>, unqualified: &mut bool, fields: &mut Vec<Box<str>>) {
    let list = arg.map(String::from_utf8_lossy).unwrap_or_default();
    let list = list.trim().trim_matches('"');
    let before = fields.len();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        fields.push(name.to_ascii_lowercase().into_boxed_str());
    }
    if fields.len() == before {
        *unqualified = true;
    }
}

/// Parses a targeted field (`Surrogate-Control`, W3C Edge Architecture): directives may carry a
/// `;target` suffix and then apply only when the target is `ours`. Returns `None` when the field
/// is absent or holds no directive for this cache, so that `Cache-Control` applies instead.
/// A directive targeted at this cache overrides the same directive without a target.
pub fn targeted(headers: &HeaderMap, name: &HeaderName, ours: &str) -> Option<CacheControl> {
    let mut mine = Vec::new();
    let mut untargeted = Vec::new();
    for value in headers.get_all(name) {
        for (dname, arg) in Directives::new(value.as_bytes()) {
            let (dname, arg, target) = match arg {
                Some(a) => match split_at_semicolon(a) {
                    Some((v, t)) => (dname, Some(v), Some(t.trim_ascii())),
                    None => (dname, Some(a), None),
                },
                None => match split_at_semicolon(dname) {
                    Some((n, t)) => (n, None, Some(t.trim_ascii())),
                    None => (dname, None, None),
                },
            };
            let applicable = match target {
                Some(t) if t.eq_ignore_ascii_case(ours.as_bytes()) => &mut mine,
                Some(_) => continue,
                None => &mut untargeted,
            };
            if !applicable.is_empty() {
                applicable.extend_from_slice(b", ");
            }
            applicable.extend_from_slice(dname.trim_ascii());
            if let Some(a) = arg {
                applicable.push(b'=');
                applicable.extend_from_slice(a);
            }
        }
    }
    // First occurrence wins when parsing: ours before the untargeted ones.
    let mut cc = CacheControl::default();
    cc.parse_into(&mine);
    cc.parse_into(&untargeted);
    (!(mine.is_empty() && untargeted.is_empty())).then_some(cc)
}

/// Parses a targeted cache-control field (RFC 9213 §2.1: `CDN-Cache-Control`, and this cache's
/// own field), which is a Structured Field Dictionary (RFC 8941 §3.2), not `Cache-Control`
/// syntax. Its field lines are one value (RFC 8941 §4.2: joined with a comma). Returns `None`,
/// so that the next field or `Cache-Control` applies, when the field is absent or empty, when it
/// does not parse as a Dictionary ("If a targeted field in a given response is empty, or a
/// parsing error is encountered, that field SHOULD be ignored by the cache"), and when a
/// directive this cache knows has a value of another type than its definition's (`max-age` and
/// the other delta-seconds take a non-negative Integer, the flags a Boolean, `no-cache` and
/// `private` a Boolean or a String of field names): RFC 9213 §2.1 asks that directives "MUST
/// have the appropriate value type". Unknown directives and parameters are ignored. A duplicated
/// key takes its last value (RFC 8941 §4.2.2).
pub fn structured(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let mut joined: Option<Vec<u8>> = None;
    for more in lines {
        let buf = joined.get_or_insert_with(|| first.as_bytes().to_vec());
        buf.extend_from_slice(b", ");
        buf.extend_from_slice(more.as_bytes());
    }
    let value = joined.as_deref().unwrap_or(first.as_bytes());
    let dict: sfv::Dictionary = sfv::Parser::new(value).with_version(sfv::Version::Rfc8941).parse().ok()?;
    if dict.is_empty() {
        return None;
    }
    let mut cc = CacheControl::default();
    for (key, entry) in &dict {
        let known = |k: &str| KNOWN_STRUCTURED.contains(&k);
        let sfv::ListEntry::Item(item) = entry else {
            // An inner list is no directive's type.
            if known(key.as_str()) {
                return None;
            }
            continue;
        };
        let bare = &item.bare_item;
        let secs = || {
            let n = i64::from(bare.as_integer()?);
            u64::try_from(n).ok().map(|n| Delta::Secs(n.min(DELTA_MAX)))
        };
        let flag = || bare.as_boolean();
        match key.as_str() {
            "max-age" => cc.max_age = Some(secs()?),
            "s-maxage" => cc.s_maxage = Some(secs()?),
            "stale-while-revalidate" => cc.stale_while_revalidate = Some(secs()?),
            "stale-if-error" => cc.stale_if_error = Some(secs()?),
            "no-store" => cc.no_store = flag()?,
            "public" => cc.public = flag()?,
            "must-revalidate" => cc.must_revalidate = flag()?,
            "proxy-revalidate" => cc.proxy_revalidate = flag()?,
            "must-understand" => cc.must_understand = flag()?,
            "immutable" => cc.immutable = flag()?,
            "no-transform" => cc.no_transform = flag()?,
            "no-cache" | "private" => {
                let (unqualified, fields) = match key.as_str() {
                    "no-cache" => (&mut cc.no_cache, &mut cc.no_cache_fields),
                    _ => (&mut cc.private, &mut cc.private_fields),
                };
                match (bare.as_boolean(), bare.as_string()) {
                    (Some(b), _) => *unqualified = b,
                    (_, Some(list)) => field_list(Some(list.as_str().as_bytes()), unqualified, fields),
                    _ => return None,
                }
            }
            _ => {}
        }
    }
    Some(cc)
}

/// The response directives [`structured`] reads, whose value types it checks.
const KNOWN_STRUCTURED: &[&str] = &[
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
    "no-store",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
    "immutable",
    "no-transform",
    "no-cache",
    "private",
];

/// `a;b` split at its first `;`.
fn split_at_semicolon(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == b';')?;
    Some((&s[..i], &s[i + 1..]))
}

fn set_delta(slot: &mut Option<Delta>, arg: Option<&[u8]>) {
    if slot.is_none() {
        *slot = Some(arg.map(delta).unwrap_or(Delta::Invalid));
    }
}

/// Parses `delta-seconds = 1*DIGIT` (RFC 9111 §1.2.2). A quoted value is accepted too
/// (recipients are asked to be lenient with `max-age="60"`).
pub fn parse_delta(s: &str) -> Delta {
    delta(s.as_bytes())
}

/// [`parse_delta`] on bytes.
fn delta(s: &[u8]) -> Delta {
    let s = s.trim_ascii();
    let s = s.strip_prefix(b"\"").and_then(|s| s.strip_suffix(b"\"")).unwrap_or(s);
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Delta::Invalid;
    }
    // Overflow saturates at DELTA_MAX.
    let mut v: u64 = 0;
    for &b in s {
        v = v.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        if v > DELTA_MAX {
            return Delta::Secs(DELTA_MAX);
        }
    }
    Delta::Secs(v)
}

/// Iterator over `name[=value]` directives of one field value, quoted strings respected. It
/// works on bytes: the grammar is ASCII, and whitespace around names and values is `OWS`
/// (space, tab), so no step needs the value as UTF-8.
struct Directives<'a> {
    rest: &'a [u8],
}

impl<'a> Directives<'a> {
    fn new(s: &'a [u8]) -> Self {
        Directives { rest: s }
    }
}

impl<'a> Iterator for Directives<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(start) = self.rest.iter().position(|&b| b != b',' && !b.is_ascii_whitespace()) else {
                self.rest = &[];
                return None;
            };
            let s = &self.rest[start..];
            // The end of this directive is the first comma outside quotes; its name ends at the
            // first `=`.
            let mut i = 0;
            let mut eq = None;
            let mut in_quotes = false;
            while i < s.len() {
                match s[i] {
                    b'\\' if in_quotes => i += 1,
                    b'"' => in_quotes = !in_quotes,
                    b',' if !in_quotes => break,
                    b'=' if eq.is_none() => eq = Some(i),
                    _ => {}
                }
                i += 1;
            }
            let end = i.min(s.len());
            let item = &s[..end];
            self.rest = &s[end..];
            let (name, arg) = match eq {
                Some(eq) => (item[..eq].trim_ascii(), Some(item[eq + 1..].trim_ascii())),
                None => (item.trim_ascii(), None),
            };
            if name.is_empty() {
                continue;
            }
            return Some((name, arg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        let cc = CacheControl::parse("Max-Age=60, NO-CACHE, Public");
        assert_eq!(cc.max_age, Some(Delta::Secs(60)));
        assert!(cc.no_cache && cc.public);
    }

    #[test]
    fn first_occurrence_wins() {
        let cc = CacheControl::parse("max-age=10, max-age=3600");
        assert_eq!(cc.max_age, Some(Delta::Secs(10)));
    }

    #[test]
    fn quoted_commas_do_not_split() {
        let cc = CacheControl::parse("private=\"set-cookie, x-foo\", max-age=5");
        assert_eq!(cc.private_fields.len(), 2);
        assert_eq!(cc.max_age, Some(Delta::Secs(5)));
        // A directive name inside a quoted value is not a directive.
        let cc = CacheControl::parse("foo=\"max-age=8\", max-age=1");
        assert_eq!(cc.max_age, Some(Delta::Secs(1)));
    }

    #[test]
    fn invalid_and_huge_values() {
        assert_eq!(parse_delta("abc"), Delta::Invalid);
        assert_eq!(parse_delta("-1"), Delta::Invalid);
        assert_eq!(parse_delta("1.5"), Delta::Invalid);
        assert_eq!(parse_delta(""), Delta::Invalid);
        assert_eq!(parse_delta("007"), Delta::Secs(7));
        assert_eq!(parse_delta("99999999999999999999999"), Delta::Secs(DELTA_MAX));
        assert_eq!(CacheControl::parse("max-age").max_age, Some(Delta::Invalid));
    }

    #[test]
    fn max_stale_bare_and_valued() {
        assert_eq!(CacheControl::parse("max-stale").max_stale, Some(None));
        assert_eq!(CacheControl::parse("max-stale=30").max_stale, Some(Some(30)));
    }

    #[test]
    fn qualified_no_cache_and_private() {
        let cc = CacheControl::parse("no-cache=\"Set-Cookie, X-A\", private=\"x-b\"");
        assert!(!cc.no_cache && !cc.private);
        assert_eq!(cc.no_cache_fields, vec!["set-cookie".into(), "x-a".into()] as Vec<Box<str>>);
        assert_eq!(cc.private_fields, vec!["x-b".into()] as Vec<Box<str>>);
        assert!(CacheControl::parse("no-cache=\"\"").no_cache);
    }

    #[test]
    fn surrogate_targets() {
        let mut h = HeaderMap::new();
        let name = HeaderName::from_static("surrogate-control");
        h.insert(&name, "max-age=60;other, no-store;edgecache".parse().unwrap());
        let cc = targeted(&h, &name, "edgecache").unwrap();
        assert!(cc.no_store);
        assert_eq!(cc.max_age, None);
        h.insert(&name, "max-age=60;other".parse().unwrap());
        assert_eq!(targeted(&h, &name, "edgecache"), None);
        h.insert(&name, "max-age=30, max-age=60;edgecache".parse().unwrap());
        assert_eq!(targeted(&h, &name, "edgecache").unwrap().max_age, Some(Delta::Secs(60)));
    }

    #[test]
    fn targeted_fields_are_structured_dictionaries() {
        let name = HeaderName::from_static("cdn-cache-control");
        let parse = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(&name, l.parse().unwrap());
            }
            structured(&h, &name)
        };
        let cc = parse(&["max-age=60, no-store, private=\"x-a, X-B\", foo=(1 2);p=1"]).unwrap();
        assert_eq!(
            (cc.max_age, cc.no_store, cc.private, cc.private_fields.len()),
            (Some(Delta::Secs(60)), true, false, 2)
        );
        assert_eq!(parse(&["max-age=10", "s-maxage=20"]).unwrap().s_maxage, Some(Delta::Secs(20)));
        assert_eq!(parse(&["max-age=10, max-age=30"]).unwrap().max_age, Some(Delta::Secs(30)), "the last wins");
        assert_eq!(parse(&["max-age=60;foo=bar"]).unwrap().max_age, Some(Delta::Secs(60)), "parameters ignored");
        assert!(!parse(&["no-store=?0"]).unwrap().no_store);
        assert_eq!(parse(&["max-age=99999999999"]).unwrap().max_age, Some(Delta::Secs(DELTA_MAX)));
        for ignored in [
            "",
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age=-1",
            "max-age=1.5",
            "max-age=abc",
            "no-store=1",
            "private=abc",
            "max-age=(1 2)",
            "Max-Age=60",
            "max-age = 60",
        ] {
            assert_eq!(parse(&[ignored]), None, "{ignored:?}");
        }
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn a_non_utf8_byte_spoils_only_its_own_directive() {
        let mut h = HeaderMap::new();
        let value = http::HeaderValue::from_bytes(b"max-age=60, x\xff=1, s-maxage=9\xff, public").unwrap();
        h.insert(http::header::CACHE_CONTROL, value);
        let cc = CacheControl::from_headers(&h, &http::header::CACHE_CONTROL);
        assert_eq!((cc.max_age, cc.s_maxage, cc.public), (Some(Delta::Secs(60)), Some(Delta::Invalid), true));
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in ["", ",,,", "=", "\"", "max-age=\"", "a=\"\\", "ünï=cödé", "max-age==5"] {
            let _ = CacheControl::parse(s);
        }
    }
}
