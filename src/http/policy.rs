//! RFC 9111 decisions for a shared cache: what may be stored (§3), for how long it is fresh
//! (§4.2), how old it is (§4.2.3), and whether a stored response may answer a request (§4, §5.2.1).
//!
//! Time is always passed in as milliseconds since the epoch, so every decision is deterministic.

use http::header::{HeaderMap, AUTHORIZATION, DATE, ETAG, EXPIRES, LAST_MODIFIED, SET_COOKIE};
use http::{Method, StatusCode};

use super::cache_control::{CacheControl, Delta};
use super::vary;
use crate::clock::Millis;
use crate::status::{Fwd, NotStored};

/// Cache settings the policy needs.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    /// Use heuristic freshness (§4.2.2) for responses without explicit expiration.
    pub heuristic: bool,
    /// Fraction of (Date − Last-Modified) used as heuristic lifetime.
    pub heuristic_fraction: f64,
    /// Upper bound of a heuristic lifetime, in seconds.
    pub heuristic_max_secs: u64,
    /// Store responses that carry `Set-Cookie` (off by default: one client's cookie must never
    /// reach another).
    pub store_set_cookie: bool,
    /// Targeted fields (RFC 9213) in precedence order, before `Surrogate-Control` and
    /// `Cache-Control`: the edgecache-specific field (when configured), then `CDN-Cache-Control`.
    pub targeted: Vec<http::header::HeaderName>,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            heuristic: true,
            heuristic_fraction: 0.1,
            heuristic_max_secs: 86_400,
            store_set_cookie: false,
            targeted: vec![CDN_CACHE_CONTROL.clone()],
        }
    }
}

/// Status codes that are heuristically cacheable (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Status codes this cache understands (registered and with known semantics), for
/// `must-understand` (RFC 9111 §5.2.2.3).
fn understood(status: StatusCode) -> bool {
    matches!(status.as_u16(),
        200..=205 | 207 | 208 | 226 | 300..=303 | 305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
        | 500..=508 | 510 | 511)
}

/// The request `Cache-Control`, with `Pragma: no-cache` honoured when `Cache-Control` is absent
/// (RFC 9111 §5.4).
pub fn request_cache_control(req: &HeaderMap) -> CacheControl {
    // Most requests carry neither field: one lookup each tells.
    if CacheControl::present(req, &http::header::CACHE_CONTROL) {
        return CacheControl::from_headers(req, &http::header::CACHE_CONTROL);
    }
    let mut cc = CacheControl::default();
    if req
        .get_all(http::header::PRAGMA)
        .iter()
        .any(|v| v.to_str().map(|s| s.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-cache"))).unwrap_or(false))
    {
        cc.no_cache = true;
    }
    cc
}

/// `Surrogate-Control` (W3C Edge Architecture): directives for surrogates such as this cache.
pub static SURROGATE_CONTROL: http::header::HeaderName = http::header::HeaderName::from_static("surrogate-control");

/// The token that selects `Surrogate-Control` directives targeted at this cache (`;edgecache`).
pub const SURROGATE_TARGET: &str = "edgecache";

/// `CDN-Cache-Control` (RFC 9213).
pub static CDN_CACHE_CONTROL: http::header::HeaderName = http::header::HeaderName::from_static("cdn-cache-control");

/// The response directives this cache obeys (RFC 9213 §2.1): the first targeted field present
/// with directives (`opts.targeted`, then `Surrogate-Control` directives for this cache) replaces
/// `Cache-Control` as a whole; without one, `Cache-Control`.
pub fn response_cache_control(resp: &HeaderMap, opts: &PolicyOptions) -> CacheControl {
    for name in &opts.targeted {
        if CacheControl::present(resp, name) {
            let cc = CacheControl::from_headers(resp, name);
            if cc != CacheControl::default() {
                return cc;
            }
        }
    }
    if let Some(cc) = super::cache_control::targeted(resp, &SURROGATE_CONTROL, SURROGATE_TARGET) {
        return cc;
    }
    CacheControl::from_headers(resp, &http::header::CACHE_CONTROL)
}

/// A request, as storability sees it.
pub struct Req<'a> {
    /// The method the response answers (a HEAD is fetched as GET).
    pub method: &'a Method,
    /// Its header fields.
    pub headers: &'a HeaderMap,
    /// Its `Cache-Control`.
    pub cc: &'a CacheControl,
}

/// A response, as storability sees it.
pub struct Resp<'a> {
    /// Its status.
    pub status: StatusCode,
    /// Its header fields.
    pub headers: &'a HeaderMap,
    /// Its `Cache-Control` (or the targeted field that replaces it).
    pub cc: &'a CacheControl,
}

/// Whether a response may be stored (RFC 9111 §3, as a shared cache), or the reason it may not.
pub fn storable(req: &Req<'_>, resp: &Resp<'_>, opts: &PolicyOptions) -> Result<(), NotStored> {
    let (method, req_cc, status, resp_cc) = (req.method, req.cc, resp.status, resp.cc);
    let (req, resp) = (req.headers, resp.headers);
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if req.contains_key(http::header::RANGE) || status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStored::Partial);
    }
    if req_cc.no_store {
        return Err(NotStored::RequestNoStore);
    }
    if resp_cc.no_store {
        return Err(NotStored::NoStore);
    }
    // §3: a shared cache does not store private responses (qualified or not).
    if resp_cc.private {
        return Err(NotStored::Private);
    }
    // §3.5: a request with Authorization only if the response explicitly allows sharing.
    if req.contains_key(AUTHORIZATION) && !(resp_cc.public || resp_cc.s_maxage.is_some() || resp_cc.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    if vary::vary_names(resp).is_err() {
        return Err(NotStored::VaryStar);
    }
    if !opts.store_set_cookie && resp.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    // §3: 206 needs range assembly and 304 is not a representation; with must-understand,
    // only status codes this cache knows (§5.2.2.3).
    if status == StatusCode::PARTIAL_CONTENT || status == StatusCode::NOT_MODIFIED || status.is_informational() {
        return Err(NotStored::Status);
    }
    if resp_cc.must_understand && !understood(status) {
        return Err(NotStored::Status);
    }
    let explicit = resp_cc.max_age.is_some() || resp_cc.s_maxage.is_some() || resp.contains_key(EXPIRES);
    if !explicit && !resp_cc.public && !heuristically_cacheable(status) {
        return Err(NotStored::Status);
    }
    Ok(())
}

/// The timing facts of a stored response (RFC 9111 §4.2.3), all from the response and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// When the request that produced the response was sent.
    pub request_time: Millis,
    /// When the response was received.
    pub response_time: Millis,
    /// The response's `Date`, or `response_time` when absent or invalid.
    pub date: Millis,
    /// The response's `Age` value, in seconds (at most 2^31).
    pub age_value: u32,
}

/// Freshness facts computed once when a response is stored or refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Timing facts.
    pub times: Times,
    /// Freshness lifetime in seconds (§4.2.1), at most 2^31 (§1.2.2).
    pub lifetime: u32,
    /// Response `no-cache`: every use needs a successful revalidation (§5.2.2.4).
    pub no_cache: bool,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale (§5.2.2.2, §5.2.2.8,
    /// §5.2.2.10).
    pub no_stale: bool,
    /// Explicit `must-revalidate` or `proxy-revalidate`: not even `stale-while-revalidate` applies.
    pub strict: bool,
    /// `stale-while-revalidate` window, in seconds (RFC 5861).
    pub stale_while_revalidate: u32,
    /// `stale-if-error` window, in seconds (RFC 5861).
    pub stale_if_error: u32,
    /// `Last-Modified`, or `Date` when absent: what `If-Modified-Since` is compared with.
    pub last_modified: Millis,
}

/// Parses an HTTP date header into milliseconds since the epoch.
pub fn header_date(h: &HeaderMap, name: http::header::HeaderName) -> Option<Millis> {
    let slot = match name {
        DATE => 0,
        LAST_MODIFIED => 1,
        EXPIRES => 2,
        _ => usize::MAX,
    };
    let v = h.get(name)?.as_bytes();
    LAST_DATES.with_borrow_mut(|memo| match memo.get_mut(slot) {
        Some(last) if last.0 == v => last.1,
        Some(last) if v.len() <= 32 => {
            let parsed = crate::clock::http_date(v);
            *last = (bytes::Bytes::copy_from_slice(v), parsed);
            parsed
        }
        _ => crate::clock::http_date(v),
    })
}

thread_local! {
    /// The last value of `Date`, `Last-Modified` and `Expires` parsed on this thread, and what
    /// it parsed to. An origin's `Date` repeats for a whole second and a `Last-Modified` for as
    /// long as the resource is unchanged: most misses parse no date at all.
    static LAST_DATES: std::cell::RefCell<[(bytes::Bytes, Option<Millis>); 3]> =
        const { std::cell::RefCell::new([(bytes::Bytes::new(), None), (bytes::Bytes::new(), None), (bytes::Bytes::new(), None)]) };
}

/// The `Age` value in seconds (§5.1). A list-based value uses its first member (§5.1). An
/// `Age` this cache cannot read (not a non-negative integer, a parameter, or several field
/// lines) makes the response's age unknown: it is taken as [`DELTA_MAX`](super::cache_control::DELTA_MAX),
/// so the response is stale and gets revalidated rather than served on a guess.
pub fn age_value(h: &HeaderMap) -> u64 {
    let mut lines = h.get_all(http::header::AGE).iter();
    let Some(v) = lines.next() else { return 0 };
    if lines.next().is_some() {
        return super::cache_control::DELTA_MAX;
    }
    let Ok(s) = v.to_str() else {
        return super::cache_control::DELTA_MAX;
    };
    let first = s.split(',').next().unwrap_or("").trim();
    match super::cache_control::parse_delta(first) {
        Delta::Secs(secs) if !first.starts_with('"') => secs,
        _ => super::cache_control::DELTA_MAX,
    }
}

/// Computes the freshness facts of a response received at `response_time` for a request sent
/// at `request_time`.
pub fn freshness(
    status: StatusCode,
    resp: &HeaderMap,
    cc: &CacheControl,
    request_time: Millis,
    response_time: Millis,
    opts: &PolicyOptions,
) -> Freshness {
    let date = header_date(resp, DATE).unwrap_or(response_time);
    let times = Times { request_time, response_time, date, age_value: secs32(age_value(resp)) };
    let last_modified = header_date(resp, LAST_MODIFIED);
    Freshness {
        times,
        lifetime: secs32(lifetime(status, resp, cc, date, last_modified, opts)),
        no_cache: cc.no_cache,
        no_stale: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
        strict: cc.must_revalidate || cc.proxy_revalidate,
        stale_while_revalidate: secs32(cc.stale_while_revalidate.map(|d| d.or(0)).unwrap_or(0)),
        stale_if_error: secs32(cc.stale_if_error.map(|d| d.or(0)).unwrap_or(0)),
        last_modified: last_modified.unwrap_or(date),
    }
}

/// Seconds as stored: capped at 2^31 (RFC 9111 §1.2.2), so they fit in 32 bits.
pub fn secs32(secs: u64) -> u32 {
    secs.min(super::cache_control::DELTA_MAX) as u32
}

/// Freshness lifetime in seconds (§4.2.1): s-maxage, then max-age, then Expires − Date, then a
/// heuristic (§4.2.2). An invalid value in the first present of these means "already stale".
fn lifetime(
    status: StatusCode,
    resp: &HeaderMap,
    cc: &CacheControl,
    date: Millis,
    last_modified: Option<Millis>,
    opts: &PolicyOptions,
) -> u64 {
    if let Some(d) = cc.s_maxage {
        return d.or(0);
    }
    if let Some(d) = cc.max_age {
        return d.or(0);
    }
    if resp.contains_key(EXPIRES) {
        // §5.3: more than one Expires, or an invalid one, means already expired.
        if resp.get_all(EXPIRES).iter().count() > 1 {
            return 0;
        }
        return match header_date(resp, EXPIRES) {
            Some(exp) => exp.saturating_sub(date) / 1000,
            None => 0,
        };
    }
    if opts.heuristic && (heuristically_cacheable(status) || cc.public) {
        if let Some(lm) = last_modified {
            if lm < date {
                let secs = ((date - lm) as f64 / 1000.0 * opts.heuristic_fraction) as u64;
                return secs.min(opts.heuristic_max_secs);
            }
        }
    }
    0
}

impl Freshness {
    /// RFC 5861 §3: stale, but within `stale-while-revalidate`: serve it and revalidate in the
    /// background. Not for `no-cache`, `must-revalidate` or `proxy-revalidate` responses.
    pub fn within_stale_while_revalidate(&self, now: Millis) -> bool {
        let ttl = self.ttl_ms(now);
        !self.no_cache
            && !self.strict
            && self.stale_while_revalidate > 0
            && ttl <= 0
            && (-ttl) as u64 <= u64::from(self.stale_while_revalidate) * 1000
    }

    /// RFC 5861 §4 and RFC 9111 §4.2.4: may this stale response be served because the origin
    /// failed? Within the response's or the request's `stale-if-error` window, or within
    /// `grace_ms` unless the response forbids serving stale.
    pub fn stale_on_error(&self, req: &CacheControl, grace_ms: u64, now: Millis) -> bool {
        if self.no_cache {
            return false;
        }
        let staleness = (-self.ttl_ms(now)).max(0) as u64;
        let req_window = req.stale_if_error.map(|d| d.or(0)).unwrap_or(0);
        let window_ms = u64::from(self.stale_if_error).max(req_window).saturating_mul(1000);
        let grace = if self.no_stale { 0 } else { grace_ms };
        staleness <= window_ms.max(grace)
    }

    /// Current age in milliseconds (§4.2.3).
    pub fn current_age_ms(&self, now: Millis) -> u64 {
        let t = &self.times;
        let apparent_age = t.response_time.saturating_sub(t.date);
        let response_delay = t.response_time.saturating_sub(t.request_time);
        let corrected_age_value = (u64::from(t.age_value) * 1000).saturating_add(response_delay);
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        let resident_time = now.saturating_sub(t.response_time);
        corrected_initial_age.saturating_add(resident_time)
    }

    /// Current age in whole seconds, as sent in `Age` (§5.1), capped at 2^31.
    pub fn age_secs(&self, now: Millis) -> u64 {
        (self.current_age_ms(now) / 1000).min(super::cache_control::DELTA_MAX)
    }

    /// Makes the response stale from `at` on (a soft purge): its lifetime becomes at most its
    /// age at `at`, so from then on it must be revalidated, and `stale-while-revalidate`,
    /// `stale-if-error` and grace count from `at`.
    pub fn stale_from(&mut self, at: Millis) {
        let age = u32::try_from(self.current_age_ms(at) / 1000).unwrap_or(u32::MAX);
        self.lifetime = self.lifetime.min(age);
    }

    /// Remaining freshness in milliseconds: positive while fresh.
    pub fn ttl_ms(&self, now: Millis) -> i64 {
        (i64::from(self.lifetime) * 1000).saturating_sub(self.current_age_ms(now) as i64)
    }

    /// May this stored response answer a request with directives `req`, at `now`?
    pub fn usable(&self, req: &CacheControl, now: Millis) -> Usable {
        if req.no_cache {
            return Usable::Revalidate(Fwd::Request);
        }
        let age_ms = self.current_age_ms(now);
        let ttl = self.ttl_ms(now);
        // §5.2.1.1: max-age — the client will not accept a response older than this.
        if let Some(max_age) = req.max_age {
            if age_ms > max_age.or(0).saturating_mul(1000) {
                return Usable::Revalidate(Fwd::Request);
            }
        }
        // §5.2.1.3: min-fresh — fresh for at least this much longer.
        if let Some(min_fresh) = req.min_fresh {
            if ttl < (min_fresh.or(0).saturating_mul(1000)) as i64 {
                return Usable::Revalidate(Fwd::Request);
            }
        }
        if self.no_cache {
            return Usable::Revalidate(Fwd::Stale);
        }
        if ttl > 0 {
            return Usable::Fresh;
        }
        // Stale. §4.2.4: may be served only where allowed, never with must-revalidate et al.
        if !self.no_stale {
            if let Some(max_stale) = req.max_stale {
                let staleness = (-ttl) as u64;
                if max_stale.is_none_or(|s| staleness <= s.saturating_mul(1000)) {
                    return Usable::Stale;
                }
            }
        }
        Usable::Revalidate(Fwd::Stale)
    }
}

/// The answer of [`Freshness::usable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    /// Fresh: serve it.
    Fresh,
    /// Stale, but the request allows it (`max-stale`): serve it.
    Stale,
    /// Must go forward (conditionally when validators exist), for this reason.
    Revalidate(Fwd),
}

/// True when the response carries a validator usable for revalidation.
pub fn has_validator(resp: &HeaderMap) -> bool {
    resp.contains_key(ETAG) || resp.contains_key(LAST_MODIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;
    use http::HeaderValue;

    const T0: Millis = 1_700_000_000_000;

    #[test]
    fn dates_parse_the_same_whether_remembered_or_not() {
        let at = |secs: u64| httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        let mut h = HeaderMap::new();
        for (value, want) in [
            (at(1_700_000_000), Some(1_700_000_000_000)),
            (at(1_700_000_000), Some(1_700_000_000_000)),
            (at(1_700_000_001), Some(1_700_000_001_000)),
            ("not a date".to_string(), None),
            ("not a date".to_string(), None),
            (at(1_700_000_000), Some(1_700_000_000_000)),
            // Longer than what is remembered (an obsolete format with spaces around it).
            (format!("   {}   ", "Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777_000)),
        ] {
            for name in [DATE, LAST_MODIFIED, EXPIRES, http::header::HeaderName::from_static("x-date")] {
                h.insert(name.clone(), HeaderValue::from_str(&value).unwrap());
                assert_eq!(header_date(&h, name.clone()), want, "{name}: {value}");
            }
        }
        assert_eq!(header_date(&HeaderMap::new(), DATE), None);
    }

    fn date(ms: Millis) -> String {
        httpdate::fmt_http_date(crate::clock::from_millis(ms))
    }

    fn fresh(pairs: &[(&'static str, &str)]) -> Freshness {
        let h = headers(pairs);
        let opts = PolicyOptions::default();
        freshness(StatusCode::OK, &h, &response_cache_control(&h, &opts), T0, T0, &opts)
    }

    #[test]
    fn s_maxage_over_max_age_over_expires() {
        let d = date(T0);
        let e = date(T0 + 500_000);
        assert_eq!(fresh(&[("cache-control", "max-age=10, s-maxage=20"), ("date", &d)]).lifetime, 20);
        assert_eq!(fresh(&[("cache-control", "max-age=10"), ("expires", &e), ("date", &d)]).lifetime, 10);
        assert_eq!(fresh(&[("expires", &e), ("date", &d)]).lifetime, 500);
        assert_eq!(fresh(&[("expires", "0"), ("date", &d)]).lifetime, 0);
        assert_eq!(fresh(&[("cache-control", "max-age=-1")]).lifetime, 0);
    }

    #[test]
    fn heuristic_only_with_last_modified() {
        let d = date(T0);
        let lm = date(T0 - 1_000_000);
        assert_eq!(fresh(&[("date", &d), ("last-modified", &lm)]).lifetime, 100);
        assert_eq!(fresh(&[("date", &d)]).lifetime, 0);
        let h = headers(&[("date", &d), ("last-modified", &lm)]);
        let off = PolicyOptions { heuristic: false, ..Default::default() };
        assert_eq!(freshness(StatusCode::OK, &h, &CacheControl::default(), T0, T0, &off).lifetime, 0);
    }

    #[test]
    fn age_counts_upstream_age_and_residence() {
        let f = fresh(&[("cache-control", "max-age=100"), ("age", "30")]);
        assert_eq!(f.age_secs(T0), 30);
        assert_eq!(f.age_secs(T0 + 10_000), 40);
        assert_eq!(f.usable(&CacheControl::default(), T0 + 69_000), Usable::Fresh);
        assert_eq!(f.usable(&CacheControl::default(), T0 + 70_000), Usable::Revalidate(Fwd::Stale));
    }

    #[test]
    fn request_directives() {
        let f = fresh(&[("cache-control", "max-age=100")]);
        let now = T0 + 50_000;
        assert_eq!(f.usable(&CacheControl::parse("max-age=10"), now), Usable::Revalidate(Fwd::Request));
        assert_eq!(f.usable(&CacheControl::parse("min-fresh=60"), now), Usable::Revalidate(Fwd::Request));
        assert_eq!(f.usable(&CacheControl::parse("no-cache"), now), Usable::Revalidate(Fwd::Request));
        let later = T0 + 120_000;
        assert_eq!(f.usable(&CacheControl::parse("max-stale=30"), later), Usable::Stale);
        assert_eq!(f.usable(&CacheControl::parse("max-stale=10"), later), Usable::Revalidate(Fwd::Stale));
        assert_eq!(f.usable(&CacheControl::parse("max-stale"), later), Usable::Stale);
        let strict = fresh(&[("cache-control", "max-age=100, must-revalidate")]);
        assert_eq!(strict.usable(&CacheControl::parse("max-stale"), later), Usable::Revalidate(Fwd::Stale));
    }

    #[test]
    fn targeted_fields_replace_cache_control() {
        let mut opts = PolicyOptions::default();
        let h = headers(&[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")]);
        let cc = response_cache_control(&h, &opts);
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(Delta::Secs(60)));
        opts.targeted.insert(0, http::header::HeaderName::from_static("edgecache-control"));
        let h = headers(&[("edgecache-control", "max-age=5"), ("cdn-cache-control", "max-age=60")]);
        assert_eq!(response_cache_control(&h, &opts).max_age, Some(Delta::Secs(5)));
        // An empty targeted field does not count.
        let h = headers(&[("cache-control", "max-age=7"), ("cdn-cache-control", "")]);
        assert_eq!(response_cache_control(&h, &opts).max_age, Some(Delta::Secs(7)));
    }

    #[test]
    fn stale_windows() {
        let f = fresh(&[("cache-control", "max-age=10, stale-while-revalidate=30, stale-if-error=60")]);
        let none = CacheControl::default();
        assert!(!f.within_stale_while_revalidate(T0 + 5_000), "fresh is not stale");
        assert!(f.within_stale_while_revalidate(T0 + 35_000));
        assert!(!f.within_stale_while_revalidate(T0 + 41_000));
        assert!(f.stale_on_error(&none, 0, T0 + 70_000));
        assert!(!f.stale_on_error(&none, 0, T0 + 71_000));
        let strict = fresh(&[("cache-control", "max-age=10, must-revalidate, stale-while-revalidate=30")]);
        assert!(!strict.within_stale_while_revalidate(T0 + 15_000));
        assert!(!strict.stale_on_error(&none, 60_000, T0 + 15_000), "grace does not override must-revalidate");
        let plain = fresh(&[("cache-control", "max-age=10")]);
        assert!(plain.stale_on_error(&none, 10_000, T0 + 20_000));
        assert!(!plain.stale_on_error(&none, 10_000, T0 + 21_000));
        assert!(plain.stale_on_error(&CacheControl::parse("stale-if-error=100"), 0, T0 + 50_000));
    }

    #[test]
    fn stale_from_a_soft_purge_on_with_its_windows_counted_from_then() {
        let mut f = fresh(&[("cache-control", "max-age=100, stale-while-revalidate=30")]);
        let none = CacheControl::default();
        f.stale_from(T0 + 10_500);
        assert_eq!(f.usable(&none, T0 + 10_500), Usable::Revalidate(Fwd::Stale));
        assert!(f.within_stale_while_revalidate(T0 + 40_000));
        assert!(!f.within_stale_while_revalidate(T0 + 41_000));
        // Already stale: unchanged.
        let mut old = fresh(&[("cache-control", "max-age=5")]);
        old.stale_from(T0 + 50_000);
        assert_eq!(old.lifetime, 5);
    }

    #[test]
    fn storability_reasons() {
        let opts = PolicyOptions::default();
        let check = |req: &[(&'static str, &str)], status: u16, resp: &[(&'static str, &str)]| {
            let (rq, rs) = (headers(req), headers(resp));
            storable(
                &Req { method: &Method::GET, headers: &rq, cc: &request_cache_control(&rq) },
                &Resp {
                    status: StatusCode::from_u16(status).unwrap(),
                    headers: &rs,
                    cc: &response_cache_control(&rs, &opts),
                },
                &opts,
            )
        };
        assert_eq!(check(&[], 200, &[("cache-control", "max-age=5")]), Ok(()));
        assert_eq!(check(&[], 200, &[("cache-control", "max-age=5, private")]), Err(NotStored::Private));
        assert_eq!(check(&[], 200, &[("cache-control", "No-Store")]), Err(NotStored::NoStore));
        assert_eq!(check(&[], 200, &[("cache-control", "max-age=5"), ("vary", "*")]), Err(NotStored::VaryStar));
        assert_eq!(
            check(&[], 200, &[("cache-control", "max-age=5"), ("set-cookie", "a=b")]),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            check(&[("authorization", "x")], 200, &[("cache-control", "max-age=5")]),
            Err(NotStored::Authorization)
        );
        assert_eq!(check(&[("authorization", "x")], 200, &[("cache-control", "s-maxage=5")]), Ok(()));
        assert_eq!(check(&[], 302, &[]), Err(NotStored::Status));
        assert_eq!(check(&[], 302, &[("cache-control", "max-age=5")]), Ok(()));
        assert_eq!(
            check(&[("cache-control", "no-store")], 200, &[("cache-control", "max-age=5")]),
            Err(NotStored::RequestNoStore)
        );
    }
}
