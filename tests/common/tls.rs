//! TLS for the tests: a certificate authority made at test time ([`TestCa`], rcgen) and the
//! certificates it signs ([`Leaf`]), written to a directory of the test's own; a client that
//! verifies against that CA and tells which certificate it got ([`TlsClient`], [`TlsConn`]); and
//! an HTTPS origin ([`TlsOrigin`]: a TLS-terminating relay in front of an [`super::Origin`], so
//! that what the origin received is recorded as usual).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{within, Resp};

/// A fresh, empty directory for one test's files, under Cargo's test temp dir.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER: what a client receives.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA (ECDSA P-256) named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A certificate for `names` (ECDSA P-256), valid from 1975 to 4096.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_with(names, KeyPair::generate().expect("key"), |_| {})
    }

    /// A certificate for `names` with `key`, its parameters adjusted by `tweak`.
    pub fn leaf_with(&self, names: &[&str], key: KeyPair, tweak: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        tweak(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    /// Writes the CA certificate to `dir/<file>`.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }

    /// Its certificate as a root store.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA pem")).expect("CA root");
        roots
    }
}

impl Leaf {
    /// Writes `dir/<name>.pem` (certificate) and `dir/<name>.key`, each replaced by a rename as
    /// certificate tools do; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let chain = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        for (path, text) in [(&chain, &self.cert_pem), (&key, &self.key_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
        (chain, key)
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.der.clone())]
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key pem")
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// The protocol a client offers by ALPN.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    H2,
}

/// A TLS client aimed at one listener, verifying against one CA.
pub struct TlsClient {
    addr: SocketAddr,
    roots: RootCertStore,
    /// One configuration for every connection, which session resumption needs (a session is
    /// resumed only under the configuration that made it).
    resuming: Option<Arc<ClientConfig>>,
}

/// One TLS connection and what its handshake gave.
pub struct TlsConn {
    sender: Sender,
    /// The certificate the server presented, DER.
    pub peer: Vec<u8>,
    /// The protocol agreed by ALPN.
    pub alpn: Option<Vec<u8>>,
    /// Whether the session was resumed.
    pub resumed: bool,
    authority: String,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl TlsClient {
    /// A client for the TLS listener at `addr` trusting `ca`, without session resumption (each
    /// connection a full handshake, so each shows the certificate served now).
    pub fn new(addr: SocketAddr, ca: &TestCa) -> TlsClient {
        TlsClient { addr, roots: ca.roots(), resuming: None }
    }

    /// A client speaking only `version` over HTTP/1.1 that remembers sessions and resumes them.
    pub fn resuming(addr: SocketAddr, ca: &TestCa, version: &'static rustls::SupportedProtocolVersion) -> TlsClient {
        let mut client = TlsClient::new(addr, ca);
        let mut config = client.config(Alpn::Http1, true, &[version]);
        config.resumption = rustls::client::Resumption::in_memory_sessions(16);
        client.resuming = Some(Arc::new(config));
        client
    }

    fn config(&self, alpn: Alpn, sni: bool, versions: &[&'static rustls::SupportedProtocolVersion]) -> ClientConfig {
        let mut config = ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![match alpn {
            Alpn::Http1 => b"http/1.1".to_vec(),
            Alpn::H2 => b"h2".to_vec(),
        }];
        config.enable_sni = sni;
        config.resumption = rustls::client::Resumption::disabled();
        config
    }

    /// Connects asking for `name` by SNI and verifying the certificate for it.
    pub async fn connect(&self, name: &str, alpn: Alpn) -> TlsConn {
        self.try_connect(name, alpn, true, rustls::DEFAULT_VERSIONS)
            .await
            .unwrap_or_else(|e| panic!("TLS to {name}: {e}"))
    }

    /// Connects with the given options (a [`TlsClient::resuming`] client with its own); the
    /// handshake's error as text.
    pub async fn try_connect(
        &self,
        name: &str,
        alpn: Alpn,
        sni: bool,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<TlsConn, String> {
        let config = self.resuming.clone().unwrap_or_else(|| Arc::new(self.config(alpn, sni, versions)));
        let connector = TlsConnector::from(config);
        let server_name = ServerName::try_from(name.to_string()).expect("server name");
        within("TLS connect", async {
            let tcp = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
            let tls = connector.connect(server_name, tcp).await.map_err(|e| e.to_string())?;
            let (_, conn) = tls.get_ref();
            let peer = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
            let agreed = conn.alpn_protocol().map(<[u8]>::to_vec);
            let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let io = TokioIo::new(tls);
            let sender = if agreed.as_deref() == Some(b"h2") {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Sender::H2(sender)
            } else {
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Sender::H1(sender)
            };
            Ok(TlsConn { sender, peer, alpn: agreed, resumed, authority: name.to_string() })
        })
        .await
    }
}

impl TlsConn {
    /// GET `path` on this connection.
    pub async fn get(&mut self, path: &str) -> Resp {
        let uri = format!("https://{}{path}", self.authority);
        within(&format!("GET {uri} over TLS"), async {
            let (parts, body) = match &mut self.sender {
                Sender::H1(s) => {
                    let mut req = Request::new(Full::new(Bytes::new()));
                    *req.uri_mut() = path.parse().expect("path");
                    req.headers_mut().insert(http::header::HOST, self.authority.parse().expect("host"));
                    s.ready().await.expect("connection ready");
                    s.send_request(req).await.expect("response").into_parts()
                }
                Sender::H2(s) => {
                    let mut req = Request::new(Full::new(Bytes::new()));
                    *req.method_mut() = Method::GET;
                    *req.uri_mut() = uri.parse().expect("uri");
                    *req.version_mut() = http::Version::HTTP_2;
                    s.ready().await.expect("connection ready");
                    s.send_request(req).await.expect("response").into_parts()
                }
            };
            let body = body.collect().await.expect("body").to_bytes();
            Resp { status: parts.status.as_u16(), headers: parts.headers, body }
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// HTTPS origin
// ---------------------------------------------------------------------------------------------

/// An HTTPS origin: TLS with `leaf`'s certificate, relayed to a cleartext origin.
pub struct TlsOrigin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    client_certs: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl TlsOrigin {
    /// Serves TLS with `leaf` and relays each connection to `upstream`. With `client_ca`, a
    /// client certificate signed by it is required.
    pub async fn start(upstream: SocketAddr, leaf: &Leaf, client_ca: Option<&TestCa>) -> TlsOrigin {
        let builder = ServerConfig::builder();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(ca.roots())).build().expect("client verifier"),
            ),
        };
        let config = builder.with_single_cert(leaf.chain(), leaf.key()).expect("origin certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let origin =
            TlsOrigin { addr, accepted: Arc::default(), handshakes: Arc::default(), client_certs: Arc::default() };
        let (accepted, handshakes, client_certs) =
            (origin.accepted.clone(), origin.handshakes.clone(), origin.client_certs.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, handshakes, client_certs) = (acceptor.clone(), handshakes.clone(), client_certs.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        client_certs.lock().unwrap().push(cert.to_vec());
                    }
                    let Ok(mut plain) = TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        origin
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// The client certificates presented, one per handshake that had one.
    pub fn client_certs(&self) -> Vec<Vec<u8>> {
        self.client_certs.lock().unwrap().clone()
    }
}
