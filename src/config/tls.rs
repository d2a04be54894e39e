//! The TLS parts of the file: `[[listener]]` tables (cleartext or TLS, with their certificates)
//! and the `[origin]` table (an `https://` origin's CA, SNI name and client certificate, and the
//! `Host` sent). Certificate files are read here, so that `--check-config` reports a missing or
//! unreadable file, a key that does not match its certificate, or an expired certificate under
//! the field that names it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use toml::{Table, Value};

use super::walk::Walker;
use super::{CertificateConfig, Config, Fallback, ListenerConfig, ListenerTls, Origin, OriginTls};
use crate::tls::{OriginField, PemPair};

/// `listener = [...]` (`[[listener]]` tables): every table read into `cfg.listeners`. With them,
/// `listen` is served only when the file sets it (`listen_set`).
pub(super) fn listeners(w: &mut Walker, v: Value, listen_set: bool, cfg: &mut Config) {
    cfg.listen_enabled = listen_set;
    let Value::Array(tables) = v else {
        w.bad("listener", format!("expected [[listener]] tables, found {}", v.type_str()));
        return;
    };
    let now = SystemTime::now();
    for (i, t) in tables.into_iter().enumerate() {
        let field = format!("listener[{i}]");
        match t {
            Value::Table(t) => {
                if let Some(l) = listener(w, t, field, now) {
                    cfg.listeners.push(l);
                }
            }
            other => w.bad(&field, format!("expected a table, found {}", other.type_str())),
        }
    }
    let mut seen: Vec<SocketAddr> = if listen_set { vec![cfg.listen] } else { Vec::new() };
    for l in &cfg.listeners {
        if l.address.port() != 0 && seen.contains(&l.address) {
            w.bad(&format!("{}.address", l.field), format!("{} is used by another listener", l.address));
        }
        seen.push(l.address);
    }
    if !listen_set && cfg.listeners.is_empty() && w.problems.is_empty() {
        w.bad("listener", "no listener: set listen or add a [[listener]] table".into());
    }
}

/// One `[[listener]]` table.
fn listener(w: &mut Walker, mut t: Table, field: String, now: SystemTime) -> Option<ListenerConfig> {
    let before = w.problems.len();
    let mut address = None;
    let mut tls = false;
    let mut redirect = false;
    let mut redirect_port = 443u16;
    let mut fallback = Fallback::Default;
    let mut fallback_set = false;
    let mut redirect_port_set = false;
    w.take(&mut t, &field, "address", |w, p, v| w.socket_addr(p, v).map(|a| address = Some(a)));
    w.take(&mut t, &field, "tls", |w, p, v| w.boolean(p, v).map(|b| tls = b));
    w.take(&mut t, &field, "redirect_https", |w, p, v| w.boolean(p, v).map(|b| redirect = b));
    w.take(&mut t, &field, "redirect_port", |w, p, v| {
        redirect_port_set = true;
        w.integer(p, v, 1, 65535).map(|n| redirect_port = n as u16)
    });
    w.take(&mut t, &field, "fallback", |w, p, v| match v.as_str() {
        Some("default") => {
            fallback = Fallback::Default;
            fallback_set = true;
            Some(())
        }
        Some("refuse") => {
            fallback = Fallback::Refuse;
            fallback_set = true;
            Some(())
        }
        _ => {
            w.bad(p, "expected \"default\" or \"refuse\"".into());
            None
        }
    });
    let certificates = match t.remove("certificate") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let cfield = format!("{field}.certificate[{i}]");
                match c {
                    Value::Table(c) => certificate(w, c, cfield, now),
                    other => {
                        w.bad(&cfield, format!("expected a [[{field}.certificate]] table, found {}", other.type_str()));
                        None
                    }
                }
            })
            .collect(),
        Some(other) => {
            w.bad(
                &format!("{field}.certificate"),
                format!("expected [[listener.certificate]] tables, found {}", other.type_str()),
            );
            Vec::new()
        }
    };
    w.unknown(&t, &field);
    let Some(address) = address else {
        w.bad(&format!("{field}.address"), "missing: every listener needs an address".into());
        return None;
    };
    if tls {
        if certificates.is_empty() && w.problems.len() == before {
            w.bad(&format!("{field}.certificate"), "a TLS listener needs at least one [[listener.certificate]]".into());
        }
        if redirect {
            w.bad(&format!("{field}.redirect_https"), "only a cleartext listener redirects to HTTPS".into());
        }
        if certificates.iter().filter(|c| c.default).count() > 1 {
            w.bad(&format!("{field}.certificate"), "more than one certificate has default = true".into());
        }
    } else {
        if !certificates.is_empty() {
            w.bad(&format!("{field}.certificate"), "certificates given on a cleartext listener; set tls = true".into());
        }
        if fallback_set {
            w.bad(&format!("{field}.fallback"), "only a TLS listener chooses a certificate; set tls = true".into());
        }
    }
    if redirect_port_set && !redirect {
        w.bad(&format!("{field}.redirect_port"), "without redirect_https = true there is no redirect".into());
    }
    if w.problems.len() != before {
        return None;
    }
    let tls = tls.then_some(ListenerTls { certificates, fallback });
    Some(ListenerConfig { address, tls, redirect_https: redirect.then_some(redirect_port), field })
}

/// One `[[listener.certificate]]` table; its files read and checked.
fn certificate(w: &mut Walker, mut t: Table, field: String, now: SystemTime) -> Option<CertificateConfig> {
    let mut chain = None;
    let mut key = None;
    let mut default = false;
    w.take(&mut t, &field, "chain", |w, p, v| path(w, p, v).map(|s| chain = Some(s)));
    w.take(&mut t, &field, "key", |w, p, v| path(w, p, v).map(|s| key = Some(s)));
    w.take(&mut t, &field, "default", |w, p, v| w.boolean(p, v).map(|b| default = b));
    w.unknown(&t, &field);
    for (name, v) in [("chain", &chain), ("key", &key)] {
        if v.is_none() {
            w.bad(&format!("{field}.{name}"), "missing: a certificate needs a chain and a key (PEM files)".into());
        }
    }
    let files = PemPair { chain: chain?, key: key? };
    if let Err(e) = files.load(now) {
        w.bad(&format!("{field}.{}", e.part.key_name()), e.message);
        return None;
    }
    Some(CertificateConfig { files, default, field })
}

/// `[origin]`: `url` and the settings an `https://` origin may need.
pub(super) fn origin_table(w: &mut Walker, mut t: Table) -> Option<Origin> {
    let before = w.problems.len();
    let mut origin = None;
    let mut server_name = None;
    let mut host = None;
    let mut ca = None;
    let mut client_certificate = None;
    let mut client_key = None;
    w.take(&mut t, "origin", "url", |w, p, v| match v.as_str().map(Origin::parse_url) {
        Some(Ok(o)) => {
            origin = Some(o);
            Some(())
        }
        Some(Err(e)) => {
            w.bad(p, e);
            None
        }
        None => {
            w.bad(p, format!("expected a URL string, found {}", v.type_str()));
            None
        }
    });
    w.take(&mut t, "origin", "server_name", |w, p, v| match v.as_str().map(|s| (s, Origin::server_name(s))) {
        Some((_, Ok(n))) => {
            server_name = Some(n);
            Some(())
        }
        Some((s, Err(_))) => {
            w.bad(p, format!("expected a DNS name or an IP address, found {s:?}"));
            None
        }
        None => {
            w.bad(p, format!("expected a string, found {}", v.type_str()));
            None
        }
    });
    w.take(&mut t, "origin", "host", |w, p, v| match v.as_str().map(|s| (s, s.parse::<http::uri::Authority>())) {
        Some((s, Ok(a))) if a.as_str() == s && !s.contains('@') => {
            host = Some(http::HeaderValue::from_str(s).expect("an authority is a valid field value"));
            Some(())
        }
        _ => {
            w.bad(p, "expected a host name, with a port if needed (\"app.example.com\")".into());
            None
        }
    });
    w.take(&mut t, "origin", "ca", |w, p, v| path(w, p, v).map(|s| ca = Some(s)));
    w.take(&mut t, "origin", "client_certificate", |w, p, v| path(w, p, v).map(|s| client_certificate = Some(s)));
    w.take(&mut t, "origin", "client_key", |w, p, v| path(w, p, v).map(|s| client_key = Some(s)));
    w.unknown(&t, "origin");
    let Some(mut origin) = origin else {
        if w.problems.len() == before {
            w.bad("origin.url", "missing: [origin] needs a url".into());
        }
        return None;
    };
    origin.host = host;
    let client = match (client_certificate, client_key) {
        (Some(chain), Some(key)) => Some(PemPair { chain, key }),
        (None, None) => None,
        (Some(_), None) => {
            w.bad("origin.client_key", "missing: client_certificate needs its client_key".into());
            None
        }
        (None, Some(_)) => {
            w.bad("origin.client_certificate", "missing: client_key needs its client_certificate".into());
            None
        }
    };
    if !origin.is_https() {
        for (set, name) in
            [(server_name.is_some(), "server_name"), (ca.is_some(), "ca"), (client.is_some(), "client_certificate")]
        {
            if set {
                w.bad(&format!("origin.{name}"), "only for an https:// origin".into());
            }
        }
    } else if w.problems.len() == before {
        match OriginTls::new(&origin, server_name, ca, client) {
            Ok(tls) => origin.tls = Some(tls),
            Err((field, e)) => {
                let name = match field {
                    OriginField::Ca => "ca",
                    OriginField::ClientCertificate => "client_certificate",
                    OriginField::ClientKey => "client_key",
                };
                w.bad(&format!("origin.{name}"), e);
            }
        }
    }
    (w.problems.len() == before).then_some(origin)
}

/// A file path: a non-empty string.
fn path(w: &mut Walker, p: &str, v: &Value) -> Option<PathBuf> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Some(PathBuf::from(s)),
        _ => {
            w.bad(p, format!("expected a file path, found {v}"));
            None
        }
    }
}
