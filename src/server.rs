//! The accept loop: HTTP/1.1 and h2c on one port (hyper-util auto), header-read timeout (with
//! the timer hyper needs for it), header-size limits, one access-log line per request, and
//! graceful shutdown with a hard deadline.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::body::{AccessLog, LoggedBody};
use crate::clock::Clock;
use crate::config::Config;
use crate::proxy::Proxy;

/// A proxy serving on a bound address, stopped with [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    proxy: Arc<Proxy>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy itself (its memory tier, for inspection).
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Stops accepting, lets in-flight requests finish within `timeouts.shutdown`, and waits.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `cfg.listen` and serves in a background task.
pub async fn start(cfg: Config, clock: Arc<dyn Clock>) -> io::Result<Running> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let cfg = Arc::new(cfg);
    let proxy = Arc::new(Proxy::new(cfg.clone(), clock));
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(serve(listener, proxy.clone(), cfg, async {
        let _ = rx.await;
    }));
    Ok(Running { addr, proxy, stop: Some(tx), task })
}

/// Serves connections from `listener` until `shutdown` completes, then drains in-flight
/// connections for at most `timeouts.shutdown`.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, cfg: Arc<Config>, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.timeouts.header_read)
        .max_buf_size(cfg.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.limits.max_header_bytes as u32)
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    let access = cfg.log.access;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            async move {
                // Read only for the access log: without it, no clock is read per request here.
                let log_head = access.then(|| {
                    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                    (req.method().clone(), path, Instant::now())
                });
                let (resp, cs) = proxy.handle(req, peer).await;
                let log = log_head.map(|(method, path, start)| {
                    Box::new(AccessLog {
                        method,
                        path,
                        status: resp.status().as_u16(),
                        cache: cs.outcome(),
                        detail: cs.detail.map(|d| d.as_str()),
                        start,
                        peer,
                    })
                });
                let expected = log
                    .as_ref()
                    .and_then(|_| resp.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok());
                Ok::<_, Infallible>(resp.map(|b| LoggedBody::new(b, expected, log)))
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(cfg.timeouts.shutdown) => {
            tracing::warn!(deadline = ?cfg.timeouts.shutdown, "shutdown deadline reached; closing remaining connections");
        }
    }
}
