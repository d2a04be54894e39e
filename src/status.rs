//! Every cache decision as a named value: the same word appears in the `Cache-Status`
//! header (RFC 9211), the access log and the metrics.

use http::HeaderValue;

/// The name this cache uses in `Cache-Status` (RFC 9211 §2).
pub const CACHE_NAME: &str = "edgecache";

/// Why the cache went forward to the origin (RFC 9211 §2.2 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Nothing stored under this URL.
    UriMiss,
    /// Something stored under this URL, but no variant matches the request's `Vary` fields.
    VaryMiss,
    /// A stored response was stale (or had to be revalidated) and was revalidated.
    Stale,
    /// The request asked for it (`no-cache`, `max-age=0`, `min-fresh` ...).
    Request,
    /// The request can never be answered from the cache (method, `Range`, bad key ...).
    Bypass,
}

impl Fwd {
    /// The RFC 9211 token.
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
            Fwd::Bypass => "bypass",
        }
    }
}

/// Why a response was not stored, or why the cache answered the way it did.
///
/// One enum for header, log and metrics alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Response `Cache-Control: no-store`.
    NoStore,
    /// Request `Cache-Control: no-store`.
    RequestNoStore,
    /// Response `Cache-Control: private` (this is a shared cache).
    Private,
    /// Response carries `Set-Cookie`: never handed to another client.
    SetCookie,
    /// Response `Vary: *`: it can never be matched.
    VaryStar,
    /// Body larger than `cache.max_object_size`.
    TooLarge,
    /// Request carried `Authorization` and the response did not allow sharing (RFC 9111 §3.5).
    Authorization,
    /// Status code the cache does not store without explicit freshness, or never stores.
    Status,
    /// No explicit or heuristic freshness and no validator: storing it would be useless.
    NoFreshness,
    /// Method whose responses are not stored.
    Method,
    /// Partial content (`Range` request or 206 response).
    Partial,
    /// A stale response served while it is revalidated in the background (RFC 5861 §3).
    StaleWhileRevalidate,
    /// A stale response served because the origin failed (RFC 5861 §4, grace).
    StaleIfError,
    /// The request carried `If-Match` / `If-Unmodified-Since`: passed to the origin, not stored.
    Precondition,
    /// The origin's body ended early or failed: nothing stored.
    Incomplete,
    /// The origin refused the connection or it failed.
    OriginUnreachable,
    /// The origin did not answer in time.
    OriginTimeout,
    /// `only-if-cached` and nothing usable stored.
    OnlyIfCached,
    /// The request was malformed.
    BadRequest,
    /// A GET or HEAD carried a body: passed to the origin with it, never stored or served from
    /// the store (the origin may read it, and the key does not include it).
    RequestBody,
    /// Every allowed connection to the origin stayed busy for `timeouts.origin_queue`.
    OriginBusy,
    /// The origin's answer was not a valid response to the request (e.g. an unasked `101`).
    OriginInvalid,
}

impl Detail {
    /// The token used in `Cache-Status; detail=`, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Detail::NoStore => "no-store",
            Detail::RequestNoStore => "request-no-store",
            Detail::Private => "private",
            Detail::SetCookie => "set-cookie",
            Detail::VaryStar => "vary-star",
            Detail::TooLarge => "too-large",
            Detail::Authorization => "authorization",
            Detail::Status => "status",
            Detail::NoFreshness => "no-freshness",
            Detail::Method => "method",
            Detail::Partial => "partial",
            Detail::StaleWhileRevalidate => "stale-while-revalidate",
            Detail::StaleIfError => "stale-if-error",
            Detail::Precondition => "precondition",
            Detail::Incomplete => "incomplete",
            Detail::OriginUnreachable => "origin-unreachable",
            Detail::OriginTimeout => "origin-timeout",
            Detail::OnlyIfCached => "only-if-cached",
            Detail::BadRequest => "bad-request",
            Detail::RequestBody => "request-body",
            Detail::OriginBusy => "origin-busy",
            Detail::OriginInvalid => "origin-invalid",
        }
    }
}

/// What the cache did for one request: rendered into `Cache-Status` and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStatus {
    /// Served from the store without going forward.
    pub hit: bool,
    /// Went forward, and why.
    pub fwd: Option<Fwd>,
    /// Status of the origin's response when the cache went forward.
    pub fwd_status: Option<u16>,
    /// The response was stored (or refreshed) in the cache.
    pub stored: bool,
    /// The request was collapsed into another one for the same key (RFC 9211 §2.5).
    pub collapsed: bool,
    /// The stored response came from the shared tier (rendered as the extension parameter
    /// `tier=shared`).
    pub shared_tier: bool,
    /// Remaining freshness of the served stored response, in seconds (may be negative).
    pub ttl: Option<i64>,
    /// Why not stored, or another reason worth naming.
    pub detail: Option<Detail>,
}

impl CacheStatus {
    /// A fresh hit.
    pub fn hit(ttl: i64) -> Self {
        CacheStatus { hit: true, ttl: Some(ttl), ..Default::default() }
    }

    /// Went forward for `fwd`.
    pub fn forward(fwd: Fwd) -> Self {
        CacheStatus { fwd: Some(fwd), ..Default::default() }
    }

    /// Short word for the access log and metrics: `hit`, `miss`, `revalidated` ...
    pub fn outcome(&self) -> &'static str {
        match (self.hit, self.fwd) {
            (true, _) if self.detail == Some(Detail::StaleIfError) => "stale-if-error",
            (true, _) if self.detail == Some(Detail::StaleWhileRevalidate) => "stale-while-revalidate",
            (true, _) if self.shared_tier => "shared-hit",
            (true, _) => "hit",
            (false, Some(Fwd::UriMiss | Fwd::VaryMiss)) if self.collapsed => "collapsed",
            (false, Some(Fwd::Stale)) if self.fwd_status == Some(304) => "revalidated",
            (false, Some(Fwd::Stale)) => "stale-refetch",
            (false, Some(Fwd::UriMiss | Fwd::VaryMiss)) => "miss",
            (false, Some(Fwd::Request)) => "request-refetch",
            (false, Some(Fwd::Bypass)) => "bypass",
            (false, None) => "local",
        }
    }

    /// The `Cache-Status` member for this cache, e.g. `edgecache; fwd=uri-miss; fwd-status=200; stored`.
    pub fn header_value(&self) -> HeaderValue {
        // Written on the stack and copied once into a block of its exact size: a `String` with
        // room to spare becomes a value only through a second allocation (bytes' shared header).
        let mut s = Member { buf: [0; 192], len: 0 };
        s.push_str(CACHE_NAME);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(fwd.as_str());
        }
        if let Some(code) = self.fwd_status {
            s.push_str("; fwd-status=");
            s.push_str(itoa::Buffer::new().format(code));
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if self.shared_tier {
            s.push_str("; tier=shared");
        }
        if let Some(ttl) = self.ttl {
            s.push_str("; ttl=");
            s.push_str(itoa::Buffer::new().format(ttl));
        }
        if let Some(detail) = self.detail {
            s.push_str("; detail=");
            s.push_str(detail.as_str());
        }
        // Only ASCII tokens and digits were written.
        HeaderValue::from_bytes(&s.buf[..s.len]).expect("cache-status is ascii")
    }
}

/// A `Cache-Status` member being written: every part is a known token or a number, and the
/// longest member fits many times over (a part that would not fit is cut, never a panic).
struct Member {
    buf: [u8; 192],
    len: usize,
}

impl Member {
    fn push_str(&mut self, part: &str) {
        let end = (self.len + part.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&part.as_bytes()[..end - self.len]);
        self.len = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9211_members() {
        let mut st = CacheStatus::forward(Fwd::UriMiss);
        st.fwd_status = Some(200);
        st.stored = true;
        assert_eq!(st.header_value(), "edgecache; fwd=uri-miss; fwd-status=200; stored");
        assert_eq!(CacheStatus::hit(42).header_value(), "edgecache; hit; ttl=42");
        let mut st = CacheStatus::forward(Fwd::UriMiss);
        st.fwd_status = Some(200);
        st.detail = Some(Detail::Private);
        assert_eq!(st.header_value(), "edgecache; fwd=uri-miss; fwd-status=200; detail=private");
        assert_eq!(st.outcome(), "miss");
    }
}
