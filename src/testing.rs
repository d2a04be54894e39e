//! Helpers for the unit tests.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Header fields from (name, value) pairs, in order, repeated names kept.
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    map
}
