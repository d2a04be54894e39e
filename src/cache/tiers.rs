//! Writes to every tier at once: the memory tier always, the shared tier when configured.

use std::sync::Arc;
use std::time::Duration;

use super::entry::Entry;
use super::key::CacheKey;
use super::memory::MemoryTier;
use super::shared::SharedTier;

/// The memory tier and the optional shared tier, written together.
#[derive(Clone)]
pub struct Tiers {
    /// The memory tier.
    pub memory: MemoryTier,
    /// The shared tier, when `[redis]` is configured.
    pub shared: Option<SharedTier>,
}

impl Tiers {
    /// Stores `entry` for the URL `canonical` (key `key`), useful for `keep_for`. The URL's text
    /// is only made when the shared tier needs it.
    pub fn insert(&self, key: CacheKey, canonical: impl FnOnce() -> String, entry: Arc<Entry>, keep_for: Duration) {
        if let Some(shared) = &self.shared {
            shared.put(&key, &canonical(), &entry, keep_for);
        }
        self.memory.insert(key, entry, keep_for);
    }

    /// Replaces the variant `old` by `new` (refreshed by a 304).
    pub fn replace(&self, key: CacheKey, canonical: &str, old: &Arc<Entry>, new: Arc<Entry>, keep_for: Duration) {
        if let Some(shared) = &self.shared {
            shared.put(&key, canonical, &new, keep_for);
        }
        self.memory.replace(key, old, new, keep_for);
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
