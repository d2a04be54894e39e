//! Reading PEM files: a certificate chain with its private key (a listener's certificate, or the
//! client certificate sent to the origin), and a CA bundle. Every failure says which of the two
//! files it is about and why, so that the configuration can name the field.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::x509::{self, CertFacts};

/// A certificate chain and its key, loaded from their files and checked against each other.
#[derive(Debug)]
pub struct Loaded {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The end-entity certificate's names and expiry.
    pub facts: CertFacts,
}

/// Which file of a pair a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The certificate chain.
    Chain,
    /// The private key.
    Key,
}

impl Part {
    /// The configuration key it is read from, under a certificate's table.
    pub fn key_name(self) -> &'static str {
        match self {
            Part::Chain => "chain",
            Part::Key => "key",
        }
    }
}

/// Why a chain and key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    /// The file at fault.
    pub part: Part,
    /// What is wrong with it.
    pub message: String,
}

fn fail(part: Part, message: String) -> LoadError {
    LoadError { part, message }
}

/// The paths of a certificate chain (leaf first) and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemPair {
    /// Certificate chain, the end-entity certificate first.
    pub chain: PathBuf,
    /// Private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

impl PemPair {
    /// Reads and checks both files: the chain parses, the key is one rustls can sign with and
    /// belongs to the first certificate, and that certificate has not expired at `now`.
    pub fn load(&self, now: SystemTime) -> Result<Loaded, LoadError> {
        let chain = certificates(&self.chain).map_err(|m| fail(Part::Chain, m))?;
        let facts = x509::facts(&chain[0]).ok_or_else(|| {
            fail(Part::Chain, format!("the first certificate in {} is not valid X.509", self.chain.display()))
        })?;
        if facts.not_after <= now {
            return Err(fail(
                Part::Chain,
                format!(
                    "the certificate in {} expired on {}",
                    self.chain.display(),
                    httpdate::fmt_http_date(facts.not_after)
                ),
            ));
        }
        let bytes = read(&self.key).map_err(|m| fail(Part::Key, m))?;
        let key = PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| fail(Part::Key, format!("no private key in {} ({})", self.key.display(), pem_error(&e))))?;
        let key = CertifiedKey::from_der(chain, key, &super::provider()).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => fail(
                Part::Key,
                format!("the key in {} does not match the certificate in {}", self.key.display(), self.chain.display()),
            ),
            e => fail(Part::Key, format!("cannot use the key in {}: {e}", self.key.display())),
        })?;
        Ok(Loaded { key: Arc::new(key), facts })
    }
}

/// Every certificate in the PEM file at `path`, at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read the certificates in {}: {}", path.display(), pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!("no certificate (BEGIN CERTIFICATE) in {}", path.display()));
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "none found".into(),
        e => e.to_string(),
    }
}
