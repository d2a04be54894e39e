//! Per request, when its response body is done or dropped: the metrics (outcome, reason, bytes,
//! duration), and the access log line when it is on.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::combined;
use super::InProgress;
use crate::config::AccessFormat;
use crate::proxy::ProxyBody;
use crate::status::CacheStatus;
use crate::store::fill::Settled;
use crate::upstream::body::BoxError;

/// What the access log line needs from the request, read before it is handled.
pub struct Head {
    /// Request method.
    pub method: http::Method,
    /// `Host` (or the target's authority).
    pub host: String,
    /// Request path and query.
    pub path: String,
    /// The client's `X-Request-Id`, or one made here.
    pub request_id: String,
    /// Request version, `Referer` and `User-Agent`: only for the combined format.
    pub combined: Option<combined::Request>,
}

/// What the access log line needs, filled in as the request is handled.
pub struct AccessLog {
    /// From the request.
    pub head: Head,
    /// Response status.
    pub status: u16,
    /// The name of the site the request was routed to.
    pub site: Option<std::sync::Arc<str>>,
    /// Client address.
    pub peer: std::net::SocketAddr,
}

/// Request ids made here: a per-process prefix and a count.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl AccessLog {
    /// Reads what the line needs from `req`.
    pub fn head(req: &http::Request<Incoming>, format: AccessFormat) -> Head {
        let h = req.headers();
        let text = |name: http::header::HeaderName| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let host = text(http::header::HOST)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "-".into());
        let request_id = h
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{:08x}-{:x}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed)));
        let combined = (format == AccessFormat::Combined).then(|| combined::Request {
            version: req.version(),
            referer: text(http::header::REFERER),
            user_agent: text(http::header::USER_AGENT),
        });
        Head {
            method: req.method().clone(),
            host,
            path: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            request_id,
            combined,
        }
    }
}

/// A response body that counts the bytes sent, and records the request when it is done (or
/// dropped: a client that went away is recorded with the bytes it got).
pub struct LoggedBody {
    inner: ProxyBody,
    bytes: u64,
    /// What the cache did, as the response head said it.
    cache: CacheStatus,
    /// When the request arrived.
    start: Instant,
    /// `Content-Length` of the response, when known: reaching it is completion (the server may
    /// stop polling before the body reports its end).
    expected: Option<u64>,
    log: Option<Box<AccessLog>>,
    complete: bool,
    /// The request counts as in progress on its connection until this body is dropped.
    in_progress: InProgress,
}

impl LoggedBody {
    /// Wraps `inner`; `log` None disables the line.
    pub fn new(
        inner: ProxyBody,
        cache: CacheStatus,
        start: Instant,
        expected: Option<u64>,
        log: Option<Box<AccessLog>>,
        in_progress: InProgress,
    ) -> Self {
        LoggedBody { inner, bytes: 0, cache, start, expected, log, complete: false, in_progress }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.complete = true,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // A body streamed from a fill ends after its head went out: its head said less than
        // the metrics and the line can (stored, or why not).
        let mut cache = self.cache;
        match self.inner.settled() {
            Some(Settled::Stored) => cache.stored = true,
            Some(Settled::NotStored(why)) if cache.detail.is_none() => cache.detail = Some(why.into()),
            _ => {}
        }
        let took = self.start.elapsed();
        let outcome = cache.outcome();
        self.in_progress.0.metrics.request(outcome, cache.detail, self.bytes, took);
        let Some(log) = self.log.take() else { return };
        let complete = self.complete || self.inner.is_end_stream() || self.expected.is_some_and(|n| n == self.bytes);
        let head = &log.head;
        if let Some(req) = &head.combined {
            combined::write(&combined::Line {
                peer: log.peer.ip(),
                method: &head.method,
                path: &head.path,
                request: req,
                status: log.status,
                bytes: self.bytes,
                outcome: outcome.as_str(),
            });
            return;
        }
        tracing::info!(
            target: "access",
            method = %head.method,
            host = %head.host,
            path = %head.path,
            status = log.status,
            cache = outcome.as_str(),
            detail = cache.detail.map_or("-", |d| d.as_str()),
            stored = cache.stored,
            bytes = self.bytes,
            complete,
            duration_ms = %Millis3(took),
            origin_ms = %cache.origin_us.map_or_else(|| "-".to_string(), |us| Millis3(std::time::Duration::from_micros(u64::from(us))).to_string()),
            site = log.site.as_deref().unwrap_or("-"),
            request_id = %head.request_id,
            peer = %log.peer,
        );
    }
}

/// A duration in milliseconds with three decimals (`0.432`), not a float's full expansion.
struct Millis3(std::time::Duration);

impl std::fmt::Display for Millis3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}
