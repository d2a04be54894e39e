//! Header fields of a stored response, kept compactly.
//!
//! An `http::HeaderMap` costs about 110 bytes per field before the value itself (a bucket with
//! the name, the value's `Bytes` handle and the collision links, in a vector with spare capacity,
//! plus an index table). Stored per object that is more than the 1 KiB body of a typical small
//! object. Here the fields are one buffer, and a `HeaderMap` is rebuilt for each response served,
//! its values sharing the buffer.
//!
//! # Layout
//!
//! Each field is a tag byte, then for tag 0 the name's length (LEB128) and the name, then the
//! value's length (LEB128) and the value. A tag above 0 stands for `KNOWN[tag - 1]`, the names
//! most responses carry: a stored field then costs one byte of name, and a served one gets its
//! `HeaderName` without parsing. Lengths under 128 take one byte, so a field costs its value and
//! two bytes; nothing is scanned when the fields are read.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Names stored as a one-byte tag (index + 1). Append only: the order is not persisted (the
/// Redis envelope stores names as text), but changing it needs no more than a rebuild.
static KNOWN: [HeaderName; 43] = [
    header::ACCEPT_RANGES,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
    header::AGE,
    header::ALLOW,
    header::ALT_SVC,
    header::CACHE_CONTROL,
    header::CONTENT_DISPOSITION,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LENGTH,
    header::CONTENT_LOCATION,
    header::CONTENT_RANGE,
    header::CONTENT_SECURITY_POLICY,
    header::CONTENT_TYPE,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::LINK,
    header::LOCATION,
    header::PRAGMA,
    header::REFERRER_POLICY,
    header::RETRY_AFTER,
    header::SERVER,
    header::SET_COOKIE,
    header::STRICT_TRANSPORT_SECURITY,
    header::VARY,
    header::VIA,
    header::WARNING,
    header::WWW_AUTHENTICATE,
    header::X_CONTENT_TYPE_OPTIONS,
    header::X_FRAME_OPTIONS,
    header::X_XSS_PROTECTION,
    header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONNECTION,
];

/// The tag of `name`: its place in [`KNOWN`] plus one, or 0 for a name stored as text. (A
/// test checks both agree.)
fn tag_of(name: &HeaderName) -> u8 {
    match name.as_str() {
        "accept-ranges" => 1,
        "access-control-allow-credentials" => 2,
        "access-control-allow-headers" => 3,
        "access-control-allow-methods" => 4,
        "access-control-allow-origin" => 5,
        "access-control-expose-headers" => 6,
        "access-control-max-age" => 7,
        "age" => 8,
        "allow" => 9,
        "alt-svc" => 10,
        "cache-control" => 11,
        "content-disposition" => 12,
        "content-encoding" => 13,
        "content-language" => 14,
        "content-length" => 15,
        "content-location" => 16,
        "content-range" => 17,
        "content-security-policy" => 18,
        "content-type" => 19,
        "date" => 20,
        "etag" => 21,
        "expires" => 22,
        "last-modified" => 23,
        "link" => 24,
        "location" => 25,
        "pragma" => 26,
        "referrer-policy" => 27,
        "retry-after" => 28,
        "server" => 29,
        "set-cookie" => 30,
        "strict-transport-security" => 31,
        "vary" => 32,
        "via" => 33,
        "warning" => 34,
        "www-authenticate" => 35,
        "x-content-type-options" => 36,
        "x-frame-options" => 37,
        "x-xss-protection" => 38,
        "content-security-policy-report-only" => 39,
        "trailer" => 40,
        "transfer-encoding" => 41,
        "upgrade" => 42,
        "connection" => 43,
        _ => 0,
    }
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(b: &mut BytesMut, mut n: usize) {
    while n >= 0x80 {
        b.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    b.put_u8(n as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        n |= ((byte & 0x7f) as usize) << shift;
        if byte < 0x80 {
            return Some(n);
        }
    }
    None
}

/// True when `name` is one of the common names stored as a tag.
pub fn is_known(name: &HeaderName) -> bool {
    tag_of(name) != 0
}

/// The header fields of a stored response, in their original order.
///
/// The block starts with the number of fields (LEB128) and a flags byte (bit 0: every name is a
/// common one), so the struct is one `Bytes` and nothing else.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHeaders {
    block: Bytes,
}

impl std::fmt::Debug for StoredHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v)))).finish()
    }
}

/// One field's place in the block.
#[derive(Clone, Copy)]
struct Field {
    /// The name's tag (0: the name is in the block).
    tag: u8,
    /// Name bytes (empty for a tagged name).
    name: (usize, usize),
    /// Value bytes.
    value: (usize, usize),
}

impl StoredHeaders {
    /// Copies `map` into a compact form of its own (no byte of `map` is kept alive).
    pub fn from_map(map: &HeaderMap) -> Self {
        Self::from_map_where(map, |_| true)
    }

    /// As [`StoredHeaders::from_map`], keeping only the fields whose name `keep` accepts.
    pub fn from_map_where(map: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> Self {
        let kept = || map.iter().filter(|(n, _)| keep(n));
        let (mut count, mut all_known, mut bytes) = (0, true, 0);
        for (n, v) in kept() {
            count += 1;
            // The bytes the name takes in the block: none for a tagged name.
            let name = match tag_of(n) {
                0 => varint_len(n.as_str().len()) + n.as_str().len(),
                _ => 0,
            };
            all_known &= name == 0;
            bytes += 1 + name + varint_len(v.len()) + v.len();
        }
        // Exactly the size needed: the allocation is what the entry keeps.
        let mut block = BytesMut::with_capacity(varint_len(count) + 1 + bytes);
        put_varint(&mut block, count);
        block.put_u8(u8::from(all_known));
        for (name, value) in kept() {
            let tag = tag_of(name);
            block.put_u8(tag);
            if tag == 0 {
                put_varint(&mut block, name.as_str().len());
                block.put_slice(name.as_str().as_bytes());
            }
            put_varint(&mut block, value.len());
            block.put_slice(value.as_bytes());
        }
        StoredHeaders { block: block.freeze() }
    }

    /// The number of fields and where the first one starts.
    fn prefix(&self) -> (usize, usize) {
        let mut pos = 0;
        let count = get_varint(&self.block, &mut pos).unwrap_or(0);
        (count, pos + 1)
    }

    /// Each field's place.
    fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        let b = &self.block[..];
        let mut pos = self.prefix().1;
        std::iter::from_fn(move || {
            let tag = *b.get(pos)?;
            pos += 1;
            let mut name = (pos, pos);
            if tag == 0 {
                let len = get_varint(b, &mut pos)?;
                name = (pos, pos + len);
                pos += len;
            }
            let len = get_varint(b, &mut pos)?;
            let value = (pos, pos + len);
            pos += len;
            (pos <= b.len()).then_some(Field { tag, name, value })
        })
    }

    /// The name of `f`, as lowercase text.
    fn name_of(&self, f: &Field) -> &str {
        match f.tag {
            0 => std::str::from_utf8(&self.block[f.name.0..f.name.1]).unwrap_or(""),
            t => KNOWN.get(t as usize - 1).map_or("", HeaderName::as_str),
        }
    }

    fn value_of(&self, f: &Field) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.block.slice(f.value.0..f.value.1)).ok()
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
    pub fn select(&self, capacity: usize, keep: impl Fn(&str) -> bool) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(capacity);
        for f in self.fields() {
            let name = match f.tag {
                0 => match HeaderName::from_bytes(&self.block[f.name.0..f.name.1]) {
                    Ok(n) => n,
                    // It was valid when stored: this cannot happen, and would only drop the field.
                    Err(_) => continue,
                },
                t => match KNOWN.get(t as usize - 1) {
                    Some(n) => n.clone(),
                    None => continue,
                },
            };
            if !keep(name.as_str()) {
                continue;
            }
            if let Some(value) = self.value_of(&f) {
                map.append(name, value);
            }
        }
        map
    }

    /// The first field `name`.
    fn find(&self, name: &HeaderName) -> Option<Field> {
        // A common name is only ever stored as its tag: one byte compared per field.
        match tag_of(name) {
            0 => self.fields().find(|f| f.tag == 0 && &self.block[f.name.0..f.name.1] == name.as_str().as_bytes()),
            tag => self.fields().find(|f| f.tag == tag),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.find(name).and_then(|f| self.value_of(&f))
    }

    /// The first value of `name` as stored, without making a `HeaderValue` of it (its bytes were
    /// checked when it was stored).
    pub fn get_bytes(&self, name: &HeaderName) -> Option<&[u8]> {
        self.find(name).map(|f| &self.block[f.value.0..f.value.1])
    }

    /// True when a field `name` is present.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.find(name).is_some()
    }

    /// Every field, as (lowercase name, value bytes), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields().map(|f| (self.name_of(&f), &self.block[f.value.0..f.value.1]))
    }

    /// True when every name is a common one: no field has a name of its own.
    pub fn all_known(&self) -> bool {
        self.block.get(self.prefix().1 - 1).is_some_and(|flags| flags & 1 != 0)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.prefix().0
    }

    /// True when there is no field.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn tags_match_the_table() {
        for (i, name) in KNOWN.iter().enumerate() {
            assert_eq!(tag_of(name) as usize, i + 1, "{name}");
        }
        assert_eq!(tag_of(&HeaderName::from_static("x-custom")), 0);
    }

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
        // Nothing of the big buffer is kept; known names take one byte.
        assert_eq!(s.heap_size(), 2 + (1 + 1 + 10) + (1 + 1 + 7 + 1 + 3) + (1 + 1 + 7 + 1 + 6) + (1 + 1 + 4));
        assert_eq!(s.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["content-type", "x-multi", "x-multi", "etag"]);
        // select keeps every value of the chosen names.
        let multi = s.select(2, |n| n == "x-multi");
        assert_eq!(multi.get_all("x-multi").iter().count(), 2);
        assert_eq!(multi.len(), 2);
        let names: Vec<&str> = s.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["content-type", "x-multi", "x-multi", "etag"]);
    }

    #[test]
    fn long_names_and_values_round_trip() {
        let mut h = HeaderMap::new();
        let long_name = HeaderName::from_bytes("x-".repeat(100).as_bytes()).unwrap();
        let long_value = HeaderValue::from_str(&"v".repeat(70_000)).unwrap();
        h.append(long_name.clone(), long_value.clone());
        h.append(http::header::VIA, HeaderValue::from_static("1.1 edgecache"));
        let s = StoredHeaders::from_map(&h);
        assert_eq!(s.to_map(), h);
        assert_eq!(s.get(&long_name).unwrap(), long_value);
        assert!(!s.all_known());
        assert_eq!(s.heap_size(), 2 + 1 + 2 + 200 + 3 + 70_000 + 1 + 1 + 13);
    }
}
