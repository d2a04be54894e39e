//! TLS at the edge and to the origin: certificates chosen by SNI over HTTP/1.1 and HTTP/2, the
//! fallback for clients without SNI, hits over TLS under their own key, certificate reload,
//! session resumption, the handshake inside the request deadline, redirects to HTTPS, HTTPS
//! origins (trusted, untrusted, mutual TLS), and `--check-config` on bad certificates.
//!
//! Every certificate is made at test time by a CA of the test's own (rcgen).

pub mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::tls::{test_dir, Alpn, TestCa, TlsClient, TlsOrigin};
use common::*;
use edgecache::{Config, Running};
use tokio::io::AsyncReadExt;

/// `listen` on loopback, `origin`, no access log, then `extra` (TOML: `[[listener]]` tables,
/// `[origin]`, ...).
fn config(origin: &str, extra: &str) -> Config {
    let text = format!("listen = \"127.0.0.1:0\"\n{origin}\n[log]\naccess = false\n{extra}");
    Config::parse(&text).unwrap_or_else(|e| panic!("config:\n{text}\n{e}"))
}

/// A `[[listener]]` table for TLS on loopback with `certs`, then `more` keys.
fn tls_listener(certs: &[(PathBuf, PathBuf)], more: &str) -> String {
    tls_listener_with_default(certs, None, more)
}

/// [`tls_listener`] with `default = true` on `certs[default]`.
fn tls_listener_with_default(certs: &[(PathBuf, PathBuf)], default: Option<usize>, more: &str) -> String {
    let mut t = format!("[[listener]]\naddress = \"127.0.0.1:0\"\ntls = true\n{more}\n");
    for (i, (chain, key)) in certs.iter().enumerate() {
        t += &format!(
            "[[listener.certificate]]\nchain = {:?}\nkey = {:?}\n",
            chain.display().to_string(),
            key.display().to_string()
        );
        if default == Some(i) {
            t += "default = true\n";
        }
    }
    t
}

async fn start(cfg: Config) -> Running {
    let clock = clock();
    edgecache::start(cfg, clock).await.expect("start proxy")
}

/// An origin answering every path with `path` and one hour of freshness.
async fn origin() -> Origin {
    Origin::start(&clock(), |req, _| Reply::ok(req.path().to_string()).cc("max-age=3600")).await
}

#[tokio::test]
async fn the_certificate_for_the_name_asked_is_served_over_http1_and_http2() {
    let dir = test_dir("sni");
    let ca = TestCa::new("sni CA");
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["*.b.test", "b.test"]);
    let origin = origin().await;
    let cfg = config(
        &format!("origin = \"http://{}\"", origin.addr()),
        &tls_listener(&[a.write(&dir, "a"), b.write(&dir, "b")], ""),
    );
    let p = start(cfg).await;
    let client = TlsClient::new(p.listener_addr(0), &ca);
    for (name, leaf) in [("a.test", &a), ("www.b.test", &b), ("b.test", &b), ("A.TEST", &a)] {
        for alpn in [Alpn::Http1, Alpn::H2] {
            let mut conn = client.connect(name, alpn).await;
            assert!(conn.peer == leaf.der, "{name} over {alpn:?}: another certificate was served");
            let want: &[u8] = if alpn == Alpn::H2 { b"h2" } else { b"http/1.1" };
            assert_eq!(conn.alpn.as_deref(), Some(want), "{name}: ALPN");
            let r = conn.get("/x").await;
            assert_eq!((r.status, r.text()), (200, "/x".to_string()), "{name} over {alpn:?}");
        }
    }
}

#[tokio::test]
async fn an_rsa_certificate_is_served_too() {
    let dir = test_dir("rsa");
    let ca = TestCa::new("rsa CA");
    let key = rsa_key(&dir);
    let rsa = ca.leaf_with(&["rsa.test"], key, |_| {});
    let origin = origin().await;
    let cfg = config(&format!("origin = \"http://{}\"", origin.addr()), &tls_listener(&[rsa.write(&dir, "rsa")], ""));
    let p = start(cfg).await;
    let mut conn = TlsClient::new(p.listener_addr(0), &ca).connect("rsa.test", Alpn::Http1).await;
    assert!(conn.peer == rsa.der, "the RSA certificate");
    assert_eq!(conn.get("/r").await.status, 200);
}

/// A 2048-bit RSA key made by `openssl` (ring signs with RSA keys but does not make them).
fn rsa_key(dir: &Path) -> rcgen::KeyPair {
    let path = dir.join("rsa-key.pem");
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&path)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
    let pem = std::fs::read_to_string(&path).expect("RSA key");
    rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("RSA key pair")
}

#[tokio::test]
async fn a_client_without_sni_gets_the_default_certificate_or_is_refused() {
    let dir = test_dir("no-sni");
    let ca = TestCa::new("no-sni CA");
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test"]);
    let origin = origin().await;
    let certs = [a.write(&dir, "a"), b.write(&dir, "b")];
    let listeners = tls_listener_with_default(&certs, Some(1), "") + &tls_listener(&certs, "fallback = \"refuse\"");
    let p = start(config(&format!("origin = \"http://{}\"", origin.addr()), &listeners)).await;

    let defaulting = TlsClient::new(p.listener_addr(0), &ca);
    let conn =
        defaulting.try_connect("b.test", Alpn::Http1, false, rustls::DEFAULT_VERSIONS).await.expect("no SNI, default");
    assert!(conn.peer == b.der, "the default certificate for a client without SNI");
    // A name no certificate has gets the default one too, which the client then refuses.
    let unknown = defaulting.try_connect("unknown.test", Alpn::Http1, true, rustls::DEFAULT_VERSIONS).await;
    let why = unknown.err().expect("a certificate for another name is refused");
    assert!(why.contains("only valid for DnsName(\"b.test\")"), "{why}");

    let refusing = TlsClient::new(p.listener_addr(1), &ca);
    let refused = refusing.try_connect("a.test", Alpn::Http1, false, rustls::DEFAULT_VERSIONS).await;
    assert!(refused.is_err(), "fallback = refuse: a client without SNI is refused");
    assert!(refusing.connect("a.test", Alpn::Http1).await.peer == a.der, "fallback = refuse: SNI still works");
    // Failed on both sides: the certificate the client refused, and the handshake refused here.
    eventually("two failed handshakes counted", async || p.stats().tls_failed.load(Ordering::Relaxed) == 2).await;
}

#[tokio::test]
async fn a_hit_over_tls_is_keyed_by_https_and_forwarded_as_https() {
    let dir = test_dir("hit");
    let ca = TestCa::new("hit CA");
    let leaf = ca.leaf(&["site.test"]);
    let origin = origin().await;
    let p = start(config(
        &format!("origin = \"http://{}\"", origin.addr()),
        &tls_listener(&[leaf.write(&dir, "site")], ""),
    ))
    .await;
    let mut conn = TlsClient::new(p.listener_addr(0), &ca).connect("site.test", Alpn::Http1).await;
    let miss = conn.get("/page").await;
    assert_eq!(miss.cache_status(), MISS_STORED);
    assert_eq!(origin.last().header("x-forwarded-proto"), Some("https"));
    assert_eq!(origin.last().header("host"), Some("site.test"));
    let hit = conn.get("/page").await;
    assert_eq!(hit.cache_status(), common::hit(3600));
    assert_eq!(hit.text(), "/page");
    assert_eq!(origin.count(), 1);

    // The same URL over cleartext is another key: http://site.test/page.
    let plain = Client::new(p.addr()).get_with("/page", &[("host", "site.test")]).await;
    assert_eq!(plain.cache_status(), MISS_STORED);
    assert_eq!(origin.last().header("x-forwarded-proto"), Some("http"));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_to_new_connections_after_reload() {
    let dir = test_dir("reload");
    let ca = TestCa::new("reload CA");
    let old = ca.leaf(&["site.test"]);
    let origin = origin().await;
    let files = old.write(&dir, "site");
    let p = start(config(&format!("origin = \"http://{}\"", origin.addr()), &tls_listener(&[files], ""))).await;
    let client = TlsClient::new(p.listener_addr(0), &ca);
    let mut open = client.connect("site.test", Alpn::Http1).await;
    let mut open_h2 = client.connect("site.test", Alpn::H2).await;
    assert_eq!(open.get("/before").await.status, 200);

    let new = ca.leaf(&["site.test"]);
    new.write(&dir, "site");
    let reports = p.reload_certificates();
    assert_eq!(reports.iter().flat_map(|r| r.failures()).count(), 0, "{reports:?}");

    assert!(
        client.connect("site.test", Alpn::Http1).await.peer == new.der,
        "a new connection gets the new certificate"
    );
    assert!(open.peer == old.der);
    assert_eq!(open.get("/after").await.status, 200, "an HTTP/1.1 connection open before the reload");
    assert_eq!(open_h2.get("/after-h2").await.status, 200, "an HTTP/2 connection open before the reload");
}

#[tokio::test]
async fn a_reload_that_fails_keeps_the_certificate_in_service_and_says_why() {
    let dir = test_dir("reload-fails");
    let ca = TestCa::new("reload-fails CA");
    let old = ca.leaf(&["site.test"]);
    let origin = origin().await;
    let (chain, key) = old.write(&dir, "site");
    let p = start(config(
        &format!("origin = \"http://{}\"", origin.addr()),
        &tls_listener(&[(chain.clone(), key.clone())], ""),
    ))
    .await;
    // A new certificate whose key was not written: it does not match the old key.
    std::fs::write(&chain, ca.leaf(&["site.test"]).cert_pem).unwrap();
    let reports = p.reload_certificates();
    let failed: Vec<_> = reports.iter().flat_map(|r| r.failures()).collect();
    assert_eq!(failed.len(), 1, "{reports:?}");
    let why = failed[0].error.as_deref().unwrap();
    assert!(why.starts_with("listener[0].certificate[0].key: the key in"), "{why}");
    assert!(why.contains("does not match the certificate"), "{why}");
    let conn = TlsClient::new(p.listener_addr(0), &ca).connect("site.test", Alpn::Http1).await;
    assert!(conn.peer == old.der, "the previous certificate is still served");
}

#[tokio::test]
async fn sessions_are_resumed_with_tls_1_2_and_1_3() {
    let dir = test_dir("resume");
    let ca = TestCa::new("resume CA");
    let leaf = ca.leaf(&["site.test"]);
    let origin = origin().await;
    let p = start(config(
        &format!("origin = \"http://{}\"", origin.addr()),
        &tls_listener(&[leaf.write(&dir, "site")], ""),
    ))
    .await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = TlsClient::resuming(p.listener_addr(0), &ca, version);
        let mut first = client.connect("site.test", Alpn::Http1).await;
        assert!(!first.resumed, "{version:?}: the first connection is a full handshake");
        // TLS 1.3 tickets arrive after the handshake: a response read means they have.
        assert_eq!(first.get("/a").await.status, 200);
        let second = client.connect("site.test", Alpn::Http1).await;
        assert!(second.resumed, "{version:?}: the second connection resumes the session");
    }
}

#[tokio::test]
async fn the_tls_handshake_counts_in_the_header_read_deadline() {
    let dir = test_dir("handshake-deadline");
    let ca = TestCa::new("deadline CA");
    let leaf = ca.leaf(&["site.test"]);
    let origin = origin().await;
    let mut cfg =
        config(&format!("origin = \"http://{}\"", origin.addr()), &tls_listener(&[leaf.write(&dir, "site")], ""));
    cfg.timeouts.header_read = Duration::from_millis(300);
    let p = start(cfg).await;
    let mut silent = tokio::net::TcpStream::connect(p.listener_addr(0)).await.unwrap();
    let mut buf = [0u8; 64];
    let n = within("the server closes a connection that never starts its handshake", silent.read(&mut buf)).await;
    assert_eq!(n.map_err(|e| e.kind()).unwrap_or(0), 0, "closed without an answer");
    assert_eq!(p.stats().no_request.load(Ordering::Relaxed), 1);
    let mut conn = TlsClient::new(p.listener_addr(0), &ca).connect("site.test", Alpn::Http1).await;
    assert_eq!(conn.get("/a").await.status, 200);
}

#[tokio::test]
async fn a_cleartext_listener_can_redirect_to_https() {
    let origin = origin().await;
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\nredirect_https = true\nredirect_port = 8443\n\
                    [[listener]]\naddress = \"127.0.0.1:0\"\nredirect_https = true\n";
    let p = start(config(&format!("origin = \"http://{}\"", origin.addr()), listener)).await;
    let r = Client::new(p.listener_addr(0)).get_with("/p/q?x=1&y", &[("host", "Site.Test:8080")]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://site.test:8443/p/q?x=1&y"));
    let r = Client::new(p.listener_addr(1)).get_with("/", &[("host", "[::1]:80")]).await;
    assert_eq!(r.header("location"), Some("https://[::1]/"));
    assert_eq!(origin.count(), 0, "a redirect never reaches the origin");
    assert_eq!(Client::new(p.addr()).get("/served").await.status, 200, "listen still serves");
}

/// `[origin]` for the HTTPS origin at `addr`, verified as `origin.test` against `ca`, then
/// `more` keys.
fn https_origin(addr: std::net::SocketAddr, ca: &Path, more: &str) -> String {
    format!(
        "[origin]\nurl = \"https://{addr}\"\nserver_name = \"origin.test\"\nca = {:?}\n{more}\n",
        ca.display().to_string()
    )
}

#[tokio::test]
async fn an_https_origin_verified_with_a_configured_ca_serves_over_pooled_connections() {
    let dir = test_dir("origin-ok");
    let ca = TestCa::new("origin CA");
    let plain = origin().await;
    let tls = TlsOrigin::start(plain.addr(), &ca.leaf(&["origin.test"]), None).await;
    let ca_file = ca.write(&dir, "ca.pem");
    let p = start(config("", &https_origin(tls.addr(), &ca_file, "host = \"app.origin.test\""))).await;
    let c = Client::new(p.addr());
    for path in ["/a", "/b", "/c"] {
        let r = c.get_with(path, &[("host", "edge.test")]).await;
        assert_eq!((r.status, r.cache_status()), (200, MISS_STORED), "{path}");
    }
    assert_eq!(plain.last().header("host"), Some("app.origin.test"), "origin.host");
    assert_eq!(plain.last().header("x-forwarded-host"), Some("edge.test"));
    assert_eq!(tls.handshakes(), 1, "one kept-alive TLS connection for three requests");
}

#[tokio::test]
async fn an_origin_with_an_untrusted_certificate_is_a_502_origin_tls_never_stored() {
    let dir = test_dir("origin-untrusted");
    let ca = TestCa::new("trusted CA");
    let other = TestCa::new("other CA");
    let plain = origin().await;
    let tls = TlsOrigin::start(plain.addr(), &other.leaf(&["origin.test"]), None).await;
    let p = start(config("", &https_origin(tls.addr(), &ca.write(&dir, "ca.pem"), ""))).await;
    let c = Client::new(p.addr());
    for n in 1..=2 {
        let r = c.get("/a").await;
        assert_eq!(r.status, 502, "request {n}");
        assert_eq!(r.cache_status(), "edgecache; fwd=uri-miss; detail=origin-tls", "request {n}");
        assert_eq!(tls.accepted(), n, "request {n} tried the origin again");
    }
    assert_eq!(tls.handshakes(), 0);
    assert_eq!(plain.count(), 0);
    assert_eq!(stored_urls(&p), 0);
}

#[tokio::test]
async fn an_origin_that_wants_a_client_certificate_gets_the_configured_one() {
    let dir = test_dir("origin-mtls");
    let ca = TestCa::new("mtls CA");
    let clients = TestCa::new("client CA");
    let client_leaf = clients.leaf(&["edge.client.test"]);
    let (cert, key) = client_leaf.write(&dir, "client");
    let plain = origin().await;
    let tls = TlsOrigin::start(plain.addr(), &ca.leaf(&["origin.test"]), Some(&clients)).await;
    let ca_file = ca.write(&dir, "ca.pem");
    let with_cert =
        format!("client_certificate = {:?}\nclient_key = {:?}", cert.display().to_string(), key.display().to_string());
    let p = start(config("", &https_origin(tls.addr(), &ca_file, &with_cert))).await;
    let r = Client::new(p.addr()).get("/a").await;
    assert_eq!(r.status, 200);
    assert!(tls.client_certs() == vec![client_leaf.der.clone()], "the configured client certificate was presented");

    let without = start(config("", &https_origin(tls.addr(), &ca_file, ""))).await;
    let r = Client::new(without.addr()).get("/b").await;
    assert_eq!((r.status, r.cache_status()), (502, "edgecache; fwd=uri-miss; detail=origin-tls"));
}

// ---------------------------------------------------------------------------------------------
// --check-config
// ---------------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_edgecache");

/// Runs `--check-config` on `text` (written to `dir`): exit code, stdout, stderr.
async fn check_config(dir: &Path, text: &str) -> (Option<i32>, String, String) {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let child = tokio::process::Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = within("edgecache --check-config", child).await.expect("run edgecache");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test]
async fn check_config_accepts_tls_listeners_and_shows_each_certificate() {
    let dir = test_dir("check-ok");
    let ca = TestCa::new("check CA");
    let files = ca.leaf(&["site.test", "www.site.test"]).write(&dir, "site");
    let text = format!(
        "listen = \"127.0.0.1:8080\"\norigin = \"http://127.0.0.1:9000\"\n{}",
        tls_listener(&[files], "").replace("127.0.0.1:0", "127.0.0.1:8443")
    );
    let (code, stdout, stderr) = check_config(&dir, &text).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("listen 127.0.0.1:8080, 127.0.0.1:8443 (tls) origin http://127.0.0.1:9000"), "{stdout}");
    assert!(stdout.contains("certificate listener[0].certificate[0]: site.test, www.site.test (expires "), "{stdout}");
}

#[tokio::test]
async fn check_config_names_the_field_of_each_bad_certificate() {
    let dir = test_dir("check-bad");
    let ca = TestCa::new("check CA");
    let (good_chain, good_key) = ca.leaf(&["good.test"]).write(&dir, "good");
    let (_, other_key) = ca.leaf(&["other.test"]).write(&dir, "other");
    let expired = ca.leaf_with(&["old.test"], rcgen::KeyPair::generate().unwrap(), |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (expired_chain, expired_key) = expired.write(&dir, "expired");
    let missing = dir.join("missing.pem");
    let listener = |chain: &Path, key: &Path| tls_listener(&[(chain.to_path_buf(), key.to_path_buf())], "");
    let text = [
        "origin = \"http://127.0.0.1:9000\"".to_string(),
        listener(&missing, &good_key),
        listener(&good_chain, &other_key),
        listener(&expired_chain, &expired_key),
        listener(&dir, &good_key),
        "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = true\n".into(),
        "[[listener]]\naddress = \"127.0.0.1:1\"\nfallback = \"refuse\"\nredirect_port = 8443\n".into(),
    ]
    .join("\n");
    let (code, stdout, stderr) = check_config(&dir, &text).await;
    assert_eq!(code, Some(2), "{stdout}");
    let problems: Vec<&str> = stderr.lines().filter(|l| l.starts_with("  ")).map(str::trim).collect();
    let expected = [
        ("listener[0].certificate[0].chain: cannot read", "missing file"),
        ("listener[1].certificate[0].key: the key in", "key of another certificate"),
        ("listener[2].certificate[0].chain: the certificate in", "expired"),
        ("listener[3].certificate[0].chain: cannot read", "a directory"),
        ("listener[4].certificate: a TLS listener needs at least one", "no certificate"),
        ("listener[5].fallback: only a TLS listener", "fallback on a cleartext listener"),
        ("listener[5].redirect_port: without redirect_https", "a redirect port without a redirect"),
    ];
    for (start, what) in expected {
        assert_eq!(problems.iter().filter(|l| l.starts_with(start)).count(), 1, "{what}:\n{stderr}");
    }
    assert_eq!(problems.len(), expected.len(), "one line per bad field:\n{stderr}");
    assert!(stderr.contains("expired on Fri, 01 Jan 2021 00:00:00 GMT"), "{stderr}");
}

#[tokio::test]
async fn check_config_names_bad_origin_tls_settings() {
    let dir = test_dir("check-origin");
    let text = format!(
        "[origin]\nurl = \"https://127.0.0.1:9443\"\nca = {:?}\nclient_certificate = \"/nonexistent/c.pem\"\n",
        dir.join("no-ca.pem").display().to_string()
    );
    let (code, _, stderr) = check_config(&dir, &text).await;
    assert_eq!(code, Some(2));
    let problems: Vec<&str> = stderr.lines().filter(|l| l.starts_with("  ")).map(str::trim).collect();
    assert!(problems.iter().any(|l| l.starts_with("origin.client_key: missing")), "{stderr}");
    let (code, _, stderr) =
        check_config(&dir, &text.replace("client_certificate = \"/nonexistent/c.pem\"\n", "")).await;
    assert_eq!(code, Some(2));
    assert!(stderr.lines().any(|l| l.trim().starts_with("origin.ca: cannot read")), "{stderr}");
    let (code, _, stderr) =
        check_config(&dir, "[origin]\nurl = \"http://127.0.0.1:9000\"\nserver_name = \"x.test\"\n").await;
    assert_eq!(code, Some(2));
    assert!(stderr.lines().any(|l| l.trim() == "origin.server_name: only for an https:// origin"), "{stderr}");
}

/// The binary reloads its certificates on SIGHUP and keeps running.
#[tokio::test]
async fn sighup_reloads_the_certificates_of_the_binary() {
    let dir = test_dir("sighup");
    let ca = TestCa::new("sighup CA");
    let old = ca.leaf(&["site.test"]);
    let files = old.write(&dir, "site");
    let origin = origin().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = format!(
        "origin = \"http://{}\"\n[log]\naccess = false\n{}",
        origin.addr(),
        tls_listener(&[files], "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    );
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["--config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn edgecache");
    let mut log = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_line(&mut log, "edgecache started").await;
    let client = TlsClient::new(addr, &ca);
    assert!(client.connect("site.test", Alpn::Http1).await.peer == old.der);
    let new = ca.leaf(&["site.test"]);
    new.write(&dir, "site");
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    wait_for_line(&mut log, "certificates reloaded").await;
    assert!(client.connect("site.test", Alpn::Http1).await.peer == new.der, "after SIGHUP");
    let _ = child.kill().await;
}

async fn wait_for_line(log: &mut (impl tokio::io::AsyncBufRead + Unpin), needle: &str) {
    use tokio::io::AsyncBufReadExt;
    within(&format!("log line {needle:?}"), async {
        let mut line = String::new();
        loop {
            line.clear();
            if log.read_line(&mut line).await.expect("read log") == 0 {
                panic!("the process ended before logging {needle:?}");
            }
            if line.contains(needle) {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_url_purge_removes_the_copies_stored_over_https_and_over_http() {
    let dir = test_dir("purge");
    let ca = TestCa::new("purge CA");
    let origin = origin().await;
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let listeners = tls_listener(&[ca.leaf(&["shop.test"]).write(&dir, "shop")], "");
    let p = start(config(&format!("origin = \"http://{}\"\n{admin}", origin.addr()), &listeners)).await;
    let tls = TlsClient::new(p.listener_addr(0), &ca);
    let plain = Client::new(p.addr());
    let over_https = async || tls.connect("shop.test", Alpn::Http1).await.get("/p").await.cache_status().to_string();
    let over_http = async || plain.get_with("/p", &[("host", "shop.test")]).await.cache_status().to_string();
    assert_eq!(over_https().await, MISS_STORED);
    assert_eq!(over_http().await, MISS_STORED, "stored apart from the https copy");
    let admin = Client::new(p.admin_addr().expect("admin listener"));
    let body = bytes::Bytes::from_static(br#"{"files":["https://shop.test/p"]}"#);
    let r = admin.send("POST", "/purge", &[], body).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON answer");
    assert_eq!((r.status, v["purged"].as_u64()), (200, Some(2)), "one URL, both schemes' copies");
    assert_eq!(over_https().await, MISS_STORED);
    assert_eq!(over_http().await, MISS_STORED);
    assert_eq!(origin.count(), 4);
}
