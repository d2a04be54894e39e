//! The connection to Redis (standalone or Cluster), made in the background and never waited for
//! by a request.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, IntoConnectionInfo, Pipeline};

use super::Inner;
use crate::clock::Clock;
use crate::config::RedisConfig;

pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) async fn query<T: FromRedisValue>(&self, pipe: &Pipeline) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async(&mut c.clone()).await,
        }
    }

    pub(super) async fn cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

impl Clone for Conn {
    fn clone(&self) -> Self {
        match self {
            Conn::Single(c) => Conn::Single(c.clone()),
            Conn::Cluster(c) => Conn::Cluster(c.clone()),
        }
    }
}

/// Connects in the background, retrying (backing off on `clock`) until it succeeds; never blocks
/// a request.
pub(super) async fn connector(inner: std::sync::Weak<Inner>, clock: Arc<dyn Clock>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(me) = inner.upgrade() else { return };
        let Some(r) = me.redis() else { return };
        if r.conn().is_some() {
            return;
        }
        let attempt = tokio::time::timeout(connect_timeout(&r.cfg), connect(&r.cfg, Some(r.cfg.budget))).await;
        match attempt {
            Ok(Ok(c)) => {
                tracing::info!(url = %r.cfg.url, "shared tier connected");
                *r.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
                me.up.notify_waiters();
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, url = %r.cfg.url, "shared tier: cannot connect; retrying"),
            Err(_) => tracing::warn!(url = %r.cfg.url, "shared tier: connect timed out; retrying"),
        }
        drop(me);
        clock.sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

pub(super) fn connect_timeout(cfg: &RedisConfig) -> Duration {
    (cfg.budget * 10).max(Duration::from_secs(1))
}

/// Connects; `response_timeout` bounds every command on the connection (None for the blocking
/// stream reader, whose calls carry their own bound).
pub(super) async fn connect(cfg: &RedisConfig, response_timeout: Option<Duration>) -> redis::RedisResult<Conn> {
    if cfg.cluster {
        let mut builder =
            redis::cluster::ClusterClientBuilder::new(vec![cfg.url.as_str()]).connection_timeout(connect_timeout(cfg));
        if let Some(t) = response_timeout {
            builder = builder.response_timeout(t);
        }
        if let Some(user) = &cfg.username {
            builder = builder.username(user);
        }
        if let Some(password) = &cfg.password {
            builder = builder.password(password.expose());
        }
        if let Some(ca) = &cfg.ca {
            builder = builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) });
        }
        let client = builder.build()?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    } else {
        let mut info = cfg.url.as_str().into_connection_info()?;
        if cfg.username.is_some() || cfg.password.is_some() {
            let mut settings = info.redis_settings().clone();
            if let Some(user) = &cfg.username {
                settings = settings.set_username(user);
            }
            if let Some(password) = &cfg.password {
                settings = settings.set_password(password.expose());
            }
            info = info.set_redis_settings(settings);
        }
        let client = match &cfg.ca {
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) },
            )?,
            None => redis::Client::open(info)?,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout(cfg)))
            .set_response_timeout(response_timeout)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Conn::Single(ConnectionManager::new_with_config(client, config).await?))
    }
}

/// `f` within `d`, a timeout being an I/O error like any other.
pub(super) async fn timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))),
    }
}
