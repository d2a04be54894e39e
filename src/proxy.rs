//! The request flow, as a readable sequence of steps:
//!
//! request checks → cache key → lookup (Vary-matched variant) → freshness decision →
//! serve from store (answering conditionals locally) | revalidate with the stored validators |
//! forward a miss and store the complete response while streaming it → `Cache-Status`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{request, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ProxyBody;

mod coalesce;
mod forward;
use crate::cache::fill::Inflight;
use crate::cache::key::normalized_host;
use crate::cache::policy::{self, Freshness, PolicyOptions, Usable};
use crate::cache::ready::{self, Head};
use crate::cache::shared::SharedTier;
use crate::cache::tiers::Tiers;
use crate::cache::{control::CacheControl, vary, CacheKey, Entry, MemoryTier};
use crate::clock::{Clock, Millis};
use crate::conditional;
use crate::config::Config;
use crate::range::{self, RangeAnswer};
use crate::status::{CacheStatus, Detail, Fwd};
use crate::upstream::{Upstream, UpstreamError};
use forward::{content_length, OriginResponse};

/// `Cache-Status` (RFC 9211).
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The proxy: configuration, the memory tier, the origin client and the clock.
pub struct Proxy {
    cfg: Arc<Config>,
    memory: MemoryTier,
    upstream: Upstream,
    clock: Arc<dyn Clock>,
    opts: PolicyOptions,
    /// Every tier, for writes.
    tiers: Tiers,
    /// Fills in flight, for coalescing.
    inflight: Inflight,
    /// Keys whose responses could not be shared, until when (hit-for-pass).
    hit_for_pass: coalesce::HitForPass,
    /// Targeted cache-control fields not sent on to clients.
    strip: Vec<HeaderName>,
    /// One of them has a common name (stored as a tag): stored responses are always stripped.
    strip_known: bool,
}

/// Where a request goes, as forwarded: normalized host and the path and query. Both share the
/// request's own bytes when they are already in normal form (no copy).
#[derive(Clone)]
struct Target {
    host: HostValue,
    path_and_query: PathAndQuery,
}

/// A normalized host name and port, as a field value: the request's own `Host` value when that
/// is already normal (cloning it copies nothing), else a value of its own. Read as text, it is
/// checked again (a few nanoseconds for a host name) rather than trusted.
#[derive(Clone)]
struct HostValue(HeaderValue);

impl HostValue {
    /// The normal form of `raw` (an authority, or `field`'s text), `None` when it is invalid.
    fn new(raw: &str, field: Option<&HeaderValue>) -> Option<HostValue> {
        match (normalized_host(raw, "http")?, field) {
            (Cow::Borrowed(normal), Some(field)) if normal.len() == field.len() => Some(HostValue(field.clone())),
            (normal, _) => HeaderValue::from_str(&normal).ok().map(HostValue),
        }
    }
}

impl std::ops::Deref for HostValue {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(self.0.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Display for HostValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl Target {
    /// The URL as stored in the shared tier's envelopes.
    fn canonical(&self) -> String {
        format!("http://{}{}", self.host, self.path_and_query)
    }
}

impl Proxy {
    /// A proxy for `cfg`, reading time from `clock`.
    pub fn new(cfg: Arc<Config>, clock: Arc<dyn Clock>) -> Self {
        let opts = PolicyOptions {
            heuristic: cfg.cache.heuristic_freshness,
            heuristic_max_secs: cfg.cache.heuristic_max.as_secs(),
            store_set_cookie: cfg.cache.store_set_cookie,
            targeted: cfg.targeted.field.iter().cloned().chain([policy::CDN_CACHE_CONTROL.clone()]).collect(),
            ..PolicyOptions::default()
        };
        let tg = &cfg.targeted;
        let mut strip = Vec::new();
        if let (Some(f), false) = (&tg.field, tg.forward_field) {
            strip.push(f.clone());
        }
        if !tg.forward_cdn_cache_control {
            strip.push(policy::CDN_CACHE_CONTROL.clone());
        }
        if !tg.forward_surrogate_control {
            strip.push(policy::SURROGATE_CONTROL.clone());
        }
        let memory = MemoryTier::new(cfg.cache.memory_bytes, cfg.cache.max_variants, clock.clone());
        let shared = cfg.redis.clone().map(|r| SharedTier::start(r, memory.clone(), clock.clone()));
        Proxy {
            tiers: Tiers { memory: memory.clone(), shared },
            memory,
            inflight: Inflight::default(),
            hit_for_pass: coalesce::HitForPass::new(cfg.coalescing.hit_for_pass),
            strip_known: strip.iter().any(crate::cache::headers::is_known),
            strip,
            upstream: Upstream::new(&cfg),
            clock,
            opts,
            cfg,
        }
    }

    /// The shared tier, when configured (for inspection in tests).
    pub fn shared(&self) -> Option<&SharedTier> {
        self.tiers.shared.as_ref()
    }

    /// How many requests are waiting on the origin request in flight for `key` (coalesced);
    /// `None` when none is in flight.
    pub fn joined(&self, key: &CacheKey) -> Option<usize> {
        self.inflight.joined(key)
    }

    /// The memory tier (for inspection in tests and benches).
    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    /// Handles one request from `peer`.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let (parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return local(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n", Detail::Method, Fwd::Bypass);
        }
        if let Err((code, msg)) = transfer_coding(&parts.headers) {
            return local(code, msg, Detail::BadRequest, Fwd::Bypass);
        }
        let target = match target(&parts) {
            Ok(t) => t,
            Err(msg) => return local(StatusCode::BAD_REQUEST, msg, Detail::BadRequest, Fwd::Bypass),
        };
        if parts.method == Method::OPTIONS && target.path_and_query.as_str() == "*" {
            // Server-wide OPTIONS (RFC 9110 §9.3.7): answered here; the origin client only
            // speaks origin-form.
            let mut headers = HeaderMap::with_capacity(3);
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return finish(StatusCode::OK, headers, ProxyBody::empty(), CacheStatus::default());
        }
        if (parts.method == Method::GET || parts.method == Method::HEAD) && !has_body(&body) {
            self.cacheable(parts, target, peer).await
        } else {
            Box::pin(self.pass(parts, body, target, peer)).await
        }
    }

    /// GET and HEAD: look up, serve, revalidate or fetch.
    async fn cacheable(
        self: &Arc<Self>,
        parts: request::Parts,
        target: Target,
        peer: SocketAddr,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let req_cc = policy::request_cache_control(&parts.headers);
        if parts.headers.contains_key(header::IF_MATCH) || parts.headers.contains_key(header::IF_UNMODIFIED_SINCE) {
            // Preconditions for state-changing intent: the origin evaluates them; nothing stored.
            return self.forward(&parts, &target, peer, None, Fwd::Bypass, &req_cc, None).await;
        }
        let key = CacheKey::new("http", &target.host, target.path_and_query.as_str());
        let mut now = self.clock.now_millis();
        let writes = self.memory.writes();
        let variants = self.memory.get_at(&key, now);
        let mut selected = variants.as_ref().and_then(|v| v.select(&parts.headers)).cloned();
        let mut from_shared = false;
        if selected.is_none() {
            // Memory → shared tier → origin. A shared-tier hit is promoted into memory.
            if self.tiers.shared.is_some() {
                selected = Box::pin(self.lookup_shared(&key, &target, &parts.headers)).await;
                from_shared = selected.is_some();
                now = self.clock.now_millis();
            }
        }
        let hit = |ttl: i64| CacheStatus { shared_tier: from_shared, ..CacheStatus::hit(ttl) };
        if parts.headers.contains_key(header::RANGE) {
            // A range is served from a usable complete stored response; otherwise the request
            // is forwarded as it is and the partial response is not stored.
            let usable = |e: &Arc<Entry>| matches!(e.freshness.usable(&req_cc, now), Usable::Fresh | Usable::Stale);
            if let Some(entry) = selected.filter(usable) {
                let ttl = entry.freshness.ttl_ms(now).div_euclid(1000);
                return self.serve_stored(&parts, &entry, hit(ttl), now);
            }
            if req_cc.only_if_cached {
                return only_if_cached();
            }
            return self.forward(&parts, &target, peer, None, Fwd::Bypass, &req_cc, None).await;
        }
        let Some(entry) = selected else {
            if req_cc.only_if_cached {
                return only_if_cached();
            }
            let fwd = if variants.is_some() { Fwd::VaryMiss } else { Fwd::UriMiss };
            return self.coalesced(parts, target, peer, key, fwd, req_cc, None, writes).await;
        };
        match entry.freshness.usable(&req_cc, now) {
            Usable::Fresh | Usable::Stale => {
                let ttl = entry.freshness.ttl_ms(now).div_euclid(1000);
                self.serve_stored(&parts, &entry, hit(ttl), now)
            }
            // RFC 5861 §3: serve stale at once, revalidate once in the background.
            Usable::Revalidate(Fwd::Stale) if entry.freshness.within_stale_while_revalidate(now) => {
                self.revalidate_in_background(&parts, &target, peer, key, entry.clone());
                let status = CacheStatus {
                    detail: Some(Detail::StaleWhileRevalidate),
                    ..hit(entry.freshness.ttl_ms(now).div_euclid(1000))
                };
                self.serve_stored(&parts, &entry, status, now)
            }
            Usable::Revalidate(_) if req_cc.only_if_cached => only_if_cached(),
            Usable::Revalidate(fwd) => self.coalesced(parts, target, peer, key, fwd, req_cc, Some(entry), writes).await,
        }
    }

    /// Looks the URL up in the shared tier; every variant found is promoted into memory for its
    /// remaining useful life. Returns the variant this request selects.
    async fn lookup_shared(&self, key: &CacheKey, target: &Target, req: &HeaderMap) -> Option<Arc<Entry>> {
        let shared = self.tiers.shared.as_ref()?;
        let found = shared.get(key, &target.canonical()).await;
        let now = self.clock.now_millis();
        let mut selected = None;
        for entry in found {
            let entry = Arc::new(entry);
            if selected.is_none() && vary::matches(&entry.vary, req) {
                selected = Some(entry.clone());
            }
            self.memory.insert(*key, entry.clone(), now_keep(&entry.freshness, now, &self.cfg));
        }
        selected
    }

    /// A 304 from the origin refreshed `old`: merge (RFC 9111 §4.3.4) and store. Returns the
    /// refreshed entry and whether it could be stored.
    #[allow(clippy::too_many_arguments)]
    fn refresh(
        &self,
        req: &HeaderMap,
        key: CacheKey,
        canonical: &str,
        old: &Arc<Entry>,
        not_modified: &HeaderMap,
        request_time: Millis,
        response_time: Millis,
    ) -> (Arc<Entry>, Result<(), Detail>) {
        let mut merged = old.merged_headers(not_modified);
        let cc = policy::response_cache_control(&merged, &self.opts);
        let mut fresh = policy::freshness(old.status, &merged, &cc, request_time, response_time, &self.opts);
        // The 304's own Age is not stored (it is recomputed) but counts in the new freshness.
        fresh.times.age_value = policy::secs32(policy::age_value(not_modified));
        // §5.2.2.4 / §5.2.2.7: fields named by a qualified no-cache or private are not stored.
        for name in cc.no_cache_fields.iter().chain(cc.private_fields.iter()) {
            merged.remove(&**name);
        }
        let entry = Arc::new(old.refreshed(&merged, fresh));
        let req_cc = policy::request_cache_control(req);
        let stored = policy::storable(&Method::GET, req, &req_cc, entry.status, &merged, &cc, &self.opts);
        match stored {
            Ok(()) => {
                self.tiers.replace(key, canonical, old, entry.clone(), now_keep(&fresh, response_time, &self.cfg))
            }
            Err(_) => self.tiers.remove_variant(&key, old),
        }
        (entry, stored)
    }

    /// RFC 5861 §4, RFC 9111 §4.2.4: the origin failed (`status` 5xx, or no response); serve the
    /// stale response if its window allows. Only for a revalidation the cache itself needed,
    /// never against the client's `no-cache` / `max-age` demands.
    fn stale_on_error(
        &self,
        parts: &request::Parts,
        stale: Option<&Arc<Entry>>,
        fwd: Fwd,
        req_cc: &CacheControl,
        status: Option<StatusCode>,
    ) -> Option<(Response<ProxyBody>, CacheStatus)> {
        let entry = stale.filter(|_| fwd == Fwd::Stale)?;
        let now = self.clock.now_millis();
        if !entry.freshness.stale_on_error(req_cc, self.cfg.stale.grace.as_millis() as u64, now) {
            return None;
        }
        let cs = CacheStatus {
            hit: true,
            fwd: Some(Fwd::Stale),
            fwd_status: status.map(|s| s.as_u16()),
            ttl: Some(entry.freshness.ttl_ms(now).div_euclid(1000)),
            detail: Some(Detail::StaleIfError),
            ..Default::default()
        };
        Some(self.serve_stored(parts, entry, cs, now))
    }

    /// What a response will be stored as, all but its body.
    fn entry_template(
        &self,
        req: &HeaderMap,
        rp: &http::response::Parts,
        cc: &CacheControl,
        fresh: Freshness,
    ) -> Entry {
        // `Age` is recomputed when served. §5.2.2.4 / §5.2.2.7: fields named by a qualified
        // no-cache or private are not stored.
        let named =
            |n: &str| cc.no_cache_fields.iter().chain(cc.private_fields.iter()).any(|f| f.eq_ignore_ascii_case(n));
        let headers = crate::cache::headers::StoredHeaders::from_map_where(&rp.headers, |n| {
            *n != header::AGE && !named(n.as_str())
        });
        let names = vary::vary_names(&rp.headers).unwrap_or_default();
        let vary = vary::vary_key(&names, req);
        Entry { status: rp.status, headers, body: bytes::Bytes::new(), vary, freshness: fresh }
    }

    /// Serves a stored response, answering the client's conditionals (RFC 9111 §4.3.2).
    fn serve_stored(
        &self,
        parts: &request::Parts,
        entry: &Arc<Entry>,
        status: CacheStatus,
        now: Millis,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let age = HeaderValue::from(entry.freshness.age_secs(now));
        // Nothing to strip when every stored name is a common one and none of them is targeted:
        // then the strip pass is skipped, whichever fields of the entry are sent.
        let clean = entry.headers.all_known() && !self.strip_known;
        let send = |code, headers, body| {
            if clean {
                finish(code, headers, body, status)
            } else {
                self.respond(code, headers, body, status)
            }
        };
        if entry.status.is_success()
            && conditional::is_conditional(&parts.headers)
            && conditional::not_modified(
                &parts.headers,
                entry.headers.get_bytes(&header::ETAG),
                entry.freshness.last_modified,
            )
        {
            let mut headers =
                ready::header_map(entry, Head::NotModified, || with_room(not_modified_stored(&entry.headers)));
            headers.insert(header::AGE, age);
            return send(StatusCode::NOT_MODIFIED, headers, ProxyBody::empty());
        }
        let mut headers = ready::header_map(entry, Head::Full, || with_room(entry.headers.to_map_with_capacity(3)));
        headers.insert(header::AGE, age);
        let mut code = entry.status;
        let mut body = entry.body.clone();
        if let Some(range) = parts.headers.get(header::RANGE).and_then(|r| r.to_str().ok()) {
            if entry.status == StatusCode::OK && parts.method == Method::GET {
                let len = body.len() as u64;
                let etag = entry.headers.get_bytes(&header::ETAG).and_then(|e| std::str::from_utf8(e).ok());
                match range::evaluate(range, &parts.headers, len, etag, || strong_last_modified(entry)) {
                    RangeAnswer::Full => {}
                    RangeAnswer::Partial { start, end } => {
                        code = StatusCode::PARTIAL_CONTENT;
                        body = body.slice(start as usize..=end as usize);
                        let cr = format!("bytes {start}-{end}/{len}");
                        headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii"));
                        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                    }
                    RangeAnswer::Unsatisfiable => {
                        let cr = format!("bytes */{len}");
                        headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii"));
                        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                        return send(StatusCode::RANGE_NOT_SATISFIABLE, headers, ProxyBody::empty());
                    }
                }
            }
        }
        let body = if parts.method == Method::HEAD { ProxyBody::empty() } else { ProxyBody::full(body) };
        send(code, headers, body)
    }
}

/// How long moka should keep an entry: its remaining freshness plus the stale windows and the
/// configured retention for revalidation.
fn now_keep(fresh: &Freshness, now: Millis, cfg: &Config) -> Duration {
    let ttl = fresh.ttl_ms(now).max(0) as u64;
    let windows = u64::from(fresh.stale_while_revalidate.max(fresh.stale_if_error)) * 1000;
    Duration::from_millis(ttl.saturating_add(windows)) + cfg.cache.keep_stale
}

/// True when a request carries a body: a `Content-Length` over 0, chunked framing, or HTTP/2
/// DATA. A GET or HEAD with one is passed to the origin with its body and never cached: the
/// origin may read it, and the cache key does not include it.
fn has_body(body: &Incoming) -> bool {
    !http_body::Body::is_end_stream(body) && http_body::Body::size_hint(body).exact() != Some(0)
}

/// The request's transfer coding (RFC 9112 §6.1): only `chunked`, once, is forwarded; any other
/// coding would reach the origin undeclared once the body is re-framed (501), and `chunked`
/// applied twice is malformed (400).
fn transfer_coding(h: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let mut codings = h.get_all(header::TRANSFER_ENCODING).iter().flat_map(|v| v.as_bytes().split(|&b| b == b','));
    let Some(first) = codings.next() else { return Ok(()) };
    let mut chunked = usize::from(first.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    let mut others = 1 - chunked;
    for c in codings {
        if c.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        } else {
            others += 1;
        }
    }
    match (chunked, others) {
        (1, 0) => Ok(()),
        (_, 0) => Err((StatusCode::BAD_REQUEST, "chunked applied more than once\n")),
        _ => Err((StatusCode::NOT_IMPLEMENTED, "only the chunked transfer coding is supported\n")),
    }
}

/// Resolves the request target (RFC 9112 §3.2): the authority of an absolute-form target wins
/// over `Host`; otherwise exactly one valid `Host` is required (HTTP/1.1). Absolute-form is
/// accepted for `http` only (this listener's scheme), and authority-form only belongs to
/// CONNECT (refused before this).
fn target(parts: &request::Parts) -> Result<Target, &'static str> {
    match (parts.uri.scheme(), parts.uri.authority()) {
        (Some(scheme), _) if *scheme != http::uri::Scheme::HTTP => {
            return Err("only http:// request targets are served here\n")
        }
        (None, Some(_)) => return Err("authority-form is only for CONNECT\n"),
        _ => {}
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host_field = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host field\n");
    }
    let (raw, field) = match (parts.uri.authority(), host_field) {
        (Some(a), _) => {
            if a.as_str().contains('@') {
                return Err("userinfo is not allowed in the request target\n");
            }
            (a.as_str(), None)
        }
        (None, Some(h)) => (h.to_str().map_err(|_| "Host is not valid\n")?, Some(h)),
        (None, None) => return Err("missing Host\n"),
    };
    let host = HostValue::new(raw, field).ok_or("Host is not valid\n")?;
    let path_and_query = match parts.uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
        Some(pq) if pq.as_str() == "*" && parts.method == Method::OPTIONS => PathAndQuery::from_static("*"),
        None => PathAndQuery::from_static("/"),
        Some(_) => return Err("request target must start with /\n"),
    };
    Ok(Target { host, path_and_query })
}

/// The stored `Last-Modified`, when it is a strong validator (RFC 9110 §8.8.2.2: the stored
/// `Date` is at least a second later). Not the `Date` fallback `If-Modified-Since` uses: an
/// `If-Range` date must match a `Last-Modified` the origin sent (§13.1.5).
fn strong_last_modified(entry: &Entry) -> Option<Millis> {
    let lm = crate::clock::http_date(entry.headers.get(&header::LAST_MODIFIED)?.as_bytes())?;
    (entry.freshness.times.date >= lm.saturating_add(1000)).then_some(lm)
}

/// A head served from the store, with the two fields every such response gets already in it:
/// `Age` (never stored) and, unless the stored response carries its own, an empty `Cache-Status`
/// that [`finish`] replaces. A map cloned from a ready head has no spare room, so a field added
/// after the clone would grow its table (a reallocation per hit); present already, each is
/// replaced in place.
fn with_room(mut headers: HeaderMap) -> HeaderMap {
    headers.insert(header::AGE, HeaderValue::from_static("0"));
    if !headers.contains_key(&CACHE_STATUS) {
        headers.insert(CACHE_STATUS.clone(), HeaderValue::from_static(""));
    }
    headers
}

/// The 304 field set (RFC 9110 §15.4.5) of a stored response.
fn not_modified_stored(from: &crate::cache::headers::StoredHeaders) -> HeaderMap {
    from.select(12, |name| conditional::NOT_MODIFIED_FIELDS.iter().any(|f| f.as_str() == name))
}

fn not_modified_headers(from: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(12);
    for name in conditional::NOT_MODIFIED_FIELDS {
        for v in from.get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    h
}

impl Proxy {
    /// Removes the targeted fields meant for this cache only, then [`finish`]es.
    fn respond(
        &self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: ProxyBody,
        cs: CacheStatus,
    ) -> (Response<ProxyBody>, CacheStatus) {
        // Most responses carry none of them: a look at the names present costs less than a
        // removal (a hash and a probe) per name.
        if headers.keys().any(|name| self.strip.contains(name)) {
            for name in &self.strip {
                headers.remove(name);
            }
        }
        finish(status, headers, body, cs)
    }
}

/// Adds `Cache-Status` (ours first, RFC 9211 §2) and builds the response.
fn finish(
    status: StatusCode,
    mut headers: HeaderMap,
    body: ProxyBody,
    cs: CacheStatus,
) -> (Response<ProxyBody>, CacheStatus) {
    let ours = cs.header_value();
    match headers.entry(CACHE_STATUS.clone()) {
        header::Entry::Vacant(v) => {
            v.insert(ours);
        }
        header::Entry::Occupied(mut o) => {
            // A cache behind this one (or the origin) said its own: ours goes first. Written
            // into one buffer that becomes the value, as every response of a tiered setup does.
            // An empty value holds no member (the room `with_room` keeps, or an empty field from
            // upstream): ours replaces it.
            let theirs = o.iter().filter(|v| !v.is_empty()).map(|v| v.len() + 2).sum::<usize>();
            if theirs == 0 {
                o.insert(ours);
            } else {
                let mut joined = String::with_capacity(ours.len() + theirs);
                joined.push_str(ours.to_str().unwrap_or(""));
                for theirs in o.iter().filter(|v| !v.is_empty()).filter_map(|v| v.to_str().ok()) {
                    joined.push_str(", ");
                    joined.push_str(theirs);
                }
                o.insert(HeaderValue::try_from(joined).unwrap_or(ours));
            }
        }
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    (resp, cs)
}

/// A response made by the proxy itself (errors), never stored.
fn local(code: StatusCode, msg: &'static str, detail: Detail, fwd: Fwd) -> (Response<ProxyBody>, CacheStatus) {
    let mut cs = CacheStatus::forward(fwd);
    cs.detail = Some(detail);
    local_with(code, msg, cs)
}

fn local_with(code: StatusCode, msg: &'static str, cs: CacheStatus) -> (Response<ProxyBody>, CacheStatus) {
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(msg.len()));
    finish(code, headers, ProxyBody::full(msg), cs)
}

fn only_if_cached() -> (Response<ProxyBody>, CacheStatus) {
    // RFC 9111 §5.2.1.7: 504 when nothing stored can answer.
    let cs = CacheStatus { detail: Some(Detail::OnlyIfCached), ..Default::default() };
    local_with(StatusCode::GATEWAY_TIMEOUT, "not in cache (only-if-cached)\n", cs)
}

fn upstream_failure(e: &UpstreamError, fwd: Fwd) -> (Response<ProxyBody>, CacheStatus) {
    match e {
        UpstreamError::ClientBodyTimeout | UpstreamError::ClientBody(_) => {
            tracing::info!(error = %e, "client request body failed")
        }
        _ => tracing::warn!(error = %e, "origin request failed"),
    }
    match e {
        UpstreamError::Timeout => local(StatusCode::GATEWAY_TIMEOUT, "origin timed out\n", Detail::OriginTimeout, fwd),
        UpstreamError::Unreachable(_) => {
            local(StatusCode::BAD_GATEWAY, "origin unreachable\n", Detail::OriginUnreachable, fwd)
        }
        UpstreamError::Busy => {
            local(StatusCode::SERVICE_UNAVAILABLE, "origin connections all busy\n", Detail::OriginBusy, fwd)
        }
        UpstreamError::Invalid(_) => {
            local(StatusCode::BAD_GATEWAY, "invalid response from origin\n", Detail::OriginInvalid, fwd)
        }
        UpstreamError::ClientBodyTimeout => {
            local(StatusCode::REQUEST_TIMEOUT, "request body timed out\n", Detail::BadRequest, fwd)
        }
        UpstreamError::ClientBody(_) => {
            local(StatusCode::BAD_REQUEST, "malformed request body\n", Detail::BadRequest, fwd)
        }
    }
}
