//! Hit-for-pass: keys whose last response could not be shared, until when. Their requests go
//! straight to the origin instead of queueing behind each other's fills.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::key::{BuildKeyHasher, CacheKey};
use crate::clock::Millis;

/// Keys marked as not shareable, each until a time.
pub struct HitForPass {
    until: moka::sync::Cache<CacheKey, Millis, BuildKeyHasher>,
    /// Keys marked and not yet removed, never fewer than there are: a key counts from just
    /// before its insertion until moka reports its removal (expired, replaced or evicted). At
    /// zero, the common case, a miss is answered without a lookup.
    live: Arc<AtomicUsize>,
    keep: Duration,
}

impl HitForPass {
    /// Marks last `keep` each.
    pub fn new(keep: Duration) -> Self {
        let live = Arc::new(AtomicUsize::new(0));
        let removed = live.clone();
        let until = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(keep.max(Duration::from_millis(1)))
            .eviction_listener(move |_, _, _| {
                removed.fetch_sub(1, Ordering::Relaxed);
            })
            .build_with_hasher(BuildKeyHasher::default());
        HitForPass { until, live, keep }
    }

    /// True when `key` was marked and its time is not over at `now`.
    pub fn active(&self, key: &CacheKey, now: Millis) -> bool {
        self.live.load(Ordering::Relaxed) > 0 && self.until.get(key).is_some_and(|until| until > now)
    }

    /// Marks `key` from `now` on, for the configured time.
    pub fn mark(&self, key: CacheKey, now: Millis) {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.until.insert(key, now + self.keep.as_millis() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_for_pass_counts_its_keys_and_looks_up_only_while_there_are_some() {
        let h = HitForPass::new(Duration::from_secs(10));
        let (a, b) = (CacheKey::new("http", "x", "/a"), CacheKey::new("http", "x", "/b"));
        assert!(!h.active(&a, 0));
        assert_eq!(h.live.load(Ordering::Relaxed), 0);
        h.mark(a, 1_000);
        assert!(h.active(&a, 1_000) && h.active(&a, 10_999));
        assert!(!h.active(&a, 11_000), "marked for 10 s from its response");
        assert!(!h.active(&b, 1_000));
        // Marking a key again replaces its time; it still counts once.
        h.mark(a, 5_000);
        h.until.run_pending_tasks();
        assert_eq!(h.live.load(Ordering::Relaxed), 1);
        assert!(h.active(&a, 14_999));
        h.mark(b, 5_000);
        h.until.run_pending_tasks();
        assert_eq!(h.live.load(Ordering::Relaxed), 2);
    }
}
