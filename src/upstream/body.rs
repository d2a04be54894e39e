//! Bodies on the origin side: the client's body on its way to the origin ([`UpBody`]), the
//! origin's response body on its way back ([`OriginBody`]), each with an idle timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::OriginIncoming;

/// Boxed error used by every body here.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body stalled for longer than its idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("body timed out after {0:?} without data")]
pub struct BodyTimeout(pub Duration);

/// An [`Incoming`] body that fails when its peer leaves it waiting for `idle` without a frame.
///
/// The timer counts from the moment the body has to wait (the first `Pending` after a frame), and
/// it is armed only then: a body whose frames are already there when asked for (most small
/// responses) never touches the runtime's timer wheel.
pub struct IdleBody<B = Incoming> {
    inner: B,
    idle: Duration,
    /// Armed at the first wait; re-armed at the first wait after a frame.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since `sleep` was armed.
    rearm: bool,
}

impl<B> IdleBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleBody { inner, idle, sleep: None, rearm: false }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                this.rearm = true;
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let rearm = std::mem::take(&mut this.rearm);
                let sleep = match &mut this.sleep {
                    Some(s) => {
                        if rearm {
                            s.as_mut().reset(Instant::now() + this.idle);
                        }
                        s
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep(this.idle))),
                };
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(this.idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client's request body failed (malformed chunked framing, a reset): the request cannot be
/// forwarded, and the client is answered 400.
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub struct ClientBodyError(pub BoxError);

/// Where an upload to the origin stands, watched by the origin's first-byte timer: the origin
/// is timed only while it holds the next move (it has not taken the data offered, or it has the
/// whole request), never while the client is slow to send (the body's own idle timeout covers
/// that).
#[derive(Default)]
pub struct Upload {
    state: AtomicU8,
    changed: tokio::sync::Notify,
}

impl Upload {
    /// The origin has data to take (or nothing was asked of the client yet).
    pub const WITH_ORIGIN: u8 = 0;
    /// The body waits for the client's next bytes.
    pub const WITH_CLIENT: u8 = 1;
    /// The body has been sent to its end (or failed).
    pub const DONE: u8 = 2;

    /// The current state.
    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Waits for the next change of state (registered before the caller reads [`state`]
    /// again, so no change is missed).
    ///
    /// [`state`]: Upload::state
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// A client's request body on its way to the origin: its first frame, read before an origin
/// connection is taken (a body malformed from its first byte is refused without one), then the
/// rest, each pause bounded by `timeouts.request_body`.
pub struct ClientBody {
    first: Option<Bytes>,
    rest: IdleBody,
    upload: Arc<Upload>,
}

impl ClientBody {
    /// Reads the first frame of `body`: `Ok(None)` when the body turns out empty.
    pub async fn start(body: Incoming, idle: Duration) -> Result<Option<ClientBody>, BoxError> {
        use http_body_util::BodyExt;
        let mut rest = IdleBody::new(body, idle);
        loop {
            match rest.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(client_error(e)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() && !rest.is_end_stream() => continue,
                    Ok(data) if data.is_empty() => return Ok(None),
                    Ok(data) => return Ok(Some(ClientBody { first: Some(data), rest, upload: Arc::default() })),
                    // Trailers before any data: an empty body.
                    Err(_) => return Ok(None),
                },
            }
        }
    }

    /// The upload's progress, for the origin's first-byte timer.
    pub fn upload(&self) -> Arc<Upload> {
        self.upload.clone()
    }
}

/// A body error as the origin client should see it: a timeout stays a [`BodyTimeout`], anything
/// else is the client's body failing.
fn client_error(e: BoxError) -> BoxError {
    if e.is::<BodyTimeout>() {
        e
    } else {
        Box::new(ClientBodyError(e))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            if this.rest.is_end_stream() {
                this.upload.set(Upload::DONE);
            }
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        match Pin::new(&mut this.rest).poll_frame(cx) {
            Poll::Pending => {
                if this.upload.state() != Upload::WITH_CLIENT {
                    this.upload.set(Upload::WITH_CLIENT);
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                let next = if this.rest.is_end_stream() { Upload::DONE } else { Upload::WITH_ORIGIN };
                this.upload.set(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.upload.set(Upload::DONE);
                Poll::Ready(Some(Err(client_error(e))))
            }
            Poll::Ready(None) => {
                this.upload.set(Upload::DONE);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // hyper counts down what is left of a `Content-Length` as frames are read.
        let first = self.first.as_ref().map_or(0, |b| b.len() as u64);
        let rest = self.rest.size_hint();
        match rest.exact() {
            Some(n) => SizeHint::with_exact(n + first),
            None => {
                let mut h = SizeHint::new();
                h.set_lower(rest.lower() + first);
                h
            }
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        // However the upload ends (dropped by a failed connection too), the timer stops waiting.
        if self.upload.state() != Upload::DONE {
            self.upload.set(Upload::DONE);
        }
    }
}

/// The body sent to the origin.
pub enum UpBody {
    /// No body (GET, HEAD, revalidation, or a client body that turned out empty).
    Empty,
    /// The client's body, streamed.
    Stream(ClientBody),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Stream(b) => b.size_hint(),
        }
    }
}

/// The origin's response body on its way to a client that does not share it (a pass), with
/// the origin's idle timeout.
pub type OriginBody = IdleBody<OriginIncoming>;

/// Reads `body` to its end, discarding the data: a HEAD's answer, whose origin connection goes
/// back to the pool only once its body has been read.
pub async fn drain(mut body: OriginBody) {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return;
        }
    }
}
