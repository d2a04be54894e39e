//! The tiers together: a lookup reads memory, then the shared tier (promoting what it finds into
//! memory); a write goes to both. How long an entry is kept is decided here, for both tiers.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::entry::Entry;
use super::key::CacheKey;
use super::memory::{MemoryTier, Variants};
use super::purge::{Purges, Verdict};
use super::shared::SharedTier;
use super::tags;
use crate::clock::{Clock, Millis};
use crate::http::policy::Freshness;
use crate::http::vary;

/// The memory tier and the optional shared tier.
#[derive(Clone)]
pub struct Tiers {
    memory: MemoryTier,
    shared: Option<SharedTier>,
    /// How long an entry is kept past its freshness and stale windows, for revalidation.
    keep_stale: Duration,
    clock: Arc<dyn Clock>,
    /// The purges recorded: what is read from the shared tier is checked against them.
    purges: Arc<Purges>,
}

/// What the memory tier holds for a key, and the variant a request selects.
pub struct InMemory {
    /// Every stored variant of the key, when any.
    pub variants: Option<Variants>,
    /// The variant the request selects.
    pub selected: Option<Arc<Entry>>,
}

impl Tiers {
    /// The tiers: `memory`, and `shared` when configured; objects read from `shared` are checked
    /// against `purges`.
    pub fn new(
        memory: MemoryTier,
        shared: Option<SharedTier>,
        keep_stale: Duration,
        clock: Arc<dyn Clock>,
        purges: Arc<Purges>,
    ) -> Self {
        Tiers { memory, shared, keep_stale, clock, purges }
    }

    /// The memory tier.
    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    /// The shared tier, when configured.
    pub fn shared(&self) -> Option<&SharedTier> {
        self.shared.as_ref()
    }

    /// How long, from `now`, an entry with freshness `fresh` can be useful: its remaining
    /// freshness, its stale windows, and `cache.keep_stale` for revalidation. The shared tier
    /// keeps it that long.
    pub fn keep_for(&self, fresh: &Freshness, now: Millis) -> Duration {
        let ttl = fresh.ttl_ms(now).max(0) as u64;
        let windows = u64::from(fresh.stale_while_revalidate.max(fresh.stale_if_error)) * 1000;
        Duration::from_millis(ttl.saturating_add(windows)) + self.keep_stale
    }

    /// How long the memory tier alone keeps an entry with freshness `fresh`, from `now`.
    pub fn memory_keep_for(&self, fresh: &Freshness, now: Millis) -> Duration {
        self.in_memory_for(self.keep_for(fresh, now))
    }

    /// How long the memory tier keeps an entry the shared tier keeps `keep_for`: as long, or at
    /// most `memcached.memory_ttl` when the shared tier cannot announce invalidations (then
    /// another node's invalidation reaches this one when its copy runs out).
    fn in_memory_for(&self, keep_for: Duration) -> Duration {
        match self.shared.as_ref().and_then(SharedTier::memory_ttl) {
            Some(cap) => keep_for.min(cap),
            None => keep_for,
        }
    }

    /// The memory tier's variants of `key` at `now`, and the one `req` selects.
    pub fn in_memory(&self, key: &CacheKey, req: &HeaderMap, now: Millis) -> InMemory {
        let variants = self.memory.get_at(key, now);
        let selected = variants.as_ref().and_then(|v| v.select(req)).cloned();
        InMemory { variants, selected }
    }

    /// Looks the URL `canonical` (`host` + `path`) up in the shared tier; every variant found
    /// that no purge removed is promoted into memory for its remaining useful life (softened
    /// when a soft purge applies to it). Returns the variant `req` selects.
    pub async fn in_shared(
        &self,
        key: &CacheKey,
        canonical: &str,
        (host, path): (&str, &str),
        req: &HeaderMap,
    ) -> Option<Arc<Entry>> {
        let shared = self.shared.as_ref()?;
        let found = shared.get(key, canonical).await;
        let now = self.clock.now_millis();
        let seq = self.purges.seq();
        let mut selected = None;
        for entry in found {
            let tags = tags::of(&entry.headers);
            let entry = match self.purges.by_time(host, path, &tags, entry.freshness.times.request_time) {
                Verdict::Hard => continue,
                Verdict::Soft(at) => entry.softened(at.min(now), seq),
                Verdict::Keep => {
                    entry.checked.set(seq);
                    entry
                }
            };
            let entry = Arc::new(entry);
            let language = entry.headers.get_bytes(&http::header::CONTENT_LANGUAGE);
            if selected.is_none() && vary::selects(&entry.vary, req, language) {
                selected = Some(entry.clone());
            }
            self.memory.insert(*key, entry.clone(), self.in_memory_for(self.keep_for(&entry.freshness, now)));
        }
        selected
    }

    /// Stores `entry` for the URL `canonical` (key `key`), received at `now`. The URL's text is
    /// only made when the shared tier needs it.
    pub fn insert(&self, key: CacheKey, canonical: impl FnOnce() -> String, entry: Arc<Entry>, now: Millis) {
        let keep_for = self.keep_for(&entry.freshness, now);
        if let Some(shared) = &self.shared {
            shared.put(&key, &canonical(), &entry, keep_for);
        }
        self.memory.insert(key, entry, self.in_memory_for(keep_for));
    }

    /// Replaces the variant `old` by `new` (refreshed by a 304 received at `now`).
    pub fn replace(&self, key: CacheKey, canonical: &str, old: &Arc<Entry>, new: Arc<Entry>, now: Millis) {
        let keep_for = self.keep_for(&new.freshness, now);
        if let Some(shared) = &self.shared {
            shared.put(&key, canonical, &new, keep_for);
        }
        self.memory.replace(key, old, new, self.in_memory_for(keep_for));
    }

    /// Removes one variant.
    pub fn remove_variant(&self, key: &CacheKey, old: &Arc<Entry>) {
        if let Some(shared) = &self.shared {
            shared.remove_variant(key, old);
        }
        self.memory.remove_variant(key, old);
    }

    /// Invalidates the URL here and, through the shared tier, on every node.
    pub fn invalidate(&self, key: &CacheKey) {
        if let Some(shared) = &self.shared {
            shared.invalidate(key);
        }
        self.memory.invalidate(key);
    }
}
