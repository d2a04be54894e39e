//! A proxy for a new configuration that shares with the running one what the change leaves
//! alone: the memory tier always (resized when `cache.memory` changed) and the purges recorded,
//! the shared tier and its connection when `[redis]` (or `[memcached]`) did not change, the sites with their origin
//! pools (connections, health, ejections) when no site, origin or origin limit changed, the
//! fills in flight, and hit-for-pass when its time did not change.

use std::sync::Arc;

use super::{Proxy, Shared};
use crate::config::Config;
use crate::site::Sites;
use crate::store::hit_for_pass::HitForPass;
use crate::store::shared::{SharedTier, TierConfig};
use crate::store::tiers::Tiers;

/// Keys a running process cannot apply, and why; a reload reports them when they changed and
/// keeps the running value.
pub const NEED_RESTART: &[(&str, &str)] = &[
    ("listen", "the listening socket is bound once; restart with socket hand-over (SIGUSR2) to move it"),
    (
        "listener",
        "the listeners are bound once with their certificate files; a reload reads those files again, \
         a new address, file or TLS setting needs a restart (SIGUSR2 hands the sockets over)",
    ),
    ("admin", "the admin listener is bound, and its token read, once: a reload must not open it wider"),
    ("log.format", "the log subscriber is installed once per process"),
    ("limits.max_connections", "the connection slots are sized when the listener starts"),
    ("cache.preallocate", "the memory is claimed at start-up"),
    ("cache.transparent_huge_pages", "the process's memory policy is set at start-up"),
];

/// The keys of [`NEED_RESTART`] whose value differs between `old` and `new`.
pub fn needing_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs = [
        old.listen != new.listen || old.listen_enabled != new.listen_enabled,
        old.listeners != new.listeners,
        old.admin != new.admin,
        old.log.format != new.log.format,
        old.limits.max_connections != new.limits.max_connections,
        old.cache.preallocate != new.cache.preallocate,
        old.cache.transparent_huge_pages != new.cache.transparent_huge_pages,
    ];
    NEED_RESTART.iter().zip(differs).filter(|(_, d)| *d).map(|((k, _), _)| *k).collect()
}

/// The top-level keys and tables whose value differs between `old` and `new`.
pub fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs = [
        ("listen", old.listen != new.listen || old.listen_enabled != new.listen_enabled),
        ("listener", old.listeners != new.listeners),
        ("origin", old.origin != new.origin),
        ("site", old.sites != new.sites),
        ("forwarding", old.forwarding != new.forwarding),
        ("cache", old.cache != new.cache),
        ("timeouts", old.timeouts != new.timeouts),
        ("limits", old.limits != new.limits),
        ("log", old.log != new.log),
        ("coalescing", old.coalescing != new.coalescing),
        ("stale", old.stale != new.stale),
        ("targeted", old.targeted != new.targeted),
        ("redis", old.redis != new.redis),
        ("memcached", old.memcached != new.memcached),
        ("refresh_ahead", old.refresh_ahead != new.refresh_ahead),
        ("health", old.health != new.health),
        ("admin", old.admin != new.admin),
        ("purge", old.purge != new.purge),
    ];
    differs.iter().filter(|(_, d)| *d).map(|(k, _)| *k).collect()
}

/// Whether the sites and origin pools made for `old` serve `new` as well.
fn same_sites(old: &Config, new: &Config) -> bool {
    old.origin == new.origin
        && old.sites == new.sites
        && old.cache.key_version == new.cache.key_version
        && old.refresh_ahead == new.refresh_ahead
        && old.timeouts.connect == new.timeouts.connect
        && old.timeouts.first_byte == new.timeouts.first_byte
        && old.timeouts.origin_queue == new.timeouts.origin_queue
        && old.timeouts.idle == new.timeouts.idle
        && old.limits.origin_connections == new.limits.origin_connections
}

impl Proxy {
    /// A proxy for `cfg` sharing what it can with this one. The keys of [`NEED_RESTART`] keep
    /// their running values. The memory tier is resized at once, for both proxies.
    pub fn reconfigured(&self, mut cfg: Config) -> Proxy {
        let old = &*self.cfg;
        cfg.listen = old.listen;
        cfg.listen_enabled = old.listen_enabled;
        cfg.listeners = old.listeners.clone();
        cfg.admin = old.admin.clone();
        cfg.log.format = old.log.format;
        cfg.limits.max_connections = old.limits.max_connections;
        cfg.cache.preallocate = old.cache.preallocate;
        cfg.cache.transparent_huge_pages = old.cache.transparent_huge_pages;

        let memory = self.tiers.memory().clone();
        memory.resize(cfg.cache.memory_bytes);
        memory.set_max_variants(cfg.cache.max_variants);
        let shared = match (TierConfig::of(&cfg), self.tiers.shared()) {
            (Some(new), Some(running)) if running.config() == &new => Some(running.clone()),
            (Some(new), _) => Some(SharedTier::start(
                new,
                self.purger.clone(),
                self.clock.clone(),
                self.metrics.shared.clone(),
                self.metrics.shared_call_seconds(),
            )),
            (None, _) => None,
        };
        // New pools start with every server up, and their health checks at once; the old ones
        // stop with the last request that uses them.
        let sites =
            if same_sites(old, &cfg) { self.sites.clone() } else { Arc::new(Sites::new(&cfg, self.clock.clone())) };
        let hit_for_pass = if old.coalescing.hit_for_pass == cfg.coalescing.hit_for_pass {
            self.hit_for_pass.clone()
        } else {
            Arc::new(HitForPass::new(cfg.coalescing.hit_for_pass))
        };
        let parts = Shared {
            tiers: Tiers::new(memory, shared, cfg.cache.keep_stale, self.clock.clone(), self.purges.clone()),
            sites,
            inflight: self.inflight.clone(),
            hit_for_pass,
            purges: self.purges.clone(),
            purger: self.purger.clone(),
        };
        Proxy::assemble(Arc::new(cfg), self.clock.clone(), self.metrics.clone(), parts)
    }

    /// True when `other` uses this proxy's shared-tier connection (or neither has one).
    pub fn shares_shared_tier_with(&self, other: &Proxy) -> bool {
        match (self.tiers.shared(), other.tiers.shared()) {
            (Some(a), Some(b)) => a.same_as(b),
            (None, None) => true,
            _ => false,
        }
    }

    /// True when `other` uses this proxy's sites and their origin pools.
    pub fn shares_origin_client_with(&self, other: &Proxy) -> bool {
        Arc::ptr_eq(&self.sites, &other.sites)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn a_reload_keeps_what_did_not_change_and_the_keys_that_need_a_restart() {
        let cfg = Config::default();
        let proxy = Proxy::new(Arc::new(cfg.clone()), Arc::new(ManualClock::new()));
        let mut next = cfg.clone();
        next.cache.memory_bytes = 64 << 20;
        next.listen = "127.0.0.1:1".parse().unwrap();
        assert_eq!(needing_restart(&cfg, &next), ["listen"]);
        assert_eq!(changed_sections(&cfg, &next), ["listen", "cache"]);
        let p2 = proxy.reconfigured(next.clone());
        assert_eq!(p2.config().listen, cfg.listen, "listen needs a restart");
        assert_eq!(p2.memory().budget(), 64 << 20);
        assert_eq!(proxy.memory().budget(), 64 << 20, "the tier is one, resized for both");
        assert!(p2.shares_origin_client_with(&proxy));
        next.timeouts.connect = std::time::Duration::from_secs(1);
        let p3 = p2.reconfigured(next);
        assert!(!p3.shares_origin_client_with(&p2));
        assert!(Arc::ptr_eq(&p3.inflight, &proxy.inflight));
    }
}
