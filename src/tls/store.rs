//! A TLS listener's certificates: loaded from their files, chosen per handshake by the name the
//! client asks for (SNI), and reloaded in place.
//!
//! The set in service sits behind an [`ArcSwap`]: a handshake reads it without a lock, and a
//! reload builds a new set and swaps it in. Connections already established keep the certificate
//! they were given (a TLS session never changes certificate); new handshakes get the new set. A
//! certificate whose files fail to load on a reload keeps its previous version in service, and
//! the [`Report`] says why.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::load::Loaded;
use crate::config::{Fallback, ListenerTls};

/// A certificate expiring within this is warned about, at every load and once a day.
pub const WARN_BEFORE: Duration = Duration::from_secs(14 * 86_400);

/// One TLS listener's certificates.
pub struct CertStore {
    tls: ListenerTls,
    current: ArcSwap<CertSet>,
    /// One reload at a time (SIGHUP, and whatever else asks for one).
    reloading: Mutex<()>,
}

/// The certificates in service.
struct CertSet {
    /// One per configured certificate, in the configuration's order.
    loaded: Vec<Arc<Loaded>>,
    /// Every DNS name (wildcards as `*.example.com`) to the certificates that have it, in the
    /// configuration's order.
    by_name: HashMap<String, Vec<usize>>,
    /// Served when the client sends no name or one no certificate has; `None`: refuse.
    fallback: Option<usize>,
}

impl CertSet {
    fn new(tls: &ListenerTls, loaded: Vec<Arc<Loaded>>) -> CertSet {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, l) in loaded.iter().enumerate() {
            for name in &l.facts.dns_names {
                by_name.entry(name.clone()).or_default().push(i);
            }
        }
        let fallback = match tls.fallback {
            Fallback::Default => Some(tls.certificates.iter().position(|c| c.default).unwrap_or(0)),
            Fallback::Refuse => None,
        };
        CertSet { loaded, by_name, fallback }
    }

    /// The certificate for `name`: one that has it, else one with a wildcard covering it (one
    /// label deep, RFC 6125 §6.4.3). Among several, the first whose key can sign with a scheme
    /// the client offers (an RSA and an ECDSA certificate for the same name).
    fn for_name(&self, name: &str, schemes: &[SignatureScheme]) -> Option<usize> {
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            &lower
        } else {
            name
        };
        let found = self.by_name.get(name).or_else(|| {
            let parent = name.split_once('.')?.1;
            self.by_name.get(&format!("*.{parent}"))
        })?;
        found
            .iter()
            .copied()
            .find(|&i| self.loaded[i].key.key.choose_scheme(schemes).is_some())
            .or(found.first().copied())
    }
}

impl CertStore {
    /// Loads every certificate of `tls`; all must load. On failure, every problem as
    /// `(field, message)`.
    pub fn load(tls: &ListenerTls, now: SystemTime) -> Result<(CertStore, Report), Vec<(String, String)>> {
        let mut loaded = Vec::with_capacity(tls.certificates.len());
        let mut problems = Vec::new();
        for c in &tls.certificates {
            match c.files.load(now) {
                Ok(l) => loaded.push(Arc::new(l)),
                Err(e) => problems.push((format!("{}.{}", c.field, e.part.key_name()), e.message)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let report = Report::new(tls, &loaded, &[]);
        let store = CertStore {
            current: ArcSwap::from_pointee(CertSet::new(tls, loaded)),
            tls: tls.clone(),
            reloading: Mutex::new(()),
        };
        Ok((store, report))
    }

    /// Reads every certificate's files again and serves the result to new handshakes. A
    /// certificate that fails to load (unreadable, not matching its key, expired) stays in
    /// service as it was; the report names it and says why.
    pub fn reload(&self, now: SystemTime) -> Report {
        let _one = self.reloading.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        let mut loaded = Vec::with_capacity(self.tls.certificates.len());
        let mut failed = Vec::new();
        for (i, c) in self.tls.certificates.iter().enumerate() {
            match c.files.load(now) {
                Ok(l) => loaded.push(Arc::new(l)),
                Err(e) => {
                    failed.push((i, format!("{}.{}: {e}", c.field, e.part.key_name())));
                    loaded.push(old.loaded[i].clone());
                }
            }
        }
        let report = Report::new(&self.tls, &loaded, &failed);
        self.current.store(Arc::new(CertSet::new(&self.tls, loaded)));
        report
    }

    /// What is in service now, without reading the files.
    pub fn report(&self) -> Report {
        Report::new(&self.tls, &self.current.load().loaded, &[])
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("certificates", &self.tls.certificates.len()).finish()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        let i = hello.server_name().and_then(|n| set.for_name(n, hello.signature_schemes())).or(set.fallback)?;
        Some(set.loaded[i].key.clone())
    }
}

/// The certificates of one listener after a load or reload.
#[derive(Debug, Clone)]
pub struct Report {
    /// One per configured certificate, in the configuration's order.
    pub certificates: Vec<CertReport>,
}

/// One certificate in service.
#[derive(Debug, Clone)]
pub struct CertReport {
    /// Its table in the configuration, e.g. `listener[1].certificate[0]`.
    pub field: String,
    /// Its DNS names.
    pub names: Vec<String>,
    /// When it expires.
    pub not_after: SystemTime,
    /// Why its files failed to load on this reload (the previous version is still served).
    pub error: Option<String>,
}

/// Where a certificate stands against its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Expires in this many whole days, more than [`WARN_BEFORE`] away.
    Valid(u64),
    /// Expires within [`WARN_BEFORE`]: in this many whole days.
    Soon(u64),
    /// Has expired: clients will refuse it.
    Expired,
}

/// `not_after` seen at `now`.
pub fn expiry(not_after: SystemTime, now: SystemTime) -> Expiry {
    match not_after.duration_since(now) {
        Err(_) => Expiry::Expired,
        Ok(left) if left.is_zero() => Expiry::Expired,
        Ok(left) if left <= WARN_BEFORE => Expiry::Soon(left.as_secs() / 86_400),
        Ok(left) => Expiry::Valid(left.as_secs() / 86_400),
    }
}

impl Report {
    fn new(tls: &ListenerTls, loaded: &[Arc<Loaded>], failed: &[(usize, String)]) -> Report {
        let certificates = tls
            .certificates
            .iter()
            .zip(loaded)
            .enumerate()
            .map(|(i, (c, l))| CertReport {
                field: c.field.clone(),
                names: l.facts.dns_names.clone(),
                not_after: l.facts.not_after,
                error: failed.iter().find(|(f, _)| *f == i).map(|(_, e)| e.clone()),
            })
            .collect();
        Report { certificates }
    }

    /// The certificates whose files failed to load, with why.
    pub fn failures(&self) -> impl Iterator<Item = &CertReport> {
        self.certificates.iter().filter(|c| c.error.is_some())
    }

    /// Logs one line per certificate: a failed reload as a warning, then its expiry (a warning
    /// within [`WARN_BEFORE`], an error once expired).
    pub fn log(&self, now: SystemTime) {
        for c in &self.certificates {
            if let Some(e) = &c.error {
                tracing::warn!(certificate = %c.field, error = %e, "certificate not reloaded; the previous one is still served");
            }
            log_expiry(c, now, true);
        }
    }

    /// Logs only the certificates that expire within [`WARN_BEFORE`] or have expired.
    pub fn warn_expiring(&self, now: SystemTime) {
        for c in &self.certificates {
            log_expiry(c, now, false);
        }
    }
}

fn log_expiry(c: &CertReport, now: SystemTime, all: bool) {
    let names = c.names.join(",");
    let expires = httpdate::fmt_http_date(c.not_after);
    match expiry(c.not_after, now) {
        Expiry::Valid(days) if all => {
            tracing::info!(certificate = %c.field, %names, %expires, days, "certificate in service")
        }
        Expiry::Valid(_) => {}
        Expiry::Soon(days) => {
            tracing::warn!(certificate = %c.field, %names, %expires, days, "certificate expires soon: renew it, then send SIGHUP")
        }
        Expiry::Expired => {
            tracing::error!(certificate = %c.field, %names, %expires, "certificate has expired: clients refuse it; renew it, then send SIGHUP")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CertificateConfig;
    use crate::tls::{x509, PemPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// A self-signed certificate for `names`, loaded as the store loads one.
    fn loaded(names: &[&str]) -> Arc<Loaded> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let facts = x509::facts(&der).unwrap();
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let key = CertifiedKey::from_der(vec![der], key, &crate::tls::provider()).unwrap();
        Arc::new(Loaded { key: Arc::new(key), facts })
    }

    fn tls(n: usize, fallback: Fallback) -> ListenerTls {
        let certificates = (0..n)
            .map(|i| CertificateConfig {
                files: PemPair { chain: "c".into(), key: "k".into() },
                default: i == 1,
                field: format!("listener[0].certificate[{i}]"),
            })
            .collect();
        ListenerTls { certificates, fallback }
    }

    #[test]
    fn names_match_exactly_or_by_a_wildcard_one_label_deep() {
        let set = CertSet::new(
            &tls(3, Fallback::Default),
            vec![loaded(&["a.test"]), loaded(&["*.b.test"]), loaded(&["b.test", "a.test"])],
        );
        let schemes = [SignatureScheme::ECDSA_NISTP256_SHA256];
        assert_eq!(set.for_name("a.test", &schemes), Some(0), "the first certificate listed with the name");
        assert_eq!(set.for_name("A.Test", &schemes), Some(0), "names are compared without case");
        assert_eq!(set.for_name("www.b.test", &schemes), Some(1));
        assert_eq!(set.for_name("b.test", &schemes), Some(2), "a wildcard does not cover its parent");
        assert_eq!(set.for_name("x.www.b.test", &schemes), None, "a wildcard covers one label");
        assert_eq!(set.for_name("c.test", &schemes), None);
        assert_eq!(set.fallback, Some(1), "the certificate with default = true");
        assert_eq!(CertSet::new(&tls(3, Fallback::Refuse), set.loaded.clone()).fallback, None);
    }

    #[test]
    fn the_certificate_facts_are_read_from_the_der() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["Www.Example.test".to_string(), "*.example.test".into()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.not_after = rcgen::date_time_ymd(2030, 6, 15);
        let cert = params.self_signed(&key).unwrap();
        let facts = x509::facts(cert.der()).unwrap();
        assert_eq!(facts.dns_names, ["www.example.test", "*.example.test"]);
        assert_eq!(facts.not_after, SystemTime::UNIX_EPOCH + Duration::from_secs(1_907_712_000));
    }

    #[test]
    fn expiry_is_warned_about_fourteen_days_ahead() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(expiry(now + 30 * day, now), Expiry::Valid(30));
        assert_eq!(expiry(now + 14 * day + Duration::from_secs(1), now), Expiry::Valid(14));
        assert_eq!(expiry(now + 14 * day, now), Expiry::Soon(14));
        assert_eq!(expiry(now + Duration::from_secs(10), now), Expiry::Soon(0));
        assert_eq!(expiry(now, now), Expiry::Expired);
        assert_eq!(expiry(now - day, now), Expiry::Expired);
    }
}
