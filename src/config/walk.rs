//! Reading a TOML table key by key: typed values, every problem recorded with its field's path.

use std::net::SocketAddr;
use std::time::Duration;

use toml::{Table, Value};

/// The problems found so far, as `(path, message)`.
pub(super) struct Walker {
    pub(super) problems: Vec<(String, String)>,
}

impl Walker {
    pub(super) fn bad(&mut self, path: &str, msg: String) {
        self.problems.push((path.to_string(), msg));
    }

    pub(super) fn table(&mut self, root: &mut Table, name: &str) -> Option<Table> {
        match root.remove(name)? {
            Value::Table(t) => Some(t),
            other => {
                self.bad(name, format!("expected a table ([{name}]), found {}", other.type_str()));
                None
            }
        }
    }

    pub(super) fn take(
        &mut self,
        t: &mut Table,
        section: &str,
        key: &str,
        f: impl FnOnce(&mut Walker, &str, &Value) -> Option<()>,
    ) {
        if let Some(v) = t.remove(key) {
            let path = format!("{section}.{key}");
            let _ = f(self, &path, &v);
        }
    }

    pub(super) fn unknown(&mut self, t: &Table, section: &str) {
        for key in t.keys() {
            let path = if section.is_empty() { key.clone() } else { format!("{section}.{key}") };
            self.bad(&path, "unknown key".into());
        }
    }

    pub(super) fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Boolean(b) => Some(*b),
            other => {
                self.bad(path, format!("expected true or false, found {}", other.type_str()));
                None
            }
        }
    }

    pub(super) fn integer(&mut self, path: &str, v: &Value, min: i64, max: i64) -> Option<i64> {
        match v {
            Value::Integer(n) if (min..=max).contains(n) => Some(*n),
            Value::Integer(n) => {
                self.bad(path, format!("{n} is out of range {min}..={max}"));
                None
            }
            other => {
                self.bad(path, format!("expected an integer, found {}", other.type_str()));
                None
            }
        }
    }

    pub(super) fn socket_addr(&mut self, path: &str, v: &Value) -> Option<SocketAddr> {
        match v.as_str().map(|s| s.parse::<SocketAddr>()) {
            Some(Ok(a)) => Some(a),
            Some(Err(_)) => {
                self.bad(path, format!("expected an address like \"127.0.0.1:8080\", found {v}"));
                None
            }
            None => {
                self.bad(path, format!("expected an address string, found {}", v.type_str()));
                None
            }
        }
    }

    pub(super) fn size(&mut self, path: &str, v: &Value) -> Option<u64> {
        let r = match v {
            Value::Integer(n) if *n >= 0 => Ok(*n as u64),
            Value::Integer(_) => Err("must not be negative".to_string()),
            Value::String(s) => parse_size(s),
            other => Err(format!("expected a size like \"256MiB\", found {}", other.type_str())),
        };
        r.map_err(|e| self.bad(path, e)).ok()
    }

    pub(super) fn duration(&mut self, path: &str, v: &Value) -> Option<Duration> {
        let r = match v {
            Value::String(s) => parse_duration(s),
            other => Err(format!("expected a duration like \"5s\" or \"500ms\", found {}", other.type_str())),
        };
        r.map_err(|e| self.bad(path, e)).ok()
    }
}

/// Parses a byte size: `1048576`, `512KiB`, `256MiB`, `1GiB`, `10MB` (decimal units too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("expected a size like \"256MiB\", found {s:?}");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size too large: {s:?}"))
}

/// Parses a duration: `500ms`, `5s`, `2m`, `1h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("expected a duration like \"5s\" or \"500ms\", found {s:?}");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| format!("duration too large: {s:?}"))
}
