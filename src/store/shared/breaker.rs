//! The circuit breaker around every call to the shared tier's store, and the probe that closes
//! it again.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::{FromRedisValue, Pipeline};

use super::{Backend, Inner};
use crate::clock::Clock;

/// Consecutive failures that open the circuit breaker.
const BREAKER_THRESHOLD: u32 = 3;

/// The circuit breaker: closed (calls go ahead) until `BREAKER_THRESHOLD` consecutive failures,
/// then open (calls are skipped) until a background probe finds Redis answering again. Client
/// calls never serve as probes, so none of them waits on a Redis that is still away.
#[derive(Default)]
pub(super) struct Breaker {
    pub(super) failures: u32,
    pub(super) open: bool,
}

impl Inner {
    /// May a call go ahead? A skipped call is counted.
    pub(super) fn allow(&self) -> bool {
        let open = self.breaker.lock().unwrap_or_else(|e| e.into_inner()).open;
        if open {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        }
        !open
    }

    pub(super) fn success(&self) {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner()).failures = 0;
    }

    pub(super) fn failure(self: &Arc<Self>, what: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if b.open {
            // A call that was already under way when the circuit opened.
            return;
        }
        b.failures += 1;
        if b.failures >= BREAKER_THRESHOLD {
            b.open = true;
            tracing::warn!(error = what, "shared tier unavailable; circuit open, probing in the background");
            tokio::spawn(probe(Arc::downgrade(self), self.clock.clone()));
        }
    }

    /// Does the store answer within the budget? Redis: a PING, tried twice (after an outage the
    /// first call on a reconnecting connection can return the error of the reconnection it
    /// started). Memcached: a no-op to every server.
    pub(super) async fn ping(&self) -> bool {
        let budget = self.limits.budget;
        match &self.backend {
            Backend::Redis(r) => {
                let Some(conn) = r.conn() else { return false };
                for _ in 0..2 {
                    let pong = tokio::time::timeout(budget, conn.cmd::<String>(&redis::cmd("PING"))).await;
                    if matches!(pong, Ok(Ok(_))) {
                        return true;
                    }
                }
                false
            }
            Backend::Memcached(m) => tokio::time::timeout(budget, m.ping()).await.unwrap_or(false),
        }
    }

    /// Runs `pipe` on Redis within the budget; `None` on any failure (counted, and fed to the
    /// breaker).
    pub(super) async fn call<T: FromRedisValue>(self: &Arc<Self>, pipe: &Pipeline) -> Option<T> {
        if !self.allow() {
            return None;
        }
        let Some(conn) = self.redis().and_then(|r| r.conn()) else {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.bounded(conn.query::<T>(pipe)).await
    }

    /// Runs `call` within the budget when the breaker allows it; `None` on any failure (counted,
    /// and fed to the breaker).
    pub(super) async fn guard<T, E: std::fmt::Display>(
        self: &Arc<Self>,
        call: impl Future<Output = Result<T, E>>,
    ) -> Option<T> {
        if !self.allow() {
            return None;
        }
        self.bounded(call).await
    }

    /// `call` within the budget, its time observed.
    async fn bounded<T, E: std::fmt::Display>(self: &Arc<Self>, call: impl Future<Output = Result<T, E>>) -> Option<T> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.limits.budget, call).await;
        self.call_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(v)) => {
                self.success();
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "shared tier call failed");
                self.failure(&e.to_string());
                None
            }
            Err(_) => {
                self.failure("timed out");
                None
            }
        }
    }
}

/// While the circuit is open: probes the store after 1 s on `clock`, then backing off to 30 s, and
/// closes the circuit at the first answer.
async fn probe(inner: std::sync::Weak<Inner>, clock: Arc<dyn Clock>) {
    let mut wait = Duration::from_secs(1);
    loop {
        clock.sleep(wait).await;
        let Some(me) = inner.upgrade() else { return };
        if me.ping().await {
            let mut b = me.breaker.lock().unwrap_or_else(|e| e.into_inner());
            b.open = false;
            b.failures = 0;
            drop(b);
            me.up.notify_waiters();
            tracing::info!("shared tier answering again; circuit closed");
            return;
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}
