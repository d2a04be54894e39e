//! Restart without a dropped request, on the built binary: SIGUSR2 starts a new process on the
//! same listening socket, the old one drains and exits, and clients asking without pause see
//! no failure.

pub mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use rustix::io::{fcntl_setfd, FdFlags};
use rustix::process::{kill_process, test_kill_process, Pid, Signal};

const KEYS: usize = 50;

/// The pid in an "edgecache started" log line.
fn started_pid(line: &str) -> Option<u32> {
    if !line.contains("edgecache started") {
        return None;
    }
    line.split_whitespace().find_map(|w| w.strip_prefix("pid=")).and_then(|p| p.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_load_hands_the_socket_over_without_a_failed_request() {
    let clock = clock();
    let origin = Origin::start(&clock, |req, _| Reply::ok(req.path().to_string()).cc("max-age=3600").no_date()).await;
    let config = std::env::temp_dir().join(format!("edgecache-restart-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\norigin = \"http://{}\"\n[log]\naccess = false\n[timeouts]\nshutdown = \"5s\"\n",
            origin.addr()
        ),
    )
    .unwrap();
    // The test binds the socket (port 0) and hands it to the binary as a replaced process would.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    fcntl_setfd(&socket, FdFlags::empty()).unwrap();
    let mut old = Command::new(env!("CARGO_BIN_EXE_edgecache"))
        .arg("--config")
        .arg(&config)
        .env("EDGECACHE_LISTEN_FDS", format!("proxy:{}", socket.as_raw_fd()))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the binary");
    drop(socket);
    // Both processes write to this pipe: each says its pid when it starts.
    let (pids_tx, mut pids) = tokio::sync::mpsc::unbounded_channel();
    let out = old.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(pid) = started_pid(&line) {
                let _ = pids_tx.send(pid);
            }
        }
    });
    assert_eq!(within("the first process starts", pids.recv()).await, Some(old.id()));

    let c = Arc::new(Client::new(addr));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (c, stop, done) = (c.clone(), stop.clone(), done.clone());
        load.spawn(async move {
            let mut failures = Vec::new();
            let mut n = worker;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/k/{}", n % KEYS);
                match c.try_send("GET", &path, &[], Default::default()).await {
                    Ok(r) if r.status == 200 && r.text() == path => {}
                    Ok(r) => failures.push(format!("{path}: {} {}", r.status, r.cache_status())),
                    Err(e) => failures.push(format!("{path}: {e}")),
                }
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        });
    }
    eventually("the clients are under way", async || done.load(Ordering::Relaxed) >= 500).await;

    let old_pid = Pid::from_raw(old.id() as i32).unwrap();
    kill_process(old_pid, Signal::USR2).expect("SIGUSR2");
    let new = within("the new process starts", pids.recv()).await.expect("a second process");
    assert_ne!(new, old.id());
    eventually("the old process drained and exited", async || old.try_wait().unwrap().is_some()).await;
    assert!(old.wait().unwrap().success());
    let after = done.load(Ordering::Relaxed);
    eventually("the clients went on with the new process", async || done.load(Ordering::Relaxed) >= after + 500).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    while let Some(r) = load.join_next().await {
        failures.extend(r.expect("load task"));
    }
    let new_pid = Pid::from_raw(new as i32).unwrap();
    kill_process(new_pid, Signal::TERM).expect("SIGTERM");
    eventually("the new process exited", async || test_kill_process(new_pid).is_err()).await;
    let _ = std::fs::remove_file(&config);

    assert_eq!(failures, Vec::<String>::new());
    // Without a shared tier, the new process starts empty: each key costs the origin one more
    // request, and no more (its misses are coalesced, then stored).
    for k in 0..KEYS {
        assert_eq!(origin.count_path(&format!("/k/{k}")), 2, "/k/{k}");
    }
}
