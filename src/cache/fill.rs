//! In-flight fills: one origin request per key at a time, its response streamed to every client
//! that asks for the key meanwhile.
//!
//! # How a fill works
//!
//! The first request for a key that is neither fresh in the store nor already being fetched
//! creates a [`Fill`] and drives the origin request itself until the outcome is known; what is
//! left of it then (a body still arriving), or all of it if that client goes away first, runs in
//! a task of its own, so no client's disconnect cancels it. A small response is thus fetched,
//! stored and served without a task switch. Every client, the first included, answers from the
//! fill's [`Outcome`]; the first reads it after each poll of the fill it drives (the fill
//! publishes from inside those polls), the others wait to be woken:
//!
//! - [`Outcome::Stream`]: a storable response is arriving. Each client reads the body through its
//!   own [`FillReader`] from the first byte, at its own pace: one that joins mid-fill gets the bytes
//!   so far at once, then the rest as they arrive. When the body is complete it is stored; a
//!   reader that starts after that, on a body that came in one chunk, gets it in one piece.
//! - [`Outcome::Entry`]: the origin confirmed the stored response (`304`); serve the refreshed entry.
//! - [`Outcome::Pass`]: the response may not be shared. One client (the first to ask) takes it; the
//!   others go to the origin on their own, and the key is remembered as not cacheable for a while
//!   (hit-for-pass) so later requests are not queued behind each other.
//! - [`Outcome::Failed`]: the origin could not be reached; each client answers on its own (stale if
//!   allowed, else an error).
//!
//! # Dropping means aborting
//!
//! A fill whose body fails (reset, early end, timeout) stores nothing and ends every reader with an
//! error, so a client sees a truncated response, never a short body presented as complete.
//!
//! # Memory
//!
//! While a fill may still be stored, its whole body is kept (it is bounded by
//! `max_object_size`): each chunk is copied, as it arrives, into one buffer that becomes the
//! stored body, and the chunk itself is dropped once every reader has passed it. The chunks are
//! slices of the origin connection's read buffer; held until the body ended, they kept every
//! buffer the connection read the body into, so it had to take a new one (up to about 400 KiB)
//! for each read, and the buffers the connections still held afterwards pinned allocator pages
//! shared with the freed ones. Released as they are read, the connection reads into the same
//! buffer again. A client that joins mid-body gets the bytes so far from the kept copy.
//!
//! Once a body of unknown length outgrows `max_object_size`, storing is abandoned, the copy is
//! dropped, no new client joins, and the origin is read no faster than the slowest reader (at
//! most [`WINDOW`] bytes ahead), so a huge response never sits in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use tokio::sync::Notify;

use super::entry::Entry;
use super::key::CacheKey;
use super::vary::VaryKey;
use crate::upstream::UpstreamError;

/// Bytes a fill that is no longer stored may read ahead of its slowest reader.
pub const WINDOW: u64 = 1 << 20;

/// A response being fetched and streamed: what every client of the fill sends.
#[derive(Debug)]
pub struct Head {
    /// Status to send.
    pub status: StatusCode,
    /// Header fields to send (hop-by-hop removed, `Via` added).
    pub headers: HeaderMap,
    /// The request field values the response was selected by.
    pub vary: VaryKey,
    /// `Last-Modified` (or `Date`), for answering `If-Modified-Since`.
    pub last_modified: crate::clock::Millis,
}

/// What became of a fill, once the origin answered (or did not).
pub enum Outcome {
    /// A storable response, streamed to every reader.
    Stream(Arc<Head>),
    /// The stored response was revalidated (`304`) and refreshed.
    Entry(Arc<Entry>),
    /// A response that may not be shared: the first client to ask takes it.
    Pass {
        /// Its status.
        status: StatusCode,
        /// Why it may not be shared.
        reason: crate::status::Detail,
        /// The response itself, for the first taker.
        response: Mutex<Option<http::Response<crate::upstream::OriginIncoming>>>,
    },
    /// The origin failed before a response head.
    Failed(Arc<UpstreamError>),
}

impl Head {
    /// The header fields: moved out when this is the last hold on the head (see
    /// [`Fill::forget_outcome_if_unjoined`]), copied otherwise.
    pub fn into_headers(head: Arc<Head>) -> HeaderMap {
        Arc::try_unwrap(head).map_or_else(|h| h.headers.clone(), |h| h.headers)
    }
}

struct State {
    outcome: Option<Arc<Outcome>>,
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
}

/// The body so far, copied from its chunks while it is kept whole.
#[derive(Default)]
struct Kept {
    /// Leading parts handed to readers that joined mid-body, in order; the body goes on in
    /// `tail`.
    given: Vec<Bytes>,
    /// The rest of the body so far.
    tail: BytesMut,
    /// Bytes received so far (as `State::received`, which only the filler changes too).
    received: u64,
    /// The body is no longer kept (`!State::retain`).
    stopped: bool,
}

/// One in-flight origin request and its response body, shared by every client of the key.
pub struct Fill {
    state: Mutex<State>,
    /// Locked before `state` by whoever takes both: the filler copies a chunk in here without
    /// holding `state`, so readers taking their chunks do not wait for the copy.
    kept: Mutex<Kept>,
    notify: Notify,
    /// Requests that joined this fill as waiters.
    joined: AtomicUsize,
}

impl Fill {
    fn new() -> Self {
        Fill {
            state: Mutex::new(State {
                outcome: None,
                chunks: VecDeque::new(),
                first: 0,
                received: 0,
                end: None,
                readers: Vec::new(),
                retain: true,
            }),
            kept: Mutex::new(Kept::default()),
            notify: Notify::new(),
            joined: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters more than losing the fill; recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // As for `lock`: losing the copy loses at most the store of this body.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a chunk: copied into the kept body while it may be stored (until more than
    /// `max_retained` bytes have arrived), and queued for the readers. `last`: no chunk follows.
    fn append(&self, chunk: Bytes, max_retained: u64, last: bool) {
        let mut kept = self.lock_kept();
        let received = kept.received + chunk.len() as u64;
        let keep = !kept.stopped && received <= max_retained;
        if keep {
            if kept.received == 0 {
                // The first bytes: room for the whole body when its length is known.
                let room = if last { chunk.len() as u64 } else { self.announced_length().unwrap_or(0) };
                kept.tail = BytesMut::with_capacity(room.min(max_retained) as usize);
            }
            kept.tail.extend_from_slice(&chunk);
        } else if !kept.stopped {
            // Storing is abandoned: what was copied goes now.
            *kept = Kept { stopped: true, ..Kept::default() };
        }
        kept.received = received;
        let mut st = self.lock();
        st.received = received;
        st.retain = keep;
        st.chunks.push_back(chunk);
        trim(&mut st);
    }

    /// The length the streamed response announced (`Content-Length`), if any.
    fn announced_length(&self) -> Option<u64> {
        let st = self.lock();
        let Some(Outcome::Stream(head)) = st.outcome.as_deref() else { return None };
        head.headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
    }

    /// Publishes the outcome and wakes every waiting client.
    pub fn publish(&self, outcome: Outcome) {
        self.lock().outcome = Some(Arc::new(outcome));
        self.notify.notify_waiters();
    }

    /// The outcome, once published.
    pub fn published(&self) -> Option<Arc<Outcome>> {
        self.lock().outcome.clone()
    }

    /// Drops the fill's own hold on its outcome when no request joined it as a waiter, so the
    /// leader's is the last. Only for a fill that has left the table of fills in flight (no one
    /// can join it any more): a waiter that joined reads the outcome from here.
    pub fn forget_outcome_if_unjoined(&self) {
        let mut st = self.lock();
        if self.joined.load(Ordering::Relaxed) == 0 {
            st.outcome = None;
        }
    }

    /// Waits for the outcome.
    pub async fn outcome(&self) -> Arc<Outcome> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(o) = self.lock().outcome.clone() {
                return o;
            }
            notified.await;
        }
    }

    /// Appends a chunk of the body. Returns false when nobody can use the rest any more (storing
    /// was abandoned and every reader left): the filler should stop.
    pub async fn push(&self, chunk: Bytes, max_retained: u64) -> bool {
        self.append(chunk, max_retained, false);
        self.notify.notify_waiters();
        // Backpressure once the body is no longer kept whole.
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.lock();
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

    /// True while the whole body is kept (it can still be stored, and new readers can join).
    pub fn retained(&self) -> bool {
        self.lock().retain
    }

    /// Appends the last chunk of the body without waking the readers: the filler stores the
    /// whole body first, then calls [`Fill::complete`], so no client can have the complete
    /// response before the store does.
    pub fn push_last(&self, chunk: Bytes, max_retained: u64) {
        self.append(chunk, max_retained, true);
    }

    /// The whole body, when it was kept: handed over (to be stored), so the fill no longer keeps
    /// it, and a client asking for a reader from now on is told to go elsewhere (a new request
    /// for the key starts a new fill, which first looks in the store).
    pub fn whole(&self) -> Option<Bytes> {
        let mut kept = self.lock_kept();
        if kept.stopped {
            return None;
        }
        let Kept { mut given, tail, .. } = std::mem::replace(&mut *kept, Kept { stopped: true, ..Kept::default() });
        self.lock().retain = false;
        drop(kept);
        if given.is_empty() {
            return Some(exact(tail));
        }
        given.push(tail.freeze());
        Some(concat(&given))
    }

    /// The body ended completely: readers get its end.
    pub fn complete(&self) {
        self.lock().end = Some(Ok(()));
        self.notify.notify_waiters();
    }

    /// The body failed: every reader ends with an error.
    pub fn fail(&self, why: &str) {
        self.lock().end = Some(Err(Arc::from(why)));
        self.notify.notify_waiters();
    }

    /// A reader of the body from its first byte, or `None` when the fill no longer keeps it
    /// whole (the caller then goes to the origin on its own).
    pub fn reader(self: &Arc<Self>) -> Option<FillReader> {
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

fn buffered(st: &State) -> u64 {
    let min = st.readers.iter().flatten().min().copied().unwrap_or(st.first + st.chunks.len());
    st.chunks.iter().skip(min.saturating_sub(st.first)).map(|c| c.len() as u64).sum()
}

/// Drops the chunks every reader has passed.
fn trim(st: &mut State) {
    let min = st.readers.iter().flatten().min().copied().unwrap_or(st.first + st.chunks.len());
    while st.first < min && !st.chunks.is_empty() {
        st.chunks.pop_front();
        st.first += 1;
    }
}

/// The kept body as stored: in an allocation of exactly its length (what the byte budget counts,
/// and a block whose handle needs no allocation of its own), copied when it has room to spare.
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
pub struct FillReader {
    fill: Arc<Fill>,
    slot: usize,
    /// The body's first bytes, for a reader that joined mid-body: read before its chunks.
    prefix: VecDeque<Bytes>,
    done: bool,
}

impl FillReader {
    /// The whole body at once, when this reader has read nothing yet and the body is already
    /// complete in one chunk (a small response): it is then served as one block, without reading
    /// chunk by chunk. The chunk is the origin connection's buffer, not the stored copy, whose
    /// handle stays unshared until a hit needs it.
    pub fn complete_body(&mut self) -> Option<Bytes> {
        let st = self.fill.lock();
        if self.done || !self.prefix.is_empty() || st.readers[self.slot] != Some(0) || !matches!(st.end, Some(Ok(()))) {
            return None;
        }
        if st.chunks.len() != 1 {
            return None;
        }
        let only = st.chunks[0].clone();
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

impl Drop for FillReader {
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
pub enum Join {
    /// A new fill: the caller must start the origin request for it.
    Leader(Arc<Fill>),
    /// An existing fill to wait for.
    Waiter(Arc<Fill>),
}

/// The map of fills in flight, by key.
#[derive(Default)]
pub struct Inflight {
    map: Mutex<HashMap<CacheKey, Arc<Fill>, super::key::BuildKeyHasher>>,
}

impl Inflight {
    /// Joins the fill in flight for `key`, or creates one.
    pub fn join(&self, key: CacheKey) -> Join {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fill) = map.get(&key) {
            if fill.retained() || fill.lock().outcome.is_none() {
                fill.joined.fetch_add(1, Ordering::Relaxed);
                return Join::Waiter(fill.clone());
            }
        }
        let fill = Arc::new(Fill::new());
        map.insert(key, fill.clone());
        Join::Leader(fill)
    }

    /// How many requests joined the fill in flight for `key` as waiters; `None` when no fill is
    /// in flight for it.
    pub fn joined(&self, key: &CacheKey) -> Option<usize> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|f| f.joined.load(Ordering::Relaxed))
    }

    /// True when a fill is in flight for `key`.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key)
    }

    /// Removes `fill` from the map (if it is still the one for `key`).
    pub fn remove(&self, key: &CacheKey, fill: &Arc<Fill>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_reader_gets_bytes_so_far_then_the_rest() {
        let fill = Arc::new(Fill::new());
        let mut early = fill.reader().unwrap();
        assert!(fill.push(Bytes::from_static(b"ab"), 100).await);
        let mut late = fill.reader().unwrap();
        assert!(fill.push(Bytes::from_static(b"cd"), 100).await);
        fill.push_last(Bytes::from_static(b"e"), 100);
        assert_eq!(fill.whole().unwrap(), Bytes::from_static(b"abcde"));
        fill.complete();
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
        let fill = Arc::new(Fill::new());
        let mut fresh = fill.reader().unwrap();
        let mut started = fill.reader().unwrap();
        assert!(fill.push(Bytes::from_static(b"ab"), 100).await);
        assert_eq!(started.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
        fill.push_last(Bytes::from_static(b"cd"), 100);
        assert!(fresh.complete_body().is_none(), "not complete yet");
        fill.complete();
        assert!(started.complete_body().is_none(), "this reader is past the start");
        assert_eq!(started.next().await.unwrap().unwrap(), Bytes::from_static(b"cd"));
        assert!(fresh.complete_body().is_none(), "two chunks are read one by one");
        assert_eq!(fresh.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));

        let one = Arc::new(Fill::new());
        let mut r = one.reader().unwrap();
        one.push_last(Bytes::from_static(b"whole"), 100);
        one.complete();
        assert_eq!(r.complete_body().unwrap(), Bytes::from_static(b"whole"));
        assert!(r.next().await.is_none(), "nothing after the whole body");
    }

    #[tokio::test]
    async fn a_chunk_read_by_every_reader_is_let_go_while_the_body_is_kept() {
        // A chunk is a slice of the origin connection's read buffer.
        let read_buffer = Bytes::from(vec![b'a'; 1000]);
        let fill = Arc::new(Fill::new());
        let mut r = fill.reader().unwrap();
        assert!(fill.push(read_buffer.slice(..600), 10_000).await);
        assert_eq!(r.next().await.unwrap().unwrap(), read_buffer.slice(..600));
        assert!(fill.retained());
        assert!(read_buffer.is_unique(), "the fill still holds a slice of the connection's read buffer");
        // A client joining now gets the bytes so far from the kept copy, then the rest.
        let mut late = fill.reader().unwrap();
        fill.push_last(read_buffer.slice(600..), 10_000);
        assert_eq!(fill.whole().unwrap(), read_buffer);
        assert!(fill.reader().is_none(), "the body was handed over to be stored");
        fill.complete();
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
        let fill = Arc::new(Fill::new());
        let _r = fill.reader().unwrap();
        assert!(fill.push(read_buffer.slice(..300), 10_000).await);
        fill.push_last(read_buffer.slice(300..), 10_000);
        let whole = fill.whole().unwrap();
        assert_eq!(whole, read_buffer);
        assert_ne!(whole.as_ptr(), read_buffer.as_ptr(), "a copy, not the connection's buffer");
        // Unique and of its exact length: turned back into a Vec without copying.
        let ptr = whole.as_ptr();
        let v = Vec::from(whole);
        assert_eq!((v.as_ptr(), v.capacity()), (ptr, 1000));
    }

    #[tokio::test]
    async fn failure_reaches_every_reader() {
        let fill = Arc::new(Fill::new());
        let mut r = fill.reader().unwrap();
        fill.push(Bytes::from_static(b"ab"), 100).await;
        fill.fail("origin reset");
        assert_eq!(r.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
        assert!(r.next().await.unwrap().is_err());
        assert!(r.next().await.is_none());
    }

    #[tokio::test]
    async fn too_large_stops_retaining_and_trims() {
        let fill = Arc::new(Fill::new());
        let mut r = fill.reader().unwrap();
        assert!(fill.push(Bytes::from(vec![0u8; 10]), 15).await);
        assert!(fill.retained());
        // Past the limit: no longer kept whole; the reader is within the window, so no wait.
        assert!(fill.push(Bytes::from(vec![1u8; 10]), 15).await);
        assert!(!fill.retained());
        assert!(fill.reader().is_none(), "no new reader once the body is not kept whole");
        assert_eq!(r.next().await.unwrap().unwrap().len(), 10);
        assert_eq!(r.next().await.unwrap().unwrap().len(), 10);
        assert_eq!(fill.lock().chunks.len(), 0, "consumed chunks are dropped");
        assert!(fill.whole().is_none());
        fill.complete();
        drop(r);
        // Nobody left to read: the filler is told to stop.
        assert!(!fill.push(Bytes::from(vec![2u8; 10]), 15).await);
    }

    #[test]
    fn join_coalesces_by_key() {
        let inflight = Inflight::default();
        let k = CacheKey::new("http", "h", "/a");
        let Join::Leader(a) = inflight.join(k) else { panic!("first is leader") };
        let Join::Waiter(b) = inflight.join(k) else { panic!("second waits") };
        assert!(Arc::ptr_eq(&a, &b));
        inflight.remove(&k, &a);
        assert!(matches!(inflight.join(k), Join::Leader(_)));
    }

    fn stream(fill: &Fill) -> Arc<Outcome> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ETAG, http::HeaderValue::from_static("\"v1\""));
        let head = Head { status: StatusCode::OK, headers, vary: Box::new([]), last_modified: 0 };
        fill.publish(Outcome::Stream(Arc::new(head)));
        fill.published().expect("published")
    }

    #[test]
    fn a_leader_alone_takes_the_head_and_one_with_waiters_copies_it() {
        let inflight = Inflight::default();
        let k = CacheKey::new("http", "h", "/alone");
        let Join::Leader(fill) = inflight.join(k) else { panic!("first is leader") };
        let outcome = stream(&fill);
        inflight.remove(&k, &fill);
        fill.forget_outcome_if_unjoined();
        assert!(fill.published().is_none(), "nobody joined: the fill lets go of its outcome");
        let Outcome::Stream(head) = &*outcome else { panic!("a stream") };
        assert_eq!((Arc::strong_count(&outcome), Arc::strong_count(head)), (1, 1), "the leader's is the only hold");
        let head = head.clone();
        drop(outcome);
        assert_eq!(Head::into_headers(head).get(http::header::ETAG).unwrap(), "\"v1\"");

        let k = CacheKey::new("http", "h", "/joined");
        let Join::Leader(fill) = inflight.join(k) else { panic!("first is leader") };
        let Join::Waiter(_) = inflight.join(k) else { panic!("second waits") };
        let outcome = stream(&fill);
        inflight.remove(&k, &fill);
        fill.forget_outcome_if_unjoined();
        assert_eq!(Arc::strong_count(&outcome), 2, "a waiter joined: the fill keeps the outcome for it");
        let kept = fill.published().expect("the waiter reads it here");
        let Outcome::Stream(head) = &*outcome else { panic!("a stream") };
        let head = head.clone();
        drop(outcome);
        assert_eq!(Head::into_headers(head).get(http::header::ETAG).unwrap(), "\"v1\"");
        let Outcome::Stream(head) = &*kept else { panic!("a stream") };
        assert_eq!(head.headers.len(), 1, "the leader copied the fields, the waiter's are whole");
    }
}
