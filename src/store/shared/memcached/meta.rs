//! The part of memcached's meta protocol the shared tier uses (memcached 1.6, `protocol.txt`,
//! "Meta Commands"): `mg` (get, with the CAS value and the remaining TTL), `ms` (set, add, or
//! compare-and-swap, with a TTL), `md` (delete) and `mn` (no-op, the breaker's probe).
//!
//! One server is a small pool of idle connections: a call takes one (or opens one), sends one
//! command, reads its one answer and puts the connection back. A call abandoned half-way (its
//! time budget ran out) drops its connection, so no answer is ever read by the wrong call. At
//! most [`OPEN_MAX`] connections to a server are open at once; a call beyond them waits for one
//! within its time budget, as a call to a slow server does.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Idle connections kept per server.
const IDLE_MAX: usize = 16;

/// Connections open to one server at once, busy and idle: a burst of misses cannot open more
/// (memcached's own default limit is 1,024 connections, shared by every node of a fleet).
pub const OPEN_MAX: usize = 64;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Connecting, reading or writing failed.
    #[error("memcached i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with an error (`CLIENT_ERROR`, `SERVER_ERROR`, `ERROR`).
    #[error("memcached refused: {0}")]
    Refused(String),
    /// An answer this client does not understand.
    #[error("memcached answer not understood: {0}")]
    Protocol(String),
}

/// A value read back, with its CAS value and remaining TTL in seconds (`None`: no expiry).
#[derive(Debug)]
pub struct Item {
    pub value: Bytes,
    pub cas: u64,
    pub ttl: Option<u64>,
}

/// How `ms` stores.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Unconditionally.
    Set,
    /// Only when the key does not exist.
    Add,
    /// Only when the key's CAS value is still this one.
    Cas(u64),
}

/// What `ms` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored (`HD`).
    Yes,
    /// Not stored: the key exists (add), changed (`EX`) or is gone (`NF`) since it was read.
    Conflict,
    /// Refused for its size (`SERVER_ERROR object too large for cache`, over `-I`) or for want
    /// of memory (`SERVER_ERROR out of memory storing object`, with `-M`): an answer about this
    /// value, not a failing server.
    Refused,
}

/// A connection and its place under [`OPEN_MAX`], given back when it is dropped.
struct Conn {
    io: BufReader<TcpStream>,
    _open: OwnedSemaphorePermit,
}

impl std::ops::Deref for Conn {
    type Target = BufReader<TcpStream>;
    fn deref(&self) -> &Self::Target {
        &self.io
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.io
    }
}

/// One memcached server.
pub struct Server {
    /// `host:port`, as configured.
    pub addr: String,
    idle: Mutex<Vec<Conn>>,
    open: Arc<Semaphore>,
}

impl Server {
    pub fn new(addr: String) -> Self {
        Server { addr, idle: Mutex::new(Vec::new()), open: Arc::new(Semaphore::new(OPEN_MAX)) }
    }

    fn idle(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// A new connection, once fewer than [`OPEN_MAX`] are open.
    async fn connect(&self) -> Result<Conn, MetaError> {
        let open = self.open.clone().acquire_owned().await.expect("the semaphore is never closed");
        let s = TcpStream::connect(&self.addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn { io: BufReader::new(s), _open: open })
    }

    fn give_back(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_MAX {
            idle.push(c);
        }
    }

    /// Connections open to this server now, busy and idle.
    #[cfg(test)]
    fn open_connections(&self) -> usize {
        OPEN_MAX - self.open.available_permits()
    }

    /// Sends `head` (and `data`, for `ms`), reads the answer's first line; `read` reads the rest.
    async fn call<T>(
        &self,
        head: &[u8],
        data: Option<&[u8]>,
        read: impl AsyncFnOnce(&mut Conn, &str) -> Result<T, MetaError>,
    ) -> Result<T, MetaError> {
        let mut out = Vec::with_capacity(head.len() + data.map_or(0, |d| d.len() + 2));
        out.extend_from_slice(head);
        if let Some(d) = data {
            out.extend_from_slice(d);
            out.extend_from_slice(b"\r\n");
        }
        // An idle connection may have been closed by the server meanwhile (a restart, its idle
        // timeout): when it fails before any answer, the command is sent once more on a new one.
        let (mut c, line) = match self.idle() {
            Some(mut c) => match send(&mut c, &out).await {
                Ok(line) => (c, line),
                Err(MetaError::Io(_)) => {
                    let mut c = self.connect().await?;
                    let line = send(&mut c, &out).await?;
                    (c, line)
                }
                Err(e) => return Err(e),
            },
            None => {
                let mut c = self.connect().await?;
                let line = send(&mut c, &out).await?;
                (c, line)
            }
        };
        if line.starts_with("CLIENT_ERROR") || line.starts_with("SERVER_ERROR") || line == "ERROR" {
            // The connection stays usable after an error answer.
            self.give_back(c);
            return Err(MetaError::Refused(line));
        }
        let out = read(&mut c, &line).await?;
        self.give_back(c);
        Ok(out)
    }

    /// `mg KEY v c t [T<touch>]`: the value, its CAS value and remaining TTL; `touch` sets a new
    /// TTL at the same time. `None` when the key does not exist.
    pub async fn get(&self, key: &str, touch: Option<u64>) -> Result<Option<Item>, MetaError> {
        let head = match touch {
            Some(t) => format!("mg {key} v c t T{t}\r\n"),
            None => format!("mg {key} v c t\r\n"),
        };
        self.call(head.as_bytes(), None, async |c: &mut Conn, line: &str| {
            if line == "EN" {
                return Ok(None);
            }
            let mut parts = line.split(' ');
            if parts.next() != Some("VA") {
                return Err(MetaError::Protocol(line.to_string()));
            }
            let size: usize = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad(line))?;
            let (mut cas, mut ttl) = (0, None);
            for flag in parts {
                match flag.split_at(1) {
                    ("c", v) => cas = v.parse().map_err(|_| bad(line))?,
                    ("t", "-1") => ttl = None,
                    ("t", v) => ttl = Some(v.parse().map_err(|_| bad(line))?),
                    _ => {}
                }
            }
            let mut buf = BytesMut::zeroed(size + 2);
            c.read_exact(&mut buf).await?;
            if &buf[size..] != b"\r\n" {
                return Err(MetaError::Protocol("value not followed by CRLF".into()));
            }
            buf.truncate(size);
            Ok(Some(Item { value: buf.freeze(), cas, ttl }))
        })
        .await
    }

    /// `ms KEY SIZE T<ttl> [MS|ME|C<cas>]`: stores `value` for `ttl` seconds.
    pub async fn set(&self, key: &str, value: &[u8], ttl: u64, mode: Mode) -> Result<Stored, MetaError> {
        let mode = match mode {
            Mode::Set => "MS".to_string(),
            Mode::Add => "ME".to_string(),
            Mode::Cas(cas) => format!("C{cas}"),
        };
        let head = format!("ms {key} {} T{ttl} {mode}\r\n", value.len());
        let stored = self
            .call(head.as_bytes(), Some(value), async |_: &mut Conn, line: &str| match line {
                "HD" => Ok(Stored::Yes),
                "NS" | "EX" | "NF" => Ok(Stored::Conflict),
                _ => Err(bad(line)),
            })
            .await;
        match stored {
            Err(MetaError::Refused(line)) if line.contains("too large") || line.contains("out of memory") => {
                Ok(Stored::Refused)
            }
            other => other,
        }
    }

    /// `md KEY [C<cas>]`: deletes the key (only at that CAS value, when given). True when it was
    /// deleted or did not exist; false when it changed since it was read.
    pub async fn delete(&self, key: &str, cas: Option<u64>) -> Result<bool, MetaError> {
        let head = match cas {
            Some(c) => format!("md {key} C{c}\r\n"),
            None => format!("md {key}\r\n"),
        };
        self.call(head.as_bytes(), None, async |_: &mut Conn, line: &str| match line {
            "HD" | "NF" => Ok(true),
            "EX" => Ok(false),
            _ => Err(bad(line)),
        })
        .await
    }

    /// `mn`: does the server answer?
    pub async fn noop(&self) -> Result<(), MetaError> {
        self.call(b"mn\r\n", None, async |_: &mut Conn, line: &str| match line {
            "MN" => Ok(()),
            _ => Err(bad(line)),
        })
        .await
    }
}

fn bad(line: &str) -> MetaError {
    MetaError::Protocol(line.to_string())
}

/// Writes `out`, reads the answer's first line.
async fn send(c: &mut Conn, out: &[u8]) -> Result<String, MetaError> {
    c.get_mut().write_all(out).await?;
    read_line(c).await
}

/// One answer line, without its CRLF.
async fn read_line(c: &mut Conn) -> Result<String, MetaError> {
    let mut line = Vec::with_capacity(64);
    let n = c.read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(MetaError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(MetaError::Protocol("answer line not ended by CRLF".into()));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| MetaError::Protocol("answer line not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A server that accepts connections and never answers (a stalled memcached): calls past
    /// [`OPEN_MAX`] wait for a connection instead of opening more.
    #[tokio::test]
    async fn a_stalled_server_never_gets_more_than_open_max_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        });
        let server = Arc::new(Server::new(addr.to_string()));
        let calls: Vec<_> = (0..OPEN_MAX + 36)
            .map(|i| {
                let server = server.clone();
                tokio::spawn(async move { server.get(&format!("k{i}"), None).await })
            })
            .collect();
        // Bounded: every call has connected or is waiting for a connection within 10 s.
        tokio::time::timeout(Duration::from_secs(10), async {
            while accepted.load(Ordering::SeqCst) < OPEN_MAX {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("OPEN_MAX connections made");
        assert_eq!(server.open_connections(), OPEN_MAX);
        // Give the calls past the limit every chance to run (a loopback connect completes within
        // a few polls): they wait on the semaphore, and none of them connects.
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), OPEN_MAX);
        for c in &calls {
            c.abort();
        }
        for c in calls {
            let _ = c.await;
        }
        assert_eq!(server.open_connections(), 0, "an abandoned call gives its connection back");
        holder.abort();
    }
}
