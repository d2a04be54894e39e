//! The `edgecache` binary: reads `proxy.toml`, applies command-line overrides, serves.

use std::io::{stdout, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use edgecache::config::{Config, ConfigError, LogFormat, Origin};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

mod alloc;

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

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(Command::Purge(p)) = args.command.take() {
        return purge(p);
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
        let shared = cfg.redis.as_ref().map(|r| format!(", shared tier {}", r.url)).unwrap_or_default();
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
        if args.demo {
            match edgecache::demo::spawn("127.0.0.1:0".parse().expect("valid")).await {
                Ok(addr) => {
                    cfg.origin = Origin::parse(&format!("http://{addr}")).expect("valid");
                    tracing::info!(%addr, "demo origin started");
                }
                Err(e) => {
                    eprintln!("edgecache: cannot start the demo origin: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let listeners = match edgecache::server::Listeners::bind(&cfg).await {
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
        if cfg.sites.is_empty() {
            tracing::info!(%listen, origin = %cfg.origin.url, memory = cfg.cache.memory_bytes, "edgecache started");
        } else {
            let sites = cfg.sites.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(",");
            tracing::info!(%listen, %sites, memory = cfg.cache.memory_bytes, "edgecache started");
        }
        if args.demo {
            let scheme = if tls { "https" } else { "http" };
            tracing::info!("try: curl -si {scheme}://{listen}/articles/1");
        }
        if !listeners.certificates().is_empty() {
            reload_certificates_on_sighup(listeners.certificates().clone());
        }
        let admin_listener = match &cfg.admin {
            Some(a) => match edgecache::admin::bind(a).await {
                Ok((l, addr)) => {
                    tracing::info!(%addr, token = a.token.is_some(), "admin listener started");
                    Some(l)
                }
                Err(e) => {
                    eprintln!("edgecache: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let cfg = Arc::new(cfg);
        let proxy = Arc::new(edgecache::proxy::Proxy::new(cfg.clone(), Arc::new(edgecache::clock::SystemClock)));
        // One signal stops both listeners.
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let admin = admin_listener.zip(cfg.admin.as_ref()).map(|(l, a)| {
            let admin = edgecache::admin::Admin::new(proxy.clone(), a);
            tokio::spawn(edgecache::admin::serve(l, admin, until_stopped(stopped.clone())))
        });
        edgecache::server::serve_listeners(listeners, proxy, cfg, until_stopped(stopped)).await;
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

/// On SIGHUP, reloads the TLS listeners' certificates from their files (off the runtime's
/// workers: it reads files); each outcome is logged.
fn reload_certificates_on_sighup(certs: edgecache::server::Certificates) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; certificates are not reloadable");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading certificates");
            let certs = certs.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || certs.reload()).await {
                tracing::error!(error = %e, "certificate reload failed");
            }
        }
    });
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
