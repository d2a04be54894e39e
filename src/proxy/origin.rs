//! Asking the origin: the request sent (forwarding rules, and the stored validators for a
//! revalidation) and the answer with the times freshness needs.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{request, Method, Request, Uri, Version};

use super::request::Target;
use super::Proxy;
use crate::clock::Millis;
use crate::site::Route;
use crate::store::{CacheKey, Entry};
use crate::upstream::body::UpBody;
use crate::upstream::headers::{append_list, forwarded, remove_hop_by_hop, via};
use crate::upstream::{OriginIncoming, UpstreamError};

/// The origin's answer to one request, with the times RFC 9111 §4.2.3 needs.
pub(super) struct OriginResponse {
    pub(super) parts: http::response::Parts,
    pub(super) body: OriginIncoming,
    pub(super) request_time: Millis,
    pub(super) response_time: Millis,
    /// From sending the request to the response head, in microseconds.
    pub(super) took_us: u32,
}

/// What a request sent to the origin asks, beyond the client's own request.
pub(super) enum Ask<'a> {
    /// Exactly what the client asked, its conditionals included (a pass).
    AsIs,
    /// The full response, to store: the client's conditionals are answered here, not by the
    /// origin.
    Full,
    /// A revalidation of this stored response, with its own validators, never the client's.
    Revalidate(&'a Entry),
}

/// Whose request an origin request is made from: the client's request line and fields, where
/// it goes, who sent it (for `X-Forwarded-For`) and the site that serves it.
#[derive(Clone, Copy)]
pub(super) struct Asker<'a> {
    pub parts: &'a request::Parts,
    pub target: &'a Target,
    pub peer: SocketAddr,
    pub route: Route,
}

impl Proxy {
    /// The request sent to the origin for the asker's request, as `method`, with
    /// `body`: forwarding rules (`upstream::headers`), the `Host` of its site's origin, then what
    /// `ask` adds. The target is the client's own, query included: a site's key rules change
    /// which requests share a stored response, never what the origin is asked.
    pub(super) fn origin_request(
        &self,
        asker: Asker<'_>,
        method: &Method,
        body: UpBody,
        ask: Ask<'_>,
    ) -> Request<UpBody> {
        let Asker { parts, target, peer, route } = asker;
        let trusted = self.cfg.forwarding.trusts(peer.ip());
        let scheme = target.scheme.as_str();
        let mut headers =
            forwarded(&parts.headers, parts.version, target.host.value(), scheme, peer.ip(), trusted, &body);
        if let Some(host) = &self.sites.get(route.site).origin_host {
            headers.insert(header::HOST, host.clone());
        }
        if !matches!(ask, Ask::AsIs) {
            headers.remove(header::IF_NONE_MATCH);
            headers.remove(header::IF_MODIFIED_SINCE);
        }
        if let Ask::Revalidate(e) = ask {
            if let Some(etag) = e.headers.get(&header::ETAG) {
                headers.insert(header::IF_NONE_MATCH, etag);
            }
            // A Last-Modified that is not a date is no validator: never sent back.
            if let Some(lm) = e.last_modified_date() {
                headers.insert(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = Uri::from(target.path_and_query.clone());
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        req
    }

    /// Sends `req` to a server of the route's site (chosen for `key`). The answer's hop-by-hop
    /// fields are removed (and `Set-Cookie` when a rule says so), `Date` is added when missing
    /// (RFC 9110 §6.6.1) and `Via` appended: ready to forward and to store.
    pub(super) async fn ask_origin(
        &self,
        route: Route,
        key: &CacheKey,
        req: Request<UpBody>,
    ) -> Result<OriginResponse, UpstreamError> {
        let site = self.sites.get(route.site);
        let request_time = self.clock.now_millis();
        let started = std::time::Instant::now();
        let resp = match site.pool.send(req, key).await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.origin_failed(&e, self.clock.now_millis());
                return Err(e);
            }
        };
        let response_time = self.clock.now_millis();
        let took = started.elapsed();
        self.metrics.origin_answered(resp.status(), took, response_time);
        let took_us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let (mut parts, body) = resp.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        if site.rules.strip_set_cookie(route.rules) {
            parts.headers.remove(header::SET_COOKIE);
        }
        ensure_date(&mut parts.headers, response_time);
        append_list(&mut parts.headers, header::VIA, HeaderValue::from_static(via(parts.version)));
        Ok(OriginResponse { parts, body, request_time, response_time, took_us })
    }
}

/// A response's `Content-Length`.
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
