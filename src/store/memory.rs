//! The memory tier: a moka cache weighed in bytes, holding every stored variant of a URL under
//! the URL's key.
//!
//! moka decides what to evict (TinyLFU admission, byte-weighted); our policy decides freshness
//! with its own clock. A URL also carries the time after which none of its variants can be
//! useful (freshness, stale windows, `keep_stale`): past it, a lookup finds nothing. moka's own
//! per-entry expiry is not used: it keeps a timer-wheel node per URL and runs on its own clock,
//! and a dead entry needs no timer to go: it is never read again, so the byte budget evicts it
//! early, and the next store of its URL replaces it.
//!
//! moka applies evictions in its maintenance, which a write runs once 64 writes are waiting (or
//! 300 ms have passed since the last run, checked only at a write). Until then, a stored value
//! past the budget is still held: 64 waiting objects of 4 MiB are 256 MiB over the budget, and a
//! node that goes idle keeps them. The tier therefore also runs the maintenance itself once the
//! bodies stored since its last run reach a sixteenth of the budget ([`MemoryTier::put`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderMap;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;

use super::entry::Entry;
use super::key::{BuildKeyHasher, CacheKey};
use super::pieces::{Partial, Slice};
use super::tags::{self, TagId, TagIndex};
use crate::clock::{Clock, Millis};
use crate::http::vary;
use crate::metrics::{Eviction, Metrics};

/// Bytes of bookkeeping per URL beyond its entries: moka's node, key and timer, and this value.
const PER_URL: usize = 320;

/// All stored variants of one URL (RFC 9111 §4.1), newest first. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Variants {
    list: List,
    /// Until when (clock milliseconds) these variants can be useful.
    until: Millis,
}

/// Most URLs have one variant: it is held without a list. A URL stored in pieces holds its
/// [`Partial`] instead, and each of its slices is a [`Slice`] under a key of its own.
#[derive(Debug, Clone)]
enum List {
    One(Arc<Entry>),
    Many(Arc<[Arc<Entry>]>),
    Partial(Arc<Partial>),
    Slice(Arc<Slice>),
}

impl Variants {
    fn new(mut entries: Vec<Arc<Entry>>, until: Millis) -> Self {
        let list = if entries.len() == 1 { List::One(entries.remove(0)) } else { List::Many(entries.into()) };
        Variants { list, until }
    }

    /// The variants, newest first (none for pieces).
    pub fn entries(&self) -> &[Arc<Entry>] {
        match &self.list {
            List::One(e) => std::slice::from_ref(e),
            List::Many(v) => v,
            List::Partial(_) | List::Slice(_) => &[],
        }
    }

    /// The variant selected by a request's header fields (§4.1), newest first (§4.1: "the most
    /// recent response"): one whose selecting values match, else one whose language the
    /// request's `Accept-Language` chooses by quality values ([`vary::same_language`]). The second
    /// look is taken only when the first found nothing.
    pub fn select(&self, req: &HeaderMap) -> Option<&Arc<Entry>> {
        let entries = self.entries();
        entries.iter().find(|e| vary::matches(&e.vary, req)).or_else(|| {
            entries
                .iter()
                .find(|e| vary::same_language(&e.vary, req, e.headers.get_bytes(&http::header::CONTENT_LANGUAGE)))
        })
    }

    fn weight(&self) -> u32 {
        let pieces = match &self.list {
            List::Partial(p) => p.weight(),
            List::Slice(s) => s.weight(),
            List::One(_) | List::Many(_) => 0,
        };
        let tags: usize = self.entries().iter().map(|e| tags::of(&e.headers).len()).sum();
        let w: usize = self.entries().iter().map(|e| e.weight()).sum::<usize>()
            + pieces
            + PER_URL
            + tags * tags::INDEX_BYTES_PER_TAG;
        u32::try_from(w).unwrap_or(u32::MAX)
    }

    /// The tags of every variant, each once per variant carrying it.
    fn tags(&self) -> Vec<TagId> {
        if let List::Partial(p) = &self.list {
            // A representation in pieces carries the tags of the 206s it was made of.
            return tags::of(&p.template.headers);
        }
        let mut out = Vec::new();
        for e in self.entries() {
            out.extend(tags::of(&e.headers));
        }
        out
    }
}

type Store = Cache<CacheKey, Variants, BuildKeyHasher>;

/// The moka cache and its budget. moka cannot change a cache's capacity: a new budget is a new
/// cache, which every handle on the tier sees at its next call.
struct Sized {
    cache: Store,
    budget: u64,
}

/// The counters of objects leaving the tier, by cause.
#[derive(Clone, Default)]
struct Evictions {
    size: Counter,
    expired: Counter,
    purged: Counter,
}

/// The in-process tier.
#[derive(Clone)]
pub struct MemoryTier {
    store: Arc<ArcSwap<Sized>>,
    max_variants: Arc<AtomicUsize>,
    clock: Arc<dyn Clock>,
    /// Writes so far (any key): a lookup that saw this count, repeated while it is unchanged,
    /// would find nothing new.
    writes: Arc<AtomicU64>,
    /// Bytes of bodies stored since the tier last ran moka's maintenance.
    unapplied: Arc<AtomicU64>,
    evictions: Evictions,
    /// Tag → URLs, kept by [`put`](Self::put) and moka's removal listener.
    tags: Arc<TagIndex>,
}

impl MemoryTier {
    /// A tier holding at most `budget_bytes` (keys, headers and bodies counted) and at most
    /// `max_variants` variants per URL.
    pub fn new(budget_bytes: u64, max_variants: usize, clock: Arc<dyn Clock>) -> Self {
        Self::build(budget_bytes, max_variants, clock, Evictions::default())
    }

    /// [`new`](Self::new), counting evictions in `metrics`.
    pub fn counted(budget_bytes: u64, max_variants: usize, clock: Arc<dyn Clock>, metrics: &Metrics) -> Self {
        let evictions = Evictions {
            size: metrics.eviction_counter(Eviction::Size),
            expired: metrics.eviction_counter(Eviction::Expired),
            purged: metrics.eviction_counter(Eviction::Purged),
        };
        Self::build(budget_bytes, max_variants, clock, evictions)
    }

    fn build(budget: u64, max_variants: usize, clock: Arc<dyn Clock>, evictions: Evictions) -> Self {
        let tags = Arc::new(TagIndex::default());
        let cache = Self::cache(budget, &clock, &evictions, &tags);
        MemoryTier {
            store: Arc::new(ArcSwap::from_pointee(Sized { cache, budget })),
            max_variants: Arc::new(AtomicUsize::new(max_variants.max(1))),
            clock,
            writes: Arc::default(),
            unapplied: Arc::default(),
            evictions,
            tags,
        }
    }

    fn cache(budget: u64, clock: &Arc<dyn Clock>, evictions: &Evictions, tags: &Arc<TagIndex>) -> Store {
        let (clock, ev, on_removal) = (clock.clone(), evictions.clone(), tags.clone());
        Cache::builder()
            .max_capacity(budget)
            .weigher(|_k: &CacheKey, v: &Variants| v.weight())
            .eviction_listener(move |k: Arc<CacheKey>, v: Variants, cause| {
                // Every value that leaves (replaced, removed, evicted, refused admission) takes
                // its tags' references with it.
                on_removal.remove(&k, &v.tags());
                let counter = match cause {
                    // The budget pushed it out: it was still useful, or its time was over (a
                    // dead URL is never removed before that: nothing reads it again).
                    RemovalCause::Size if v.until > clock.now_millis() => &ev.size,
                    RemovalCause::Size | RemovalCause::Expired => &ev.expired,
                    RemovalCause::Explicit => &ev.purged,
                    RemovalCause::Replaced => return,
                };
                counter.inc();
            })
            .build_with_hasher(BuildKeyHasher::default())
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.store.load().budget
    }

    /// Gives the tier a new byte budget, keeping every stored URL that fits in it. Stores made
    /// meanwhile land in the new cache: a URL is copied over only where it is absent there.
    pub fn resize(&self, budget: u64) {
        let old = self.store.load_full();
        if old.budget == budget {
            return;
        }
        let cache = Self::cache(budget, &self.clock, &self.evictions, &self.tags);
        self.store.store(Arc::new(Sized { cache, budget }));
        let new = self.store.load();
        for (key, variants) in old.cache.iter() {
            let tags = variants.tags();
            if !new.cache.entry(*key).or_insert(variants).is_fresh() {
                // A newer value was stored meanwhile: this one leaves, with its tags.
                self.tags.remove(&key, &tags);
            }
        }
        new.cache.run_pending_tasks();
        self.writes.fetch_add(1, Ordering::Release);
    }

    /// Keeps at most `n` variants per URL from now on.
    pub fn set_max_variants(&self, n: usize) {
        self.max_variants.store(n.max(1), Ordering::Relaxed);
    }

    /// The tag index.
    pub fn tag_index(&self) -> &TagIndex {
        &self.tags
    }

    /// How many writes the tier has had. Read before a lookup; while it is unchanged, the same
    /// lookup would find nothing new (every write counts after it is visible).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Stores `variants` under `key`, then counts the write. Their tags are indexed first: the
    /// value they replace takes its own references away when it leaves. Runs moka's maintenance
    /// (which applies evictions) once the bodies stored since its last run reach a sixteenth of the
    /// budget: moka itself waits for 64 writes, which for large objects is several budgets. The
    /// body counted is the newest variant's (the one this write stores).
    fn put(&self, key: CacheKey, variants: Variants) {
        let bytes = variants.entries().first().map_or(0, |e| e.body.len() as u64);
        let tags = variants.tags();
        if !tags.is_empty() {
            self.tags.add(&key, &tags);
        }
        let store = self.store.load();
        store.cache.insert(key, variants);
        self.writes.fetch_add(1, Ordering::Release);
        // Evicted values are held beyond the budget by about a sixteenth of it at most.
        if self.unapplied.fetch_add(bytes, Ordering::Relaxed) + bytes >= store.budget / 16 {
            self.unapplied.store(0, Ordering::Relaxed);
            store.cache.run_pending_tasks();
        }
    }

    /// Every stored variant of `key`, while they can be useful.
    pub fn get(&self, key: &CacheKey) -> Option<Variants> {
        self.get_at(key, self.clock.now_millis())
    }

    /// [`get`](Self::get) at `now`, a time the caller has already read from the proxy's clock.
    pub fn get_at(&self, key: &CacheKey, now: Millis) -> Option<Variants> {
        self.store.load().cache.get(key).filter(|v| v.until > now)
    }

    /// [`get_at`](Self::get_at) for a key that is most likely absent (a miss looking again, a
    /// new URL being stored): an absent key is not counted as a read in the eviction policy's
    /// popularity estimate, which the lookup that found it absent already did.
    pub fn get_if_present(&self, key: &CacheKey, now: Millis) -> Option<Variants> {
        if self.store.load().cache.contains_key(key) {
            self.get_at(key, now)
        } else {
            None
        }
    }

    fn until(now: Millis, keep_for: Duration) -> Millis {
        now.saturating_add(u64::try_from(keep_for.as_millis()).unwrap_or(u64::MAX))
    }

    /// Stores `entry` as a variant of `key`, replacing any variant the same request would select
    /// (§4.1 / §3: a newer response replaces the one it supersedes). `keep_for` is how long,
    /// from now, the entry can be useful.
    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>, keep_for: Duration) {
        let now = self.clock.now_millis();
        let until = Self::until(now, keep_for);
        let Some(old) = self.get_if_present(&key, now) else {
            self.put(key, Variants { list: List::One(entry), until });
            return;
        };
        let mut entries: Vec<Arc<Entry>> = Vec::with_capacity(2);
        entries.push(entry.clone());
        let max_variants = self.max_variants.load(Ordering::Relaxed);
        for e in old.entries().iter() {
            if entries.len() >= max_variants {
                break;
            }
            // Same selecting field names and values: the new response supersedes it.
            if e.vary == entry.vary {
                continue;
            }
            entries.push(e.clone());
        }
        self.put(key, Variants::new(entries, until.max(old.until)));
    }

    /// Replaces the stored variant `old` by `new` (a 304 refreshed it). When `old` is gone
    /// meanwhile, `new` is inserted as a variant.
    pub fn replace(&self, key: CacheKey, old: &Arc<Entry>, new: Arc<Entry>, keep_for: Duration) {
        let now = self.clock.now_millis();
        if let Some(cur) = self.get_at(&key, now) {
            if let Some(i) = cur.entries().iter().position(|e| Arc::ptr_eq(e, old)) {
                let mut entries = cur.entries().to_vec();
                entries.remove(i);
                entries.insert(0, new);
                let until = Self::until(now, keep_for).max(cur.until);
                self.put(key, Variants::new(entries, until));
                return;
            }
        }
        self.insert(key, new, keep_for);
    }

    /// The pieces record of `key` at `now`, when the URL is stored in pieces.
    pub fn partial(&self, key: &CacheKey, now: Millis) -> Option<Arc<Partial>> {
        match self.get_at(key, now)?.list {
            List::Partial(p) => Some(p),
            _ => None,
        }
    }

    /// The slice stored under `key` (a [`CacheKey::slice`]) at `now`.
    pub fn slice(&self, key: &CacheKey, now: Millis) -> Option<Arc<Slice>> {
        match self.get_at(key, now)?.list {
            List::Slice(s) => Some(s),
            _ => None,
        }
    }

    /// Stores the pieces record of `key`, replacing what the URL held (a complete response
    /// replaces it in turn through [`insert`](Self::insert)).
    pub fn put_partial(&self, key: CacheKey, partial: Arc<Partial>, keep_for: Duration) {
        let until = Self::until(self.clock.now_millis(), keep_for);
        self.put(key, Variants { list: List::Partial(partial), until });
    }

    /// Stores a slice under its key.
    pub fn put_slice(&self, key: CacheKey, slice: Arc<Slice>, keep_for: Duration) {
        let until = Self::until(self.clock.now_millis(), keep_for);
        self.put(key, Variants { list: List::Slice(slice), until });
    }

    /// Removes one variant.
    pub fn remove_variant(&self, key: &CacheKey, old: &Arc<Entry>) {
        let store = self.store.load();
        if let Some(cur) = store.cache.get(key) {
            let entries: Vec<Arc<Entry>> = cur.entries().iter().filter(|e| !Arc::ptr_eq(e, old)).cloned().collect();
            if entries.is_empty() {
                store.cache.invalidate(key);
            } else if entries.len() != cur.entries().len() {
                self.put(*key, Variants::new(entries, cur.until));
            }
        }
    }

    /// Removes the representation in pieces under `key` when `purged`; returns how many.
    fn remove_pieces(&self, key: &CacheKey, purged: bool) -> usize {
        if purged {
            self.store.load().cache.invalidate(key);
        }
        usize::from(purged)
    }

    /// Removes every variant of `key` (invalidation, RFC 9111 §4.4).
    pub fn invalidate(&self, key: &CacheKey) {
        self.store.load().cache.invalidate(key);
    }

    /// Removes everything.
    pub fn invalidate_all(&self) {
        self.store.load().cache.invalidate_all();
    }

    /// Removes the variants of `key` that `purged` selects; returns how many.
    /// A representation stored in pieces is removed as one (its slices are only reached
    /// through it).
    pub fn remove_where(&self, key: &CacheKey, purged: impl Fn(&Entry) -> bool) -> usize {
        let Some(cur) = self.store.load().cache.get(key) else { return 0 };
        if let List::Partial(p) = &cur.list {
            return self.remove_pieces(key, purged(&p.template));
        }
        let kept: Vec<Arc<Entry>> = cur.entries().iter().filter(|e| !purged(e)).cloned().collect();
        let removed = cur.entries().len() - kept.len();
        if kept.is_empty() {
            self.store.load().cache.invalidate(key);
        } else if removed > 0 {
            self.put(*key, Variants::new(kept, cur.until));
        }
        removed
    }

    /// Replaces each variant of `key` that `soften` returns a copy of by that copy (a soft
    /// purge); returns how many were replaced.
    /// Pieces cannot be revalidated on their own: a soft purge removes them.
    pub fn soften_where(&self, key: &CacheKey, soften: impl Fn(&Entry) -> Option<Entry>) -> usize {
        let Some(cur) = self.store.load().cache.get(key) else { return 0 };
        if let List::Partial(p) = &cur.list {
            return self.remove_pieces(key, soften(&p.template).is_some());
        }
        let mut n = 0;
        let entries: Vec<Arc<Entry>> = cur
            .entries()
            .iter()
            .map(|e| match soften(e) {
                Some(s) => {
                    n += 1;
                    Arc::new(s)
                }
                None => e.clone(),
            })
            .collect();
        if n > 0 {
            self.put(*key, Variants::new(entries, cur.until));
        }
        n
    }

    /// Number of URLs stored (after pending maintenance).
    pub fn entry_count(&self) -> u64 {
        let store = self.store.load();
        store.cache.run_pending_tasks();
        store.cache.entry_count()
    }

    /// Bytes counted against the budget (after pending maintenance).
    pub fn weighted_size(&self) -> u64 {
        let store = self.store.load();
        store.cache.run_pending_tasks();
        store.cache.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use bytes::Bytes;

    fn entry() -> Arc<Entry> {
        Entry::for_tests(&HeaderMap::new(), Bytes::from_static(b"body"), 10)
    }

    #[test]
    fn a_url_is_found_until_its_keep_time_then_a_new_store_replaces_it() {
        let clock = Arc::new(ManualClock::new());
        let tier = MemoryTier::new(1 << 20, 4, clock.clone());
        let key = CacheKey::new("http", "h", "/a");
        tier.insert(key, entry(), Duration::from_secs(10));
        clock.advance(Duration::from_millis(9_999));
        assert!(tier.get(&key).is_some());
        clock.advance(Duration::from_millis(1));
        assert!(tier.get(&key).is_none(), "past its keep time, nothing is served");
        // A dead URL's variants are not kept alongside a new one, nor its time.
        let mut other = (*entry()).clone();
        other.vary = Box::new([(http::header::ACCEPT_LANGUAGE, Some("fr".into()))]);
        let fresh = Arc::new(other);
        tier.insert(key, fresh.clone(), Duration::from_secs(5));
        let found = tier.get(&key).expect("stored again");
        assert_eq!(found.entries().len(), 1);
        assert!(Arc::ptr_eq(&found.entries()[0], &fresh));
        clock.advance(Duration::from_secs(5));
        assert!(tier.get(&key).is_none());
    }

    /// Bytes of every URL the tier holds right now, evicted or not yet: what its values keep
    /// alive. Reads the map without running moka's maintenance.
    fn held(tier: &MemoryTier) -> u64 {
        tier.store.load().cache.iter().map(|(_, v)| u64::from(v.weight())).sum()
    }

    #[test]
    fn large_objects_past_the_budget_are_evicted_as_they_are_stored() {
        const BUDGET: u64 = 64 << 20;
        let tier = MemoryTier::new(BUDGET, 4, Arc::new(ManualClock::new()));
        // One 4 MiB body shared by every entry: each one is weighed (and kept) as 4 MiB.
        let body = Bytes::from(vec![b'x'; 4 << 20]);
        for i in 0..48 {
            let e = Entry::for_tests(&HeaderMap::new(), body.clone(), 60);
            tier.insert(CacheKey::new("http", "h", &format!("/{i}")), e, Duration::from_secs(60));
            let held = held(&tier);
            assert!(held <= BUDGET + BUDGET / 16, "after {} stores of 4 MiB: {held} bytes held", i + 1);
        }
        assert!(tier.weighted_size() <= BUDGET);
    }

    #[test]
    fn a_new_budget_keeps_what_fits_and_counts_what_leaves() {
        let clock = Arc::new(ManualClock::new());
        let metrics = Metrics::new();
        let tier = MemoryTier::counted(1 << 20, 4, clock.clone(), &metrics);
        let keys: Vec<CacheKey> = (0..100).map(|i| CacheKey::new("http", "h", &format!("/{i}"))).collect();
        for k in &keys {
            tier.insert(*k, entry(), Duration::from_secs(60));
        }
        tier.resize(2 << 20);
        assert_eq!(tier.budget(), 2 << 20);
        assert_eq!(tier.entry_count(), 100, "a larger budget lost objects");
        assert!(keys.iter().all(|k| tier.get(k).is_some()));
        // 100 URLs of about 400 bytes each do not fit in 10 KiB.
        tier.resize(10 << 10);
        assert!(tier.weighted_size() <= 10 << 10);
        let kept = tier.entry_count();
        assert!(kept < 100);
        assert_eq!(metrics.evictions(Eviction::Size), 100 - kept);
        tier.invalidate(&keys[0]);
        tier.invalidate_all();
        assert_eq!(tier.entry_count(), 0);
        assert_eq!(metrics.evictions(Eviction::Purged), kept);
    }

    fn tagged(tags: &str, body: usize) -> Arc<Entry> {
        let h = crate::testing::headers(&[("surrogate-key", tags)]);
        Entry::for_tests(&h, Bytes::from(vec![b'x'; body]), 10)
    }

    #[test]
    fn the_tag_index_follows_replacement_removal_and_eviction() {
        let clock = Arc::new(ManualClock::new());
        let tier = MemoryTier::new(1 << 20, 4, clock);
        let (a, b) = (CacheKey::new("http", "h", "/a"), CacheKey::new("http", "h", "/b"));
        let (t1, t2) = (tags::id(b"t1"), tags::id(b"t2"));
        tier.insert(a, tagged("t1 t2", 10), Duration::from_secs(10));
        tier.insert(b, tagged("t1", 10), Duration::from_secs(10));
        // Replaced by a variant without t2 (same Vary key): t2 no longer leads to /a.
        tier.insert(a, tagged("t1", 10), Duration::from_secs(10));
        tier.store.load().cache.run_pending_tasks();
        let mut keys = tier.tags.keys(t1);
        keys.sort();
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(keys, both);
        assert_eq!(tier.tags.keys(t2), vec![]);
        tier.invalidate(&b);
        tier.store.load().cache.run_pending_tasks();
        assert_eq!(tier.tags.keys(t1), vec![a]);
        assert_eq!(tier.remove_where(&a, |_| true), 1);
        tier.store.load().cache.run_pending_tasks();
        assert_eq!(tier.tags.pairs(), 0);
    }

    #[test]
    fn under_eviction_the_index_holds_exactly_the_urls_stored() {
        let clock = Arc::new(ManualClock::new());
        // Room for about 60 of these 16 KiB objects; 1,000 are stored.
        let tier = MemoryTier::new(1 << 20, 4, clock);
        let t = tags::id(b"all");
        for i in 0..1000 {
            let key = CacheKey::new("http", "h", &format!("/{i}"));
            tier.insert(key, tagged("all", 16 << 10), Duration::from_secs(10));
        }
        tier.store.load().cache.run_pending_tasks();
        let stored: Vec<CacheKey> = tier.store.load().cache.iter().map(|(k, _)| *k).collect();
        assert!(stored.len() < 100, "{} stored", stored.len());
        let mut indexed = tier.tags.keys(t);
        indexed.sort();
        let mut stored = stored;
        stored.sort();
        assert_eq!(indexed, stored);
    }
}
