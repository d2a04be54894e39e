//! Purges in the request flow: a purge made here (applied, then published to the fleet), the
//! check a lookup makes of an entry older than the last generation purge, and the check a fill
//! makes after storing when a purge was recorded while it ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::request::Ctx;
use super::Proxy;
use crate::clock::Millis;
use crate::store::purge::{Purge, Scope, Seq, Verdict};
use crate::store::{tags, CacheKey, Entry};

/// This process's purge ids: a random prefix and a counter.
fn next_id() -> String {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    });
    format!("{prefix:08x}-{}", COUNT.fetch_add(1, Ordering::Relaxed) + 1)
}

impl Proxy {
    /// The keys a purged URL's objects are stored under: one per scheme (a request over TLS is
    /// keyed `https`, and a URL names one resource however it was asked for), each made by the
    /// key rules of the host's site. A rule that keys on a request field makes keys a URL alone
    /// cannot name: only the variant without that field is found here (tags, hosts and prefixes
    /// reach the others).
    pub fn purge_keys(&self, host: &str, path_and_query: &str) -> [CacheKey; 2] {
        let none = http::HeaderMap::new();
        ["http", "https"].map(|scheme| match self.sites.route(host) {
            Some(id) => self.sites.get(id).cache_key(scheme, host, path_and_query, &none),
            None => CacheKey::new(scheme, host, path_and_query),
        })
    }

    /// Purges each of `scopes` (soft: marks stale) here and, through the shared tier, on every
    /// node. Returns the request's id and the number of objects removed or marked here at once:
    /// the variants of a URL or carrying a tag; for everything, the URLs held; host and prefix
    /// purges apply at each object's next lookup and count 0.
    pub async fn purge(&self, scopes: Vec<Scope>, soft: bool) -> (String, usize) {
        let id = next_id();
        let at = self.clock.now_millis();
        let mut n = 0;
        for scope in scopes {
            let purge = Purge { scope, soft, at };
            n += self.purger.apply(&purge).await;
            if let Some(shared) = self.tiers.shared() {
                shared.publish(&purge, &id);
            }
            tracing::info!(id = %id, scope = ?purge.scope, soft, "purge");
        }
        (id, n)
    }

    /// A lookup found `entry`, stamped before the last generation purge: checks it against the
    /// purges since. Returns it (stamped as checked), its softened copy (stored in its place),
    /// or `None` when purged (removed).
    pub(super) fn recheck(&self, ctx: &Ctx, entry: Arc<Entry>, now: Millis) -> Option<Arc<Entry>> {
        let seq = self.purges.seq();
        let path = ctx.target.path_and_query.as_str();
        match self.purges.at_lookup(&ctx.target.host, path, entry.checked.get()) {
            Verdict::Keep => {
                entry.checked.set(seq);
                Some(entry)
            }
            Verdict::Hard => {
                self.tiers.memory().remove_variant(&ctx.key, &entry);
                None
            }
            Verdict::Soft(at) => {
                let soft = Arc::new(entry.softened(at.min(now), seq));
                let keep_for = self.tiers.memory_keep_for(&soft.freshness, now);
                self.tiers.memory().replace(ctx.key, &entry, soft.clone(), keep_for);
                Some(soft)
            }
        }
    }

    /// A fill that started at purge `since` stored `entry`: when a URL or tag purge was recorded
    /// meanwhile that applies to it, it is removed or softened now. (Generation purges are
    /// caught at lookup: the entry is stamped `since`.) A purge recorded after this check found
    /// the entry stored.
    pub(super) fn after_store(&self, key: CacheKey, entry: &Arc<Entry>, since: Seq) {
        if self.purges.seq() == since {
            return;
        }
        match self.purges.after_store(&key, &tags::of(&entry.headers), since) {
            Verdict::Keep => {}
            Verdict::Hard => self.tiers.remove_variant(&key, entry),
            Verdict::Soft(at) => {
                let now = self.clock.now_millis();
                let soft = Arc::new(entry.softened(at.min(now), since));
                self.tiers.memory().replace(key, entry, soft.clone(), self.tiers.memory_keep_for(&soft.freshness, now));
            }
        }
    }
}
