//! Requests that go to the origin on their own: a miss or revalidation outside coalescing
//! ([`Proxy::forward`]), every other method ([`Proxy::pass`], then invalidation, RFC 9111 §4.4),
//! and what every origin request is made of: the request sent ([`Proxy::origin_request`]), the
//! answer with its times ([`Proxy::ask_origin`]) and whether it may be stored ([`Proxy::decide`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::{not_modified_headers, now_keep, upstream_failure, Proxy, Target};
use crate::body::{drain, BodyTimeout, ClientBody, OriginBody, ProxyBody, Tee, UpBody};
use crate::cache::key::normalize_host;
use crate::cache::policy::{self, Freshness};
use crate::cache::{control::CacheControl, CacheKey, Entry};
use crate::clock::Millis;
use crate::conditional;
use crate::status::{CacheStatus, Detail, Fwd};
use crate::upstream::{append_list, ip_value, remove_hop_by_hop, remove_where, via, OriginIncoming, UpstreamError};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Request fields removed before forwarding because they change what the origin serves without
/// being part of the cache key.
/// Every field that names another host, scheme, port, path or method than the request's own is
/// one of them; `X-Forwarded-Host` and `X-Forwarded-Proto` are replaced instead.
const UNKEYED_OVERRIDES: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-host",
    "x-forwarded-server",
    "x-http-host-override",
    "x-original-host",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "front-end-https",
    "forwarded",
];
static SURROGATE_CAPABILITY: HeaderName = HeaderName::from_static("surrogate-capability");

/// The origin's answer to one request, with the times §4.2.3 needs.
pub(super) struct OriginResponse {
    pub(super) parts: http::response::Parts,
    pub(super) body: OriginIncoming,
    pub(super) request_time: Millis,
    pub(super) response_time: Millis,
}

impl Proxy {
    /// Goes to the origin on this request's own, without coalescing: a miss (`stale` None) or a
    /// revalidation of `stale`. `key` is None when the response must not be stored (Range,
    /// preconditions).
    ///
    /// Boxed: its state is about 3 KiB and it is a rare path. Held inline, it would be part of
    /// every request's future, which is built on the stack and moved as a whole.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward<'a>(
        &'a self,
        parts: &'a request::Parts,
        target: &'a Target,
        peer: SocketAddr,
        key: Option<CacheKey>,
        fwd: Fwd,
        req_cc: &'a CacheControl,
        stale: Option<Arc<Entry>>,
    ) -> Pin<Box<impl Future<Output = (Response<ProxyBody>, CacheStatus)> + 'a>> {
        Box::pin(self.forward_alone(parts, target, peer, key, fwd, req_cc, stale))
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward_alone(
        &self,
        parts: &request::Parts,
        target: &Target,
        peer: SocketAddr,
        key: Option<CacheKey>,
        fwd: Fwd,
        req_cc: &CacheControl,
        stale: Option<Arc<Entry>>,
    ) -> (Response<ProxyBody>, CacheStatus) {
        // A stored response is revalidated with its own validators, never the client's; a miss
        // that may be stored fetches the full response and answers the client's conditionals
        // locally.
        let own_conditionals = key.is_some() && !req_cc.no_store;
        let validators = stale.as_deref().filter(|e| e.has_validator());
        // HEAD is forwarded as GET when the response may be stored, so a later GET is a hit and a
        // stored body stays valid after revalidation.
        let method = if key.is_some() { Method::GET } else { parts.method.clone() };
        let req = self.origin_request(parts, target, peer, &method, UpBody::Empty, own_conditionals, validators);
        let OriginResponse { parts: rp, body: rbody, request_time, response_time } = match self.ask_origin(req).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(served) = self.stale_on_error(parts, stale.as_ref(), fwd, req_cc, None) {
                    tracing::warn!(error = %e, "origin failed; serving stale");
                    return served;
                }
                return upstream_failure(&e, fwd);
            }
        };
        let mut status = CacheStatus::forward(fwd);
        status.fwd_status = Some(rp.status.as_u16());

        // §4.3.4: a 304 to our revalidation refreshes the stored response.
        if rp.status == StatusCode::NOT_MODIFIED {
            if let (Some(old), Some(key), true) = (stale.as_ref(), key, validators.is_some()) {
                let canonical = target.canonical();
                let (entry, stored) =
                    self.refresh(&parts.headers, key, &canonical, old, &rp.headers, request_time, response_time);
                match stored {
                    Ok(()) => status.stored = true,
                    Err(reason) => status.detail = Some(reason),
                }
                return self.serve_stored(parts, &entry, status, response_time);
            }
        }
        // RFC 5861 §4: an error from the origin, and a stale response within its window.
        if rp.status.is_server_error() {
            if let Some(served) = self.stale_on_error(parts, stale.as_ref(), fwd, req_cc, Some(rp.status)) {
                return served;
            }
        }

        let length = content_length(&rp.headers);
        let (decision, fresh, resp_cc) =
            self.decide(&method, &parts.headers, req_cc, key, &rp, length, request_time, response_time);

        let tee = match (decision, key) {
            (Ok(()), Some(key)) => {
                status.stored = true;
                let tiers = self.tiers.clone();
                // The URL is written into shared-tier envelopes only.
                let canonical = self.tiers.shared.as_ref().map(|_| target.canonical()).unwrap_or_default();
                let template = self.entry_template(&parts.headers, &rp, &resp_cc, fresh);
                let keep_for = now_keep(&fresh, response_time, &self.cfg);
                let sink = Box::new(move |body: bytes::Bytes| {
                    tiers.insert(key, || canonical, Arc::new(template.with_body(body)), keep_for);
                });
                Some(Tee::new(self.cfg.cache.max_object_bytes as usize, length, sink))
            }
            (Err(reason), key) => {
                status.detail = Some(reason);
                // §4.3.3: a full response that may not be stored still supersedes the stale one.
                if let (Some(key), Some(old)) = (key, stale.as_ref()) {
                    if !rp.status.is_server_error() {
                        self.tiers.remove_variant(&key, old);
                    }
                }
                None
            }
            (Ok(()), None) => None,
        };

        let body = OriginBody::new(rbody, self.cfg.timeouts.idle, tee);
        // The client's own conditionals, answered from the fresh response.
        if own_conditionals
            && rp.status == StatusCode::OK
            && conditional::is_conditional(&parts.headers)
            && conditional::not_modified(
                &parts.headers,
                rp.headers.get(header::ETAG).map(|v| v.as_bytes()),
                fresh.last_modified,
            )
        {
            tokio::spawn(drain(body));
            let headers = not_modified_headers(&rp.headers);
            return self.respond(StatusCode::NOT_MODIFIED, headers, ProxyBody::empty(), status);
        }
        let body = if parts.method == Method::HEAD {
            tokio::spawn(drain(body));
            ProxyBody::empty()
        } else {
            ProxyBody::Origin(Box::new(body))
        };
        self.respond(rp.status, rp.headers, body, status)
    }

    /// Sends `req` to the origin. The answer's hop-by-hop fields are removed, `Date` is added when
    /// missing (RFC 9110 §6.6.1) and `Via` appended: ready to forward and to store.
    pub(super) async fn ask_origin(&self, req: Request<UpBody>) -> Result<OriginResponse, UpstreamError> {
        let request_time = self.clock.now_millis();
        let resp = self.upstream.send(req).await?;
        let response_time = self.clock.now_millis();
        let (mut parts, body) = resp.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        ensure_date(&mut parts.headers, response_time);
        append_list(&mut parts.headers, header::VIA, HeaderValue::from_static(via(parts.version)));
        Ok(OriginResponse { parts, body, request_time, response_time })
    }

    /// Whether the response to a request may be stored, and its freshness. `length` is the
    /// response's `Content-Length`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decide(
        &self,
        method: &Method,
        req: &HeaderMap,
        req_cc: &CacheControl,
        key: Option<CacheKey>,
        rp: &http::response::Parts,
        length: Option<u64>,
        request_time: Millis,
        response_time: Millis,
    ) -> (Result<(), Detail>, Freshness, CacheControl) {
        let resp_cc = policy::response_cache_control(&rp.headers, &self.opts);
        let mut decision = match key {
            None if req.contains_key(header::RANGE) => Err(Detail::Partial),
            None => Err(Detail::Precondition),
            Some(_) => policy::storable(method, req, req_cc, rp.status, &rp.headers, &resp_cc, &self.opts),
        };
        if decision.is_ok() && length.is_some_and(|n| n > self.cfg.cache.max_object_bytes) {
            decision = Err(Detail::TooLarge);
        }
        let fresh = policy::freshness(rp.status, &rp.headers, &resp_cc, request_time, response_time, &self.opts);
        if decision.is_ok() && fresh.lifetime == 0 && !fresh.no_cache && !policy::has_validator(&rp.headers) {
            decision = Err(Detail::NoFreshness);
        }
        (decision, fresh, resp_cc)
    }

    /// Every other method, and a GET or HEAD with a body: forwarded with its body streamed,
    /// then invalidation (RFC 9111 §4.4).
    pub(super) async fn pass(
        &self,
        parts: request::Parts,
        body: Incoming,
        target: Target,
        peer: SocketAddr,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let mut status = CacheStatus::forward(Fwd::Bypass);
        status.detail = Some(if parts.method.is_safe() && parts.method != Method::OPTIONS {
            Detail::RequestBody
        } else {
            Detail::Method
        });
        // The body's first bytes are read before an origin connection is taken: a body that is
        // malformed from its start is refused without costing one.
        let up_body = if http_body::Body::is_end_stream(&body) {
            UpBody::Empty
        } else {
            match ClientBody::start(body, self.cfg.timeouts.request_body).await {
                Ok(Some(body)) => UpBody::Stream(body),
                Ok(None) => UpBody::Empty,
                Err(e) if e.is::<BodyTimeout>() => {
                    return upstream_failure(&UpstreamError::ClientBodyTimeout, Fwd::Bypass)
                }
                Err(e) => return upstream_failure(&UpstreamError::ClientBody(e.to_string()), Fwd::Bypass),
            }
        };
        let req = self.origin_request(&parts, &target, peer, &parts.method, up_body, false, None);
        let OriginResponse { parts: rp, body: rbody, .. } = match self.ask_origin(req).await {
            Ok(r) => r,
            Err(e) => return upstream_failure(&e, Fwd::Bypass),
        };
        status.fwd_status = Some(rp.status.as_u16());
        if !parts.method.is_safe() && (rp.status.is_success() || rp.status.is_redirection()) {
            self.invalidate_after_unsafe(&target, &rp.headers);
        }
        let body = ProxyBody::Origin(Box::new(OriginBody::new(rbody, self.cfg.timeouts.idle, None)));
        self.respond(rp.status, rp.headers, body, status)
    }

    /// §4.4: the target URI, and `Location` / `Content-Location` when same-origin.
    pub(super) fn invalidate_after_unsafe(&self, target: &Target, resp: &HeaderMap) {
        self.tiers.invalidate(&CacheKey::new("http", &target.host, target.path_and_query.as_str()));
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(v) = resp.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(pq) = same_origin_path(v, target) {
                self.tiers.invalidate(&CacheKey::new("http", &target.host, &pq));
            }
        }
    }

    /// The request sent to the origin: hop-by-hop fields removed, `Host` as normalized (the key
    /// is computed from exactly this), `Via` and `X-Forwarded-*` added.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn origin_request(
        &self,
        parts: &request::Parts,
        target: &Target,
        peer: SocketAddr,
        method: &Method,
        body: UpBody,
        strip_conditionals: bool,
        validators: Option<&Entry>,
    ) -> Request<UpBody> {
        // A clone, then room for the fields added below: cloning copies the table as it is,
        // where inserting the client's fields one by one into a new map would hash each again.
        let mut headers = parts.headers.clone();
        headers.reserve(6);
        let declared_empty = matches!(body, UpBody::Empty) && headers.contains_key(header::CONTENT_LENGTH);
        // Fields some frameworks use to rewrite the URL, host or method: unkeyed, so a client
        // could make the origin answer something else under this key (cache poisoning). The
        // client's framing goes too (`Transfer-Encoding` is hop-by-hop): the request is framed
        // below by the body actually sent, never by what the client announced.
        remove_where(&mut headers, |name| name == "content-length" || UNKEYED_OVERRIDES.contains(&name));
        frame(&mut headers, &body, declared_empty);
        // The client's own `Host` value when it was already in normal form (no copy).
        headers.insert(header::HOST, target.host.0.clone());
        headers.insert(X_FORWARDED_HOST.clone(), target.host.0.clone());
        append_list(&mut headers, header::VIA, HeaderValue::from_static(via(parts.version)));
        append_list(&mut headers, X_FORWARDED_FOR.clone(), ip_value(peer.ip()));
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        // W3C Edge Architecture: tells the origin which `Surrogate-Control` target is ours.
        append_list(
            &mut headers,
            SURROGATE_CAPABILITY.clone(),
            HeaderValue::from_static("edgecache=\"Surrogate/1.0\""),
        );
        if strip_conditionals || validators.is_some() {
            headers.remove(header::IF_NONE_MATCH);
            headers.remove(header::IF_MODIFIED_SINCE);
        }
        if let Some(e) = validators {
            if let Some(etag) = e.headers.get(&header::ETAG) {
                headers.insert(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = e.headers.get(&header::LAST_MODIFIED) {
                headers.insert(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = self.upstream.uri(&target.path_and_query);
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        req
    }
}

/// Declares the framing of `body` (RFC 9112 §6): its exact length when known, else chunked; no
/// field when there is no body, unless the client declared an empty one (`Content-Length: 0`,
/// kept for origins that want a length on every POST).
fn frame(headers: &mut HeaderMap, body: &UpBody, declared_empty: bool) {
    match body {
        UpBody::Empty if declared_empty => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        UpBody::Empty => {}
        UpBody::Stream(b) => match http_body::Body::size_hint(b).exact() {
            Some(n) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
            None => {
                headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            }
        },
    }
}

/// The path and query of `location` when it names the same origin as `host`.
/// A reference is resolved against the target URI (RFC 9110 §10.2.2, RFC 3986 §5).
fn same_origin_path(location: &str, target: &Target) -> Option<String> {
    let base = url::Url::parse(&format!("http://{}{}", target.host, target.path_and_query)).ok()?;
    let url = base.join(location.trim()).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str()?),
        None => url.host_str()?.to_string(),
    };
    if normalize_host(&authority, "http")? != *target.host {
        return None;
    }
    let mut pq = url.path().to_string();
    if let Some(q) = url.query() {
        pq.push('?');
        pq.push_str(q);
    }
    Some(pq)
}

pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// RFC 9110 §6.6.1: a response forwarded without `Date` gets one.
fn ensure_date(h: &mut HeaderMap, now: Millis) {
    if !h.contains_key(header::DATE) {
        let d = httpdate::fmt_http_date(crate::clock::from_millis(now));
        if let Ok(v) = HeaderValue::from_str(&d) {
            h.insert(header::DATE, v);
        }
    }
}
