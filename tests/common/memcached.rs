//! Memcached for the shared-tier tests: [`MemcachedServer`], a real `memcached` child process on
//! a free loopback port, killed on drop, and the few meta commands the tests read it with.
//!
//! A test that needs memcached never skips silently: without `memcached` it panics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgecache::store::CacheKey;

/// Where `memcached` is: `PATH`, then `/usr/bin`, `/usr/local/bin`.
fn memcached_path() -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("memcached"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("memcached not found: install it (apt-get install memcached) or run scripts/test.sh"))
}

fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// A `memcached` child process on `127.0.0.1`, killed on drop.
pub struct MemcachedServer {
    port: u16,
    child: Option<Child>,
}

impl MemcachedServer {
    /// Starts a server on a free port and waits (bounded) until this child answers there.
    pub fn start() -> MemcachedServer {
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn(port);
            if answers(port, &mut child) {
                return MemcachedServer { port, child: Some(child) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("memcached did not start answering (5 ports tried)")
    }

    /// `127.0.0.1:PORT`, as `memcached.servers` lists it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server at once (SIGKILL); its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills it if running, and starts an empty server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let mut child = spawn(self.port);
        assert!(answers(self.port, &mut child), "memcached did not come back on port {}", self.port);
        self.child = Some(child);
    }

    /// One meta command and its answer's first line (and the value, for `VA`).
    fn call(&self, command: &[u8]) -> (String, Vec<u8>) {
        let s = StdStream::connect(("127.0.0.1", self.port)).expect("connect to memcached");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (&s).write_all(command).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end().to_string();
        let mut value = Vec::new();
        if let Some(size) = line.strip_prefix("VA ").and_then(|rest| rest.split(' ').next()) {
            value.resize(size.parse::<usize>().unwrap() + 2, 0);
            r.read_exact(&mut value).unwrap();
            value.truncate(value.len() - 2);
        }
        (line, value)
    }

    /// The value of `key`, when it exists.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let (line, value) = self.call(format!("mg {key} v\r\n").as_bytes());
        line.starts_with("VA").then_some(value)
    }

    /// The remaining TTL of `key` in seconds (`None`: no such key; -1: no expiry).
    pub fn ttl(&self, key: &str) -> Option<i64> {
        let (line, _) = self.call(format!("mg {key} t\r\n").as_bytes());
        line.strip_prefix("HD t").map(|t| t.parse().unwrap())
    }

    /// Stores `value` under `key` for an hour.
    pub fn set(&self, key: &str, value: &[u8]) {
        let mut cmd = format!("ms {key} {} T3600\r\n", value.len()).into_bytes();
        cmd.extend_from_slice(value);
        cmd.extend_from_slice(b"\r\n");
        assert_eq!(self.call(&cmd).0, "HD");
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(port: u16) -> Child {
    Command::new(memcached_path())
        .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "64", "-t", "1", "-u", "root"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start memcached")
}

/// Waits (at most 2 s) until `child` answers a no-op on `port`; false when it exited first (the
/// port was taken) or never answered.
fn answers(port: u16, child: &mut Child) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = StdStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 4];
            if s.write_all(b"mn\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"MN\r\n" {
                // Still ours: a server another process started there would leave the child exited.
                return matches!(child.try_wait(), Ok(None));
            }
        }
        // Polling a process that announces nothing: a short pause between connection attempts.
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The memcached key of the URL `http://{host}{path}` (default prefix).
pub fn key_name(host: &str, path: &str) -> String {
    format!("ec:v1:{}", CacheKey::new("http", host, path))
}
