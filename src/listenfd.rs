//! Listening sockets this process was handed instead of binding its own: by systemd's socket
//! activation (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), or by the edgecache process it
//! replaces (`EDGECACHE_LISTEN_FDS=proxy:5`, see `handover.rs`). A socket handed over keeps its
//! queue of connections not yet accepted: none is refused while processes change.

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The variable naming the sockets a replaced process hands over: `name:fd[,name:fd]`.
pub const HANDED_OVER: &str = "EDGECACHE_LISTEN_FDS";

/// The sockets handed to this process, by name: `proxy` for `listen`, `listener.N` for the N-th
/// `[[listener]]`, `admin` for the admin listener (systemd's unnamed ones in order: `proxy`, then
/// `admin`).
#[derive(Default)]
pub struct Inherited(HashMap<String, TcpListener>);

impl Inherited {
    /// Takes the socket named `name`, when one was handed over.
    pub fn take(&mut self, name: &str) -> Option<TcpListener> {
        self.0.remove(name)
    }

    /// The names handed over and not taken.
    pub fn left(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Reads the environment once, at start-up before anything else opens a file, and removes the
/// variables so that no process started later inherits them.
pub fn inherited() -> io::Result<Inherited> {
    let mut named: Vec<(String, RawFd)> = Vec::new();
    if let Ok(list) = std::env::var(HANDED_OVER) {
        for item in list.split(',').filter(|s| !s.is_empty()) {
            let (name, fd) = item.split_once(':').ok_or_else(|| bad(&format!("{HANDED_OVER}: {item:?}")))?;
            named.push((name.to_string(), fd.parse().map_err(|_| bad(&format!("{HANDED_OVER}: {item:?}")))?));
        }
    } else if let (Ok(pid), Ok(n)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) {
        // systemd (sd_listen_fds(3)): the sockets are 3, 4 ... for the process LISTEN_PID.
        if pid.parse::<u32>().ok() == Some(std::process::id()) {
            let n: RawFd = n.parse().map_err(|_| bad("LISTEN_FDS"))?;
            let names: Vec<String> =
                std::env::var("LISTEN_FDNAMES").map(|s| s.split(':').map(str::to_string).collect()).unwrap_or_default();
            for i in 0..n {
                let name = names.get(i as usize).filter(|n| *n != "unknown" && !n.is_empty()).cloned();
                let name = name.unwrap_or_else(|| ["proxy", "admin"].get(i as usize).unwrap_or(&"extra").to_string());
                named.push((name, 3 + i));
            }
        }
    }
    for var in [HANDED_OVER, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let mut out = Inherited::default();
    for (name, fd) in named {
        // SAFETY: `fd` was named by the process that started this one (systemd, or the
        // edgecache process handing over) as a listening socket it left open for us; it is
        // taken once, here, before this process opens any file, so nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = TcpListener::from(owned);
        // Not a bound socket after all: refuse rather than serve on something else.
        listener.local_addr().map_err(|e| bad(&format!("descriptor {fd} ({name}) is not a socket: {e}")))?;
        listener.set_nonblocking(true)?;
        out.0.insert(name, listener);
    }
    Ok(out)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("malformed inherited sockets: {what}"))
}
