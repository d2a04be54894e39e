//! Answers: a stored response served (answering the client's conditionals and ranges), the
//! `Cache-Status` added to every response, targeted fields stripped, and the proxy's own error
//! answers.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Response, StatusCode};

use super::body::ProxyBody;
use super::Proxy;
use crate::clock::Millis;
use crate::http::conditional;
use crate::http::range::{self, RangeAnswer};
use crate::status::{CacheStatus, Failure, Fwd};
use crate::store::ready::{self, Head};
use crate::store::Entry;
use crate::upstream::UpstreamError;

/// `Cache-Status` (RFC 9211).
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A response and what the cache did for it.
pub type Answer = (Response<ProxyBody>, CacheStatus);

impl Proxy {
    /// Serves a stored response, answering the client's conditionals (RFC 9111 §4.3.2).
    pub(super) fn serve_stored(
        &self,
        parts: &request::Parts,
        entry: &Arc<Entry>,
        status: CacheStatus,
        now: Millis,
    ) -> Answer {
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
        if conditional::answer_not_modified(
            &parts.headers,
            entry.status,
            entry.headers.get_bytes(&header::ETAG),
            entry.freshness.last_modified,
            now,
        ) {
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
                match range::evaluate(range, &parts.headers, len, etag, || strong_last_modified(entry), now) {
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

/// The stored `Last-Modified`, when it is a strong validator (RFC 9110 §8.8.2.2: the stored
/// `Date` is at least a second later). Not the `Date` fallback `If-Modified-Since` uses: an
/// `If-Range` date must match a `Last-Modified` the origin sent (§13.1.5).
fn strong_last_modified(entry: &Entry) -> Option<Millis> {
    let received = entry.freshness.times.response_time;
    let lm = crate::clock::http_date(entry.headers.get(&header::LAST_MODIFIED)?.as_bytes(), received)?;
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
fn not_modified_stored(from: &crate::store::headers::StoredHeaders) -> HeaderMap {
    from.select(12, |name| conditional::NOT_MODIFIED_FIELDS.iter().any(|f| f.as_str() == name))
}

/// The 304 field set (RFC 9110 §15.4.5) of a response being forwarded.
pub(super) fn not_modified_headers(from: &HeaderMap) -> HeaderMap {
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
    pub(super) fn respond(
        &self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: ProxyBody,
        cs: CacheStatus,
    ) -> Answer {
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
pub(super) fn finish(status: StatusCode, mut headers: HeaderMap, body: ProxyBody, cs: CacheStatus) -> Answer {
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
pub(super) fn local(code: StatusCode, msg: &'static str, why: Failure, fwd: Fwd) -> Answer {
    let mut cs = CacheStatus::forward(fwd);
    cs.detail = Some(why.into());
    local_with(code, msg, cs)
}

/// A response made by the proxy itself with `cs` as its `Cache-Status`.
pub(super) fn local_with(code: StatusCode, msg: &'static str, cs: CacheStatus) -> Answer {
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(msg.len()));
    finish(code, headers, ProxyBody::full(msg), cs)
}

pub(super) fn only_if_cached() -> Answer {
    // RFC 9111 §5.2.1.7: 504 when nothing stored can answer.
    let cs = CacheStatus { detail: Some(Failure::OnlyIfCached.into()), ..Default::default() };
    local_with(StatusCode::GATEWAY_TIMEOUT, "not in cache (only-if-cached)\n", cs)
}

/// The answer to a request whose exchange with the origin failed (the caller logs it, with the
/// request's context).
pub(super) fn upstream_failure(e: &UpstreamError, fwd: Fwd) -> Answer {
    match e {
        UpstreamError::Timeout => local(StatusCode::GATEWAY_TIMEOUT, "origin timed out\n", Failure::OriginTimeout, fwd),
        UpstreamError::Unreachable(_) | UpstreamError::Reset(_) | UpstreamError::Abandoned => {
            local(StatusCode::BAD_GATEWAY, "origin unreachable\n", Failure::OriginUnreachable, fwd)
        }
        UpstreamError::Busy => {
            local(StatusCode::SERVICE_UNAVAILABLE, "origin connections all busy\n", Failure::OriginBusy, fwd)
        }
        UpstreamError::Down => {
            local(StatusCode::SERVICE_UNAVAILABLE, "every origin server is down\n", Failure::OriginDown, fwd)
        }
        UpstreamError::Invalid(_) => {
            local(StatusCode::BAD_GATEWAY, "invalid response from origin\n", Failure::OriginInvalid, fwd)
        }
        UpstreamError::Tls(_) => {
            local(StatusCode::BAD_GATEWAY, "TLS with the origin failed\n", Failure::OriginTls, fwd)
        }
        UpstreamError::ClientBodyTimeout => {
            local(StatusCode::REQUEST_TIMEOUT, "request body timed out\n", Failure::RequestTimeout, fwd)
        }
        UpstreamError::ClientBody(_) => {
            local(StatusCode::BAD_REQUEST, "malformed request body\n", Failure::BadRequest, fwd)
        }
    }
}
