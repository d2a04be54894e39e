//! Memcached as the shared tier's store: a list of servers, each URL on one of them by
//! rendezvous hashing (adding a server moves only the URLs it wins; removing one moves only its
//! own).
//!
//! What Redis keeps in a URL's hash is one [bundle](bundle) value here, changed by
//! read-modify-write under memcached's compare-and-swap, so two nodes writing variants of one
//! URL at once do not lose either. Purges are appended to the record `PREFIX:v1:purges` the same
//! way; every node reads it every `memcached.memory_ttl` (see [`records_reader`]).

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;

use super::publish::{Outgoing, MARK};
use super::writer::Write;
use super::Inner;
use crate::clock::Millis;
use crate::store::purge::{Purger, Scope, FILL_WINDOW};

pub mod bundle;
pub mod meta;

use bundle::{Fields, Record};
use meta::{MetaError, Mode, Server, Stored};

/// Read-modify-write attempts before a contended write is given up (and counted as dropped).
const CAS_TRIES: usize = 4;

/// Purges kept in the record at most: it stays well under memcached's default 1 MiB item size.
/// A node that falls further behind than this marks everything it holds stale.
pub(super) const MAX_RECORDS: usize = 4096;

/// The servers.
pub(super) struct Memcached {
    servers: Vec<Server>,
}

impl Memcached {
    pub(super) fn new(servers: &[String]) -> Self {
        Memcached { servers: servers.iter().map(|s| Server::new(s.clone())).collect() }
    }

    /// The server that holds `key`: the highest score of (server, key) wins.
    fn server_for(&self, key: &str) -> &Server {
        let mut best = (0u64, &self.servers[0]);
        for s in &self.servers {
            let score = score(&s.addr, key);
            if score > best.0 {
                best = (score, s);
            }
        }
        best.1
    }

    /// The raw value of `key`, refreshing nothing.
    pub(super) async fn get(&self, key: &str) -> Result<Option<Bytes>, MetaError> {
        Ok(self.server_for(key).get(key, None).await?.map(|i| i.value))
    }

    /// Does every server answer?
    pub(super) async fn ping(&self) -> bool {
        for s in &self.servers {
            if s.noop().await.is_err() {
                return false;
            }
        }
        true
    }

    /// Applies one queued write. `Ok(false)`: given up after [`CAS_TRIES`] conflicting writes.
    pub(super) async fn write(&self, w: &Write) -> Result<bool, MetaError> {
        match w {
            Write::Put { key, field, value, ttl_secs } => {
                let ttl = *ttl_secs;
                // The bundle's TTL is only ever extended, like the Redis hash's.
                self.update(key, |fields| set_field(fields, field, value.clone()), |left| left.unwrap_or(0).max(ttl))
                    .await
            }
            Write::RemoveVariant { key, field } => {
                self.update(key, |fields| fields.retain(|(f, _)| f != field), |left| left.unwrap_or(1)).await
            }
            Write::Invalidate { key, .. } => self.server_for(key).delete(key, None).await,
        }
    }

    /// Changes the bundle of `key` with `change`, stored for `ttl(remaining TTL)` seconds, under
    /// compare-and-swap. An empty bundle is deleted.
    async fn update(
        &self,
        key: &str,
        change: impl Fn(&mut Fields),
        ttl: impl Fn(Option<u64>) -> u64,
    ) -> Result<bool, MetaError> {
        let server = self.server_for(key);
        for _ in 0..CAS_TRIES {
            let item = server.get(key, None).await?;
            // A value that is not a bundle of this version is replaced.
            let (mut fields, mode, left) = match item {
                None => (Vec::new(), Mode::Add, None),
                Some(i) => (bundle::decode(&i.value).unwrap_or_default(), Mode::Cas(i.cas), i.ttl),
            };
            change(&mut fields);
            let stored = match (fields.is_empty(), mode) {
                (true, Mode::Cas(cas)) => match server.delete(key, Some(cas)).await? {
                    true => Stored::Yes,
                    false => Stored::Conflict,
                },
                (true, _) => Stored::Yes,
                (false, mode) => server.set(key, &bundle::encode(&fields), ttl(left).max(1), mode).await?,
            };
            match stored {
                Stored::Yes => return Ok(true),
                // Too large for memcached (all variants together): dropped, like any write.
                Stored::Refused => return Ok(false),
                Stored::Conflict => {}
            }
        }
        Ok(false)
    }

    /// Publishes purges made here: a URL's is marked in its bundle (a hard one replaces the
    /// bundle by the mark), then every purge is appended to the record every node reads.
    pub(super) async fn publish(&self, inner: &Inner, batch: &[Outgoing]) -> Result<bool, MetaError> {
        for o in batch {
            let p = &o.purge;
            let Scope::Url(k) = &p.scope else { continue };
            let key = inner.key_name(k);
            let mark = (format!("{MARK}{}", if p.soft { "soft" } else { "hard" }), Bytes::from(p.at.to_string()));
            if p.soft {
                // A bundle made by the mark alone lives the fill window; otherwise as long as it did.
                let ok = self
                    .update(
                        &key,
                        |f| set_field(f, &mark.0, mark.1.clone()),
                        |left| left.unwrap_or(FILL_WINDOW.as_secs()),
                    )
                    .await?;
                if !ok {
                    return Ok(false);
                }
            } else {
                let value = bundle::encode(&vec![mark]);
                self.server_for(&key).set(&key, &value, FILL_WINDOW.as_secs(), Mode::Set).await?;
            }
        }
        let name = inner.records_name();
        let ttl_cap = inner.limits.ttl_cap.as_secs().max(1);
        let oldest = batch.iter().map(|o| o.purge.at).max().unwrap_or(0).saturating_sub(ttl_cap * 1000);
        let node = inner.node.clone();
        let server = self.server_for(&name);
        for _ in 0..CAS_TRIES {
            let item = server.get(&name, None).await?;
            let (mut records, mode) = match item {
                None => (Vec::new(), Mode::Add),
                Some(i) => (bundle::decode_records(&i.value).unwrap_or_default(), Mode::Cas(i.cas)),
            };
            records.extend(batch.iter().map(|o| Record {
                node: node.clone(),
                id: o.id.clone(),
                purge: o.purge.clone(),
            }));
            // No object in memcached is older than ttl_cap: older purges apply to nothing.
            records.retain(|r| r.purge.at >= oldest);
            let excess = records.len().saturating_sub(MAX_RECORDS);
            records.drain(..excess);
            match server.set(&name, &bundle::encode_records(&records), ttl_cap, mode).await? {
                Stored::Yes => return Ok(true),
                Stored::Refused => return Ok(false),
                Stored::Conflict => {}
            }
        }
        Ok(false)
    }
}

fn set_field(fields: &mut Fields, field: &str, value: Bytes) {
    match fields.iter_mut().find(|(f, _)| f == field) {
        Some(slot) => slot.1 = value,
        None => fields.push((field.to_string(), value)),
    }
}

/// The rendezvous score of `key` on `server`: FNV-1a over both, finished by a 64-bit mixer, so
/// every node computes the same placement.
fn score(server: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in server.bytes().chain([0]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Reads the record of purges at start and then every `memcached.memory_ttl` on the proxy's
/// clock, and applies through `purger` the purges other nodes made since the last read. The
/// first read only notes them (the memory tier is empty; what is read from memcached is checked
/// against them). When the purge last applied is no longer in the record (trimmed past it, or
/// memcached lost the record) this node cannot know what it missed, and marks everything it
/// holds stale.
pub(super) async fn records_reader(inner: Weak<Inner>, purger: Purger) {
    let mut last: Option<Record> = None;
    let mut first = true;
    loop {
        let Some(me) = inner.upgrade() else { return };
        let interval = me.limits.memory_ttl.unwrap_or(Duration::from_secs(1));
        let clock = me.clock.clone();
        if me.available() {
            let name = me.records_name();
            let read = match &me.backend {
                super::Backend::Memcached(m) => me.guard(m.get(&name)).await,
                super::Backend::Redis(_) => return,
            };
            if let Some(value) = read {
                let records = value.as_deref().and_then(bundle::decode_records).unwrap_or_default();
                apply_records(&me, &purger, records, &mut last, first, clock.now_millis()).await;
                first = false;
            }
        }
        drop(me);
        let nap = clock.sleep(interval);
        nap.await;
    }
}

async fn apply_records(
    me: &Inner,
    purger: &Purger,
    records: Vec<Record>,
    last: &mut Option<Record>,
    first: bool,
    now: Millis,
) {
    if first {
        for r in &records {
            purger.purges().note(&r.purge.scope, r.purge.soft, r.purge.at);
        }
        *last = records.last().cloned();
        return;
    }
    let start = match last.as_ref() {
        None => 0,
        Some(l) => match records.iter().position(|r| r.same(l)) {
            Some(i) => i + 1,
            // Gone: expired with its objects (older than ttl_cap), or lost.
            None if l.purge.at + me.limits.ttl_cap.as_millis() as u64 <= now => 0,
            None => {
                tracing::warn!("missed purges of other nodes; everything in memory marked stale");
                purger.lost_track();
                me.stats.lost_track.fetch_add(1, Ordering::Relaxed);
                records.len()
            }
        },
    };
    for r in &records[start.min(records.len())..] {
        if r.node != me.node {
            purger.apply(&r.purge).await;
            me.stats.remote_purges.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some(r) = records.last() {
        *last = Some(r.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_server_moves_only_the_keys_it_wins() {
        let three = Memcached::new(&["a:1".into(), "b:1".into(), "c:1".into()]);
        let four = Memcached::new(&["a:1".into(), "b:1".into(), "c:1".into(), "d:1".into()]);
        let keys: Vec<String> = (0..4000).map(|i| format!("ec:v1:{i:064x}")).collect();
        let mut moved = 0;
        for k in &keys {
            let (before, after) = (&three.server_for(k).addr, &four.server_for(k).addr);
            if before != after {
                assert_eq!(after, "d:1", "{k} moved between old servers");
                moved += 1;
            }
        }
        // About a quarter of the keys move, all to the new server.
        assert!((800..1200).contains(&moved), "{moved} of 4000 moved");
    }
}
