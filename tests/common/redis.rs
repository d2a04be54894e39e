//! Redis for the shared-tier tests: [`RedisServer`] (a real `redis-server` child process on a
//! free port, killed on drop), [`FakeRedis`] (accepts connections, never answers) and
//! [`RedisLink`] (a TCP relay in front of a Redis that can be cut and restored, to disconnect
//! one node while Redis stays up).
//!
//! A test that needs Redis never skips silently: without `redis-server` it panics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgecache::store::CacheKey;
use redis::aio::MultiplexedConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use super::{eventually, within};

/// Where `redis-server` is: `PATH`, then `/usr/bin`, `/usr/local/bin`.
fn redis_server_path() -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join("redis-server")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("redis-server not found: install it (apt-get install redis-server) or run scripts/test.sh")
    })
}

/// A free port on loopback: bound, read, released.
fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// The pid of the `redis-server` answering on `port` (from `INFO server`), if one answers;
/// `password` is sent first when the server requires one.
fn pid_on(port: u16, password: Option<&str>) -> Option<u32> {
    let mut s = StdStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    if let Some(pw) = password {
        s.write_all(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len()).as_bytes()).ok()?;
    }
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() < 64 * 1024 {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(rest) = text.split("process_id:").nth(1) {
            if let Some((pid, _)) = rest.split_once("\r\n") {
                return pid.trim().parse().ok();
            }
        }
    }
    None
}

/// Starts `redis-server` with `args` on `port` (a free one when `None`, with fresh tries) and
/// waits (bounded) until the server answering there is this child: its `INFO` names the child's
/// pid. A port found free can be taken before the child binds it, by another test's server or as
/// the source port of an outgoing connection; the child then exits, or a server that is not the
/// child answers, and a fresh port is tried.
fn spawn_redis(port: Option<u16>, dir: &dyn Fn(u16) -> PathBuf, args: &[&str]) -> (u16, Child) {
    let tries = if port.is_some() { 1 } else { 5 };
    for _ in 0..tries {
        let port = port.unwrap_or_else(free_port);
        let work = dir(port);
        std::fs::create_dir_all(&work).expect("redis working dir");
        let mut child = Command::new(redis_server_path())
            .current_dir(&work)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let password = args.iter().position(|a| *a == "--requirepass").map(|i| args[i + 1]);
        for _ in 0..200 {
            if pid_on(port, password) == Some(child.id()) {
                return (port, child);
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("redis-server did not start answering ({tries} port(s) tried, 2 s each)")
}

/// A `redis-server` child process on `127.0.0.1`, no persistence, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server on a free port and waits (bounded) until it answers.
    pub fn start() -> RedisServer {
        let (port, child) = spawn_redis(None, &|_| std::env::temp_dir(), &[]);
        RedisServer { port, child: Some(child), password: None }
    }

    /// [`RedisServer::start`], also serving TLS on another port with the certificate `chain` and
    /// `key` (PEM files); returns the server and its `rediss://` URL.
    pub fn start_with_tls(
        chain: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> (RedisServer, String) {
        let tls_port = free_port();
        let tls_port_arg = tls_port.to_string();
        let args = [
            "--tls-port",
            tls_port_arg.as_str(),
            "--tls-cert-file",
            chain.to_str().expect("utf-8 path"),
            "--tls-key-file",
            key.to_str().expect("utf-8 path"),
            "--tls-ca-cert-file",
            ca.to_str().expect("utf-8 path"),
            "--tls-auth-clients",
            "no",
        ];
        let (port, child) = spawn_redis(None, &|_| std::env::temp_dir(), &args);
        (RedisServer { port, child: Some(child), password: None }, format!("rediss://localhost:{tls_port}"))
    }

    /// [`RedisServer::start`], requiring `password` from every client (`requirepass`).
    pub fn start_with_password(password: &str) -> RedisServer {
        let (port, child) = spawn_redis(None, &|_| std::env::temp_dir(), &["--requirepass", password]);
        RedisServer { port, child: Some(child), password: Some(password.to_string()) }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
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
        let (_, child) = spawn_redis(Some(self.port), &|_| std::env::temp_dir(), &[]);
        self.child = Some(child);
    }

    /// A new connection for the test's own commands (with the password, when there is one).
    pub async fn conn(&self) -> MultiplexedConnection {
        let url = match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => self.url(),
        };
        let client = redis::Client::open(url).expect("redis url");
        within("connect to redis", client.get_multiplexed_async_connection()).await.expect("connect to redis")
    }

    /// Runs one command (bounded by [`WAIT`](super::WAIT)); panics on an error.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&[u8]]) -> T {
        let mut c = self.conn().await;
        let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let what = format!("redis {}", String::from_utf8_lossy(args[0]));
        within(&what, cmd.query_async::<T>(&mut c)).await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Waits (bounded by [`WAIT`](super::WAIT)) until `cond` holds for the result of `args`, asked again
    /// every millisecond: Redis announces no change to a client that is not subscribed.
    pub async fn until<T: redis::FromRedisValue>(&self, what: &str, args: &[&[u8]], cond: impl Fn(&T) -> bool) {
        let mut c = self.conn().await;
        eventually(what, async || {
            let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query_async::<T>(&mut c).await.is_ok_and(|v| cond(&v))
        })
        .await
    }

    /// Waits until at least `n` clients are blocked reading the invalidation stream (every
    /// node's reader has taken its starting position).
    pub async fn wait_readers(&self, n: usize) {
        self.until::<String>("invalidation readers", &[b"CLIENT", b"LIST"], |l| l.matches("cmd=xread").count() >= n)
            .await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Redis key name of a URL's hash with the default prefix: `ec:v1:{DIGEST}`.
pub fn key_name(host: &str, path: &str) -> String {
    format!("ec:v1:{{{}}}", CacheKey::new("http", host, path))
}

/// The invalidation stream with the default prefix.
pub const STREAM: &str = "ec:v1:invalidations";

/// Accepts TCP connections on `127.0.0.1:0` and never answers; holds them until dropped.
pub struct FakeRedis {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeRedis {
    /// Starts listening.
    pub async fn start() -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake redis");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held: Vec<TcpStream> = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        FakeRedis { addr, task }
    }

    /// `redis://` URL of the listener.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP relay to a Redis server; [`RedisLink::cut`] closes every relayed connection and refuses
/// new ones until [`RedisLink::restore`].
pub struct RedisLink {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

impl RedisLink {
    /// Relays `127.0.0.1:0` to `target`.
    pub async fn start(target: SocketAddr) -> RedisLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind link");
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (u, cs) = (up.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                cs.lock().unwrap().push(relay.abort_handle());
            }
        });
        RedisLink { addr, up, conns, task }
    }

    /// `redis://` URL of the relay.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every relayed connection; new ones are closed at once.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for RedisLink {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// A three-master Redis Cluster of `redis-server` child processes on free ports (no replicas, no
/// persistence), created with `redis-cli --cluster create`; killed and removed on drop.
pub struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts the nodes, joins them into a cluster and waits (bounded) until every node reports
    /// `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let server = redis_server_path();
        let cli = server.with_file_name("redis-cli");
        assert!(cli.is_file(), "redis-cli not found next to {}: install redis-tools", server.display());
        let dir = std::env::temp_dir().join(format!("edgecache-cluster-{}-{}", std::process::id(), free_port()));
        let mut cluster = RedisCluster { ports: Vec::new(), children: Vec::new(), dir };
        for _ in 0..3 {
            let node_dir = |port: u16| cluster.dir.join(port.to_string());
            let cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"];
            let (port, child) = spawn_redis(None, &node_dir, &cluster_args);
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        for p in &cluster.ports {
            let ok = (0..500).any(|_| {
                let out = Command::new(&cli).args(["-p", &p.to_string(), "cluster", "info"]).output();
                let ok = out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"));
                if !ok {
                    std::thread::sleep(Duration::from_millis(10));
                }
                ok
            });
            assert!(ok, "cluster node {p} never reported cluster_state:ok");
        }
        cluster
    }

    /// A seed node's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
