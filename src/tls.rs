//! TLS, with rustls and its `ring` provider: the listeners' server configuration (certificates
//! chosen by SNI from a reloadable [`store::CertStore`]) and the client configuration for an
//! `https://` origin (system roots or a CA bundle, an optional client certificate).
//!
//! TLS 1.2 and 1.3 only (rustls offers nothing older); no 0-RTT data (replayable requests).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::ServerSessionMemoryCache;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub mod load;
pub mod store;
mod x509;

pub use load::{LoadError, Loaded, Part, PemPair};
pub use store::{CertReport, CertStore, Expiry, Report};
pub use x509::CertFacts;

/// Sessions a listener remembers for TLS 1.2 session-ID resumption (tickets need no memory).
const SESSION_CACHE: usize = 10_000;

/// The one crypto provider: ring, which builds with a C compiler alone (aws-lc-rs needs cmake
/// and more). rustls marks it deprecated because ring has no post-quantum key exchange
/// (X25519MLKEM768): key exchange here is X25519, P-256 or P-384.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// The server configuration of a TLS listener serving `certs`: ALPN `h2` then `http/1.1`, TLS
/// 1.2 and 1.3, resumption by tickets (keys rotated every 6 hours) and by session ID.
pub fn server_config(certs: Arc<CertStore>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    match rustls::crypto::ring::Ticketer::new() {
        Ok(t) => config.ticketer = t,
        Err(e) => tracing::warn!(error = %e, "no TLS session tickets; resumption by session ID only"),
    }
    Arc::new(config)
}

/// Which origin TLS setting a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginField {
    /// The CA bundle (or the system's roots when none is configured).
    Ca,
    /// The client certificate chain.
    ClientCertificate,
    /// The client certificate's key.
    ClientKey,
}

/// A digest of the contents of `files`, in order (a file that cannot be read counts as empty):
/// tells a renewed file from the one read before under the same path.
pub fn digest_files<'a>(files: impl Iterator<Item = &'a std::path::PathBuf>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_default();
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().into()
}

/// The client configuration for an `https://` origin: its certificate verified against the CA
/// bundle at `ca`, else the system's roots; `client` presented when the origin asks for a
/// certificate (mutual TLS). ALPN `http/1.1` (the origin client speaks HTTP/1.1).
pub fn client_config(ca: Option<&Path>, client: Option<&PemPair>) -> Result<Arc<ClientConfig>, (OriginField, String)> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = load::certificates(path).map_err(|e| (OriginField::Ca, e))?;
            let (added, ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err((
                    OriginField::Ca,
                    format!("no usable CA certificate in {} ({ignored} refused)", path.display()),
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err((OriginField::Ca, format!("no system root certificates found{why}; set origin.ca")));
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let loaded = pair.load(std::time::SystemTime::now()).map_err(|e| {
                let field = match e.part {
                    load::Part::Chain => OriginField::ClientCertificate,
                    load::Part::Key => OriginField::ClientKey,
                };
                (field, e.message)
            })?;
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(loaded.key)))
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
