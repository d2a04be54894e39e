//! Asking the origin: the request sent (forwarding rules, and the stored validators for a
//! revalidation) and the answer with the times freshness needs.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{request, Method, Request, Version};

use super::request::Target;
use super::Proxy;
use crate::clock::Millis;
use crate::store::Entry;
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

impl Proxy {
    /// The request sent to the origin for the client's `parts` to `target`, as `method`, with
    /// `body`: forwarding rules (`upstream::headers`), then what `ask` adds.
    pub(super) fn origin_request(
        &self,
        parts: &request::Parts,
        target: &Target,
        peer: SocketAddr,
        method: &Method,
        body: UpBody,
        ask: Ask<'_>,
    ) -> Request<UpBody> {
        let mut headers = forwarded(&parts.headers, parts.version, target.host.value(), peer.ip(), &body);
        if !matches!(ask, Ask::AsIs) {
            headers.remove(header::IF_NONE_MATCH);
            headers.remove(header::IF_MODIFIED_SINCE);
        }
        if let Ask::Revalidate(e) = ask {
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

    /// Sends `req` to the origin. The answer's hop-by-hop fields are removed, `Date` is added when
    /// missing (RFC 9110 §6.6.1) and `Via` appended: ready to forward and to store.
    pub(super) async fn ask_origin(&self, req: Request<UpBody>) -> Result<OriginResponse, UpstreamError> {
        let request_time = self.clock.now_millis();
        let started = std::time::Instant::now();
        let resp = match self.upstream.send(req).await {
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
