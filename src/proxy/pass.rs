//! Requests that are never answered from the store nor stored: other methods (then
//! invalidation, RFC 9111 §4.4), a GET or HEAD with a body, a range the store cannot answer, and
//! preconditions the origin must evaluate. Forwarded as asked, the body streamed both ways.

use std::net::SocketAddr;

use http::header::{self, HeaderMap};
use http::request;
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::origin::{Ask, Asker, OriginResponse};
use super::request::Target;
use super::respond::{upstream_failure, Answer};
use super::Proxy;
use crate::site::Route;
use crate::status::{CacheStatus, Fwd, NotStored};
use crate::store::key::normalize_host;
use crate::upstream::body::{BodyTimeout, ClientBody, OriginBody, UpBody};
use crate::upstream::UpstreamError;

impl Proxy {
    /// Forwards the request as it is, `why` it is not cacheable; its body (when `body` is given)
    /// streamed to the origin. A successful unsafe method then invalidates (§4.4).
    pub(super) async fn pass(
        &self,
        parts: request::Parts,
        body: Option<Incoming>,
        target: Target,
        peer: SocketAddr,
        route: Route,
        why: NotStored,
    ) -> Answer {
        let mut status = CacheStatus::forward(Fwd::Bypass);
        status.detail = Some(why.into());
        // The body's first bytes are read before an origin connection is taken: a body that is
        // malformed from its start is refused without costing one.
        let up_body = match body {
            Some(body) if !http_body::Body::is_end_stream(&body) => {
                match ClientBody::start(body, self.cfg.timeouts.request_body).await {
                    Ok(Some(body)) => UpBody::Stream(body),
                    Ok(None) => UpBody::Empty,
                    Err(e) => {
                        let e = if e.is::<BodyTimeout>() {
                            UpstreamError::ClientBodyTimeout
                        } else {
                            UpstreamError::ClientBody(e.to_string())
                        };
                        tracing::info!(error = %e, method = %parts.method, path = %target.path_and_query, %peer, "client request body failed");
                        return upstream_failure(&e, Fwd::Bypass);
                    }
                }
            }
            _ => UpBody::Empty,
        };
        let site = self.sites.get(route.site);
        let key = site
            .key(target.scheme.as_str(), &target.host, target.path_and_query.as_str(), &parts.headers, route.rules)
            .0;
        let req = self.origin_request(
            Asker { parts: &parts, target: &target, peer, route },
            &parts.method,
            up_body,
            Ask::AsIs,
        );
        let OriginResponse { parts: rp, body: rbody, took_us, .. } = match self.ask_origin(route, &key, req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, method = %parts.method, path = %target.path_and_query, %peer, "origin request failed");
                return upstream_failure(&e, Fwd::Bypass);
            }
        };
        status.fwd_status = Some(rp.status.as_u16());
        status.origin_us = Some(took_us);
        if !parts.method.is_safe() && (rp.status.is_success() || rp.status.is_redirection()) {
            self.invalidate_after_unsafe(route, key, &target, &parts.headers, &rp.headers);
        }
        let body = ProxyBody::Origin(Box::new(OriginBody::new(rbody, self.cfg.timeouts.idle)));
        self.respond(rp.status, rp.headers, body, status)
    }

    /// §4.4: the target URI (its key `key`), and `Location` / `Content-Location` when
    /// same-origin, their keys made by the site's rules as a request for them with the same
    /// fields would make them.
    pub(super) fn invalidate_after_unsafe(
        &self,
        route: Route,
        key: crate::store::CacheKey,
        target: &Target,
        req: &HeaderMap,
        resp: &HeaderMap,
    ) {
        self.tiers.invalidate(&key);
        let site = self.sites.get(route.site);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(v) = resp.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(pq) = same_origin_path(v, target) {
                self.tiers.invalidate(&site.cache_key(target.scheme.as_str(), &target.host, &pq, req));
            }
        }
    }
}

/// The path and query of `location` when it names the same origin (scheme and host) as
/// `target`. A reference is resolved against the target URI (RFC 9110 §10.2.2, RFC 3986 §5).
fn same_origin_path(location: &str, target: &Target) -> Option<String> {
    let scheme = target.scheme.as_str();
    let base = url::Url::parse(&format!("{scheme}://{}{}", target.host, target.path_and_query)).ok()?;
    let url = base.join(location.trim()).ok()?;
    if url.scheme() != scheme {
        return None;
    }
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str()?),
        None => url.host_str()?.to_string(),
    };
    if normalize_host(&authority, scheme)? != *target.host {
        return None;
    }
    let mut pq = url.path().to_string();
    if let Some(q) = url.query() {
        pq.push('?');
        pq.push_str(q);
    }
    Some(pq)
}
