//! A stored response: status, headers, body and the freshness facts computed when it was stored.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, ETAG, LAST_MODIFIED};
use http::StatusCode;

use super::headers::StoredHeaders;
use super::heat::Heat;
use super::purge::Stamp;
use crate::clock::Millis;
use crate::http::policy::Freshness;
use crate::http::vary::VaryKey;

/// One stored variant of a URL.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stored status.
    pub status: StatusCode,
    /// Stored header fields: hop-by-hop fields and `Age` removed (`Age` is recomputed).
    pub headers: StoredHeaders,
    /// The complete body, shared by every hit without copying.
    pub body: Bytes,
    /// The request field values this variant was selected by.
    pub vary: VaryKey,
    /// Freshness facts.
    pub freshness: Freshness,
    /// The purge sequence number this entry is known to be unaffected through (it sits in the
    /// padding after `status`: the entry keeps its size).
    pub checked: Stamp,
    /// Hits since it was stored, counted for refresh-ahead (also in the padding).
    pub heat: Heat,
}

/// Fields never copied from a 304 into the stored response (RFC 9111 §3.2): the stored body's
/// length, framing, validator and integrity fields stay those of the stored response.
const NOT_UPDATED: &[&str] =
    &["content-length", "content-encoding", "content-range", "content-md5", "etag", "transfer-encoding", "age"];

impl Entry {
    /// Approximate bytes this entry occupies in memory: what the byte budget counts.
    pub fn weight(&self) -> usize {
        let vary: usize =
            self.vary.iter().map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, |v| v.len()) + 40).sum();
        // The entry in its Arc, its headers, Vary values, body, and allocator bookkeeping.
        std::mem::size_of::<Self>() + 16 + self.headers.heap_size() + vary + self.body.len() + 48
    }

    /// True when the stored response has a validator usable for revalidation: an `ETag`, or a
    /// `Last-Modified` that is an HTTP date.
    pub fn has_validator(&self) -> bool {
        self.headers.contains(&ETAG) || self.last_modified_date().is_some()
    }

    /// The stored `Last-Modified`, when it is an HTTP date (RFC 9110 §8.8.2): the only form in
    /// which it may be sent back as `If-Modified-Since`.
    pub fn last_modified_date(&self) -> Option<HeaderValue> {
        let lm = self.headers.get(&LAST_MODIFIED)?;
        crate::clock::http_date(lm.as_bytes(), self.freshness.times.response_time).is_some().then_some(lm)
    }

    /// The stored headers updated from a 304 response (RFC 9111 §3.2, §4.3.4): every field of
    /// the 304 replaces the stored one of the same name, except the framing fields; fields the
    /// stored response did not have are added.
    pub fn merged_headers(&self, not_modified: &HeaderMap) -> HeaderMap {
        let mut headers = self.headers.to_map_with_capacity(not_modified.len());
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
        let mut digits = itoa::Buffer::new();
        let len = digits.format(body.len());
        if self.headers.get_bytes(&http::header::CONTENT_LENGTH).is_some_and(|v| v == len.as_bytes()) {
            // The usual case: the origin sent the right length.
            self.body = body;
            return self;
        }
        let mut headers = self.headers.to_map_with_capacity(1);
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        self.headers = StoredHeaders::from_map(&headers);
        self.body = body;
        self
    }

    /// A copy of this entry with new headers and freshness, sharing the body.
    pub fn refreshed(&self, headers: &HeaderMap, freshness: Freshness) -> Entry {
        let headers = StoredHeaders::from_map(headers);
        Entry {
            status: self.status,
            headers,
            body: self.body.clone(),
            vary: self.vary.clone(),
            freshness,
            checked: self.checked.clone(),
            heat: Heat::default(),
        }
    }

    /// A copy of this entry that is stale from `at` on (a soft purge), checked through purge
    /// `seq`: the next request revalidates it, and its stale windows count from `at`.
    pub fn softened(&self, at: Millis, seq: u32) -> Entry {
        let mut e = self.clone();
        e.freshness.stale_from(at);
        e.checked = Stamp::new(seq);
        e
    }
}

#[cfg(test)]
impl Entry {
    /// A stored 200 with `headers` and `body`, stored at time 0 and fresh for `lifetime` seconds.
    pub(crate) fn for_tests(headers: &HeaderMap, body: Bytes, lifetime: u32) -> std::sync::Arc<Entry> {
        use crate::http::policy::Times;
        std::sync::Arc::new(Entry {
            status: StatusCode::OK,
            headers: StoredHeaders::from_map(headers),
            body,
            vary: Box::new([]),
            freshness: Freshness {
                times: Times { request_time: 0, response_time: 0, date: 0, age_value: 0 },
                lifetime,
                no_cache: false,
                no_stale: false,
                strict: false,
                stale_while_revalidate: 0,
                stale_if_error: 0,
                last_modified: 0,
            },
            checked: Stamp::default(),
            heat: Heat::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stored object pays for its `Arc<Entry>` allocation: 16 bytes of counts and the entry.
    /// Kept within 160 bytes (an allocator size class; 8 bytes more would cost 32). Freshness
    /// counts seconds in 32 bits and the header block carries its own field count for this.
    #[test]
    fn an_entry_in_its_arc_takes_at_most_160_bytes() {
        assert!(std::mem::size_of::<Entry>() + 16 <= 160, "Entry is {} bytes", std::mem::size_of::<Entry>());
    }
}
