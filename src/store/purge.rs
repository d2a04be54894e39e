//! Purges an operator asks for: by URL, by tag (surrogate key), by host, by path prefix, or
//! everything; hard (forget) or soft (treat as stale: the next request revalidates).
//!
//! # How each one takes effect in memory
//!
//! - **URL**: every variant of the URL's key is removed or softened at once.
//! - **Tag**: the tag index ([`super::tags`]) names the URLs carrying the tag; their variants that
//!   carry it are removed or softened at once, a few hundred at a time between yields.
//! - **Host, prefix, everything**: generation numbers. A purge is recorded with the next purge
//!   sequence number; every stored entry carries the sequence number it is known to be unaffected
//!   through ([`Stamp`]). A lookup whose entry is older than the last such purge checks the
//!   records once (the entry's host, its path's prefixes, everything) and stamps it: no list is
//!   scanned on a hit, and when no such purge has happened the check is two loads and a compare.
//!
//! A fill that started before a purge and stores after it is caught too: its entry is stamped
//! with the sequence number read when the fill started, so lookups check it against every
//! generation purge since, and after storing, the URL and tag purges recorded since are checked.
//!
//! # The shared tier
//!
//! Objects read from Redis are checked against the records by time: a record applies to an
//! object whose origin request was sent at or before the purge. So records keep their time (the
//! purging node's clock) as well as their sequence number; records loaded from Redis at start-up
//! (purges made before this node ran) have a time only, and affect only what is read from Redis.
//!
//! # Bounds
//!
//! Host, prefix and tag records are kept for `retain` (the shared tier's longest TTL), URL
//! records for [`FILL_WINDOW`], and at most [`MAX_RECORDS`] in all. A record dropped is folded
//! into a soft purge of everything as of its time: whatever it could still apply to (an entry
//! not looked up since, an object read from Redis stored before it) is revalidated rather than
//! served, never served as fresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::entry::Entry;
use super::key::{BuildKeyHasher, CacheKey};
use super::memory::MemoryTier;
use super::tags::{self, TagId};
use crate::clock::{Clock, Millis};

/// A purge sequence number; 0 means none. Compared with wrapping arithmetic.
pub type Seq = u32;

/// Is `a` later than `b`?
fn after(a: Seq, b: Seq) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// How long URL records are kept: longer than any fill that started before the purge can take
/// to store.
pub const FILL_WINDOW: Duration = Duration::from_secs(600);

/// Most host, prefix, tag and URL records kept; past it the oldest half is folded.
pub const MAX_RECORDS: usize = 100_000;

/// The purge sequence number an entry is known to be unaffected through.
#[derive(Default)]
pub struct Stamp(AtomicU32);

impl Stamp {
    /// Checked through `seq`.
    pub fn new(seq: Seq) -> Self {
        Stamp(AtomicU32::new(seq))
    }

    /// The sequence number.
    pub fn get(&self) -> Seq {
        self.0.load(Ordering::Relaxed)
    }

    /// Checked through `seq` now.
    pub fn set(&self, seq: Seq) {
        self.0.store(seq, Ordering::Relaxed);
    }
}

impl Clone for Stamp {
    fn clone(&self) -> Self {
        Stamp::new(self.get())
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// What a purge applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every variant of one URL.
    Url(CacheKey),
    /// Every object carrying this tag.
    Tag(String),
    /// Every object of this (normalized) host.
    Host(String),
    /// Every object of `host` whose path is `path` or lies under it (`path` has no trailing `/`
    /// and is not empty: the root is [`Scope::Host`]).
    Prefix {
        /// Normalized host.
        host: String,
        /// Path prefix, on segment boundaries.
        path: String,
    },
    /// Everything.
    All,
}

impl Scope {
    /// The scope written as `op` and `arg` in the shared tier's purge records (`url` with the
    /// key in hex, `tag`, `host`, `prefix` with the host then the path, `all`); `None` for
    /// anything else.
    pub fn from_text(op: &str, arg: &str) -> Option<Scope> {
        Some(match op {
            "url" => Scope::Url(CacheKey::from_hex(arg)?),
            "tag" if !arg.is_empty() => Scope::Tag(arg.to_string()),
            "host" if !arg.is_empty() => Scope::Host(arg.to_string()),
            "prefix" => {
                let slash = arg.find('/')?;
                Scope::Prefix { host: arg[..slash].to_string(), path: arg[slash..].to_string() }
            }
            "all" => Scope::All,
            _ => return None,
        })
    }

    /// Checked at lookup by generation number.
    fn is_generation(&self) -> bool {
        matches!(self, Scope::Host(_) | Scope::Prefix { .. } | Scope::All)
    }
}

/// One purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    /// What it applies to.
    pub scope: Scope,
    /// Mark stale instead of removing.
    pub soft: bool,
    /// When it was made, on the clock of the node that made it.
    pub at: Millis,
}

/// What the purges recorded say of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Unaffected.
    Keep,
    /// Purged: not to be served.
    Hard,
    /// Soft-purged: stale from this time on.
    Soft(Millis),
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The local sequence number; 0 for a purge known by its time only.
    seq: Seq,
    at: Millis,
}

#[derive(Debug, Clone, Copy, Default)]
struct Rec {
    hard: Option<Mark>,
    soft: Option<Mark>,
}

impl Rec {
    fn set(&mut self, soft: bool, m: Mark) {
        let slot = if soft { &mut self.soft } else { &mut self.hard };
        *slot = Some(match *slot {
            Some(old) => Mark { seq: if m.seq != 0 { m.seq } else { old.seq }, at: old.at.max(m.at) },
            None => m,
        });
    }

    fn latest(&self) -> Millis {
        self.hard.map_or(0, |m| m.at).max(self.soft.map_or(0, |m| m.at))
    }
}

/// Combines the records that match an entry: hard wins; else the latest soft purge.
fn judge<'a>(recs: impl IntoIterator<Item = &'a Rec>, hits: impl Fn(&Mark) -> bool) -> Verdict {
    let mut soft: Option<Millis> = None;
    for r in recs {
        if r.hard.as_ref().is_some_and(&hits) {
            return Verdict::Hard;
        }
        if let Some(m) = r.soft.filter(&hits) {
            soft = Some(soft.map_or(m.at, |s| s.max(m.at)));
        }
    }
    soft.map_or(Verdict::Keep, Verdict::Soft)
}

/// The prefixes a path lies under, on segment boundaries (`/a/b/c` → `/a`, `/a/b`, `/a/b/c`),
/// its query left out.
fn path_prefixes(path: &str) -> impl Iterator<Item = &str> {
    let p = path.split_once('?').map_or(path, |(p, _)| p);
    p.match_indices('/')
        .map(move |(i, _)| &p[..i])
        .chain(std::iter::once(p.trim_end_matches('/')))
        .filter(|s| !s.is_empty())
}

struct Records {
    all: Rec,
    hosts: HashMap<String, Rec>,
    /// Host → path prefix → record.
    prefixes: HashMap<String, HashMap<String, Rec>>,
    tags: HashMap<TagId, Rec>,
    urls: HashMap<CacheKey, Rec, BuildKeyHasher>,
    /// Records in `hosts`, `prefixes`, `tags` and `urls`.
    count: usize,
    /// When the next record is past its keep time (`Millis::MAX`: none).
    due: Millis,
}

impl Default for Records {
    fn default() -> Self {
        Records {
            all: Rec::default(),
            hosts: HashMap::new(),
            prefixes: HashMap::new(),
            tags: HashMap::new(),
            urls: HashMap::default(),
            count: 0,
            due: Millis::MAX,
        }
    }
}

impl Records {
    /// The generation records that match `host` and `path`.
    fn generation<'a>(&'a self, host: &str, path: &str, out: &mut Vec<&'a Rec>) {
        out.push(&self.all);
        if let Some(r) = self.hosts.get(host) {
            out.push(r);
        }
        if let Some(by_path) = self.prefixes.get(host) {
            out.extend(path_prefixes(path).filter_map(|p| by_path.get(p)));
        }
    }

    fn tagged<'a>(&'a self, tags: &[TagId], out: &mut Vec<&'a Rec>) {
        if !self.tags.is_empty() {
            out.extend(tags.iter().filter_map(|t| self.tags.get(t)));
        }
    }

    fn slot(&mut self, scope: &Scope) -> &mut Rec {
        match scope {
            Scope::All => &mut self.all,
            Scope::Url(k) => counted(&mut self.count, self.urls.entry(*k)),
            Scope::Tag(t) => counted(&mut self.count, self.tags.entry(tags::id(t.as_bytes()))),
            Scope::Host(h) => counted(&mut self.count, self.hosts.entry(h.clone())),
            Scope::Prefix { host, path } => {
                counted(&mut self.count, self.prefixes.entry(host.clone()).or_default().entry(path.clone()))
            }
        }
    }

    /// Drops the records older than their keep time (and, past [`MAX_RECORDS`], the oldest
    /// half), folding them into a soft purge of everything (see the module's Bounds).
    fn compact(&mut self, now: Millis, retain: Duration) {
        let keep_from = now.saturating_sub(retain.as_millis() as u64);
        let urls_from = now.saturating_sub(FILL_WINDOW.as_millis() as u64);
        let mut limit = keep_from;
        loop {
            let mut fold = Rec::default();
            let mut folded = |r: &Rec, generation: bool| {
                for m in [r.hard, r.soft].into_iter().flatten() {
                    // A tag record was applied in memory through the index: only what is read from
                    // Redis still needs it, by time.
                    fold.set(true, Mark { seq: if generation { m.seq } else { 0 }, at: m.at });
                }
            };
            self.hosts.retain(|_, r| r.latest() >= limit || (folded(r, true), false).1);
            for by_path in self.prefixes.values_mut() {
                by_path.retain(|_, r| r.latest() >= limit || (folded(r, true), false).1);
            }
            self.prefixes.retain(|_, by_path| !by_path.is_empty());
            self.tags.retain(|_, r| r.latest() >= limit || (folded(r, false), false).1);
            self.urls.retain(|_, r| r.latest() >= urls_from.max(limit));
            self.count = self.hosts.len()
                + self.tags.len()
                + self.urls.len()
                + self.prefixes.values().map(HashMap::len).sum::<usize>();
            if let Some(m) = fold.soft {
                // The sequence number is only ever raised: a time-only fold keeps the old one.
                self.all.set(true, m);
            }
            if self.count <= MAX_RECORDS {
                break;
            }
            // Over the cap: move the limit up to the median record time and fold again.
            let mut times: Vec<Millis> = self
                .hosts
                .values()
                .chain(self.tags.values())
                .chain(self.urls.values())
                .chain(self.prefixes.values().flat_map(HashMap::values))
                .map(Rec::latest)
                .collect();
            let mid = times.len() / 2;
            limit = *times.select_nth_unstable(mid).1 + 1;
        }
        let retain_ms = retain.as_millis() as u64;
        let window = FILL_WINDOW.as_millis() as u64;
        let others =
            self.hosts.values().chain(self.tags.values()).chain(self.prefixes.values().flat_map(HashMap::values));
        let due = others
            .map(|r| r.latest().saturating_add(retain_ms))
            .chain(self.urls.values().map(|r| r.latest().saturating_add(window)))
            .min()
            .unwrap_or(Millis::MAX);
        // At most ten compactions per keep time: records may outlive it by a tenth.
        self.due = due.max(now.saturating_add(retain_ms.min(window) / 10));
    }

    /// Notes that a record made at `at` is due for dropping after `keep`.
    fn due_at(&mut self, scope: &Scope, at: Millis, retain: Duration) {
        let keep = if matches!(scope, Scope::Url(_)) { FILL_WINDOW } else { retain };
        if !matches!(scope, Scope::All) {
            self.due = self.due.min(at.saturating_add(keep.as_millis() as u64));
        }
    }
}

/// Counts a record created by `e`.
fn counted<'a, K>(count: &mut usize, e: std::collections::hash_map::Entry<'a, K, Rec>) -> &'a mut Rec {
    if matches!(e, std::collections::hash_map::Entry::Vacant(_)) {
        *count += 1;
    }
    e.or_default()
}

/// The purges recorded on this node, and the sequence numbers.
pub struct Purges {
    /// The last purge's sequence number (any scope).
    seq: AtomicU32,
    /// The last generation purge's (host, prefix, everything): what a lookup compares with.
    generation: AtomicU32,
    records: RwLock<Records>,
    retain: Duration,
}

impl Purges {
    /// Host, prefix and tag records are kept for `retain`.
    pub fn new(retain: Duration) -> Self {
        Purges { seq: AtomicU32::new(0), generation: AtomicU32::new(0), records: RwLock::default(), retain }
    }

    /// The last purge's sequence number: read when a fill starts, and before a check.
    pub fn seq(&self) -> Seq {
        self.seq.load(Ordering::Acquire)
    }

    /// Has a generation purge been recorded since `stamp`? The check every hit makes: two loads.
    #[inline]
    pub fn unchecked(&self, stamp: &Stamp) -> bool {
        let g = self.generation.load(Ordering::Acquire);
        g != 0 && after(g, stamp.get())
    }

    /// Records `p` (made at `p.at`, recorded at `now`) under the next sequence number.
    pub fn record(&self, p: &Purge, now: Millis) -> Seq {
        let mut r = self.records.write().unwrap_or_else(|e| e.into_inner());
        let mut seq = self.seq.load(Ordering::Relaxed).wrapping_add(1);
        if seq == 0 {
            seq = 1;
        }
        r.slot(&p.scope).set(p.soft, Mark { seq, at: p.at });
        self.seq.store(seq, Ordering::Release);
        if p.scope.is_generation() {
            self.generation.store(seq, Ordering::Release);
        }
        r.due_at(&p.scope, p.at.min(now), self.retain);
        if r.count > MAX_RECORDS || now >= r.due {
            r.compact(now, self.retain);
        }
        seq
    }

    /// Notes a purge known by its time only (read from the shared tier's record of purges): it
    /// applies to objects read from Redis, not to what is in memory.
    pub fn note(&self, scope: &Scope, soft: bool, at: Millis) {
        if matches!(scope, Scope::Url(_)) {
            return;
        }
        let mut r = self.records.write().unwrap_or_else(|e| e.into_inner());
        r.slot(scope).set(soft, Mark { seq: 0, at });
        r.due_at(scope, at, self.retain);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A lookup's check of an entry at `host` + `path` stamped `since`: the generation purges
    /// recorded after it.
    pub fn at_lookup(&self, host: &str, path: &str, since: Seq) -> Verdict {
        let r = self.read();
        let mut recs = Vec::with_capacity(4);
        r.generation(host, path, &mut recs);
        judge(recs, |m| m.seq != 0 && after(m.seq, since))
    }

    /// A fill's check after storing: the URL and tag purges recorded after it started (`since`).
    pub fn after_store(&self, key: &CacheKey, tags: &[TagId], since: Seq) -> Verdict {
        let r = self.read();
        let mut recs = Vec::with_capacity(2);
        recs.extend(r.urls.get(key));
        r.tagged(tags, &mut recs);
        judge(recs, |m| m.seq != 0 && after(m.seq, since))
    }

    /// The check of an object read from the shared tier, whose origin request was sent at
    /// `request_time`: every purge of it made at or after that time (URL purges excepted: they
    /// are applied to Redis itself).
    pub fn by_time(&self, host: &str, path: &str, tags: &[TagId], request_time: Millis) -> Verdict {
        let r = self.read();
        let mut recs = Vec::with_capacity(4);
        r.generation(host, path, &mut recs);
        r.tagged(tags, &mut recs);
        judge(recs, |m| m.at >= request_time)
    }

    /// Number of records kept (host, prefix, tag and URL).
    pub fn records(&self) -> usize {
        self.read().count
    }
}

/// Applies purges to this node's memory tier and records them.
#[derive(Clone)]
pub struct Purger {
    memory: MemoryTier,
    purges: Arc<Purges>,
    clock: Arc<dyn Clock>,
}

/// URLs purged between two yields of a tag purge: about a quarter of a millisecond of work, so a
/// worker that also serves hits is not held for long (with 256, a 100,000-object purge raised the
/// hits' p50 from 0.47 to 1.29 ms on a node with one worker).
const YIELD_EVERY: usize = 64;

impl Purger {
    /// A purger over `memory`, recording in `purges`.
    pub fn new(memory: MemoryTier, purges: Arc<Purges>, clock: Arc<dyn Clock>) -> Self {
        Purger { memory, purges, clock }
    }

    /// The records.
    pub fn purges(&self) -> &Arc<Purges> {
        &self.purges
    }

    /// The memory tier.
    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    /// Records `p` and applies it here; returns the number of variants removed or softened at
    /// once (generation purges apply at lookup: for everything, the URLs held; for a host or a
    /// prefix, 0).
    pub async fn apply(&self, p: &Purge) -> usize {
        let now = self.clock.now_millis();
        // Recorded before the tier is touched: a fill that stores meanwhile either is seen here
        // or sees the record after storing.
        let seq = self.purges.record(p, now);
        let at = p.at.min(now);
        let soften = |e: &Entry| e.softened(at, seq);
        match &p.scope {
            Scope::Url(k) if p.soft => self.memory.soften_where(k, |e| Some(soften(e))),
            Scope::Url(k) => self.memory.remove_where(k, |_| true),
            Scope::Tag(t) => {
                let id = tags::id(t.as_bytes());
                let carries = |e: &Entry| tags::of(&e.headers).contains(&id);
                let mut n = 0;
                for (i, k) in self.memory.tag_index().keys(id).iter().enumerate() {
                    if i % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                    n += if p.soft {
                        self.memory.soften_where(k, |e| carries(e).then(|| soften(e)))
                    } else {
                        self.memory.remove_where(k, carries)
                    };
                }
                n
            }
            Scope::All => self.memory.entry_count() as usize,
            Scope::Host(_) | Scope::Prefix { .. } => 0,
        }
    }

    /// This node cannot know which purges it missed (the shared tier's stream was trimmed past
    /// its position, or Redis restarted empty): everything it holds is marked stale, so each
    /// object is revalidated (a 304 keeps it) rather than served or dropped.
    pub fn lost_track(&self) {
        let now = self.clock.now_millis();
        self.purges.record(&Purge { scope: Scope::All, soft: true, at: now }, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge(scope: Scope, soft: bool, at: Millis) -> Purge {
        Purge { scope, soft, at }
    }

    #[test]
    fn prefixes_are_path_segments_without_the_query() {
        let all: Vec<&str> = path_prefixes("/blog/2024/post?x=/y").collect();
        assert_eq!(all, ["/blog", "/blog/2024", "/blog/2024/post"]);
        assert_eq!(path_prefixes("/blog/").collect::<Vec<_>>(), ["/blog", "/blog"]);
        assert_eq!(path_prefixes("/").count(), 0);
    }

    #[test]
    fn generation_purges_apply_to_entries_stamped_before_them_only() {
        let p = Purges::new(Duration::from_secs(3600));
        let old = Stamp::new(p.seq());
        assert!(!p.unchecked(&old), "no purge yet");
        let prefix = Scope::Prefix { host: "h".into(), path: "/blog".into() };
        let s = p.record(&purge(prefix, false, 1000), 1000);
        assert!(p.unchecked(&old));
        assert!(!p.unchecked(&Stamp::new(s)));
        assert_eq!(p.at_lookup("h", "/blog/a", old.get()), Verdict::Hard);
        assert_eq!(p.at_lookup("h", "/blog", old.get()), Verdict::Hard);
        assert_eq!(p.at_lookup("h", "/blogger", old.get()), Verdict::Keep);
        assert_eq!(p.at_lookup("other", "/blog/a", old.get()), Verdict::Keep);
        assert_eq!(p.at_lookup("h", "/blog/a", s), Verdict::Keep, "stored after the purge");
        let s2 = p.record(&purge(Scope::Host("g".into()), true, 2000), 2000);
        assert_eq!(p.at_lookup("g", "/x", s), Verdict::Soft(2000));
        assert_eq!(p.at_lookup("g", "/x", s2), Verdict::Keep);
        // URL and tag purges are not generations: a hit's check is not triggered by them.
        let stamped = Stamp::new(s2);
        p.record(&purge(Scope::Tag("t".into()), false, 3000), 3000);
        assert!(!p.unchecked(&stamped));
        assert_eq!(p.after_store(&CacheKey::new("http", "h", "/"), &[tags::id(b"t")], s2), Verdict::Hard);
    }

    #[test]
    fn objects_from_the_shared_tier_are_judged_by_time() {
        let p = Purges::new(Duration::from_secs(3600));
        p.note(&Scope::All, false, 5000);
        assert_eq!(p.by_time("h", "/a", &[], 5000), Verdict::Hard, "requested at the purge's time");
        assert_eq!(p.by_time("h", "/a", &[], 5001), Verdict::Keep);
        assert!(!p.unchecked(&Stamp::new(0)), "a time-only record does not touch memory");
        p.record(&purge(Scope::Tag("t".into()), true, 9000), 9000);
        assert_eq!(p.by_time("h", "/a", &[tags::id(b"t")], 6000), Verdict::Soft(9000));
    }

    #[test]
    fn old_records_are_dropped_and_folded_into_a_soft_purge_of_everything() {
        let hour = 3_600_000;
        let p = Purges::new(Duration::from_millis(hour));
        let s = p.record(&purge(Scope::Host("h".into()), false, 1000), 1000);
        assert_eq!(p.records(), 1);
        p.record(&purge(Scope::Tag("t".into()), false, 2 * hour), 2 * hour);
        assert_eq!(p.records(), 1, "the host record was kept past its time");
        // What it could still apply to is revalidated, never served as fresh.
        assert_eq!(p.at_lookup("h", "/a", s - 1), Verdict::Soft(1000));
        assert_eq!(p.by_time("h", "/a", &[], 500), Verdict::Soft(1000));
        assert_eq!(p.by_time("h", "/a", &[], 1001), Verdict::Keep);
    }

    #[test]
    fn past_the_cap_the_oldest_half_is_folded() {
        let p = Purges::new(Duration::from_secs(86_400));
        for i in 0..(MAX_RECORDS as u64 + 1) {
            p.record(&purge(Scope::Tag(format!("t{i}")), false, 1000 + i), 1000 + i);
        }
        assert!(p.records() <= MAX_RECORDS / 2, "{} records", p.records());
        let newest = tags::id(format!("t{MAX_RECORDS}").as_bytes());
        assert_eq!(p.by_time("h", "/", &[newest], 0), Verdict::Hard);
    }
}
