//! A stored response: status, headers, body and the freshness facts computed when it was stored.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, ETAG};
use http::StatusCode;

use super::policy::Freshness;
use super::vary::VaryKey;

/// One stored variant of a URL.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stored status.
    pub status: StatusCode,
    /// Stored header fields: hop-by-hop fields and `Age` removed (`Age` is recomputed).
    pub headers: HeaderMap,
    /// The complete body, shared by every hit without copying.
    pub body: Bytes,
    /// The request field values this variant was selected by.
    pub vary: VaryKey,
    /// Freshness facts.
    pub freshness: Freshness,
}

/// Fields never copied from a 304 into the stored response (RFC 9111 §3.2): the stored body's
/// length, framing, validator and integrity fields stay those of the stored response.
const NOT_UPDATED: &[&str] =
    &["content-length", "content-encoding", "content-range", "content-md5", "etag", "transfer-encoding", "age"];

/// A copy of `headers` whose values all live in one allocation of their own. Values parsed by
/// hyper are slices of the connection's read buffer: stored as they are, each would keep a whole
/// buffer alive, far beyond what the memory budget counts.
pub fn compact_headers(headers: &HeaderMap) -> HeaderMap {
    let total: usize = headers.values().map(|v| v.len()).sum();
    let mut buf = bytes::BytesMut::with_capacity(total);
    for v in headers.values() {
        buf.extend_from_slice(v.as_bytes());
    }
    let buf = buf.freeze();
    let mut out = HeaderMap::with_capacity(headers.keys_len());
    let mut at = 0;
    for (name, value) in headers {
        let end = at + value.len();
        let mut v = http::HeaderValue::from_maybe_shared(buf.slice(at..end)).unwrap_or_else(|_| value.clone());
        v.set_sensitive(value.is_sensitive());
        out.append(name.clone(), v);
        at = end;
    }
    out
}

impl Entry {
    /// Approximate bytes this entry occupies in memory: what the byte budget counts.
    pub fn weight(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 48).sum();
        let vary: usize =
            self.vary.iter().map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, |v| v.len()) + 40).sum();
        std::mem::size_of::<Self>() + headers + vary + self.body.len() + 64
    }

    /// The stored entity tag, if any.
    pub fn etag(&self) -> Option<&http::HeaderValue> {
        self.headers.get(ETAG)
    }

    /// The stored headers updated from a 304 response (RFC 9111 §3.2, §4.3.4): every field of
    /// the 304 replaces the stored one of the same name, except the framing fields; fields the
    /// stored response did not have are added.
    pub fn merged_headers(&self, not_modified: &HeaderMap) -> HeaderMap {
        let mut headers = self.headers.clone();
        let mut replaced: Vec<&HeaderName> = Vec::new();
        for (name, value) in not_modified {
            if NOT_UPDATED.contains(&name.as_str()) {
                continue;
            }
            if !replaced.contains(&name) {
                headers.remove(name);
                replaced.push(name);
            }
            headers.append(name.clone(), value.clone());
        }
        headers
    }

    /// This entry (a template without a body) completed with `body`; `Content-Length` is set to
    /// the body's length.
    pub fn with_body(mut self, body: Bytes) -> Entry {
        self.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        self.body = body;
        self
    }

    /// A copy of this entry with new headers and freshness, sharing the body.
    pub fn refreshed(&self, headers: HeaderMap, freshness: Freshness) -> Entry {
        Entry { status: self.status, headers, body: self.body.clone(), vary: self.vary.clone(), freshness }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn compact_headers_keep_every_value_in_one_buffer() {
        // Values sliced from a large buffer, as hyper's parser makes them.
        let big = Bytes::from(vec![b'a'; 64 << 10]);
        let mut h = HeaderMap::new();
        h.append("x-one", HeaderValue::from_maybe_shared(big.slice(0..3)).unwrap());
        h.append("x-one", HeaderValue::from_static("second"));
        h.append("content-type", HeaderValue::from_maybe_shared(big.slice(10..20)).unwrap());
        let c = compact_headers(&h);
        assert_eq!(c, h);
        let ptrs: Vec<usize> = c.values().map(|v| v.as_bytes().as_ptr() as usize).collect();
        let (lo, hi) = (ptrs.iter().min().unwrap(), ptrs.iter().max().unwrap());
        assert!(hi - lo < 64, "values are not in one small buffer");
        assert!(c.values().all(|v| !std::ptr::eq(v.as_bytes().as_ptr(), big.as_ptr())));
    }
}
