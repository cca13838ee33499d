//! The node's background services driven by the Prometheus config file:
//! the scrape manager (`scrape_configs`), the rule manager (`rule_files`)
//! and the Alertmanager notifier (`alerting.alertmanagers`), and reloading
//! all of them from the file (`POST /-/reload`, SIGHUP).
//!
//! Owns: building those services from a [`Config`], the adapter that sends
//! rule results through the node's [`WriteSink`], and the reload order that
//! makes a reload all-or-nothing: the new file is parsed and every part is
//! validated (scrape jobs, Alertmanagers, rule files) before anything
//! running changes; a rejected reload leaves the running config, rules and
//! targets as they were. The YAML shown by `/api/v1/status/config` is the
//! last one applied.
//!
//! What this node does is decided by its [`Roles`]: on a single node every
//! target is this node's ([`crate::scrape::target::SingleNode`]) and it is
//! always the rule leader ([`AlwaysLeader`]); in a cluster it scrapes the
//! targets of the shards it is primary of
//! ([`crate::cluster::assignment::PrimaryAssignment`]) and evaluates rules
//! and notifies only while it holds the leadership lease
//! ([`crate::cluster::leader::LeaderLease`]). Must not: serve HTTP (the
//! handlers read snapshots).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use pharos_alerting::eval::{
    AlwaysLeader, LeaderCheck, ManagerOptions, RuleManager, SampleSink, SinkError as RuleSinkError,
    SystemClock,
};
use pharos_alerting::notifier::{Notifier, NotifierOptions};
use pharos_alerting::rules::{join_errors, load_globs};
use pharos_query::engine::{Engine, EngineOptions};
use pharos_query::queryable::Queryable;
use pharos_storage::labels::Labels;
use tokio::task::JoinHandle;

use crate::config::{mask_secrets, Config, ConfigError};
use crate::scrape::manager::ScrapeManager;
use crate::scrape::target::{Assignment, SingleNode};
use crate::sink::WriteSink;

/// Longest a retiring notifier may take to send what it still holds.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Prometheus's default `global.evaluation_interval`.
const DEFAULT_EVALUATION_INTERVAL_MS: i64 = 60_000;

/// Why a configuration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Rule files that do not load; each line names file, line and rule.
    #[error("loading rule files: {0}")]
    Rules(String),
}

/// Which targets this node scrapes and whether it may evaluate rules and
/// send alerts.
#[derive(Clone)]
pub struct Roles {
    pub assignment: Arc<dyn Assignment>,
    pub leader: Arc<dyn LeaderCheck>,
}

impl Roles {
    /// A node alone: everything is its own.
    pub fn single_node() -> Roles {
        Roles {
            assignment: Arc::new(SingleNode),
            leader: Arc::new(AlwaysLeader),
        }
    }

    /// A cluster member: its shards' targets, rules while it leads.
    pub fn cluster(h: &crate::cluster::member::ClusterHandle) -> Roles {
        Roles {
            assignment: Arc::new(crate::cluster::assignment::PrimaryAssignment::new(
                h.node_id,
                Arc::clone(&h.meta),
            )),
            leader: Arc::clone(&h.lease) as Arc<dyn LeaderCheck>,
        }
    }
}

/// Rule results go to the node's write path. Per-sample rejections (an
/// out-of-order `ALERTS` sample after a restart, say) are logged, as
/// Prometheus logs them, and do not fail the evaluation.
struct RuleSink(Arc<dyn WriteSink>);

impl SampleSink for RuleSink {
    fn append(&self, samples: &[(Labels, i64, f64)]) -> Result<(), RuleSinkError> {
        let out = self
            .0
            .write(samples)
            .map_err(|e| RuleSinkError(e.to_string()))?;
        if let Some(first) = out.rejected.first() {
            tracing::debug!(
                rejected = out.rejected.len(),
                first = %first.message,
                "rule results refused by storage"
            );
        }
        Ok(())
    }
}

/// What the rule manager and notifier were built with; a reload that
/// changes any of it builds new ones.
#[derive(Debug, Clone, PartialEq)]
struct RuleOptions {
    interval_ms: i64,
    external_labels: Labels,
    alert: crate::config::RuleSettings,
}

/// The rule manager with the notifier it sends to.
struct Rules {
    opts: RuleOptions,
    manager: Arc<RuleManager>,
    notifier: Arc<Notifier>,
    notifier_task: JoinHandle<()>,
}

/// A config that passed every check and can be applied.
struct Prepared {
    config: Config,
    yaml: String,
    rule_globs: Vec<String>,
    alertmanagers: Vec<pharos_alerting::notifier::AlertmanagerConfig>,
    base_dir: PathBuf,
}

/// Scraping, rules and notifications of one node.
pub struct Services {
    pub scrape: ScrapeManager,
    rules: RwLock<Rules>,
    queryable: Arc<dyn Queryable>,
    sink: Arc<dyn WriteSink>,
    engine_options: EngineOptions,
    external_url: String,
    leader: Arc<dyn LeaderCheck>,
    /// The config file reloads read (none: nothing to reload).
    config_path: Option<PathBuf>,
    /// The applied configuration as YAML, secrets masked.
    config_yaml: RwLock<String>,
    /// Serializes reloads.
    reloading: Mutex<()>,
    /// Whether the last reload attempt succeeded, and when a config was
    /// last applied (for `/status/runtimeinfo` and `/metrics`).
    last_reload: RwLock<(bool, SystemTime)>,
}

fn labels_of(cfg: &Config) -> Labels {
    Labels::from_pairs(
        cfg.global
            .external_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

fn rule_options(cfg: &Config) -> RuleOptions {
    RuleOptions {
        interval_ms: cfg
            .global
            .evaluation_interval
            .map(|d| d.as_millis() as i64)
            .filter(|&ms| ms > 0)
            .unwrap_or(DEFAULT_EVALUATION_INTERVAL_MS),
        external_labels: labels_of(cfg),
        alert: cfg.pharos.rules.clone(),
    }
}

/// The YAML `/api/v1/status/config` shows: the file as written (secrets
/// masked) or, without a file, the effective config.
fn shown_yaml(cfg: &Config, text: Option<&str>) -> String {
    match text {
        Some(text) => match serde_yaml::from_str::<serde_yaml::Value>(text) {
            Ok(mut v) => {
                mask_secrets(&mut v);
                serde_yaml::to_string(&v).unwrap_or_default()
            }
            Err(_) => String::new(),
        },
        None => {
            let mut v = serde_yaml::to_value(cfg).unwrap_or(serde_yaml::Value::Null);
            mask_secrets(&mut v);
            serde_yaml::to_string(&v).unwrap_or_default()
        }
    }
}

/// Checks everything in `cfg` that can fail, without starting anything.
fn prepare(
    config: Config,
    path: Option<&Path>,
    text: Option<&str>,
) -> Result<Prepared, ReloadError> {
    let base_dir = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let name = path.unwrap_or(Path::new("<config>"));
    let alertmanagers = config.alertmanagers(name)?;
    let rule_globs = config.rule_globs(&base_dir);
    load_globs(&rule_globs).map_err(|errs| ReloadError::Rules(join_errors(&errs)))?;
    let yaml = shown_yaml(&config, text);
    Ok(Prepared {
        config,
        yaml,
        rule_globs,
        alertmanagers,
        base_dir,
    })
}

impl Services {
    /// Builds and starts every service from the loaded config. Must run
    /// inside the tokio runtime. `config_file` is the file's path and text
    /// when the config came from one.
    pub fn start(
        config: &Config,
        config_file: Option<(&Path, &str)>,
        queryable: Arc<dyn Queryable>,
        sink: Arc<dyn WriteSink>,
        engine_options: EngineOptions,
        external_url: String,
        roles: Roles,
    ) -> Result<Arc<Services>, ReloadError> {
        let p = prepare(
            config.clone(),
            config_file.map(|f| f.0),
            config_file.map(|f| f.1),
        )?;
        let scrape = ScrapeManager::new(Arc::clone(&sink), roles.assignment);
        let rules = Self::build_rules(
            rule_options(&p.config),
            &queryable,
            &sink,
            &engine_options,
            &external_url,
            &roles.leader,
            p.alertmanagers.clone(),
        );
        let svc = Arc::new(Services {
            scrape,
            rules: RwLock::new(rules),
            queryable,
            sink,
            engine_options,
            external_url,
            leader: roles.leader,
            config_path: config_file.map(|f| f.0.to_path_buf()),
            config_yaml: RwLock::new(String::new()),
            reloading: Mutex::new(()),
            last_reload: RwLock::new((true, SystemTime::now())),
        });
        svc.apply(p, true)?;
        Ok(svc)
    }

    fn build_rules(
        opts: RuleOptions,
        queryable: &Arc<dyn Queryable>,
        sink: &Arc<dyn WriteSink>,
        engine_options: &EngineOptions,
        external_url: &str,
        leader: &Arc<dyn LeaderCheck>,
        alertmanagers: Vec<pharos_alerting::notifier::AlertmanagerConfig>,
    ) -> Rules {
        let leader = Arc::clone(leader);
        let notifier = Notifier::new(
            NotifierOptions {
                external_labels: opts.external_labels.clone(),
                ..NotifierOptions::default()
            },
            alertmanagers,
            Arc::clone(&leader),
        );
        let notifier_task = tokio::spawn(Arc::clone(&notifier).run());
        let manager = RuleManager::new(
            ManagerOptions {
                default_interval_ms: opts.interval_ms,
                external_labels: opts.external_labels.clone(),
                external_url: external_url.to_string(),
                engine: Engine::new(engine_options.clone()),
                for_grace_period_ms: opts.alert.for_grace_period.as_millis() as i64,
                outage_tolerance_ms: opts.alert.for_outage_tolerance.as_millis() as i64,
                resend_delay_ms: opts.alert.resend_delay.as_millis() as i64,
                ..ManagerOptions::default()
            },
            Arc::clone(queryable),
            Arc::new(RuleSink(Arc::clone(sink))),
            leader,
            Arc::new(SystemClock),
            Some(Arc::clone(&notifier)),
        );
        Rules {
            opts,
            manager,
            notifier,
            notifier_task,
        }
    }

    /// Applies a prepared config: rules first (the only step that can
    /// still fail, and it changes nothing when it does), then targets and
    /// Alertmanagers.
    fn apply(&self, p: Prepared, first: bool) -> Result<(), ReloadError> {
        let want = rule_options(&p.config);
        let same = self.rules.read().opts == want;
        if same {
            let rules = self.rules.read();
            rules
                .manager
                .load(&p.rule_globs)
                .map_err(|errs| ReloadError::Rules(join_errors(&errs)))?;
            rules.notifier.set_alertmanagers(p.alertmanagers.clone());
            // A running manager restarts its groups inside `load`.
            if first {
                rules
                    .manager
                    .start()
                    .map_err(|e| ReloadError::Rules(e.to_string()))?;
            }
        } else {
            // External labels or the evaluation interval changed: new
            // manager and notifier; alert state comes back from
            // ALERTS_FOR_STATE as after a restart.
            let fresh = Self::build_rules(
                want,
                &self.queryable,
                &self.sink,
                &self.engine_options,
                &self.external_url,
                &self.leader,
                p.alertmanagers.clone(),
            );
            if let Err(errs) = fresh.manager.load(&p.rule_globs) {
                fresh.notifier_task.abort();
                return Err(ReloadError::Rules(join_errors(&errs)));
            }
            // The old manager stops before the new one starts, so no group
            // is evaluated twice for the same tick.
            let mut slot = self.rules.write();
            slot.manager.stop();
            if let Err(e) = fresh.manager.start() {
                fresh.notifier_task.abort();
                // Only possible outside a runtime; the old rules go on.
                let _ = slot.manager.start();
                return Err(ReloadError::Rules(e.to_string()));
            }
            let old = std::mem::replace(&mut *slot, fresh);
            drop(slot);
            // What the old notifier still holds (resolved alerts, say) is
            // sent before it goes.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(SHUTDOWN_FLUSH, old.notifier.flush()).await;
                old.notifier_task.abort();
            });
        }
        self.scrape.apply(p.config.scrape_settings(&p.base_dir));
        *self.config_yaml.write() = p.yaml;
        Ok(())
    }

    /// Re-reads the config file and applies it all-or-nothing. Without a
    /// config file there is nothing to reload and this succeeds.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let _one = self.reloading.lock();
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let result = self.reload_from(path);
        let mut last = self.last_reload.write();
        last.0 = result.is_ok();
        if result.is_ok() {
            last.1 = SystemTime::now();
        }
        result
    }

    fn reload_from(&self, path: &Path) -> Result<(), ReloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text, path)?;
        for (section, why) in config.inert_sections() {
            tracing::warn!(
                section,
                reason = why,
                "configuration section accepted but not acted on"
            );
        }
        let p = prepare(config, Some(path), Some(&text))?;
        self.apply(p, false)?;
        tracing::info!(file = %path.display(), "configuration reloaded");
        Ok(())
    }

    /// The rule manager now running (for `/api/v1/rules`, `/api/v1/alerts`).
    pub fn rule_manager(&self) -> Arc<RuleManager> {
        Arc::clone(&self.rules.read().manager)
    }

    /// Registers the current rule manager's and notifier's metrics
    /// (`pharos_rules_*`, `pharos_notifier_*`) into `r`. Their counters
    /// start again from zero when a reload rebuilds them.
    pub fn register_metrics(&self, r: &mut prometheus_client::registry::Registry) {
        use prometheus_client::metrics::gauge::Gauge;
        let rules = self.rules.read();
        rules.manager.metrics.register(r);
        rules.notifier.stats.register(r);
        let (ok, at) = self.last_reload();
        let success = Gauge::<i64>::default();
        success.set(i64::from(ok));
        r.register(
            "pharos_config_last_reload_successful",
            "Whether the last configuration reload attempt succeeded",
            success,
        );
        let when = Gauge::<i64>::default();
        when.set(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        r.register(
            "pharos_config_last_reload_success_timestamp_seconds",
            "When a configuration was last applied, seconds since the Unix epoch",
            when,
        );
    }

    /// Whether the last reload attempt succeeded, and when a configuration
    /// was last applied.
    pub fn last_reload(&self) -> (bool, SystemTime) {
        *self.last_reload.read()
    }

    /// The applied configuration as YAML, secrets masked.
    pub fn config_yaml(&self) -> String {
        self.config_yaml.read().clone()
    }

    /// Stops rule evaluation and scraping (without staleness markers) and
    /// sends what the notifier still holds, bounded in time.
    pub async fn shutdown(&self) {
        let (manager, notifier) = {
            let r = self.rules.read();
            (Arc::clone(&r.manager), Arc::clone(&r.notifier))
        };
        manager.stop();
        self.scrape.shutdown().await;
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, notifier.flush()).await;
        self.rules.read().notifier_task.abort();
    }
}
