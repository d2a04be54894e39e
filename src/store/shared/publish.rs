//! Purges made on this node, applied to Redis and announced on the invalidation stream by one
//! task that keeps each until Redis takes it: a purge made while Redis is away is published when
//! it returns, in order.
//!
//! # What is written (format version 1)
//!
//! - **A URL** (`key` its digest): its hash `PREFIX:v1:{DIGEST}` gets the field `purge:v1:hard`
//!   or `purge:v1:soft`, whose value is the purge's time (decimal milliseconds); a hard purge
//!   deletes the hash's variants first. A reader applies the field to the variants whose origin
//!   request was sent at or before that time, so a variant stored by a fill that started before
//!   the purge is caught too. A hash created by the field alone lives [`FILL_WINDOW`]; otherwise
//!   the field lives as long as the hash.
//! - **A tag, a host, a prefix, everything**: a member of the sorted set `PREFIX:v1:purges`,
//!   scored by the purge's time: `1|h|tag|TAG`, `1|s|host|HOST`, `1|h|prefix|HOST/PATH`,
//!   `1|s|all|` (`1` the format, `h`/`s` hard or soft). Kept for `redis.ttl_cap` (no object in
//!   Redis is older) and to at most [`MAX_RECORDS`] members; every node loads it when it connects
//!   and checks what it reads from Redis against it.
//! - **The stream** `PREFIX:v1:invalidations` then gets one message:
//!   `v 1 op url|tag|host|prefix|all soft 0|1 at MS id ID node NODE` and, by op, `key DIGEST`,
//!   `tag TAG`, `host HOST`, `host HOST path PATH`. Nodes that read an older format only know
//!   `key`: they apply a URL purge (as an invalidation) and skip the others.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::Pipeline;
use tokio::sync::{mpsc, Notify};

use super::stream::{STREAM_MAXLEN, STREAM_TTL_SECS};
use super::{Backend, Inner};
use crate::clock::Millis;
use crate::store::purge::{Purge, Scope, FILL_WINDOW, MAX_RECORDS};

/// The stream message format written here.
pub(super) const MESSAGE_VERSION: &str = "1";

/// The prefix of a purge field in a URL's hash.
pub(super) const MARK: &str = "purge:v1:";

/// Purges waiting for Redis at most; past it they are folded into one soft purge of everything.
const MAX_PENDING: usize = 100_000;

/// Purges published in one pipeline.
const BATCH: usize = 64;

/// Times a batch Redis refuses while answering (a command error) is tried before it is given up.
const MAX_REFUSALS: u32 = 20;

/// A purge to publish and its id.
#[derive(Debug, Clone)]
pub(super) struct Outgoing {
    pub(super) purge: Purge,
    pub(super) id: String,
}

/// The purges waiting to be published.
pub(super) struct Outbox {
    queue: Mutex<VecDeque<Outgoing>>,
    /// Purges were folded away: one soft purge of everything goes out after what is queued.
    overflowed: AtomicBool,
    /// A purge was queued.
    queued: mpsc::Sender<()>,
}

impl Outbox {
    /// The outbox, and what the publisher waits on.
    pub(super) fn new() -> (Arc<Outbox>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        (Arc::new(Outbox { queue: Mutex::default(), overflowed: AtomicBool::new(false), queued: tx }), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outgoing>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn push(&self, out: Outgoing) {
        {
            let mut q = self.lock();
            if q.len() >= MAX_PENDING {
                // Every node then revalidates everything it holds: nothing purged is served fresh.
                // The first batch may be in flight: it stays, the rest is folded.
                let at = q.iter().map(|o| o.purge.at).chain([out.purge.at]).max().unwrap_or(out.purge.at);
                q.truncate(BATCH);
                q.push_back(Outgoing { purge: Purge { scope: Scope::All, soft: true, at }, id: out.id });
                self.overflowed.store(true, Ordering::Relaxed);
            } else {
                q.push_back(out);
            }
        }
        let _ = self.queued.try_send(());
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Publishes what the outbox holds, in order, each batch once Redis took it; waits for the tier
/// to be available (`up`) while it is not.
pub(super) async fn publisher(
    inner: Weak<Inner>,
    mut queued: mpsc::Receiver<()>,
    outbox: Arc<Outbox>,
    up: Arc<Notify>,
) {
    let mut refusals = 0u32;
    loop {
        let batch: Vec<Outgoing> = outbox.lock().iter().take(BATCH).cloned().collect();
        if batch.is_empty() {
            if queued.recv().await.is_none() {
                return;
            }
            continue;
        }
        let Some(me) = inner.upgrade() else { return };
        let became_up = up.notified();
        tokio::pin!(became_up);
        became_up.as_mut().enable();
        if !me.available() {
            drop(me);
            became_up.await;
            continue;
        }
        let ok = match &me.backend {
            Backend::Redis(_) => {
                let stream = me.stream_name();
                let mut ok = true;
                for pipe in &pipelines(&me, &batch, &stream) {
                    if me.call::<()>(pipe).await.is_none() {
                        ok = false;
                        break;
                    }
                }
                ok
            }
            // `Some(false)`: memcached answered, and kept changing under the compare-and-swap.
            Backend::Memcached(m) => me.guard(m.publish(&me, &batch)).await == Some(true),
        };
        if ok {
            refusals = 0;
            outbox.lock().drain(..batch.len()).for_each(drop);
            me.stats.published_purges.fetch_add(batch.len() as u64, Ordering::Relaxed);
            if outbox.overflowed.swap(false, Ordering::Relaxed) {
                tracing::warn!(
                    max = MAX_PENDING,
                    "purges queued past the limit were folded into a soft purge of everything"
                );
            }
            continue;
        }
        if me.available() {
            // Redis answers but refused: a few more tries, then the batch is given up (it would
            // hold every later purge back).
            refusals += 1;
            if refusals >= MAX_REFUSALS {
                tracing::error!(purges = batch.len(), "Redis refused these purges {MAX_REFUSALS} times; given up");
                outbox.lock().drain(..batch.len()).for_each(drop);
                me.stats.dropped_purges.fetch_add(batch.len() as u64, Ordering::Relaxed);
                refusals = 0;
                continue;
            }
            drop(me);
            tokio::time::sleep(Duration::from_millis(50) * refusals.min(20)).await;
        }
        // Otherwise the breaker opened or the connection went: the next turn waits for `up`.
    }
}

/// The pipelines that publish `batch`, in the order they must run: standalone, one; on a
/// Cluster, where a pipeline may not cross hash slots, one per key touched, the stream's last.
fn pipelines(inner: &Inner, batch: &[Outgoing], stream: &str) -> Vec<Pipeline> {
    let cluster = inner.redis().is_some_and(|r| r.cfg.cluster);
    let mut out = Vec::new();
    let mut one = redis::pipe();
    let purges = inner.purges_name();
    let ttl_cap = inner.limits.ttl_cap.as_secs().max(1);
    for o in batch {
        let p = &o.purge;
        let kind = if p.soft { "soft" } else { "hard" };
        let mut own = redis::pipe();
        let pipe = if cluster { &mut own } else { &mut one };
        match &p.scope {
            Scope::Url(k) => {
                let key = inner.key_name(k);
                if !p.soft {
                    pipe.cmd("DEL").arg(&key).ignore();
                }
                pipe.cmd("HSET").arg(&key).arg(format!("{MARK}{kind}")).arg(p.at).ignore();
                pipe.cmd("EXPIRE").arg(&key).arg(FILL_WINDOW.as_secs()).arg("NX").ignore();
            }
            scope => {
                let member = member(scope, p.soft);
                pipe.cmd("ZADD").arg(&purges).arg("GT").arg(p.at).arg(member).ignore();
                let oldest = p.at.saturating_sub(ttl_cap * 1000);
                pipe.cmd("ZREMRANGEBYSCORE").arg(&purges).arg("-inf").arg(format!("({oldest}")).ignore();
                pipe.cmd("ZREMRANGEBYRANK").arg(&purges).arg(0).arg(-(MAX_RECORDS as i64) - 1).ignore();
                pipe.cmd("EXPIRE").arg(&purges).arg(ttl_cap).ignore();
            }
        }
        if cluster {
            out.push(own);
            own = redis::pipe();
        }
        let sp = if cluster { &mut own } else { &mut one };
        let xadd = sp.cmd("XADD").arg(stream).arg("MAXLEN").arg("~").arg(STREAM_MAXLEN).arg("*");
        xadd.arg("v").arg(MESSAGE_VERSION).arg("op").arg(op_name(&p.scope)).arg("soft").arg(u8::from(p.soft));
        xadd.arg("at").arg(p.at).arg("id").arg(&o.id).arg("node").arg(&inner.node);
        match &p.scope {
            Scope::Url(k) => xadd.arg("key").arg(k.to_string()),
            Scope::Tag(t) => xadd.arg("tag").arg(t),
            Scope::Host(h) => xadd.arg("host").arg(h),
            Scope::Prefix { host, path } => xadd.arg("host").arg(host).arg("path").arg(path),
            Scope::All => xadd,
        }
        .ignore();
        sp.cmd("EXPIRE").arg(stream).arg(STREAM_TTL_SECS).ignore();
        if cluster {
            out.push(own);
        }
    }
    if !cluster {
        out.push(one);
    }
    out
}

fn op_name(scope: &Scope) -> &'static str {
    match scope {
        Scope::Url(_) => "url",
        Scope::Tag(_) => "tag",
        Scope::Host(_) => "host",
        Scope::Prefix { .. } => "prefix",
        Scope::All => "all",
    }
}

/// The member of `PREFIX:v1:purges` for a purge of `scope` (not a URL).
pub(super) fn member(scope: &Scope, soft: bool) -> String {
    let kind = if soft { 's' } else { 'h' };
    match scope {
        Scope::Tag(t) => format!("1|{kind}|tag|{t}"),
        Scope::Host(h) => format!("1|{kind}|host|{h}"),
        Scope::Prefix { host, path } => format!("1|{kind}|prefix|{host}{path}"),
        Scope::All | Scope::Url(_) => format!("1|{kind}|all|"),
    }
}

/// A member of `PREFIX:v1:purges` read back: the scope and whether it was soft. `None` for
/// another format or anything malformed.
pub(super) fn parse_member(m: &str) -> Option<(Scope, bool)> {
    let mut parts = m.splitn(4, '|');
    if parts.next()? != "1" {
        return None;
    }
    let soft = match parts.next()? {
        "s" => true,
        "h" => false,
        _ => return None,
    };
    let (op, arg) = (parts.next()?, parts.next()?);
    let scope = Scope::from_text(op, arg)?;
    Some((scope, soft))
}

/// A stream message of format 1 read back as a purge. `None` when malformed.
pub(super) fn parse_message(field: impl Fn(&str) -> Option<String>) -> Option<Purge> {
    let soft = match field("soft")?.as_str() {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let at: Millis = field("at")?.parse().ok()?;
    let scope = match field("op")?.as_str() {
        "url" => Scope::Url(crate::store::CacheKey::from_hex(&field("key")?)?),
        "tag" => Scope::Tag(field("tag")?),
        "host" => Scope::Host(field("host")?),
        "prefix" => Scope::Prefix { host: field("host")?, path: field("path")? },
        "all" => Scope::All,
        _ => return None,
    };
    Some(Purge { scope, soft, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_read_back_as_written() {
        for (scope, soft) in [
            (Scope::Tag("a|b".into()), false),
            (Scope::Host("h:81".into()), true),
            (Scope::Prefix { host: "h".into(), path: "/a/b".into() }, false),
            (Scope::All, true),
        ] {
            assert_eq!(parse_member(&member(&scope, soft)), Some((scope, soft)));
        }
        assert_eq!(parse_member("2|h|tag|x"), None, "another format");
        assert_eq!(parse_member("1|h|prefix|nopath"), None);
    }
}
