//! Vary (RFC 9111 §4.1): which request fields select a stored variant, and how their values are
//! normalized before comparison.

use http::header::{HeaderMap, HeaderName, ACCEPT_LANGUAGE, VARY};

/// The request field values a stored variant was selected by.
pub type VaryKey = Box<[(HeaderName, Option<Box<str>>)]>;

/// The field names listed in the response's `Vary`, or `Err(())` for `Vary: *`.
#[allow(clippy::result_unit_err)]
pub fn vary_names(resp: &HeaderMap) -> Result<Vec<HeaderName>, ()> {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in resp.get_all(VARY) {
        let Ok(s) = value.to_str() else { continue };
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                return Err(());
            }
            if let Ok(name) = HeaderName::from_bytes(item.to_ascii_lowercase().as_bytes()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    Ok(names)
}

/// Builds the [`VaryKey`] for a request, for the given `Vary` names.
pub fn vary_key(names: &[HeaderName], req: &HeaderMap) -> VaryKey {
    names.iter().map(|n| (n.clone(), normalized(n, req))).collect()
}

/// True when `req` selects the variant stored with `key` (§4.1).
pub fn matches(key: &VaryKey, req: &HeaderMap) -> bool {
    key.iter().all(|(name, stored)| normalized(name, req).as_deref() == stored.as_deref())
}

/// True when `req` selects the variant stored with `key` whose `Content-Language` is
/// `content_language`: [`matches`], or the same language chosen by quality values (RFC 9110
/// §12.5.4, §12.4.2).
///
/// The rule: every selecting field but `Accept-Language` matches as in [`matches`]; for
/// `Accept-Language`, the request's most preferred language range (the one with the highest
/// `q`, above 0, held by no other range, not `*`) equals, case-insensitively, the one language
/// tag in the stored response's `Content-Language`. The origin chose that language for the
/// stored variant, so it has it; a request whose first choice is exactly that language gets it
/// from any origin that negotiates by quality values, whatever else the request lists. Ties, a
/// wildcard, an invalid `q`, or a `Content-Language` with several tags never match this way.
pub fn selects(key: &VaryKey, req: &HeaderMap, content_language: Option<&[u8]>) -> bool {
    matches(key, req) || same_language(key, req, content_language)
}

/// The `Accept-Language` half of [`selects`]: false when `key` was not selected by
/// `Accept-Language`.
pub fn same_language(key: &VaryKey, req: &HeaderMap, content_language: Option<&[u8]>) -> bool {
    if !key.iter().any(|(name, _)| name == ACCEPT_LANGUAGE) {
        return false;
    }
    let Some(tag) = content_language.map(<[u8]>::trim_ascii).filter(|t| !t.is_empty() && !t.contains(&b',')) else {
        return false;
    };
    let Some(top) = most_preferred_language(req) else { return false };
    top.as_bytes().eq_ignore_ascii_case(tag)
        && key
            .iter()
            .filter(|(name, _)| name != ACCEPT_LANGUAGE)
            .all(|(name, stored)| normalized(name, req).as_deref() == stored.as_deref())
}

/// The request's most preferred language range: the one with the highest quality value, when
/// it is above 0, held by that range alone, and not `*`. `None` for anything else, including a
/// member that does not parse.
fn most_preferred_language(req: &HeaderMap) -> Option<String> {
    let mut best: Option<(u16, String)> = None;
    let mut tied = false;
    for value in req.get_all(ACCEPT_LANGUAGE) {
        for member in value.to_str().ok()?.split(',') {
            let mut parts = member.split(';').map(str::trim);
            let range = parts.next().unwrap_or_default();
            if range.is_empty() {
                continue;
            }
            let mut q = 1000;
            for param in parts {
                let (name, v) = param.split_once('=')?;
                if name.trim().eq_ignore_ascii_case("q") {
                    q = qvalue(v.trim())?;
                }
            }
            match &best {
                Some((b, _)) if q < *b => {}
                Some((b, _)) if q == *b => tied = true,
                _ => {
                    best = Some((q, range.to_ascii_lowercase()));
                    tied = false;
                }
            }
        }
    }
    let (q, range) = best?;
    (q > 0 && !tied && range != "*").then_some(range)
}

/// A quality value (RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`) in thousandths.
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Fields whose values are case-insensitive lists where order carries no meaning (preference is
/// given by `q` weights): these are lowercased and sorted.
fn is_unordered_list(name: &HeaderName) -> bool {
    matches!(name.as_str(), "accept" | "accept-encoding" | "accept-language" | "accept-charset")
}

/// The value of `name` in `req`, normalized: every field line combined, list members trimmed,
/// whitespace inside members collapsed; for unordered list fields, lowercased and sorted.
/// `None` when the field is absent.
pub fn normalized(name: &HeaderName, req: &HeaderMap) -> Option<Box<str>> {
    let mut iter = req.get_all(name).iter().peekable();
    iter.peek()?;
    let mut members: Vec<String> = Vec::new();
    for value in iter {
        let s = String::from_utf8_lossy(value.as_bytes());
        for m in s.split(',') {
            let m: String = m.split([' ', '\t']).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ");
            // "gzip ; q=1" and "gzip;q=1" are the same member.
            let m = m.replace(" ;", ";").replace("; ", ";").replace(" =", "=").replace("= ", "=");
            if !m.is_empty() {
                members.push(m);
            }
        }
    }
    if is_unordered_list(name) {
        for m in &mut members {
            m.make_ascii_lowercase();
        }
        members.sort_unstable();
        members.dedup();
    }
    Some(members.join(", ").into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers as req;

    #[test]
    fn star_and_names() {
        assert!(vary_names(&req(&[("vary", "accept, *")])).is_err());
        let names = vary_names(&req(&[("vary", "Accept-Encoding, accept-language"), ("vary", "X-Foo")])).unwrap();
        assert_eq!(names, vec!["accept-encoding", "accept-language", "x-foo"]);
    }

    #[test]
    fn unordered_lists_normalize() {
        let n = HeaderName::from_static("accept-encoding");
        let a = normalized(&n, &req(&[("accept-encoding", "gzip,  br")]));
        let b = normalized(&n, &req(&[("accept-encoding", "BR"), ("accept-encoding", "gzip")]));
        assert_eq!(a, b);
        assert_eq!(normalized(&n, &req(&[])), None);
        assert_ne!(normalized(&n, &req(&[("accept-encoding", "")])), None);
    }

    #[test]
    fn the_same_language_chosen_by_quality_values_selects_the_variant() {
        let key: VaryKey = Box::new([(ACCEPT_LANGUAGE, Some("de, en".into()))]);
        let de = Some(b"de".as_slice());
        let lang = |v: &str| req(&[("accept-language", v)]);
        assert!(selects(&key, &lang("fr;q=0.5, de;q=1.0"), de));
        assert!(selects(&key, &lang("DE"), de));
        assert!(selects(&key, &lang("fr;q=0.2, de;q=0.3, *;q=0.1"), Some(b" De ".as_slice())));
        assert!(selects(&key, &req(&[("accept-language", "fr;q=0.5"), ("accept-language", "de")]), de));
        for other in ["fr, de", "de, fr", "fr;q=0.5, de;q=0.5", "de;q=0", "*", "de;q=2", "de;q=abc", "de-AT", ""] {
            assert!(!selects(&key, &lang(other), de), "{other:?}");
        }
        assert!(!selects(&key, &req(&[]), de));
        assert!(!selects(&key, &lang("de"), None));
        assert!(!selects(&key, &lang("de"), Some(b"de, en".as_slice())));
        // Other selecting fields still match exactly.
        let both: VaryKey =
            Box::new([(ACCEPT_LANGUAGE, Some("de".into())), (HeaderName::from_static("x-a"), Some("1".into()))]);
        assert!(selects(&both, &req(&[("accept-language", "de;q=0.9"), ("x-a", "1")]), de));
        assert!(!selects(&both, &req(&[("accept-language", "de;q=0.9"), ("x-a", "2")]), de));
        // Not selected by Accept-Language: no language rule.
        let plain: VaryKey = Box::new([(HeaderName::from_static("x-a"), Some("1".into()))]);
        assert!(!selects(&plain, &req(&[("accept-language", "de"), ("x-a", "2")]), de));
    }

    #[test]
    fn other_fields_keep_case_and_order() {
        let n = HeaderName::from_static("x-foo");
        assert_ne!(normalized(&n, &req(&[("x-foo", "a, b")])), normalized(&n, &req(&[("x-foo", "b, a")])));
        assert_eq!(normalized(&n, &req(&[("x-foo", " a ,b ")])), normalized(&n, &req(&[("x-foo", "a, b")])));
        assert_ne!(normalized(&n, &req(&[("x-foo", "A")])), normalized(&n, &req(&[("x-foo", "a")])));
    }
}
