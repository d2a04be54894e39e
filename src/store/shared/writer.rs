//! Writes to the shared tier off the request path: a bounded queue, one task draining it in batches.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use redis::Pipeline;
use tokio::sync::mpsc;

use super::stream::{STREAM_MAXLEN, STREAM_TTL_SECS};
use super::{Backend, Inner};

/// Writes batched into one pipeline.
const WRITE_BATCH: usize = 64;

/// One queued write.
pub(super) enum Write {
    Put { key: String, field: String, value: Bytes, ttl_secs: u64 },
    RemoveVariant { key: String, field: String },
    Invalidate { key: String, digest: String },
}

/// Drains the write queue in batches, one pipeline per batch, each within the budget.
pub(super) async fn writer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let stream = inner.stream_name();
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        match &inner.backend {
            Backend::Redis(r) => {
                for (pipe, writes) in pipelines(&mut batch, r.cfg.cluster, &stream, &inner.node) {
                    match inner.call::<()>(&pipe).await {
                        Some(()) => inner.stats.writes.fetch_add(writes, Ordering::Relaxed),
                        None => inner.stats.dropped_writes.fetch_add(writes.max(1), Ordering::Relaxed),
                    };
                }
            }
            // One write at a time: each is a read-modify-write of one URL's bundle.
            Backend::Memcached(m) => {
                for w in batch.drain(..) {
                    match inner.guard(m.write(&w)).await {
                        Some(true) => inner.stats.writes.fetch_add(1, Ordering::Relaxed),
                        _ => inner.stats.dropped_writes.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        }
    }
}

/// The pipelines that carry `batch` (drained), in the order they must run, each with the number
/// of writes it counts for.
fn pipelines(batch: &mut Vec<Write>, cluster: bool, stream: &str, node: &str) -> Vec<(Pipeline, u64)> {
    // Standalone: one pipeline for the whole batch. Cluster: a pipeline may not cross hash
    // slots, so one per key (a write touches one URL's hash, an invalidation also the stream).
    let mut pipes: Vec<(Pipeline, u64)> = Vec::new();
    let mut one = redis::pipe();
    let n = batch.len() as u64;
    for w in batch.drain(..) {
        let mut per_key = redis::pipe();
        let mut announce = None;
        let pipe = if cluster { &mut per_key } else { &mut one };
        match w {
            Write::Put { key, field, value, ttl_secs } => {
                pipe.cmd("HSET").arg(&key).arg(&field).arg(value.as_ref()).ignore();
                // A new hash gets the TTL; an existing one only ever has it extended.
                pipe.cmd("EXPIRE").arg(&key).arg(ttl_secs).arg("NX").ignore();
                pipe.cmd("EXPIRE").arg(&key).arg(ttl_secs).arg("GT").ignore();
            }
            Write::RemoveVariant { key, field } => {
                pipe.cmd("HDEL").arg(&key).arg(&field).ignore();
            }
            Write::Invalidate { key, digest } => {
                pipe.cmd("DEL").arg(&key).ignore();
                let mut to_stream = redis::pipe();
                let sp = if cluster { &mut to_stream } else { &mut *pipe };
                sp.cmd("XADD")
                    .arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_MAXLEN)
                    .arg("*")
                    .arg("key")
                    .arg(&digest)
                    .arg("node")
                    .arg(node)
                    .ignore();
                sp.cmd("EXPIRE").arg(stream).arg(STREAM_TTL_SECS).ignore();
                if cluster {
                    announce = Some(to_stream);
                }
            }
        }
        if cluster {
            pipes.push((per_key, 1));
            // The pipelines run one after another: the stream tells the other nodes of an
            // invalidation only once its DEL is done, so a node that drops its copy and asks
            // the tier again cannot find the old object there.
            pipes.extend(announce.map(|p| (p, 0)));
        }
    }
    if !cluster {
        pipes.push((one, n));
    }
    pipes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command names of a pipeline, in order.
    fn commands(p: &Pipeline) -> Vec<String> {
        p.cmd_iter()
            .map(|c| match c.args_iter().next() {
                Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).into_owned(),
                _ => String::new(),
            })
            .collect()
    }

    fn batch() -> Vec<Write> {
        vec![
            Write::Put { key: "a".into(), field: "v".into(), value: Bytes::from_static(b"x"), ttl_secs: 60 },
            Write::Invalidate { key: "b".into(), digest: "d".into() },
        ]
    }

    #[test]
    fn an_invalidation_reaches_the_stream_only_after_its_del() {
        // Cluster: one pipeline per key, and the stream's after the DEL's.
        let mut writes = batch();
        let pipes: Vec<(Vec<String>, u64)> =
            pipelines(&mut writes, true, "s", "n").iter().map(|(p, n)| (commands(p), *n)).collect();
        assert!(writes.is_empty());
        assert_eq!(
            pipes,
            [
                (vec!["HSET".into(), "EXPIRE".into(), "EXPIRE".into()], 1),
                (vec!["DEL".into()], 1),
                (vec!["XADD".into(), "EXPIRE".into()], 0),
            ]
        );
        // Standalone: one pipeline, run in order on one connection.
        let mut writes = batch();
        let pipes: Vec<(Vec<String>, u64)> =
            pipelines(&mut writes, false, "s", "n").iter().map(|(p, n)| (commands(p), *n)).collect();
        let expected = ["HSET", "EXPIRE", "EXPIRE", "DEL", "XADD", "EXPIRE"].map(String::from).to_vec();
        assert_eq!(pipes, [(expected, 2)]);
    }
}
