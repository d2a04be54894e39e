//! The listeners: `listen` (cleartext) and the `[[listener]]` tables, bound, each with how its
//! requests are served ([`Endpoint`]) and, for a TLS one, its acceptor; and the certificates of
//! all of them, reloadable ([`Certificates`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::proxy::Endpoint;
use crate::tls::{CertStore, Report};

/// Every listener of a configuration, bound.
pub struct Listeners {
    pub(super) bound: Vec<Bound>,
    certificates: Certificates,
}

/// One bound listener.
pub(super) struct Bound {
    /// The name its socket is handed over under: `proxy` for `listen`, `listener.N` for the
    /// N-th `[[listener]]`.
    name: String,
    pub(super) listener: TcpListener,
    pub(super) addr: SocketAddr,
    pub(super) endpoint: Endpoint,
    /// The TLS handshake of a TLS listener's connections.
    pub(super) tls: Option<TlsAcceptor>,
}

impl Listeners {
    /// Loads the TLS listeners' certificates (logging what each is and when it expires), then
    /// binds `listen` (when served) and every `[[listener]]`, in that order.
    pub async fn bind(cfg: &Config) -> io::Result<Listeners> {
        Self::bind_inheriting(cfg, |_| None).await
    }

    /// [`bind`](Self::bind), taking for each listener the socket `inherited` gives for its
    /// name (handed over by systemd or a replaced process, see [`handover`](Self::handover))
    /// instead of binding one.
    pub async fn bind_inheriting(
        cfg: &Config,
        mut inherited: impl FnMut(&str) -> Option<std::net::TcpListener>,
    ) -> io::Result<Listeners> {
        let now = SystemTime::now();
        let mut stores = Vec::new();
        let mut plan = Vec::new();
        if cfg.listen_enabled {
            plan.push((cfg.listen, Endpoint::PLAIN, None, "listen".to_string(), "proxy".to_string()));
        }
        for (i, l) in cfg.listeners.iter().enumerate() {
            let (endpoint, acceptor) = match &l.tls {
                None => (Endpoint { redirect_https: l.redirect_https, ..Endpoint::PLAIN }, None),
                Some(tls) => {
                    let (store, report) = CertStore::load(tls, now).map_err(|problems| {
                        let text: Vec<String> = problems.into_iter().map(|(f, m)| format!("{f}: {m}")).collect();
                        io::Error::new(io::ErrorKind::InvalidData, text.join("; "))
                    })?;
                    report.log(now);
                    let store = Arc::new(store);
                    stores.push(store.clone());
                    (Endpoint::TLS, Some(TlsAcceptor::from(crate::tls::server_config(store))))
                }
            };
            plan.push((l.address, endpoint, acceptor, l.field.clone(), format!("listener.{i}")));
        }
        let mut bound = Vec::with_capacity(plan.len());
        for (address, endpoint, tls, field, name) in plan {
            let listener = match inherited(&name) {
                Some(l) => {
                    let l = TcpListener::from_std(l)?;
                    let at = l.local_addr()?;
                    if at != address && address.port() != 0 {
                        tracing::warn!(%at, configured = %address, field, "serving on the inherited socket, not the address configured");
                    } else {
                        tracing::info!(%at, field, "listening socket inherited");
                    }
                    l
                }
                None => TcpListener::bind(address)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {address} ({field}): {e}")))?,
            };
            // The address bound, not the one asked for: with port 0 the system picks the port.
            let addr = listener.local_addr()?;
            bound.push(Bound { name, listener, addr, endpoint, tls });
        }
        Ok(Listeners { bound, certificates: Certificates { stores } })
    }

    /// One cleartext listener already bound.
    pub fn plain(listener: TcpListener) -> io::Result<Listeners> {
        let addr = listener.local_addr()?;
        let bound = vec![Bound { name: "proxy".into(), listener, addr, endpoint: Endpoint::PLAIN, tls: None }];
        Ok(Listeners { bound, certificates: Certificates::default() })
    }

    /// The addresses bound, with whether each is TLS: `listen` first (when served), then the
    /// `[[listener]]` tables in the file's order.
    pub fn addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.bound.iter().map(|b| (b.addr, b.tls.is_some())).collect()
    }

    /// A second handle on each listening socket, with its name, for a later hand-over to a new
    /// process ([`bind_inheriting`](Self::bind_inheriting) takes them by these names).
    pub fn handover(&self) -> io::Result<Vec<(String, std::net::TcpListener)>> {
        use std::os::fd::AsFd;
        let dup =
            |b: &Bound| Ok((b.name.clone(), std::net::TcpListener::from(b.listener.as_fd().try_clone_to_owned()?)));
        self.bound.iter().map(dup).collect()
    }

    /// The TLS listeners' certificates.
    pub fn certificates(&self) -> &Certificates {
        &self.certificates
    }
}

/// The certificates of every TLS listener, reloadable while they are served.
#[derive(Clone, Default)]
pub struct Certificates {
    stores: Vec<Arc<CertStore>>,
}

impl Certificates {
    /// True when no listener uses TLS.
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    /// Reads every certificate's files again (blocking file reads: call it off the runtime's
    /// workers, e.g. with `spawn_blocking`). New handshakes get the new certificates; open
    /// connections keep theirs; a certificate that fails to load stays as it was. Logs each
    /// certificate's outcome and expiry, and returns them, one report per TLS listener.
    pub fn reload(&self) -> Vec<Report> {
        let now = SystemTime::now();
        let reports: Vec<Report> = self.stores.iter().map(|s| s.reload(now)).collect();
        let failed = reports.iter().flat_map(Report::failures).count();
        for r in &reports {
            r.log(now);
        }
        let total: usize = reports.iter().map(|r| r.certificates.len()).sum();
        if failed == 0 {
            tracing::info!(certificates = total, "certificates reloaded");
        } else {
            tracing::warn!(
                certificates = total,
                failed,
                "certificates reloaded, some failed; those kept their previous version"
            );
        }
        reports
    }

    /// What is in service, one report per TLS listener.
    pub fn report(&self) -> Vec<Report> {
        self.stores.iter().map(|s| s.report()).collect()
    }

    /// Once a day, warns about every certificate that expires within 14 days or has expired.
    pub(super) async fn warn_daily(self) {
        if self.is_empty() {
            return;
        }
        let mut every = tokio::time::interval(Duration::from_secs(86_400));
        every.tick().await;
        loop {
            every.tick().await;
            let now = SystemTime::now();
            for r in self.report() {
                r.warn_expiring(now);
            }
        }
    }
}
