//! The `edgecache` binary: reads `proxy.toml`, applies command-line overrides, serves.

use std::io::{stdout, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use edgecache::config::{Config, ConfigError, LogFormat, Origin};
use edgecache::reload::{Live, Overrides, Steps};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

mod alloc;
mod handover;
mod listenfd;

/// mimalloc rather than the system allocator: a miss costs less CPU and a stored object less
/// memory (glibc grows its per-thread arenas a page at a time with `mprotect`); the figures are
/// in `benches/RESULTS.md`.
#[global_allocator]
static GLOBAL: alloc::MiMalloc = alloc::MiMalloc;

/// An HTTP caching reverse proxy (RFC 9111 shared cache).
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (proxy.toml). Without it, built-in defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, overriding the file (e.g. 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Origin URL, overriding the file (e.g. http://127.0.0.1:9000).
    #[arg(long)]
    origin: Option<String>,
    /// Validate the configuration and exit: 0 when valid, 2 when not.
    #[arg(long)]
    check_config: bool,
    /// Also start the built-in demo origin on a free loopback port and use it as the origin.
    #[arg(long)]
    demo: bool,
    /// Turn the access log off (overrides `log.access`).
    #[arg(long)]
    no_access_log: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Purge objects on a running node (and, through its shared tier, on every node), through
    /// the admin listener named in the configuration. Prints the JSON answer; exit code 0 only
    /// when the purge was accepted.
    Purge(PurgeArgs),
    /// Reload the configuration of a running node (and run every other reload step) through the
    /// admin listener named in the configuration, as SIGHUP does. Prints the JSON answer: what
    /// changed, or every bad field; exit code 0 only when the reload was applied.
    Reload(ReloadArgs),
}

#[derive(clap::Args, Debug)]
struct ReloadArgs {
    /// Configuration file of the node (its `[admin]` address and token are used; the node
    /// re-reads the file it was started with).
    #[arg(long, short)]
    config: PathBuf,
}

/// `edgecache reload`: 0 applied, 1 refused or unreachable, 2 bad configuration.
fn reload(args: ReloadArgs) -> ExitCode {
    let admin = match Config::from_file(&args.config) {
        Ok(Config { admin: Some(a), .. }) => a,
        Ok(_) => {
            eprintln!(
                "edgecache reload: {} has no [admin] table: the node has no admin listener",
                args.config.display()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            // The node keeps its configuration when the file is invalid: say why here too.
            eprintln!("edgecache reload: invalid configuration ({}):", args.config.display());
            for line in e.to_string().lines() {
                eprintln!("  {line}");
            }
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgecache reload: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = std::time::Duration::from_secs(30);
    match rt.block_on(edgecache::admin::cli::post(&admin, "/reload", bytes::Bytes::new(), timeout)) {
        Ok((status, text)) => {
            println!("{}", text.trim_end());
            if edgecache::admin::cli::accepted(status, &text) {
                ExitCode::SUCCESS
            } else {
                eprintln!("edgecache reload: refused ({status})");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("edgecache reload: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args, Debug)]
struct PurgeArgs {
    /// Configuration file of the node (its `[admin]` address and token are used).
    #[arg(long, short)]
    config: PathBuf,
    /// Absolute URLs to purge (every variant of each).
    urls: Vec<String>,
    /// Tags (surrogate keys) to purge: repeat the option or separate them with commas.
    #[arg(long = "tag", value_name = "TAG", value_delimiter = ',')]
    tags: Vec<String>,
    /// URL prefixes to purge (e.g. https://example.com/blog/): repeat the option for several.
    #[arg(long = "prefix", value_name = "URL")]
    prefixes: Vec<String>,
    /// Hosts to purge: repeat the option or separate them with commas.
    #[arg(long = "host", value_name = "HOST", value_delimiter = ',')]
    hosts: Vec<String>,
    /// Purge everything.
    #[arg(long)]
    all: bool,
    /// Mark stale instead of removing: the next request revalidates.
    #[arg(long)]
    soft: bool,
}

/// `edgecache purge`: 0 accepted, 1 refused or unreachable, 2 bad configuration or arguments.
fn purge(args: PurgeArgs) -> ExitCode {
    let cfg = match Config::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgecache purge: invalid configuration ({}):", args.config.display());
            for line in e.to_string().lines() {
                eprintln!("  {line}");
            }
            return ExitCode::from(2);
        }
    };
    let Some(admin) = cfg.admin else {
        eprintln!("edgecache purge: {} has no [admin] table: the node has no admin listener", args.config.display());
        return ExitCode::from(2);
    };
    let ask = edgecache::admin::cli::Ask {
        urls: args.urls,
        tags: args.tags,
        prefixes: args.prefixes,
        hosts: args.hosts,
        all: args.all,
        soft: args.soft,
    };
    let Some(body) = ask.body() else {
        eprintln!("edgecache purge: nothing to purge: give URLs, --tag, --prefix, --host or --all");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgecache purge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(edgecache::admin::cli::send(&admin, &body, std::time::Duration::from_secs(30))) {
        Ok((status, text)) => {
            print!("{text}");
            if edgecache::admin::cli::accepted(status, &text) {
                ExitCode::SUCCESS
            } else {
                eprintln!("edgecache purge: refused ({status})");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("edgecache purge: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &Args) -> Result<Config, ConfigError> {
    let mut cfg = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let mut problems = Vec::new();
    if let Some(l) = &args.listen {
        match l.parse::<SocketAddr>() {
            Ok(a) => {
                cfg.listen = a;
                cfg.listen_enabled = true;
            }
            Err(_) => {
                problems.push(("--listen".to_string(), format!("expected an address like 127.0.0.1:8080, found {l:?}")))
            }
        }
    }
    if let Some(o) = &args.origin {
        match Origin::parse(o) {
            Ok(_) if !cfg.sites.is_empty() => {
                problems.push(("--origin".to_string(), "not used with [[site]]: each site names its servers".into()))
            }
            Ok(o) => cfg.origin = o,
            Err(e) => problems.push(("--origin".to_string(), e)),
        }
    }
    if args.demo && !cfg.sites.is_empty() {
        problems.push(("--demo".to_string(), "not used with [[site]]: each site names its servers".into()));
    }
    if args.no_access_log {
        cfg.log.access = false;
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError { problems })
    }
}

/// The command line's overrides, applied again to every configuration a reload reads.
fn overrides(args: &Args, demo_origin: Option<Origin>) -> Overrides {
    let listen = args.listen.as_ref().and_then(|l| l.parse::<SocketAddr>().ok());
    let origin = demo_origin.or_else(|| args.origin.as_ref().and_then(|o| Origin::parse(o).ok()));
    let no_access_log = args.no_access_log;
    Box::new(move |cfg: &mut Config| {
        if let Some(l) = listen {
            cfg.listen = l;
        }
        if let Some(o) = &origin {
            cfg.origin = o.clone();
        }
        if no_access_log {
            cfg.log.access = false;
        }
    })
}

/// Runs every reload step at each SIGHUP, logging what each came to.
async fn reload_on_sighup(steps: Arc<Steps>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload through the admin listener only");
        return;
    };
    while hup.recv().await.is_some() {
        // The steps read files: off the runtime's workers.
        let run = steps.clone();
        let report = match tokio::task::spawn_blocking(move || run.run("SIGHUP")).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reload failed");
                continue;
            }
        };
        for (step, result) in report {
            match result {
                Ok(done) => tracing::info!(step, done = ?done, "reload step done"),
                Err(problems) => tracing::warn!(step, problems = ?problems, "reload step failed; running state kept"),
            }
        }
    }
}

fn main() -> ExitCode {
    // First: sockets handed over by systemd or a replaced process, before any file is opened.
    let mut inherited = match listenfd::inherited() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("edgecache: {e}");
            return ExitCode::from(2);
        }
    };
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::Purge(p)) => return purge(p),
        Some(Command::Reload(r)) => return reload(r),
        None => {}
    }
    let mut cfg = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            let source = args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "arguments".into());
            eprintln!("edgecache: invalid configuration ({source}):");
            for line in e.to_string().lines() {
                eprintln!("  {line}");
            }
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        let shared = match (&cfg.redis, &cfg.memcached) {
            (Some(r), _) => format!(", shared tier {}", r.url),
            (None, Some(m)) => format!(", shared tier memcached {}", m.servers.join(" ")),
            (None, None) => String::new(),
        };
        let admin = cfg.admin.as_ref().map(|a| format!(", admin {}", a.listen)).unwrap_or_default();
        let origins = if cfg.sites.is_empty() {
            format!("origin {}", cfg.origin.url)
        } else {
            let names: Vec<&str> = cfg.sites.iter().map(|s| s.name.as_str()).collect();
            format!("sites {}", names.join(", "))
        };
        println!("configuration ok: listen {} {origins}{shared}{admin}", listen_summary(&cfg));
        certificate_summary(&cfg);
        return ExitCode::SUCCESS;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match cfg.log.format {
        // Colour only on a terminal: a log file or a journal gets plain `key=value` text.
        LogFormat::Text => tracing_subscriber::fmt().with_ansi(stdout().is_terminal()).with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }
    raise_file_limit(&cfg);
    warn_if_public_without_limits(&cfg);
    if let Err(e) = alloc::set_transparent_huge_pages(cfg.cache.transparent_huge_pages) {
        tracing::warn!(error = %e, "cannot set transparent huge pages for the process; the system's policy applies");
    }
    if cfg.cache.preallocate {
        let started = std::time::Instant::now();
        if let Err(e) = alloc::preallocate(cfg.cache.memory_bytes) {
            eprintln!("edgecache: cannot preallocate cache.memory ({} MiB): {e}", cfg.cache.memory_bytes >> 20);
            return ExitCode::FAILURE;
        }
        tracing::info!(
            mib = cfg.cache.memory_bytes >> 20,
            ms = started.elapsed().as_millis() as u64,
            "memory budget preallocated"
        );
    } else if let Err(e) = alloc::start_purging() {
        tracing::warn!(error = %e, "cannot start the thread that hands freed memory back to the system");
    }
    // One worker per CPU this process may run on (tokio reads the affinity mask).
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgecache: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mut demo_origin = None;
        if args.demo {
            match edgecache::demo::spawn("127.0.0.1:0".parse().expect("valid")).await {
                Ok(addr) => {
                    cfg.origin = Origin::parse(&format!("http://{addr}")).expect("valid");
                    demo_origin = Some(cfg.origin.clone());
                    tracing::info!(%addr, "demo origin started");
                }
                Err(e) => {
                    eprintln!("edgecache: cannot start the demo origin: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let listeners = match edgecache::server::Listeners::bind_inheriting(&cfg, |name| inherited.take(name)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("edgecache: {e}");
                return ExitCode::FAILURE;
            }
        };
        // The addresses bound, not the ones asked for: with port 0 the system picks the port.
        let addrs = listeners.addrs();
        for (addr, tls) in addrs.iter().skip(1) {
            tracing::info!(listen = %addr, scheme = if *tls { "https" } else { "http" }, "also listening");
        }
        let Some(&(listen, tls)) = addrs.first() else {
            eprintln!("edgecache: no listener");
            return ExitCode::FAILURE;
        };
        let pid = std::process::id();
        if cfg.sites.is_empty() {
            tracing::info!(%listen, origin = %cfg.origin.url, memory = cfg.cache.memory_bytes, pid, "edgecache started");
        } else {
            let sites = cfg.sites.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(",");
            tracing::info!(%listen, %sites, memory = cfg.cache.memory_bytes, pid, "edgecache started");
        }
        if args.demo {
            let scheme = if tls { "https" } else { "http" };
            tracing::info!("try: curl -si {scheme}://{listen}/articles/1");
        }
        let mut handed = match listeners.handover() {
            Ok(h) => h,
            Err(e) => {
                eprintln!("edgecache: cannot keep the listening sockets for a hand-over: {e}");
                return ExitCode::FAILURE;
            }
        };
        let admin_listener = match &cfg.admin {
            Some(a) => match admin_listener(&mut inherited, a).await {
                Ok((l, h)) => {
                    let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    tracing::info!(%addr, token = a.token.is_some(), "admin listener started");
                    handed.push(("admin".to_string(), h));
                    Some(l)
                }
                Err(e) => {
                    eprintln!("edgecache: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        for name in inherited.left() {
            tracing::warn!(name, "an inherited socket this configuration does not use; closed");
        }
        drop(inherited);
        let proxy = edgecache::proxy::Proxy::new(Arc::new(cfg), Arc::new(edgecache::clock::SystemClock));
        let live = Arc::new(Live::new(proxy, args.config.clone(), overrides(&args, demo_origin)));
        let steps = Arc::new(Steps::config(live.clone()).with_certificates(listeners.certificates().clone()));
        tokio::spawn(reload_on_sighup(steps.clone()));
        // One signal (or a hand-over to a new process) stops both listeners.
        let handed_over = handover::on_sigusr2(handed);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown_signal() => {},
                _ = handed_over => {},
            }
            let _ = stop.send(true);
        });
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let admin = admin_listener.map(|l| {
            let admin = edgecache::admin::Admin::new(live.clone(), steps);
            tokio::spawn(edgecache::admin::serve(l, admin, until_stopped(stopped.clone())))
        });
        if let Some(shared) = live.current().shared().filter(|_| handover::replacing()) {
            // The replaced process serves meanwhile: better to start with the shared tier.
            let waited = tokio::time::timeout(handover::SHARED_TIER_WITHIN, shared.wait_available()).await;
            if waited.is_err() {
                tracing::warn!("shared tier not available yet; serving without it until it is");
            }
        }
        handover::announce_serving();
        edgecache::server::serve(listeners, live, until_stopped(stopped)).await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        ExitCode::SUCCESS
    })
}

/// A node on a public address faces clients nobody vetted: its limits should be sized for it,
/// not left at the defaults.
fn warn_if_public_without_limits(cfg: &Config) {
    if !cfg.listen.ip().is_loopback() && cfg.limits == Config::default().limits {
        tracing::warn!(
            listen = %cfg.listen,
            "listening on a public address with the default [limits] (max_connections, \
             max_concurrent_streams, origin_connections, max_header_size): size them for this node"
        );
    }
}

/// The listeners for `--check-config`: `listen`, then each `[[listener]]`, TLS ones marked.
fn listen_summary(cfg: &Config) -> String {
    let plain = cfg.listen_enabled.then(|| cfg.listen.to_string());
    let tables = cfg.listeners.iter().map(|l| match (&l.tls, l.redirect_https) {
        (Some(_), _) => format!("{} (tls)", l.address),
        (None, Some(_)) => format!("{} (redirect to https)", l.address),
        (None, None) => l.address.to_string(),
    });
    plain.into_iter().chain(tables).collect::<Vec<_>>().join(", ")
}

/// For `--check-config`: each certificate, its names and when it expires.
fn certificate_summary(cfg: &Config) {
    let now = std::time::SystemTime::now();
    for tls in cfg.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        if let Ok((store, _)) = edgecache::tls::CertStore::load(tls, now) {
            for c in store.report().certificates {
                let days = c.not_after.duration_since(now).map(|d| d.as_secs() / 86_400).unwrap_or(0);
                let expires = httpdate::fmt_http_date(c.not_after);
                println!("certificate {}: {} (expires {expires}, in {days} days)", c.field, c.names.join(", "));
            }
        }
    }
}

/// The admin listener: the one handed over, or `admin.listen` bound; with a second handle on the
/// same socket for a later hand-over.
async fn admin_listener(
    inherited: &mut listenfd::Inherited,
    cfg: &edgecache::config::AdminConfig,
) -> Result<(tokio::net::TcpListener, std::net::TcpListener), String> {
    let std = match inherited.take("admin") {
        Some(l) => l,
        None => edgecache::admin::bind(cfg).await?.0.into_std().map_err(|e| e.to_string())?,
    };
    let handed = std.try_clone().map_err(|e| e.to_string())?;
    Ok((tokio::net::TcpListener::from_std(std).map_err(|e| e.to_string())?, handed))
}

/// Raises the soft limit on open files to the hard one, as nginx's `worker_rlimit_nofile` does:
/// every client and origin connection takes a descriptor, and the usual soft default (1024) is
/// far below `limits.max_connections`. Logs both, and warns when the connections allowed need
/// more descriptors than the limit gives.
fn raise_file_limit(cfg: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let before = getrlimit(Resource::Nofile);
    let mut limit = before;
    if before.current != before.maximum {
        limit.current = before.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            limit = before;
        }
    }
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    tracing::info!(soft = %show(limit.current), hard = %show(limit.maximum), was = %show(before.current), "open-file limit");
    let origin: usize = cfg
        .effective_sites()
        .iter()
        .flat_map(|s| &s.servers)
        .map(|s| s.max_connections.unwrap_or(cfg.limits.origin_connections))
        .sum();
    let needed = (cfg.limits.max_connections + origin + 64) as u64;
    if limit.current.is_some_and(|n| n < needed) {
        tracing::warn!(
            limit = %show(limit.current),
            needed,
            "the open-file limit is below limits.max_connections + the origin servers' connections + 64; \
             lower them or raise the hard limit (LimitNOFILE=, ulimit -Hn)"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("signal received");
}
