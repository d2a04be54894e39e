//! Restart without a dropped request, as Envoy and Pingora hand over: on SIGUSR2 the running
//! process starts its binary again (the same path, so an upgraded file is the new version) with
//! the same arguments and its listening sockets (`EDGECACHE_LISTEN_FDS`), waits until the new
//! process says it serves (SIGUSR1 to the process named by `EDGECACHE_HANDOVER_FROM`), then stops
//! accepting and drains its connections. Both processes accept from the one socket meanwhile,
//! so a connection waiting in its queue is taken by one or the other, never refused. If the new
//! process exits or stays silent for [`READY_WITHIN`], the old one goes on serving.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::time::Duration;

use rustix::io::{fcntl_setfd, FdFlags};
use rustix::process::{kill_process, Pid, Signal};
use tokio::signal::unix::{signal, SignalKind};

use crate::listenfd::HANDED_OVER;

/// The variable naming the process to tell once the new one serves.
const FROM: &str = "EDGECACHE_HANDOVER_FROM";

/// How long the new process has to start serving.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// How long a process that replaces another waits for its shared tier before it says it serves:
/// its first misses then find the objects in Redis instead of asking the origin.
pub const SHARED_TIER_WITHIN: Duration = Duration::from_secs(2);

/// True when this process replaces another (started by [`on_sigusr2`]).
pub fn replacing() -> bool {
    std::env::var_os(FROM).is_some()
}

/// Tells the process this one replaces, if any, that this one serves now. Called once the
/// listeners are in place; the variable is removed so no later process sees it.
pub fn announce_serving() {
    let Ok(from) = std::env::var(FROM) else { return };
    std::env::remove_var(FROM);
    match from.parse::<i32>().ok().and_then(Pid::from_raw) {
        Some(pid) => {
            if let Err(e) = kill_process(pid, Signal::USR1) {
                tracing::warn!(error = %e, pid = %from, "cannot tell the replaced process that this one serves");
            } else {
                tracing::info!(pid = %from, "serving; the replaced process drains");
            }
        }
        None => tracing::warn!(value = from, "{FROM} is not a process id"),
    }
}

/// Waits for SIGUSR2 and hands `sockets` (name, listener) to a new process; returns once one
/// serves, so that the caller drains and exits. A hand-over that fails is logged, and the next
/// SIGUSR2 tries again.
pub async fn on_sigusr2(sockets: Vec<(String, TcpListener)>) {
    let (Ok(mut usr2), Ok(mut usr1)) = (signal(SignalKind::user_defined2()), signal(SignalKind::user_defined1()))
    else {
        tracing::warn!("cannot listen for SIGUSR2: no restart by hand-over");
        return std::future::pending().await;
    };
    while usr2.recv().await.is_some() {
        tracing::info!("SIGUSR2: starting a new process on the listening sockets");
        let mut child = match spawn(&sockets) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the new process; still serving");
                continue;
            }
        };
        let pid = child.id();
        let deadline = tokio::time::sleep(READY_WITHIN);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    tracing::info!(pid, "the new process serves; draining");
                    return;
                }
                _ = tick.tick() => {
                    if let Ok(Some(status)) = child.try_wait() {
                        tracing::error!(pid, %status, "the new process exited before serving; still serving");
                        break;
                    }
                }
                _ = &mut deadline => {
                    tracing::error!(pid, "the new process did not serve within {READY_WITHIN:?}; stopping it, still serving");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}

/// Starts this binary again with the same arguments and `sockets` inherited.
fn spawn(sockets: &[(String, TcpListener)]) -> io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut names = Vec::new();
    for (name, l) in sockets {
        // Inherited across exec only without close-on-exec; set again once the child has it.
        fcntl_setfd(l, FdFlags::empty())?;
        names.push(format!("{name}:{}", l.as_raw_fd()));
    }
    let child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(HANDED_OVER, names.join(","))
        .env(FROM, std::process::id().to_string())
        .spawn();
    for (_, l) in sockets {
        fcntl_setfd(l, FdFlags::CLOEXEC)?;
    }
    child
}
