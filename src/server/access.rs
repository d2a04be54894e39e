//! The access log: one line per request, written when its response body is done or dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::InProgress;
use crate::proxy::ProxyBody;
use crate::status::CacheStatus;
use crate::store::fill::Settled;
use crate::upstream::body::BoxError;

/// What the access log line needs, filled in as the request is handled.
pub struct AccessLog {
    /// Request method.
    pub method: http::Method,
    /// Request path and query.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// What the cache did, as the response head said it.
    pub cache: CacheStatus,
    /// When the request arrived.
    pub start: std::time::Instant,
    /// Client address.
    pub peer: std::net::SocketAddr,
}

/// A response body that counts the bytes sent and writes the access log line when it is done
/// (or dropped: a client that went away is logged with the bytes it got).
pub struct LoggedBody {
    inner: ProxyBody,
    bytes: u64,
    /// `Content-Length` of the response, when known: reaching it is completion (the server may
    /// stop polling before the body reports its end).
    expected: Option<u64>,
    log: Option<Box<AccessLog>>,
    complete: bool,
    /// Sending it panicked: it ended there, incomplete.
    panicked: bool,
    /// The request counts as in progress on its connection until this body is dropped.
    in_progress: InProgress,
}

impl LoggedBody {
    /// Wraps `inner`; `log` None disables the line.
    pub fn new(inner: ProxyBody, expected: Option<u64>, log: Option<Box<AccessLog>>, in_progress: InProgress) -> Self {
        LoggedBody { inner, bytes: 0, expected, log, complete: false, panicked: false, in_progress }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.panicked {
            return Poll::Ready(None);
        }
        // A panic while producing the body (a fill, the origin's stream) is contained to this
        // response: counted, logged, and the body ends with an error, which makes the server cut
        // the response off (HTTP/1.1: the connection closes; HTTP/2: the stream is reset), so
        // the client never takes it for complete. AssertUnwindSafe: see `handle_contained`.
        let r = match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.inner).poll_frame(cx))) {
            Ok(r) => r,
            Err(panic) => {
                this.panicked = true;
                let activity = &this.in_progress.0;
                activity.stats.panics.fetch_add(1, Ordering::Relaxed);
                let (method, path) = this.log.as_ref().map_or(("-", "-"), |l| (l.method.as_str(), l.path.as_str()));
                tracing::error!(
                    method,
                    path,
                    peer = %activity.peer,
                    bytes = this.bytes,
                    panic = super::panic_message(&*panic),
                    "response body panicked; response cut off"
                );
                return Poll::Ready(Some(Err("the response body panicked".into())));
            }
        };
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
        if let Some(log) = self.log.take() {
            let complete = !self.panicked
                && (self.complete || self.inner.is_end_stream() || self.expected.is_some_and(|n| n == self.bytes));
            // A body streamed from a fill ends after its head went out: its head said less than
            // the line can (stored, or why not).
            let mut cache = log.cache;
            match self.inner.settled() {
                Some(Settled::Stored) => cache.stored = true,
                Some(Settled::NotStored(why)) if cache.detail.is_none() => cache.detail = Some(why.into()),
                _ => {}
            }
            tracing::info!(
                target: "access",
                method = %log.method,
                path = %log.path,
                status = log.status,
                cache = cache.outcome().as_str(),
                detail = cache.detail.map_or("-", |d| d.as_str()),
                stored = cache.stored,
                bytes = self.bytes,
                complete,
                duration_ms = %Millis3(log.start.elapsed()),
                peer = %log.peer,
            );
        }
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
