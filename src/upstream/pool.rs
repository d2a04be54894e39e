//! Idle keep-alive connections to the origin, and the response body that gives its connection
//! back when it has been read to the end.
//!
//! There is one origin, so the pool is a stack of idle connections, most recently used on top
//! (a warm connection is reused first; the ones at the bottom age out): no key to hash on a
//! checkout or a return. A connection goes back from its response body ([`OriginIncoming`]) once
//! the body has been received to its end, without a task waiting for it; until then it is not in
//! the pool and nothing can pick it. Open connections, busy and idle, are bounded
//! (`limits.origin_connections`).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::body::UpBody;

/// Reaper ticks per idle timeout: an idle connection is closed after sitting through more than
/// this many ticks, that is after between one and 1.25 idle timeouts.
pub(crate) const IDLE_TICKS: u64 = 4;

/// The idle connections.
pub(crate) struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    /// Time between reaper ticks.
    tick: Duration,
    /// Reaper ticks so far.
    epoch: AtomicU64,
    reaper_started: AtomicBool,
    /// One permit per connection open (busy or idle): `limits.origin_connections`.
    limit: Arc<Semaphore>,
    /// Woken when a connection goes idle or closes: a request waiting for one looks again.
    freed: Notify,
}

/// What a request gets to send on: an idle connection, or the right to open one.
pub(crate) enum Checkout {
    /// A kept connection, most recently used first.
    Idle(SendRequest<UpBody>),
    /// A permit for a new connection, held for as long as that connection lives.
    New(OwnedSemaphorePermit),
}

struct Idle {
    sender: SendRequest<UpBody>,
    /// The reaper tick during which it went idle.
    epoch: u64,
}

impl Pool {
    /// A pool of at most `max_open` connections (busy and idle), each kept idle for about
    /// `idle_timeout`.
    pub(crate) fn new(max_open: usize, idle_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            max_idle: max_open,
            tick: (idle_timeout / IDLE_TICKS as u32).max(Duration::from_millis(10)),
            epoch: AtomicU64::new(0),
            reaper_started: AtomicBool::new(false),
            limit: Arc::new(Semaphore::new(max_open)),
            freed: Notify::new(),
        })
    }

    /// An idle connection, or a permit to open one; when every allowed connection is busy,
    /// waits for one to go idle or close, until `deadline` (then `None`).
    pub(crate) async fn checkout(&self, deadline: tokio::time::Instant) -> Option<Checkout> {
        loop {
            // Registered before looking: a connection freed in between still wakes this wait.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(sender) = self.take() {
                return Some(Checkout::Idle(sender));
            }
            if let Ok(permit) = self.limit.clone().try_acquire_owned() {
                return Some(Checkout::New(permit));
            }
            tokio::time::timeout_at(deadline, freed).await.ok()?;
        }
    }

    /// A connection that held a permit has closed: a waiting request may open another.
    pub(crate) fn closed(&self) {
        self.freed.notify_one();
    }

    /// The most recently used idle connection that is still open, if any.
    pub(crate) fn take(&self) -> Option<SendRequest<UpBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(i) = idle.pop() {
            if !i.sender.is_closed() {
                return Some(i.sender);
            }
        }
        None
    }

    /// Keeps `sender`'s connection for the next request (its last response was read to the end),
    /// unless it is closed or the pool is full; then it is dropped, which closes it.
    pub(crate) fn put(self: &Arc<Self>, sender: SendRequest<UpBody>) {
        if sender.is_closed() {
            return;
        }
        let epoch = self.epoch.load(Ordering::Relaxed);
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= self.max_idle {
                return;
            }
            idle.push(Idle { sender, epoch });
        }
        self.freed.notify_one();
        if !self.reaper_started.load(Ordering::Relaxed) {
            self.start_reaper();
        }
    }

    /// Idle connections now.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// One reaper tick: closes the connections idle for more than [`IDLE_TICKS`] ticks, and the
    /// ones the origin closed.
    pub(crate) fn reap(&self) {
        let now = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let expired: Vec<Idle> = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let (keep, expired) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| now - i.epoch <= IDLE_TICKS && !i.sender.is_closed());
            *idle = keep;
            expired
        };
        // Dropped outside the lock: each drop tells its connection's task to close.
        drop(expired);
    }

    /// A task that ticks the reaper until the pool is dropped. Started with the first idle
    /// connection, inside the runtime that serves it.
    fn start_reaper(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        let tick = self.tick;
        rt.spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                match pool.upgrade() {
                    Some(pool) => pool.reap(),
                    None => return,
                }
            }
        });
    }
}

/// A response body from the origin. When it has been received to its end, its connection goes
/// back to the pool; dropped before that, the connection is dropped too (hyper drains what is
/// left of a small body, or closes the connection).
pub struct OriginIncoming {
    inner: Incoming,
    back: Option<(SendRequest<UpBody>, Arc<Pool>)>,
    /// The request's place under its server's `max_requests`, given back with the connection.
    in_flight: Option<OwnedSemaphorePermit>,
}

impl OriginIncoming {
    pub(crate) fn new(inner: Incoming, sender: SendRequest<UpBody>, pool: Arc<Pool>) -> Self {
        let mut body = OriginIncoming { inner, back: Some((sender, pool)), in_flight: None };
        if body.inner.is_end_stream() {
            // No body at all (a 304, a HEAD, a zero length): the connection is free already.
            body.give_back();
        }
        body
    }

    /// Keeps `permit` (an in-flight request's place) until the body has been received to its
    /// end or dropped.
    pub(crate) fn holding(mut self, permit: OwnedSemaphorePermit) -> Self {
        if self.back.is_some() {
            self.in_flight = Some(permit);
        }
        self
    }

    fn give_back(&mut self) {
        self.in_flight = None;
        if let Some((sender, pool)) = self.back.take() {
            pool.put(sender);
        }
    }
}

impl Drop for OriginIncoming {
    fn drop(&mut self) {
        // Every byte `Content-Length` announced has arrived: hyper reads the end of the message
        // without waiting (a body consumer such as hyper's server stops at the last byte and
        // does not ask for the end).
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

impl Body for OriginIncoming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            Some(Err(_)) => {
                self.back = None;
                self.in_flight = None;
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
