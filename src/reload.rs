//! Hot reload: the running [`Proxy`] behind an atomic pointer ([`Live`]), swapped for one built
//! from the re-read `proxy.toml`. A request takes the proxy current when it arrives and finishes
//! on it; the next one takes the new one. What did not change is shared (see
//! [`Proxy::reconfigured`]): the memory tier and its objects, the shared tier's connection, the
//! origin pool, the fills in flight.
//!
//! An invalid file changes nothing: every bad field is logged, returned, and counted
//! (`edgecache_reloads_total{result="invalid"}`, `edgecache_reload_problems`).
//!
//! A reload is a list of [`Steps`]: SIGHUP and `POST /reload` run every step in turn (the
//! configuration, and whatever else registers one, such as certificates).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::metrics::ReloadResult;
use crate::proxy::reconfigure::{changed_sections, needing_restart, NEED_RESTART};
use crate::proxy::Proxy;

/// Adjusts a configuration read from the file (the command line's overrides).
pub type Overrides = Box<dyn Fn(&mut Config) + Send + Sync>;

/// The proxy in use, and where its configuration comes from.
pub struct Live {
    current: ArcSwap<Proxy>,
    /// The file re-read by a reload; `None`: started without one.
    path: Option<PathBuf>,
    overrides: Overrides,
    /// One reload at a time.
    reloading: Mutex<()>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The tables and top-level keys whose values changed.
    pub changed: Vec<&'static str>,
    /// Keys that changed but keep their running value until a restart.
    pub need_restart: Vec<&'static str>,
}

impl Live {
    /// `proxy` in use; reloads re-read `path` and apply `overrides` to it.
    pub fn new(proxy: Proxy, path: Option<PathBuf>, overrides: Overrides) -> Self {
        Live { current: ArcSwap::from_pointee(proxy), path, overrides, reloading: Mutex::new(()) }
    }

    /// The proxy for a request arriving now.
    pub fn current(&self) -> Arc<Proxy> {
        self.current.load_full()
    }

    /// Re-reads the file and applies it; `trigger` names what asked (for the log and the
    /// status page). On an invalid file the running configuration stays and every bad field is
    /// returned.
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, ConfigError> {
        let read = match &self.path {
            Some(path) => Config::from_file(path),
            None => Err(ConfigError {
                problems: vec![(String::new(), "started without --config: there is no file to re-read".into())],
            }),
        };
        match read {
            Ok(mut cfg) => {
                (self.overrides)(&mut cfg);
                Ok(self.apply(cfg, trigger))
            }
            Err(e) => {
                self.refused(&e, trigger);
                Err(e)
            }
        }
    }

    /// Puts a proxy for `cfg` (already valid) in use.
    pub fn apply(&self, cfg: Config, trigger: &str) -> Reloaded {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let running = self.current.load_full();
        let old = running.config().clone();
        let result = Reloaded { changed: changed_sections(&old, &cfg), need_restart: needing_restart(&old, &cfg) };
        let next = running.reconfigured(cfg);
        self.current.store(Arc::new(next));
        let at = running.clock().now_millis();
        let mut summary: Vec<String> = result.changed.iter().map(|k| format!("{k} changed")).collect();
        for key in &result.need_restart {
            let why = NEED_RESTART.iter().find(|(k, _)| k == key).map_or("", |(_, w)| w);
            tracing::warn!(key, why, "changed in the file; keeps its running value until a restart");
            summary.push(format!("{key}: needs a restart ({why})"));
        }
        running.metrics().reloaded(at, ReloadResult::Ok, trigger, summary);
        tracing::info!(trigger, changed = ?result.changed, "configuration reloaded");
        result
    }

    fn refused(&self, e: &ConfigError, trigger: &str) {
        let running = self.current.load();
        for (field, problem) in &e.problems {
            tracing::warn!(field = field.as_str(), problem = problem.as_str(), trigger, "reload refused: bad field");
        }
        let summary = e.to_string().lines().map(str::to_string).collect();
        running.metrics().reloaded(running.clock().now_millis(), ReloadResult::Invalid, trigger, summary);
    }
}

/// What a step came to: what it changed, or every problem that made it keep the running state.
pub type StepResult = Result<Vec<String>, Vec<String>>;

/// One thing a reload re-reads: its name and what it runs, given the trigger's name.
pub struct Step {
    /// For logs and answers (`config`, `tls` ...).
    pub name: &'static str,
    run: Box<dyn Fn(&str) -> StepResult + Send + Sync>,
}

/// What each step of a reload came to, in order.
pub type Report = Vec<(&'static str, StepResult)>;

/// Everything SIGHUP and `POST /reload` reload, in order.
#[derive(Default)]
pub struct Steps(Vec<Step>);

impl Steps {
    /// The configuration step for `live`.
    pub fn config(live: Arc<Live>) -> Self {
        let mut steps = Steps::default();
        steps.add("config", move |trigger| match live.reload(trigger) {
            Ok(r) => Ok(r.changed.iter().map(|k| format!("{k} changed")).chain(restart_lines(&r)).collect()),
            Err(e) => Err(e.to_string().lines().map(str::to_string).collect()),
        });
        steps
    }

    /// Adds the step that reads the TLS listeners' certificate files again (none without a TLS
    /// listener): each certificate's names and expiry, or why it kept its previous version.
    pub fn with_certificates(mut self, certificates: crate::server::Certificates) -> Self {
        if certificates.is_empty() {
            return self;
        }
        self.add("tls", move |_| {
            let reports = certificates.reload();
            let lines = |failed: bool| -> Vec<String> {
                reports
                    .iter()
                    .flat_map(|r| &r.certificates)
                    .filter(|c| c.error.is_some() == failed)
                    .map(|c| match &c.error {
                        Some(e) => format!("{}: kept the previous certificate: {e}", c.field),
                        None => format!(
                            "{}: {} (expires {})",
                            c.field,
                            c.names.join(", "),
                            httpdate::fmt_http_date(c.not_after)
                        ),
                    })
                    .collect()
            };
            let failed = lines(true);
            if failed.is_empty() {
                Ok(lines(false))
            } else {
                Err(failed)
            }
        });
        self
    }

    /// Adds a step; `run` is given the trigger's name.
    pub fn add(&mut self, name: &'static str, run: impl Fn(&str) -> StepResult + Send + Sync + 'static) {
        self.0.push(Step { name, run: Box::new(run) });
    }

    /// Runs every step, a failed one not stopping the others.
    pub fn run(&self, trigger: &str) -> Report {
        self.0.iter().map(|s| (s.name, (s.run)(trigger))).collect()
    }
}

fn restart_lines(r: &Reloaded) -> impl Iterator<Item = String> + '_ {
    r.need_restart.iter().map(|k| format!("{k}: needs a restart; running value kept"))
}
