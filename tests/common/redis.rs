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

use edgecache::cache::CacheKey;
use redis::aio::MultiplexedConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use super::{within, WAIT};

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

/// True when something on `port` answers `PING` with `+PONG`.
fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = StdStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A `redis-server` child process on `127.0.0.1`, no persistence, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits (bounded) until it answers `PING`.
    pub fn start() -> RedisServer {
        let mut r = RedisServer { port: free_port(), child: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new(redis_server_path())
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        for _ in 0..200 {
            if answers_ping(self.port) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server on port {} exited at start: {status}", self.port);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not answer PING within 2 s", self.port);
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
        self.spawn();
    }

    /// A new connection for the test's own commands.
    pub async fn conn(&self) -> MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("redis url");
        within("connect to redis", client.get_multiplexed_async_connection()).await.expect("connect to redis")
    }

    /// Runs one command (bounded by [`WAIT`]); panics on an error.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&[u8]]) -> T {
        let mut c = self.conn().await;
        let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let what = format!("redis {}", String::from_utf8_lossy(args[0]));
        within(&what, cmd.query_async::<T>(&mut c)).await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Polls (bounded by [`WAIT`]) until `cond` holds for the result of `args`.
    pub async fn until<T: redis::FromRedisValue>(&self, what: &str, args: &[&[u8]], cond: impl Fn(&T) -> bool) -> T {
        let mut c = self.conn().await;
        within(what, async {
            loop {
                let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
                for a in &args[1..] {
                    cmd.arg(*a);
                }
                if let Ok(v) = cmd.query_async::<T>(&mut c).await {
                    if cond(&v) {
                        return v;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
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
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut children = Vec::new();
        for p in &ports {
            let node_dir = dir.join(p.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = Command::new(&server)
                .current_dir(&node_dir)
                .args(["--port", &p.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            children.push(child);
        }
        let cluster = RedisCluster { ports, children, dir };
        for p in &cluster.ports {
            assert!((0..200).any(|_| answers_ping(*p) || sleep_ms(10)), "cluster node {p} did not start");
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
                out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok")) || sleep_ms(10)
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

/// Sleeps `ms` between attempts of a bounded retry loop; returns false so it can end an `||`.
fn sleep_ms(ms: u64) -> bool {
    std::thread::sleep(Duration::from_millis(ms));
    false
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
