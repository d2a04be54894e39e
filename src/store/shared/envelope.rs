//! The versioned binary envelope a stored response travels in through the shared tier.
//!
//! Layout (all integers big-endian), version 1:
//!
//! ```text
//! "ECE" version:u8
//! canonical-key:  u32 len, bytes        the URL the entry belongs to
//! status:u16
//! request_time:u64 response_time:u64 date:u64 age_value:u64 lifetime:u64   (ms, ms, ms, s, s)
//! flags:u8        no_cache | no_stale<<1 | strict<<2 | has_last_modified<<3
//! stale_while_revalidate:u64 stale_if_error:u64 last_modified:u64
//! vary:           u16 count, { name: u16 len, bytes; present:u8; value: u32 len, bytes }
//! headers:        u16 count, { name: u16 len, bytes; value: u32 len, bytes }
//! body:           u32 len, bytes        (the rest of the value, exactly)
//! ```
//!
//! The stored times are absolute, so `Age` stays right on every node that reads the entry (given
//! clocks in sync). Decoding checks everything: a value of another version, for another key,
//! truncated, or with trailing bytes is rejected, never served.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::http::policy::{secs32, Freshness, Times};
use crate::store::entry::Entry;

const MAGIC: &[u8; 3] = b"ECE";
/// The envelope version this build writes and reads.
pub const VERSION: u8 = 1;

/// Why a value read back could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not an envelope at all.
    #[error("not an edgecache envelope")]
    Magic,
    /// Written by another format version.
    #[error("envelope version {0}, expected {VERSION}")]
    Version(u8),
    /// Belongs to another URL (a digest collision or a foreign writer).
    #[error("envelope for another key")]
    WrongKey,
    /// Truncated or malformed.
    #[error("malformed envelope")]
    Malformed,
}

/// Encodes `entry`, stored under the URL `canonical`.
pub fn encode(canonical: &str, entry: &Entry) -> Bytes {
    let headers_len: usize = entry.headers.iter().map(|(n, v)| n.len() + v.len() + 6).sum();
    let mut b = BytesMut::with_capacity(96 + canonical.len() + headers_len + entry.body.len());
    b.put_slice(MAGIC);
    b.put_u8(VERSION);
    b.put_u32(canonical.len() as u32);
    b.put_slice(canonical.as_bytes());
    b.put_u16(entry.status.as_u16());
    let f = &entry.freshness;
    b.put_u64(f.times.request_time);
    b.put_u64(f.times.response_time);
    b.put_u64(f.times.date);
    b.put_u64(f.times.age_value.into());
    b.put_u64(f.lifetime.into());
    // Bit 3: a last-modified time follows (always, since entries keep `Date` when it is absent).
    let flags = u8::from(f.no_cache) | u8::from(f.no_stale) << 1 | u8::from(f.strict) << 2 | 1 << 3;
    b.put_u8(flags);
    b.put_u64(f.stale_while_revalidate.into());
    b.put_u64(f.stale_if_error.into());
    b.put_u64(f.last_modified);
    b.put_u16(entry.vary.len() as u16);
    for (name, value) in entry.vary.iter() {
        b.put_u16(name.as_str().len() as u16);
        b.put_slice(name.as_str().as_bytes());
        b.put_u8(u8::from(value.is_some()));
        let v = value.as_deref().unwrap_or("");
        b.put_u32(v.len() as u32);
        b.put_slice(v.as_bytes());
    }
    b.put_u16(entry.headers.len() as u16);
    for (name, value) in entry.headers.iter() {
        b.put_u16(name.len() as u16);
        b.put_slice(name.as_bytes());
        b.put_u32(value.len() as u32);
        b.put_slice(value);
    }
    b.put_u32(entry.body.len() as u32);
    b.put_slice(&entry.body);
    b.freeze()
}

/// Decodes a value read back for the URL `canonical`. The body shares `value`'s memory.
pub fn decode(value: Bytes, canonical: &str) -> Result<Entry, DecodeError> {
    let mut r = Reader { buf: &value, pos: 0 };
    if r.take(3)? != MAGIC {
        return Err(DecodeError::Magic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let n = r.u32()? as usize;
    if r.take(n)? != canonical.as_bytes() {
        return Err(DecodeError::WrongKey);
    }
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Malformed)?;
    let times = Times { request_time: r.u64()?, response_time: r.u64()?, date: r.u64()?, age_value: secs32(r.u64()?) };
    let lifetime = secs32(r.u64()?);
    let flags = r.u8()?;
    let stale_while_revalidate = secs32(r.u64()?);
    let stale_if_error = secs32(r.u64()?);
    let lm = r.u64()?;
    let freshness = Freshness {
        times,
        lifetime,
        no_cache: flags & 1 != 0,
        no_stale: flags & 2 != 0,
        strict: flags & 4 != 0,
        stale_while_revalidate,
        stale_if_error,
        last_modified: if flags & 8 != 0 { lm } else { times.date },
    };
    let vary_count = r.u16()? as usize;
    let mut vary = Vec::with_capacity(vary_count.min(64));
    for _ in 0..vary_count {
        let n = r.u16()? as usize;
        let name = HeaderName::from_bytes(r.take(n)?).map_err(|_| DecodeError::Malformed)?;
        let present = r.u8()? != 0;
        let n = r.u32()? as usize;
        let value = std::str::from_utf8(r.take(n)?).map_err(|_| DecodeError::Malformed)?;
        vary.push((name, present.then(|| value.into())));
    }
    let header_count = r.u16()? as usize;
    let mut headers = HeaderMap::with_capacity(header_count.min(256));
    for _ in 0..header_count {
        let n = r.u16()? as usize;
        let name = HeaderName::from_bytes(r.take(n)?).map_err(|_| DecodeError::Malformed)?;
        let n = r.u32()? as usize;
        let value = HeaderValue::from_bytes(r.take(n)?).map_err(|_| DecodeError::Malformed)?;
        // The count allows 65,535 fields; a HeaderMap holds 24,576 distinct names, and
        // `append` past that panics.
        headers.try_append(name, value).map_err(|_| DecodeError::Malformed)?;
    }
    let n = r.u32()? as usize;
    let start = r.pos;
    r.take(n)?;
    if r.pos != value.len() {
        return Err(DecodeError::Malformed);
    }
    let body = value.slice(start..start + n);
    let headers = crate::store::headers::StoredHeaders::from_map(&headers);
    Ok(Entry {
        status,
        headers,
        body,
        vary: vary.into_boxed_slice(),
        freshness,
        checked: Default::default(),
        heat: Default::default(),
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| DecodeError::Malformed)?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| DecodeError::Malformed)?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| DecodeError::Malformed)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Entry {
            status: StatusCode::OK,
            headers: crate::store::headers::StoredHeaders::from_map(&headers),
            body: Bytes::from_static(b"hello"),
            vary: vec![
                (HeaderName::from_static("accept-language"), Some("fr".into())),
                (HeaderName::from_static("x-absent"), None),
            ]
            .into_boxed_slice(),
            freshness: Freshness {
                times: Times { request_time: 1, response_time: 2, date: 3, age_value: 4 },
                lifetime: 60,
                no_cache: false,
                no_stale: true,
                strict: false,
                stale_while_revalidate: 5,
                stale_if_error: 6,
                last_modified: 7,
            },
            checked: Default::default(),
            heat: Default::default(),
        }
    }

    #[test]
    fn round_trip() {
        let e = entry();
        let back = decode(encode("http://h/a", &e), "http://h/a").unwrap();
        assert_eq!(back.status, e.status);
        assert_eq!(back.headers, e.headers);
        assert_eq!(back.body, e.body);
        assert_eq!(back.vary, e.vary);
        assert_eq!(back.freshness, e.freshness);
    }

    #[test]
    fn rejects_foreign_values() {
        let bytes = encode("http://h/a", &entry());
        assert_eq!(decode(bytes.clone(), "http://h/b").unwrap_err(), DecodeError::WrongKey);
        let mut v = bytes.to_vec();
        v[3] = 9;
        assert_eq!(decode(Bytes::from(v), "http://h/a").unwrap_err(), DecodeError::Version(9));
        assert_eq!(decode(Bytes::from_static(b"garbage"), "http://h/a").unwrap_err(), DecodeError::Magic);
        // Every truncation, and trailing bytes, are rejected without a panic.
        for cut in 0..bytes.len() {
            assert!(decode(bytes.slice(..cut), "http://h/a").is_err(), "cut at {cut}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(decode(Bytes::from(long), "http://h/a").unwrap_err(), DecodeError::Malformed);
    }

    #[test]
    fn more_distinct_header_names_than_a_header_map_holds_is_malformed() {
        // The header count is a u16: 40,000 one-field names, each `u16 len, name, u32 0`, in
        // place of the entry's empty header block (the 2 bytes before the body's length).
        let mut e = entry();
        e.headers = crate::store::headers::StoredHeaders::from_map(&HeaderMap::new());
        e.body = Bytes::new();
        let good = encode("http://h/a", &e);
        let mut v = good[..good.len() - 6].to_vec();
        v.extend_from_slice(&40_000u16.to_be_bytes());
        for i in 0..40_000u32 {
            let name = format!("x{i}");
            v.extend_from_slice(&(name.len() as u16).to_be_bytes());
            v.extend_from_slice(name.as_bytes());
            v.extend_from_slice(&0u32.to_be_bytes());
        }
        v.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(decode(Bytes::from(v), "http://h/a").unwrap_err(), DecodeError::Malformed);
    }
}
