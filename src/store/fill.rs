//! Fills: one origin fetch of a key and its response body, shared by every client that asks for
//! the key meanwhile.
//!
//! # How a fill works
//!
//! The filler (the proxy's fetch, in `proxy/fetch.rs`) publishes an outcome of its own type `O`
//! once the origin has answered, then pushes the body chunk by chunk and says how it ended. Each
//! client answers from the outcome and reads the body through its own [`FillReader`] from the
//! first byte, at its own pace: one that joins mid-fill gets the bytes so far at once, then the
//! rest as they arrive. [`Inflight`] is the table of fills clients may join, one per key
//! (coalescing); a fill outside it serves one client alone, through the same machinery.
//!
//! # Dropping means aborting
//!
//! The filler holds a [`FillWriter`]. A body that fails (reset, early end, timeout) ends every
//! reader with an error, so a client sees a truncated response, never a short body presented as
//! complete. A writer dropped before it finished (its task panicked, was aborted, or the runtime
//! shut down) marks the fill abandoned: waiters get [`Abandoned`] at once instead of waiting out
//! their limit, and readers get an error.
//!
//! # Memory
//!
//! While a fill may still be stored, its whole body is kept (bounded by `max_object_size`): each
//! chunk is copied, as it arrives, into one buffer that becomes the stored body, and the chunk
//! itself is dropped once every reader has passed it. Chunks are slices of the origin
//! connection's read buffer: held until the body ended, they kept every buffer the connection
//! read the body into, so it took a new one (up to about 400 KiB) for each read, and the buffers
//! pinned allocator pages past the byte budget. A client that joins mid-body gets the bytes so
//! far from the kept copy; one that joins once the body is complete gets all of it from there,
//! the very bytes that are stored (see [`FillWriter::whole`]).
//!
//! Once a body outgrows `max_object_size`, storing is abandoned, the copy is dropped, no new
//! reader joins, and the origin is read no faster than the slowest reader (at most [`WINDOW`]
//! bytes ahead), so a huge response never sits in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::key::{BuildKeyHasher, CacheKey};
use crate::status::NotStored;

/// Bytes a fill that is no longer stored may read ahead of its slowest reader.
pub const WINDOW: u64 = 1 << 20;

/// The filler went away without finishing (its task was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the fill was abandoned before it finished")]
pub struct Abandoned;

/// How a fill's body ended, for whoever reports it after the response head went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Complete and stored.
    Stored,
    /// Complete or not, and not stored, for this reason (`too-large`, `incomplete`).
    NotStored(NotStored),
}

struct State<O> {
    outcome: Option<Arc<O>>,
    /// Chunks some reader has yet to read, oldest first.
    chunks: VecDeque<Bytes>,
    /// Index (in the whole body) of `chunks[0]`.
    first: usize,
    /// Bytes received so far.
    received: u64,
    /// `None` while the body is arriving; then `Ok` (complete) or `Err` (failed).
    end: Option<Result<(), Arc<str>>>,
    /// Each reader's next chunk index; `None` for a free slot.
    readers: Vec<Option<usize>>,
    /// The whole body is kept (to be stored).
    retain: bool,
    /// How the body ended, once known.
    settled: Option<Settled>,
    /// The writer went away before it finished.
    abandoned: bool,
}

/// The body so far, copied from its chunks while it is kept whole.
#[derive(Default)]
struct Kept {
    /// Leading parts handed to readers that joined mid-body, in order; the body goes on in
    /// `tail`.
    given: Vec<Bytes>,
    /// The rest of the body so far.
    tail: BytesMut,
    /// Bytes received so far (as `State::received`).
    received: u64,
    /// The length the response announced, for the copy's first allocation.
    announced: Option<u64>,
    /// The body is no longer kept (`!State::retain`).
    stopped: bool,
}

/// One origin fetch and its response body, shared by every client of the key.
pub struct Fill<O> {
    state: Mutex<State<O>>,
    /// Locked before `state` by whoever takes both: the writer copies a chunk in here without
    /// holding `state`, so readers taking their chunks do not wait for the copy.
    kept: Mutex<Kept>,
    notify: Notify,
    /// Requests that joined this fill as waiters.
    joined: AtomicUsize,
}

impl<O> Default for Fill<O> {
    fn default() -> Self {
        Fill {
            state: Mutex::new(State {
                outcome: None,
                chunks: VecDeque::new(),
                first: 0,
                received: 0,
                end: None,
                readers: Vec::new(),
                retain: true,
                settled: None,
                abandoned: false,
            }),
            kept: Mutex::new(Kept::default()),
            notify: Notify::new(),
            joined: AtomicUsize::new(0),
        }
    }
}

impl<O> Fill<O> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<O>> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters more than losing the fill; recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // As for `lock`: losing the copy loses at most the store of this body.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer's handle: whoever fills holds it until the fill has finished.
    pub fn writer(self: &Arc<Self>) -> FillWriter<O> {
        FillWriter { fill: self.clone(), finished: false }
    }

    /// The outcome, once published; [`Abandoned`] when the writer went away without one.
    pub fn published(&self) -> Option<Result<Arc<O>, Abandoned>> {
        let st = self.lock();
        match (&st.outcome, st.abandoned) {
            (Some(o), _) => Some(Ok(o.clone())),
            (None, true) => Some(Err(Abandoned)),
            (None, false) => None,
        }
    }

    /// The outcome, once published and, when `waits_for_end` says so for it, once the body has
    /// ended (or is no longer kept whole): what a response head waits for, so that it can say
    /// whether the body was stored.
    pub fn ready(&self, waits_for_end: impl Fn(&O) -> bool) -> Option<Result<Arc<O>, Abandoned>> {
        let st = self.lock();
        match (&st.outcome, st.abandoned) {
            (Some(o), _) if !waits_for_end(o) || st.end.is_some() || !st.retain => Some(Ok(o.clone())),
            (Some(_), _) => None,
            (None, true) => Some(Err(Abandoned)),
            (None, false) => None,
        }
    }

    /// Waits until [`ready`](Fill::ready).
    pub async fn wait_ready(&self, waits_for_end: impl Fn(&O) -> bool) -> Result<Arc<O>, Abandoned> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(o) = self.ready(&waits_for_end) {
                return o;
            }
            notified.await;
        }
    }

    /// Drops the fill's own hold on its outcome when no request joined it as a waiter, so the
    /// first client's hold is the last. Only for a fill that has left the table of fills in
    /// flight (no one can join it any more): a waiter that joined reads the outcome from here.
    pub fn forget_outcome_if_unjoined(&self) {
        let mut st = self.lock();
        if self.joined.load(Ordering::Relaxed) == 0 {
            st.outcome = None;
        }
    }

    /// Waits for the outcome.
    pub async fn outcome(&self) -> Result<Arc<O>, Abandoned> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(o) = self.published() {
                return o;
            }
            notified.await;
        }
    }

    /// True while the whole body is kept (it can still be stored, and new readers can join).
    pub fn retained(&self) -> bool {
        self.lock().retain
    }

    /// How the body ended, once known.
    pub fn settled(&self) -> Option<Settled> {
        self.lock().settled
    }

    /// A reader of the body from its first byte, or `None` when the fill no longer keeps it
    /// whole (the caller then fetches on its own).
    pub fn reader(self: &Arc<Self>) -> Option<FillReader<O>> {
        let mut st = self.lock();
        let mut prefix = VecDeque::new();
        if st.received > 0 {
            // The chunks so far may be gone: this reader starts after them, with their bytes
            // from the kept copy (the kept lock comes first).
            drop(st);
            let mut kept = self.lock_kept();
            st = self.lock();
            if st.retain {
                if !kept.tail.is_empty() {
                    let part = kept.tail.split().freeze();
                    kept.given.push(part);
                }
                prefix.extend(kept.given.iter().cloned());
            }
        }
        if !st.retain {
            return None;
        }
        let next = st.first + st.chunks.len();
        let slot = match st.readers.iter().position(Option::is_none) {
            Some(i) => {
                st.readers[i] = Some(next);
                i
            }
            None => {
                st.readers.push(Some(next));
                st.readers.len() - 1
            }
        };
        Some(FillReader { fill: self.clone(), slot, prefix, done: false })
    }
}

/// The filler's side of a fill. Dropped before [`FillWriter::complete`] or
/// [`FillWriter::fail`], it marks the fill abandoned.
pub struct FillWriter<O> {
    fill: Arc<Fill<O>>,
    /// Set by the calls that finish the fill: dropped without it, the fill is abandoned.
    finished: bool,
}

impl<O> FillWriter<O> {
    /// Publishes the outcome and wakes every waiting client.
    pub fn publish(&self, outcome: O) {
        self.fill.lock().outcome = Some(Arc::new(outcome));
        self.fill.notify.notify_waiters();
    }

    /// The length the response announced (`Content-Length`): the kept copy is allocated at it.
    pub fn announce(&self, length: Option<u64>) {
        self.fill.lock_kept().announced = length;
    }

    /// Appends a chunk: copied into the kept body while it may be stored (until more than
    /// `max_retained` bytes have arrived), and queued for the readers. `last`: no chunk follows.
    fn append(&self, chunk: Bytes, max_retained: u64, last: bool) {
        let fill = &self.fill;
        let mut kept = fill.lock_kept();
        let received = kept.received + chunk.len() as u64;
        let keep = !kept.stopped && received <= max_retained;
        if keep {
            if kept.received == 0 {
                // The first bytes: room for the whole body when its length is known.
                let room = if last { chunk.len() as u64 } else { kept.announced.unwrap_or(0) };
                kept.tail = BytesMut::with_capacity(room.min(max_retained) as usize);
            }
            kept.tail.extend_from_slice(&chunk);
        } else if !kept.stopped {
            // Storing is abandoned: what was copied goes now.
            *kept = Kept { stopped: true, ..Kept::default() };
        }
        kept.received = received;
        let mut st = fill.lock();
        st.received = received;
        if st.retain && !keep {
            st.settled = Some(Settled::NotStored(NotStored::TooLarge));
        }
        st.retain = keep;
        st.chunks.push_back(chunk);
        trim(&mut st);
    }

    /// Appends a chunk of the body. Returns false when nobody can use the rest any more (storing
    /// was abandoned and every reader left): the filler should stop.
    pub async fn push(&self, chunk: Bytes, max_retained: u64) -> bool {
        let fill = &self.fill;
        self.append(chunk, max_retained, false);
        fill.notify.notify_waiters();
        // Backpressure once the body is no longer kept whole.
        loop {
            let notified = fill.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = fill.lock();
                if st.retain {
                    return true;
                }
                if st.readers.iter().all(Option::is_none) {
                    return false;
                }
                if buffered(&st) <= WINDOW {
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Appends the last chunk of the body without waking the readers: the filler stores the
    /// whole body first, then calls [`FillWriter::complete`], so no client can have the complete
    /// response before the store does.
    pub fn push_last(&self, chunk: Bytes, max_retained: u64) {
        self.append(chunk, max_retained, true);
    }

    /// The whole body, when it was kept, to be stored. The fill goes on keeping it (the same
    /// bytes, not a copy) and taking new readers: until the filler has stored it, the store does
    /// not have it, so a client joining the fill meanwhile (its lookup missed) must read it from
    /// here. Sent elsewhere, it would fetch the key once more.
    pub fn whole(&self) -> Option<Bytes> {
        let mut kept = self.fill.lock_kept();
        if kept.stopped {
            return None;
        }
        let tail = std::mem::take(&mut kept.tail);
        let whole = if kept.given.is_empty() {
            exact(tail)
        } else {
            kept.given.push(tail.freeze());
            concat(&kept.given)
        };
        // What a reader joining from now on starts with: all of it.
        kept.given = vec![whole.clone()];
        Some(whole)
    }

    /// The body ended completely, `stored` or not: readers get its end.
    pub fn complete(mut self, stored: Result<(), NotStored>) {
        {
            let mut st = self.fill.lock();
            st.end = Some(Ok(()));
            st.settled = Some(match stored {
                Ok(()) => Settled::Stored,
                Err(reason) => st.settled.unwrap_or(Settled::NotStored(reason)),
            });
        }
        self.fill.notify.notify_waiters();
        self.finished = true;
    }

    /// The fill is over without a body to read (a revalidation, a response not shared, an
    /// origin failure): the outcome says it all.
    pub fn finish(mut self) {
        self.finished = true;
    }

    /// The body failed: every reader ends with an error.
    pub fn fail(mut self, why: &str) {
        {
            let mut st = self.fill.lock();
            st.end = Some(Err(Arc::from(why)));
            st.settled = Some(Settled::NotStored(NotStored::Incomplete));
        }
        self.fill.notify.notify_waiters();
        self.finished = true;
    }
}

impl<O> Drop for FillWriter<O> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        {
            let mut st = self.fill.lock();
            if st.outcome.is_none() {
                st.abandoned = true;
            }
            if st.end.is_none() {
                st.end = Some(Err(Arc::from("the fill was abandoned")));
                st.settled = Some(Settled::NotStored(NotStored::Incomplete));
            }
        }
        self.fill.notify.notify_waiters();
    }
}

fn buffered<O>(st: &State<O>) -> u64 {
    let min = st.readers.iter().flatten().min().copied().unwrap_or(st.first + st.chunks.len());
    st.chunks.iter().skip(min.saturating_sub(st.first)).map(|c| c.len() as u64).sum()
}

/// Drops the chunks every reader has passed.
fn trim<O>(st: &mut State<O>) {
    let min = st.readers.iter().flatten().min().copied().unwrap_or(st.first + st.chunks.len());
    while st.first < min && !st.chunks.is_empty() {
        st.chunks.pop_front();
        st.first += 1;
    }
}

/// The kept body as stored: in an allocation of exactly its length (what the byte budget counts),
/// copied when it has room to spare.
fn exact(tail: BytesMut) -> Bytes {
    if tail.capacity() == tail.len() {
        tail.freeze()
    } else {
        Bytes::copy_from_slice(&tail)
    }
}

/// Parts of the body in one allocation of their own.
fn concat(parts: &[Bytes]) -> Bytes {
    let mut buf = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        buf.extend_from_slice(p);
    }
    buf.freeze()
}

/// One client's position in a fill's body.
pub struct FillReader<O> {
    fill: Arc<Fill<O>>,
    slot: usize,
    /// The body's first bytes, for a reader that joined mid-body: read before its chunks.
    prefix: VecDeque<Bytes>,
    done: bool,
}

impl<O> FillReader<O> {
    /// The fill read.
    pub fn fill(&self) -> &Arc<Fill<O>> {
        &self.fill
    }

    /// The whole body at once, when this reader has read nothing yet and the body is already
    /// complete in one block (a small response): it is then served as one block, without reading
    /// chunk by chunk. The block is the origin connection's buffer when the body came in one
    /// chunk; for a reader that joined after the body was complete, the kept copy.
    pub fn complete_body(&mut self) -> Option<Bytes> {
        let st = self.fill.lock();
        if self.done || !matches!(st.end, Some(Ok(()))) {
            return None;
        }
        let pos = st.readers[self.slot];
        let end = st.first + st.chunks.len();
        let only = match self.prefix.len() {
            // Joined after the last chunk: its bytes so far are the whole body.
            1 if pos == Some(end) => self.prefix.pop_front()?,
            0 if pos == Some(0) && st.chunks.len() == 1 => st.chunks[0].clone(),
            _ => return None,
        };
        drop(st);
        self.done = true;
        Some(only)
    }

    /// The next chunk: `None` at the end of a complete body, `Some(Err)` when the fill failed.
    pub async fn next(&mut self) -> Option<Result<Bytes, Arc<str>>> {
        if self.done {
            return None;
        }
        if let Some(part) = self.prefix.pop_front() {
            return Some(Ok(part));
        }
        loop {
            let notified = self.fill.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.fill.lock();
                let pos = st.readers[self.slot].unwrap_or(usize::MAX);
                if pos >= st.first && pos < st.first + st.chunks.len() {
                    let chunk = st.chunks[pos - st.first].clone();
                    st.readers[self.slot] = Some(pos + 1);
                    trim(&mut st);
                    if !st.retain {
                        drop(st);
                        // The filler may be waiting for readers to advance.
                        self.fill.notify.notify_waiters();
                    }
                    return Some(Ok(chunk));
                }
                match &st.end {
                    Some(Ok(())) => {
                        self.done = true;
                        return None;
                    }
                    Some(Err(why)) => {
                        self.done = true;
                        return Some(Err(why.clone()));
                    }
                    None => {}
                }
            }
            notified.await;
        }
    }
}

impl<O> Drop for FillReader<O> {
    fn drop(&mut self) {
        let mut st = self.fill.lock();
        if let Some(slot) = st.readers.get_mut(self.slot) {
            *slot = None;
        }
        trim(&mut st);
        drop(st);
        self.fill.notify.notify_waiters();
    }
}

/// Whether a request created a fill or joined one.
pub enum Join<O> {
    /// A new fill: the caller must start the origin fetch for it.
    Leader(Arc<Fill<O>>),
    /// An existing fill to wait for.
    Waiter(Arc<Fill<O>>),
}

/// The table of fills clients may join, by key.
pub struct Inflight<O> {
    map: Mutex<HashMap<CacheKey, Arc<Fill<O>>, BuildKeyHasher>>,
}

impl<O> Default for Inflight<O> {
    fn default() -> Self {
        Inflight { map: Mutex::default() }
    }
}

impl<O> Inflight<O> {
    /// Joins the fill in flight for `key`, or creates one.
    pub fn join(&self, key: CacheKey) -> Join<O> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fill) = map.get(&key) {
            let st = fill.lock();
            let failed = st.abandoned || matches!(st.end, Some(Err(_)));
            if !failed && (st.retain || st.outcome.is_none()) {
                drop(st);
                fill.joined.fetch_add(1, Ordering::Relaxed);
                return Join::Waiter(fill.clone());
            }
        }
        let fill = Arc::new(Fill::default());
        map.insert(key, fill.clone());
        Join::Leader(fill)
    }

    /// How many requests joined the fill in flight for `key` as waiters; `None` when no fill is
    /// in flight for it.
    pub fn joined(&self, key: &CacheKey) -> Option<usize> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|f| f.joined.load(Ordering::Relaxed))
    }

    /// Removes `fill` from the table (if it is still the one for `key`).
    pub fn remove(&self, key: &CacheKey, fill: &Arc<Fill<O>>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestFill = Fill<&'static str>;

    fn new_fill() -> (Arc<TestFill>, FillWriter<&'static str>) {
        let fill = Arc::new(TestFill::default());
        let writer = fill.writer();
        (fill, writer)
    }

    #[tokio::test]
    async fn late_reader_gets_bytes_so_far_then_the_rest() {
        let (fill, w) = new_fill();
        let mut early = fill.reader().unwrap();
        assert!(w.push(Bytes::from_static(b"ab"), 100).await);
        let mut late = fill.reader().unwrap();
        assert!(w.push(Bytes::from_static(b"cd"), 100).await);
        w.push_last(Bytes::from_static(b"e"), 100);
        assert_eq!(w.whole().unwrap(), Bytes::from_static(b"abcde"));
        w.complete(Ok(()));
        assert_eq!(fill.settled(), Some(Settled::Stored));
        for r in [&mut early, &mut late] {
            let mut got = Vec::new();
            while let Some(c) = r.next().await {
                got.extend_from_slice(&c.unwrap());
            }
            assert_eq!(got, b"abcde");
        }
    }

    #[tokio::test]
    async fn a_complete_body_in_one_chunk_is_read_at_once_only_from_the_start() {
        let (fill, w) = new_fill();
        let mut fresh = fill.reader().unwrap();
        let mut started = fill.reader().unwrap();
        assert!(w.push(Bytes::from_static(b"ab"), 100).await);
        assert_eq!(started.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
        w.push_last(Bytes::from_static(b"cd"), 100);
        assert!(fresh.complete_body().is_none(), "not complete yet");
        w.complete(Ok(()));
        assert!(started.complete_body().is_none(), "this reader is past the start");
        assert_eq!(started.next().await.unwrap().unwrap(), Bytes::from_static(b"cd"));
        assert!(fresh.complete_body().is_none(), "two chunks are read one by one");
        assert_eq!(fresh.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));

        let (one, w) = new_fill();
        let mut r = one.reader().unwrap();
        w.push_last(Bytes::from_static(b"whole"), 100);
        w.complete(Ok(()));
        assert_eq!(r.complete_body().unwrap(), Bytes::from_static(b"whole"));
        assert!(r.next().await.is_none(), "nothing after the whole body");
    }

    #[tokio::test]
    async fn a_chunk_read_by_every_reader_is_let_go_while_the_body_is_kept() {
        // A chunk is a slice of the origin connection's read buffer.
        let read_buffer = Bytes::from(vec![b'a'; 1000]);
        let (fill, w) = new_fill();
        let mut r = fill.reader().unwrap();
        assert!(w.push(read_buffer.slice(..600), 10_000).await);
        assert_eq!(r.next().await.unwrap().unwrap(), read_buffer.slice(..600));
        assert!(fill.retained());
        assert!(read_buffer.is_unique(), "the fill still holds a slice of the connection's read buffer");
        // A client joining now gets the bytes so far from the kept copy, then the rest.
        let mut late = fill.reader().unwrap();
        w.push_last(read_buffer.slice(600..), 10_000);
        assert_eq!(w.whole().unwrap(), read_buffer);
        // Until it has been stored, the body is still read from the fill.
        let mut after = fill.reader().expect("a reader of a body handed over to be stored");
        w.complete(Ok(()));
        assert_eq!(after.complete_body().unwrap(), read_buffer);
        assert_eq!(r.next().await.unwrap().unwrap(), read_buffer.slice(600..));
        assert!(r.next().await.is_none());
        let mut got = Vec::new();
        while let Some(c) = late.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, read_buffer);
    }

    #[tokio::test]
    async fn the_stored_body_is_one_exact_allocation_of_its_own() {
        let read_buffer = Bytes::from(vec![b'b'; 1000]);
        let (fill, w) = new_fill();
        let _r = fill.reader().unwrap();
        assert!(w.push(read_buffer.slice(..300), 10_000).await);
        w.push_last(read_buffer.slice(300..), 10_000);
        let whole = w.whole().unwrap();
        assert_eq!(whole, read_buffer);
        assert_ne!(whole.as_ptr(), read_buffer.as_ptr(), "a copy, not the connection's buffer");
        // The fill keeps it for the readers that join until the body is stored, and lets go of it
        // with the fill.
        w.complete(Ok(()));
        drop((_r, fill));
        // Unique and of its exact length: turned back into a Vec without copying.
        let ptr = whole.as_ptr();
        let v = Vec::from(whole);
        assert_eq!((v.as_ptr(), v.capacity()), (ptr, 1000));
    }

    #[test]
    fn a_finished_writer_lets_go_of_its_fill() {
        let (fill, w) = new_fill();
        w.complete(Ok(()));
        assert_eq!(Arc::strong_count(&fill), 1, "complete kept a hold on the fill");
        let (fill, w) = new_fill();
        w.finish();
        assert_eq!(Arc::strong_count(&fill), 1, "finish kept a hold on the fill");
        let (fill, w) = new_fill();
        w.fail("gone");
        assert_eq!(Arc::strong_count(&fill), 1, "fail kept a hold on the fill");
        assert!(fill.published().is_none(), "a finished fill is not abandoned");
    }

    #[tokio::test]
    async fn failure_reaches_every_reader() {
        let (fill, w) = new_fill();
        let mut r = fill.reader().unwrap();
        w.push(Bytes::from_static(b"ab"), 100).await;
        w.fail("origin reset");
        assert_eq!(r.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
        assert!(r.next().await.unwrap().is_err());
        assert!(r.next().await.is_none());
        assert_eq!(fill.settled(), Some(Settled::NotStored(NotStored::Incomplete)));
    }

    #[tokio::test]
    async fn too_large_stops_retaining_and_trims() {
        let (fill, w) = new_fill();
        let mut r = fill.reader().unwrap();
        assert!(w.push(Bytes::from(vec![0u8; 10]), 15).await);
        assert!(fill.retained());
        // Past the limit: no longer kept whole; the reader is within the window, so no wait.
        assert!(w.push(Bytes::from(vec![1u8; 10]), 15).await);
        assert!(!fill.retained());
        assert_eq!(fill.settled(), Some(Settled::NotStored(NotStored::TooLarge)));
        assert!(fill.reader().is_none(), "no new reader once the body is not kept whole");
        assert_eq!(r.next().await.unwrap().unwrap().len(), 10);
        assert_eq!(r.next().await.unwrap().unwrap().len(), 10);
        assert_eq!(fill.lock().chunks.len(), 0, "consumed chunks are dropped");
        assert!(w.whole().is_none());
        drop(r);
        // Nobody left to read: the filler is told to stop.
        assert!(!w.push(Bytes::from(vec![2u8; 10]), 15).await);
        w.complete(Err(NotStored::TooLarge));
        assert_eq!(fill.settled(), Some(Settled::NotStored(NotStored::TooLarge)));
    }

    #[test]
    fn join_coalesces_by_key() {
        let inflight = Inflight::<()>::default();
        let k = CacheKey::new("http", "h", "/a");
        let Join::Leader(a) = inflight.join(k) else { panic!("first is leader") };
        let Join::Waiter(b) = inflight.join(k) else { panic!("second waits") };
        assert!(Arc::ptr_eq(&a, &b));
        inflight.remove(&k, &a);
        assert!(matches!(inflight.join(k), Join::Leader(_)));
    }

    /// The filler hands the whole body over, stores it, completes the fill, and only then takes
    /// it out of the table: the store has the body from the insert on, the fill until it leaves
    /// the table. A request for the key in between (its lookup missed: the body was not stored
    /// yet) joins the fill and reads the body from it; one that joined earlier but takes its
    /// reader only now reads it too. Neither may be sent to the origin.
    #[tokio::test]
    async fn a_fill_whose_body_was_handed_over_to_be_stored_still_serves_who_joins_it() {
        let inflight = Inflight::<&'static str>::default();
        let k = CacheKey::new("http", "h", "/handed-over");
        let Join::Leader(fill) = inflight.join(k) else { panic!("first is leader") };
        let w = fill.writer();
        w.publish("head");
        let mut first = fill.reader().unwrap();
        let Join::Waiter(early) = inflight.join(k) else { panic!("second waits") };
        assert!(w.push(Bytes::from_static(b"ab"), 100).await);
        w.push_last(Bytes::from_static(b"cd"), 100);
        assert_eq!(w.whole().unwrap(), Bytes::from_static(b"abcd"));
        // The filler inserts the body into the store now; it is not there yet.
        let Join::Waiter(late) = inflight.join(k) else {
            panic!("the fill left no way to its body before it was stored: the key is fetched again")
        };
        assert!(Arc::ptr_eq(&late, &fill));
        let mut early = early.reader().expect("a client that joined before the hand-over reads the body");
        let mut late = late.reader().expect("a client that joined after the hand-over reads the body");
        w.complete(Ok(()));
        inflight.remove(&k, &fill);
        assert_eq!(late.complete_body().unwrap(), Bytes::from_static(b"abcd"), "read at once, as one block");
        assert!(late.next().await.is_none());
        for r in [&mut first, &mut early] {
            let mut got = Vec::new();
            while let Some(c) = r.next().await {
                got.extend_from_slice(&c.unwrap());
            }
            assert_eq!(got, b"abcd");
        }
    }

    /// pingora-cache's lock, "dangling" on drop: a writer that goes away without an outcome
    /// (its task aborted, a panic) releases its waiters at once with an error.
    #[tokio::test]
    async fn a_fill_whose_task_is_aborted_releases_its_waiters_at_once() {
        let inflight = Inflight::<&'static str>::default();
        let k = CacheKey::new("http", "h", "/aborted");
        let Join::Leader(fill) = inflight.join(k) else { panic!("first is leader") };
        let Join::Waiter(joined) = inflight.join(k) else { panic!("second waits") };
        let writer = fill.writer();
        let task = tokio::spawn(async move {
            let _writer = writer;
            std::future::pending::<()>().await;
        });
        let waiting = tokio::spawn(async move { joined.outcome().await });
        task.abort();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
        assert_eq!(got, Err(Abandoned));
        assert!(matches!(inflight.join(k), Join::Leader(_)), "an abandoned fill takes no new waiters");
    }

    #[tokio::test]
    async fn a_writer_dropped_mid_body_ends_its_readers_with_an_error() {
        let (fill, w) = new_fill();
        w.publish("head");
        let mut r = fill.reader().unwrap();
        assert!(w.push(Bytes::from_static(b"ab"), 100).await);
        drop(w);
        assert_eq!(r.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
        assert!(r.next().await.unwrap().is_err());
        assert_eq!(fill.settled(), Some(Settled::NotStored(NotStored::Incomplete)));
        assert_eq!(*fill.outcome().await.unwrap(), "head");
    }
}
