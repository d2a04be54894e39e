//! What the cache did and why, as named values: the same word appears in the `Cache-Status`
//! header (RFC 9211), the access log and the metrics. [`Outcome`] is what happened; why is one
//! of [`NotStored`], [`Stale`] or [`Failure`], carried as a [`Detail`].

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
    /// Pieces of the representation are stored, but not all the request needs: the rest was
    /// fetched (RFC 9211 §2.2 `partial`).
    Partial,
}

impl Fwd {
    /// The RFC 9211 token.
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
            Fwd::Partial => "partial",
            Fwd::Bypass => "bypass",
        }
    }
}

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
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
    /// A method whose responses are not stored.
    Method,
    /// A GET or HEAD that carried a body: passed to the origin with it (the origin may read it,
    /// and the key does not include it).
    RequestBody,
    /// Partial content (`Range` request or 206 response).
    Partial,
    /// The request carried `If-Match` / `If-Unmodified-Since`: evaluated by the origin.
    Precondition,
    /// The origin's body ended early, failed, or did not match its `Content-Length`.
    Incomplete,
    /// A rule of the request's site says never to cache its path (`cache = "pass"`).
    Rule,
}

impl NotStored {
    /// The token.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::NoStore => "no-store",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::TooLarge => "too-large",
            NotStored::Authorization => "authorization",
            NotStored::Status => "status",
            NotStored::NoFreshness => "no-freshness",
            NotStored::Method => "method",
            NotStored::RequestBody => "request-body",
            NotStored::Partial => "partial",
            NotStored::Precondition => "precondition",
            NotStored::Incomplete => "incomplete",
            NotStored::Rule => "rule",
        }
    }

    /// True when the reason comes from the response, not from this one request: the next
    /// requests for the key had better go straight to the origin than queue behind each other
    /// (hit-for-pass).
    pub fn from_response(self) -> bool {
        matches!(
            self,
            NotStored::NoStore
                | NotStored::Private
                | NotStored::SetCookie
                | NotStored::VaryStar
                | NotStored::TooLarge
                | NotStored::Status
                | NotStored::NoFreshness
        )
    }
}

/// Why a stale response was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// While it is revalidated in the background (RFC 5861 §3).
    WhileRevalidate,
    /// Because the origin failed (RFC 5861 §4, `stale.grace`).
    IfError,
}

impl Stale {
    /// The token.
    pub fn as_str(self) -> &'static str {
        match self {
            Stale::WhileRevalidate => "stale-while-revalidate",
            Stale::IfError => "stale-if-error",
        }
    }
}

/// Why the proxy answered with an error of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request was malformed (400, or 501 for a transfer coding).
    BadRequest,
    /// The client's body paused longer than `timeouts.request_body` (408).
    RequestTimeout,
    /// A method this proxy does not serve: CONNECT (405).
    MethodNotAllowed,
    /// `only-if-cached` and nothing usable stored (504).
    OnlyIfCached,
    /// The origin refused the connection or it failed (502).
    OriginUnreachable,
    /// The origin did not answer in time (504).
    OriginTimeout,
    /// Every allowed origin connection stayed busy for `timeouts.origin_queue` (503).
    OriginBusy,
    /// The origin's answer was not a valid response to the request, e.g. an unasked `101` (502).
    OriginInvalid,
    /// The TLS handshake with an `https://` origin failed: its certificate was not trusted or
    /// not for its name, it refused the client certificate, or it does not speak TLS (502).
    OriginTls,
    /// Every server of the site's origin pool is down (503).
    OriginDown,
    /// No site serves the request's `Host` and there is no default site (421).
    Misdirected,
}

impl Failure {
    /// The token.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::BadRequest => "bad-request",
            Failure::RequestTimeout => "request-timeout",
            Failure::MethodNotAllowed => "method-not-allowed",
            Failure::OnlyIfCached => "only-if-cached",
            Failure::OriginUnreachable => "origin-unreachable",
            Failure::OriginTimeout => "origin-timeout",
            Failure::OriginBusy => "origin-busy",
            Failure::OriginInvalid => "origin-invalid",
            Failure::OriginTls => "origin-tls",
            Failure::OriginDown => "origin-down",
            Failure::Misdirected => "misdirected",
        }
    }
}

/// The one reason a response names in `Cache-Status; detail=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Not stored, and why.
    NotStored(NotStored),
    /// Served stale, and why.
    Stale(Stale),
    /// Answered with an error, and why.
    Failure(Failure),
}

impl Detail {
    /// The token used in `Cache-Status; detail=`, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Detail::NotStored(r) => r.as_str(),
            Detail::Stale(r) => r.as_str(),
            Detail::Failure(r) => r.as_str(),
        }
    }
}

impl From<NotStored> for Detail {
    fn from(r: NotStored) -> Self {
        Detail::NotStored(r)
    }
}

impl From<Stale> for Detail {
    fn from(r: Stale) -> Self {
        Detail::Stale(r)
    }
}

impl From<Failure> for Detail {
    fn from(r: Failure) -> Self {
        Detail::Failure(r)
    }
}

/// What happened to one request: the access log's `cache=` word and the metrics' `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the memory tier.
    Hit,
    /// Served from the shared tier (and promoted into memory).
    SharedHit,
    /// Served stale while one background revalidation runs.
    StaleWhileRevalidate,
    /// Served stale because the origin failed.
    StaleIfError,
    /// Fetched from the origin.
    Miss,
    /// Waited for another request's origin fetch of the same URL and shared its response.
    Collapsed,
    /// A stored response was revalidated and the origin confirmed it (304).
    Revalidated,
    /// A stored response was revalidated and the origin sent a new one.
    StaleRefetch,
    /// The request itself demanded going to the origin (`no-cache`, `max-age=0` ...).
    RequestRefetch,
    /// Never answered from the cache: passed to the origin.
    Bypass,
    /// Answered by the proxy without the store or the origin (errors, `OPTIONS *`).
    Local,
}

impl Outcome {
    /// Every outcome, for listings (metrics, documentation).
    pub const ALL: [Outcome; 11] = [
        Outcome::Hit,
        Outcome::SharedHit,
        Outcome::StaleWhileRevalidate,
        Outcome::StaleIfError,
        Outcome::Miss,
        Outcome::Collapsed,
        Outcome::Revalidated,
        Outcome::StaleRefetch,
        Outcome::RequestRefetch,
        Outcome::Bypass,
        Outcome::Local,
    ];

    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::SharedHit => "shared-hit",
            Outcome::StaleWhileRevalidate => "stale-while-revalidate",
            Outcome::StaleIfError => "stale-if-error",
            Outcome::Miss => "miss",
            Outcome::Collapsed => "collapsed",
            Outcome::Revalidated => "revalidated",
            Outcome::StaleRefetch => "stale-refetch",
            Outcome::RequestRefetch => "request-refetch",
            Outcome::Bypass => "bypass",
            Outcome::Local => "local",
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
    /// The response was stored (or refreshed) in the cache, and its body is complete there.
    pub stored: bool,
    /// The request was collapsed into another one for the same key (RFC 9211 §2.5).
    pub collapsed: bool,
    /// The stored response came from the shared tier (rendered as the extension parameter
    /// `tier=shared`).
    pub shared_tier: bool,
    /// Remaining freshness of the served stored response, in seconds (may be negative).
    pub ttl: Option<i64>,
    /// Why not stored, why stale, or why an error.
    pub detail: Option<Detail>,
    /// The site the request was routed to (`None`: answered before routing). Not part of the
    /// header: for the access log and metrics.
    pub site: Option<crate::site::SiteId>,
    /// How long the origin took to answer the fetch this response came from, in microseconds
    /// (the access log's `origin_ms`; not part of the header).
    pub origin_us: Option<u32>,
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

    /// What happened.
    pub fn outcome(&self) -> Outcome {
        match (self.hit, self.fwd) {
            (true, _) if self.detail == Some(Detail::Stale(Stale::IfError)) => Outcome::StaleIfError,
            (true, _) if self.detail == Some(Detail::Stale(Stale::WhileRevalidate)) => Outcome::StaleWhileRevalidate,
            (true, _) if self.shared_tier => Outcome::SharedHit,
            (true, _) => Outcome::Hit,
            (false, Some(Fwd::UriMiss | Fwd::VaryMiss)) if self.collapsed => Outcome::Collapsed,
            (false, Some(Fwd::Stale)) if self.fwd_status == Some(304) => Outcome::Revalidated,
            (false, Some(Fwd::Stale)) => Outcome::StaleRefetch,
            (false, Some(Fwd::UriMiss | Fwd::VaryMiss | Fwd::Partial)) => Outcome::Miss,
            (false, Some(Fwd::Request)) => Outcome::RequestRefetch,
            (false, Some(Fwd::Bypass)) => Outcome::Bypass,
            (false, None) => Outcome::Local,
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
        st.detail = Some(NotStored::Private.into());
        assert_eq!(st.header_value(), "edgecache; fwd=uri-miss; fwd-status=200; detail=private");
        assert_eq!(st.outcome(), Outcome::Miss);
    }

    #[test]
    fn every_outcome_has_its_own_word() {
        let mut words: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), Outcome::ALL.len());
    }
}
