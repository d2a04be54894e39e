//! The invalidation stream: every node reads other nodes' invalidations from its last position,
//! across disconnects.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::FromRedisValue;

use super::conn::{connect, connect_timeout, timeout, Conn};
use super::publish::{parse_member, parse_message, MESSAGE_VERSION};
use super::Inner;
use crate::store::key::CacheKey;
use crate::store::purge::Purger;

/// Entries kept in the invalidation stream (approximately).
pub(super) const STREAM_MAXLEN: usize = 100_000;
/// How long the invalidation stream lives after its last entry.
pub(super) const STREAM_TTL_SECS: u64 = 86_400;

/// Applies other nodes' invalidations and purges through `purger`, reading the stream from the
/// last position seen, across disconnects.
pub(super) async fn invalidation_reader(inner: std::sync::Weak<Inner>, purger: Purger) {
    let mut pos: Option<Position> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(me) = inner.upgrade() else { return };
        let Some(cfg) = me.redis().map(|r| r.cfg.clone()) else { return };
        let stream = me.stream_name();
        drop(me);
        // A connection of its own: XREAD BLOCK holds it.
        let conn = match tokio::time::timeout(connect_timeout(&cfg), connect(&cfg, None)).await {
            Ok(Ok(c)) => c,
            _ => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        match read_stream(&inner, &conn, &stream, &mut pos, &purger).await {
            Ok(()) => return, // the tier was dropped
            Err(e) => {
                tracing::debug!(error = %e, "invalidation stream read failed; reconnecting");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Stream ids compare as (milliseconds, sequence).
fn parse_id(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// A reader's place in the invalidation stream: the last entry id read, and the stream's
/// `entries-added` counter at that entry.
#[derive(Debug, Clone)]
struct Position {
    id: String,
    added: u64,
}

/// `XINFO STREAM`: `None` when the stream does not exist.
async fn stream_info(
    conn: &Conn,
    stream: &str,
    bound: Duration,
) -> redis::RedisResult<Option<HashMap<String, redis::Value>>> {
    // XINFO on a missing key is an error Redis tells apart only by its text: ask the key's type
    // first.
    let mut kind = redis::cmd("TYPE");
    kind.arg(stream);
    if timeout(bound, conn.cmd::<String>(&kind)).await? != "stream" {
        return Ok(None);
    }
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("STREAM").arg(stream);
    timeout(bound, conn.cmd::<HashMap<String, redis::Value>>(&cmd)).await.map(Some)
}

fn info_field<T: FromRedisValue>(info: &HashMap<String, redis::Value>, name: &str) -> Option<T> {
    info.get(name).and_then(|v| redis::from_redis_value::<T>(v.clone()).ok())
}

/// Loads the record of purges other than by URL (`PREFIX:v1:purges`): what is read from Redis
/// is checked against it, including purges made before this node started.
async fn load_purges(conn: &Conn, name: &str, bound: Duration, purger: &Purger) -> redis::RedisResult<()> {
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(name).arg(0).arg(-1).arg("WITHSCORES");
    let members: Vec<(String, f64)> = timeout(bound, conn.cmd(&cmd)).await?;
    for (m, at) in members {
        if let Some((scope, soft)) = parse_member(&m) {
            purger.purges().note(&scope, soft, at as u64);
        }
    }
    Ok(())
}

async fn read_stream(
    inner: &std::sync::Weak<Inner>,
    conn: &Conn,
    stream: &str,
    pos: &mut Option<Position>,
    purger: &Purger,
) -> redis::RedisResult<()> {
    use redis::streams::StreamReadReply;
    let (budget, purges) = match inner.upgrade() {
        Some(me) => (me.limits.budget, me.purges_name()),
        None => return Ok(()),
    };
    let bounded = |d: Duration| d + budget + Duration::from_secs(1);
    if let Err(e) = load_purges(conn, &purges, bounded(Duration::ZERO), purger).await {
        // Not a reason to stop reading the stream: only objects read from Redis are checked
        // against this record.
        tracing::warn!(error = %e, key = %purges, "cannot read the record of purges");
    }
    let info = stream_info(conn, stream, bounded(Duration::ZERO)).await?;
    match (pos.as_ref(), info) {
        // First connection: start after the newest entry (the memory tier is empty).
        (None, None) => *pos = Some(Position { id: "0-0".into(), added: 0 }),
        (None, Some(info)) => {
            let id = info_field::<String>(&info, "last-generated-id").unwrap_or_else(|| "0-0".into());
            *pos = Some(Position { id, added: info_field(&info, "entries-added").unwrap_or(0) });
        }
        // Reconnected. If entries after our position were trimmed before we could read them, or
        // the stream we had read from is gone or was recreated (Redis restarted empty), we cannot
        // know what we missed: nothing in memory can be trusted as fresh, so all of it is marked
        // stale (revalidated, and kept when the origin answers 304), not dropped.
        (Some(p), info) => {
            let missed = match info {
                None => p.id != "0-0",
                Some(info) => {
                    let added: u64 = info_field(&info, "entries-added").unwrap_or(0);
                    let length: u64 = info_field(&info, "length").unwrap_or(0);
                    let first = info_field::<String>(&info, "recorded-first-entry-id").unwrap_or_else(|| "0-0".into());
                    let added_since = added.saturating_sub(p.added);
                    added < p.added || (parse_id(&first) > parse_id(&p.id) && added_since > length)
                }
            };
            if missed {
                tracing::warn!("missed invalidations while disconnected; everything in memory marked stale");
                purger.lost_track();
                if let Some(me) = inner.upgrade() {
                    me.stats.lost_track.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    let block = Duration::from_secs(2);
    loop {
        let Some(me) = inner.upgrade() else { return Ok(()) };
        let node = me.node.clone();
        drop(me);
        let from = pos.as_ref().map(|p| p.id.clone()).unwrap_or_else(|| "0-0".into());
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("BLOCK").arg(block.as_millis() as u64).arg("COUNT").arg(512).arg("STREAMS").arg(stream).arg(&from);
        let reply: Option<StreamReadReply> = timeout(bounded(block), conn.cmd(&cmd)).await?;
        let Some(reply) = reply else { continue };
        for key in reply.keys {
            for entry in key.ids {
                if let Some(p) = pos.as_mut() {
                    p.id = entry.id.clone();
                    p.added += 1;
                }
                let from_node: Option<String> = entry.get("node");
                if from_node.as_deref() == Some(node.as_str()) {
                    continue;
                }
                if let Some(v) = entry.get::<String>("v") {
                    // A purge (see `publish.rs` for the format).
                    let purge = (v == MESSAGE_VERSION).then(|| parse_message(|f| entry.get(f))).flatten();
                    let Some(purge) = purge else {
                        tracing::warn!(id = %entry.id, version = %v, "invalidation stream message not understood; skipped");
                        if let Some(me) = inner.upgrade() {
                            me.stats.unreadable_messages.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    };
                    purger.apply(&purge).await;
                    if let Some(me) = inner.upgrade() {
                        me.stats.remote_purges.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let Some(digest) = entry.get::<String>("key") else { continue };
                if let Some(k) = CacheKey::from_hex(&digest) {
                    purger.memory().invalidate(&k);
                    if let Some(me) = inner.upgrade() {
                        me.stats.remote_invalidations.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}
