//! The memory tier: a moka cache weighed in bytes, holding every stored variant of a URL under
//! the URL's key.
//!
//! moka decides what to evict (TinyLFU admission, byte-weighted); our policy decides freshness
//! with its own clock. moka's expiry is used only to drop entries that can no longer be useful.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use moka::sync::Cache;
use moka::Expiry;

use super::entry::Entry;
use super::key::{BuildKeyHasher, CacheKey};
use super::vary;

/// Bytes of bookkeeping per URL beyond its entries: moka's node, key and timer, and this value.
const PER_URL: usize = 320;

/// All stored variants of one URL (RFC 9111 §4.1), newest first. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Variants {
    list: List,
    /// How long, from insertion, these variants can be useful.
    keep_for: Duration,
}

/// Most URLs have one variant: it is held without a list.
#[derive(Debug, Clone)]
enum List {
    One(Arc<Entry>),
    Many(Arc<[Arc<Entry>]>),
}

impl Variants {
    fn new(mut entries: Vec<Arc<Entry>>, keep_for: Duration) -> Self {
        let list = if entries.len() == 1 { List::One(entries.remove(0)) } else { List::Many(entries.into()) };
        Variants { list, keep_for }
    }

    /// The variants, newest first.
    pub fn entries(&self) -> &[Arc<Entry>] {
        match &self.list {
            List::One(e) => std::slice::from_ref(e),
            List::Many(v) => v,
        }
    }

    /// The variant selected by a request's header fields (§4.1), newest first (§4.1: "the most
    /// recent response").
    pub fn select(&self, req: &HeaderMap) -> Option<&Arc<Entry>> {
        self.entries().iter().find(|e| vary::matches(&e.vary, req))
    }

    fn weight(&self) -> u32 {
        let w: usize = self.entries().iter().map(|e| e.weight()).sum::<usize>() + PER_URL;
        u32::try_from(w).unwrap_or(u32::MAX)
    }
}

struct KeepFor;

impl Expiry<CacheKey, Variants> for KeepFor {
    fn expire_after_create(&self, _: &CacheKey, v: &Variants, _: Instant) -> Option<Duration> {
        Some(v.keep_for)
    }

    fn expire_after_update(&self, _: &CacheKey, v: &Variants, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(v.keep_for)
    }
}

/// The in-process tier.
#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<CacheKey, Variants, BuildKeyHasher>,
    max_variants: usize,
}

impl MemoryTier {
    /// A tier holding at most `budget_bytes` (keys, headers and bodies counted) and at most
    /// `max_variants` variants per URL.
    pub fn new(budget_bytes: u64, max_variants: usize) -> Self {
        let cache = Cache::builder()
            .max_capacity(budget_bytes)
            .weigher(|_k: &CacheKey, v: &Variants| v.weight())
            .expire_after(KeepFor)
            .build_with_hasher(BuildKeyHasher::default());
        MemoryTier { cache, max_variants: max_variants.max(1) }
    }

    /// Every stored variant of `key`.
    pub fn get(&self, key: &CacheKey) -> Option<Variants> {
        self.cache.get(key)
    }

    /// Stores `entry` as a variant of `key`, replacing any variant the same request would select
    /// (§4.1 / §3: a newer response replaces the one it supersedes). `keep_for` is how long,
    /// from now, the entry can be useful.
    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>, keep_for: Duration) {
        let mut entries: Vec<Arc<Entry>> = Vec::with_capacity(2);
        let mut keep = keep_for;
        entries.push(entry.clone());
        if let Some(old) = self.cache.get(&key) {
            for e in old.entries().iter() {
                if entries.len() >= self.max_variants {
                    break;
                }
                // Same selecting field names and values: the new response supersedes it.
                if e.vary == entry.vary {
                    continue;
                }
                entries.push(e.clone());
            }
            keep = keep.max(old.keep_for);
        }
        self.cache.insert(key, Variants::new(entries, keep));
    }

    /// Replaces the stored variant `old` by `new` (a 304 refreshed it). When `old` is gone
    /// meanwhile, `new` is inserted as a variant.
    pub fn replace(&self, key: CacheKey, old: &Arc<Entry>, new: Arc<Entry>, keep_for: Duration) {
        if let Some(cur) = self.cache.get(&key) {
            if let Some(i) = cur.entries().iter().position(|e| Arc::ptr_eq(e, old)) {
                let mut entries = cur.entries().to_vec();
                entries.remove(i);
                entries.insert(0, new);
                let keep = keep_for.max(cur.keep_for);
                self.cache.insert(key, Variants::new(entries, keep));
                return;
            }
        }
        self.insert(key, new, keep_for);
    }

    /// Removes one variant.
    pub fn remove_variant(&self, key: &CacheKey, old: &Arc<Entry>) {
        if let Some(cur) = self.cache.get(key) {
            let entries: Vec<Arc<Entry>> = cur.entries().iter().filter(|e| !Arc::ptr_eq(e, old)).cloned().collect();
            if entries.is_empty() {
                self.cache.invalidate(key);
            } else if entries.len() != cur.entries().len() {
                self.cache.insert(*key, Variants::new(entries, cur.keep_for));
            }
        }
    }

    /// Removes every variant of `key` (invalidation, RFC 9111 §4.4).
    pub fn invalidate(&self, key: &CacheKey) {
        self.cache.invalidate(key);
    }

    /// Removes everything.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Number of URLs stored (after pending maintenance).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Bytes counted against the budget (after pending maintenance).
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}
