//! Header fields of a stored response, kept compactly.
//!
//! An `http::HeaderMap` costs about 110 bytes per field before the value itself (a bucket with
//! the name, the value's `Bytes` handle and the collision links, in a vector with spare capacity,
//! plus an index table). Stored per object that is more than the 1 KiB body of a typical small
//! object. Here the fields are one buffer, `name:value\n` after each other (names are lowercase
//! tokens without `:`, values never contain a newline), and a `HeaderMap` is rebuilt for each
//! response served, its values sharing the buffer.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header fields of a stored response, in their original order.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHeaders {
    block: Bytes,
    /// Number of fields, so a served map is sized without a scan.
    count: u32,
}

impl std::fmt::Debug for StoredHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v)))).finish()
    }
}

impl StoredHeaders {
    /// Copies `map` into a compact form of its own (no byte of `map` is kept alive).
    pub fn from_map(map: &HeaderMap) -> Self {
        let total: usize = map.iter().map(|(n, v)| n.as_str().len() + v.len() + 2).sum();
        let mut block = BytesMut::with_capacity(total);
        let mut count = 0;
        for (name, value) in map {
            count += 1;
            block.extend_from_slice(name.as_str().as_bytes());
            block.extend_from_slice(b":");
            block.extend_from_slice(value.as_bytes());
            block.extend_from_slice(b"\n");
        }
        StoredHeaders { block: block.freeze(), count }
    }

    /// Offsets of each field: (name start, value start, value end).
    fn fields(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let b = &self.block[..];
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= b.len() {
                return None;
            }
            let colon = pos + b[pos..].iter().position(|&c| c == b':')?;
            let end = colon + 1 + b[colon + 1..].iter().position(|&c| c == b'\n')?;
            let field = (pos, colon + 1, end);
            pos = end + 1;
            Some(field)
        })
    }

    /// A `HeaderMap` of these fields; values share this buffer (no copy).
    pub fn to_map(&self) -> HeaderMap {
        self.to_map_with_capacity(0)
    }

    /// As [`StoredHeaders::to_map`], with room for `extra` more fields.
    pub fn to_map_with_capacity(&self, extra: usize) -> HeaderMap {
        self.select(self.len() + extra, |_| true)
    }

    /// A `HeaderMap` of the fields whose name `keep` accepts (every value of each), in a map
    /// sized for `capacity` fields.
    pub fn select(&self, capacity: usize, keep: impl Fn(&[u8]) -> bool) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(capacity);
        for (ns, vs, ve) in self.fields().filter(|&(ns, vs, _)| keep(&self.block[ns..vs - 1])) {
            // Both were valid when stored; a failure here cannot happen, and would only drop
            // the field.
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&self.block[ns..vs - 1]),
                HeaderValue::from_maybe_shared(self.block.slice(vs..ve)),
            ) else {
                continue;
            };
            map.append(name, value);
        }
        map
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        let wanted = name.as_str().as_bytes();
        self.fields()
            .find(|&(ns, vs, _)| &self.block[ns..vs - 1] == wanted)
            .and_then(|(_, vs, ve)| HeaderValue::from_maybe_shared(self.block.slice(vs..ve)).ok())
    }

    /// True when a field `name` is present.
    pub fn contains(&self, name: &HeaderName) -> bool {
        let wanted = name.as_str().as_bytes();
        self.fields().any(|(ns, vs, _)| &self.block[ns..vs - 1] == wanted)
    }

    /// Every field, as (lowercase name, value bytes), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields().map(|(ns, vs, ve)| {
            let name = std::str::from_utf8(&self.block[ns..vs - 1]).unwrap_or("");
            (name, &self.block[vs..ve])
        })
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when there is no field.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }

    /// Bytes held.
    pub fn heap_size(&self) -> usize {
        self.block.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_order_duplicates_and_sharing() {
        let big = Bytes::from(vec![b'a'; 64 << 10]);
        let mut h = HeaderMap::new();
        h.append("content-type", HeaderValue::from_static("text/plain"));
        h.append("x-multi", HeaderValue::from_maybe_shared(big.slice(0..3)).unwrap());
        h.append("x-multi", HeaderValue::from_static("second"));
        h.append(http::header::ETAG, HeaderValue::from_static("\"v1\""));
        let s = StoredHeaders::from_map(&h);
        assert_eq!(s.to_map(), h);
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(&http::header::ETAG).unwrap(), "\"v1\"");
        assert!(s.contains(&HeaderName::from_static("x-multi")));
        assert!(!s.contains(&http::header::LAST_MODIFIED));
        // Nothing of the big buffer is kept.
        assert_eq!(s.heap_size(), 53 + 4 * 2);
        // select keeps every value of the chosen names.
        let multi = s.select(2, |n| n == b"x-multi");
        assert_eq!(multi.get_all("x-multi").iter().count(), 2);
        assert_eq!(multi.len(), 2);
        let names: Vec<&str> = s.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["content-type", "x-multi", "x-multi", "etag"]);
    }
}
