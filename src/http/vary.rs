//! Vary (RFC 9111 §4.1): which request fields select a stored variant, and how their values are
//! normalized before comparison.

use http::header::{HeaderMap, HeaderName, VARY};

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
    fn other_fields_keep_case_and_order() {
        let n = HeaderName::from_static("x-foo");
        assert_ne!(normalized(&n, &req(&[("x-foo", "a, b")])), normalized(&n, &req(&[("x-foo", "b, a")])));
        assert_eq!(normalized(&n, &req(&[("x-foo", " a ,b ")])), normalized(&n, &req(&[("x-foo", "a, b")])));
        assert_ne!(normalized(&n, &req(&[("x-foo", "A")])), normalized(&n, &req(&[("x-foo", "a")])));
    }
}
