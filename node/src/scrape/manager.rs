//! The scrape manager: holds the running scrape configuration, discovers
//! targets (`static_configs`, and `file_sd_configs` whose files are
//! watched and re-read when they change), relabels them, keeps one scrape
//! loop per target assigned to this node, and applies reloads.
//!
//! Reload semantics (as Prometheus): a target whose series labels stay the
//! same keeps its loop (and its staleness state) and picks up the new
//! settings; a target that disappears — removed from a file, dropped by
//! new relabeling, its job deleted, or reassigned to another node — gets
//! staleness markers for all its series. Shutdown stops loops without
//! markers. A config that fails to load is never applied
//! ([`ScrapeManager::reload_file`]).
//!
//! Must not: serve HTTP or parse bodies (the loops do).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use pharos_storage::labels::{is_valid_label_name, Labels};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{
    FileSdConfig, JobSettings, ScrapeFile, ScrapeSettings, DEFAULT_FILE_SD_REFRESH,
};
use super::scrape_loop::{self, Control, LoopState, TargetStatus};
use super::target::{self, Assignment, Populated, Target};
use crate::config::ConfigError;
use crate::sink::WriteSink;

/// How often watched file_sd files are checked for changes.
const FILE_POLL: Duration = Duration::from_millis(500);

/// One running target as the API sees it.
#[derive(Debug, Clone)]
pub struct ActiveSnapshot {
    pub target: Target,
    pub status: TargetStatus,
}

/// One job as the API sees it.
#[derive(Debug, Clone)]
pub struct PoolSnapshot {
    pub job: Arc<JobSettings>,
    pub active: Vec<ActiveSnapshot>,
    /// Discovered label sets dropped by relabeling.
    pub dropped: Vec<Labels>,
    /// Targets that could not be created (bad address, bad interval …).
    pub errors: Vec<String>,
}

struct LoopHandle {
    tx: watch::Sender<Control>,
    status: Arc<RwLock<TargetStatus>>,
    target: Target,
    job: Arc<JobSettings>,
    task: JoinHandle<()>,
}

struct Pool {
    job: Arc<JobSettings>,
    loops: HashMap<Labels, LoopHandle>,
    dropped: Vec<Labels>,
    errors: Vec<String>,
    groups: Vec<Labels>,
}

/// A file_sd file as last read.
struct FileEntry {
    mtime: Option<SystemTime>,
    len: u64,
    read_at: Instant,
    groups: Vec<Labels>,
}

struct State {
    settings: ScrapeSettings,
    seed: u64,
    pools: BTreeMap<String, Pool>,
    files: HashMap<PathBuf, FileEntry>,
    discovery: Option<JoinHandle<()>>,
}

struct Inner {
    sink: Arc<dyn WriteSink>,
    assignment: Arc<dyn Assignment>,
    state: Mutex<State>,
}

/// Runs scrape loops for the configured, assigned targets.
#[derive(Clone)]
pub struct ScrapeManager {
    inner: Arc<Inner>,
}

/// A `file_sd` file's entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Reads one file_sd file (`.json`, `.yml` or `.yaml`).
pub fn read_sd_file(path: &Path) -> Result<Vec<Labels>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let groups: Vec<FileGroup> = match ext {
        "json" => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?,
        "yml" | "yaml" => {
            if text.trim().is_empty() {
                Vec::new()
            } else {
                serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
        }
        _ => {
            return Err(format!(
                "{}: file_sd files must end in .json, .yml or .yaml",
                path.display()
            ))
        }
    };
    let fp = path.display().to_string();
    let mut out = Vec::new();
    for g in groups {
        if let Some(bad) = g.labels.keys().find(|n| !is_valid_label_name(n)) {
            return Err(format!(
                "{}: {bad:?} is not a valid label name",
                path.display()
            ));
        }
        for t in &g.targets {
            out.push(target::group_labels(
                t,
                &g.labels,
                &[("__meta_filepath", &fp)],
            ));
        }
    }
    Ok(out)
}

/// Files matched by one `files` pattern; `*` and `?` globs are allowed in
/// the last path element, as Prometheus allows.
fn expand(pattern: &str, base: &Path) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    if !name.contains(['*', '?', '[']) {
        return vec![p];
    }
    let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(name, n)))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Shell-style match of `*` and `?` (no character classes).
fn glob_match(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl State {
    /// All discovered groups of a job, reading changed file_sd files.
    fn groups(&mut self, job: &JobSettings, force: bool) -> Vec<Labels> {
        let mut out = Vec::new();
        for sc in &job.static_configs {
            for t in &sc.targets {
                out.push(target::group_labels(t, &sc.labels, &[]));
            }
        }
        let base = self.settings.base_dir.clone();
        for fsd in &job.file_sd_configs {
            out.extend(self.file_groups(fsd, &base, force));
        }
        out
    }

    fn file_groups(&mut self, fsd: &FileSdConfig, base: &Path, force: bool) -> Vec<Labels> {
        let refresh = fsd
            .refresh_interval
            .unwrap_or(DEFAULT_FILE_SD_REFRESH)
            .as_std();
        let mut out = Vec::new();
        for pattern in &fsd.files {
            for path in expand(pattern, base) {
                let meta = std::fs::metadata(&path).ok();
                let mtime = meta.as_ref().and_then(|m| m.modified().ok());
                let len = meta.as_ref().map_or(0, |m| m.len());
                let stale = match self.files.get(&path) {
                    None => true,
                    Some(e) => {
                        force || e.mtime != mtime || e.len != len || e.read_at.elapsed() >= refresh
                    }
                };
                if stale {
                    match read_sd_file(&path) {
                        Ok(groups) => {
                            self.files.insert(
                                path.clone(),
                                FileEntry {
                                    mtime,
                                    len,
                                    read_at: Instant::now(),
                                    groups,
                                },
                            );
                        }
                        // Keep the last good content, as Prometheus does.
                        Err(e) => {
                            tracing::error!(error = %e, "file_sd: cannot read targets");
                            if let Some(entry) = self.files.get_mut(&path) {
                                entry.mtime = mtime;
                                entry.len = len;
                                entry.read_at = Instant::now();
                            }
                        }
                    }
                }
                if let Some(e) = self.files.get(&path) {
                    out.extend(e.groups.iter().cloned());
                }
            }
        }
        out
    }
}

impl ScrapeManager {
    /// A manager with no jobs. `assignment` decides which targets this node
    /// scrapes ([`target::SingleNode`] on one node).
    pub fn new(sink: Arc<dyn WriteSink>, assignment: Arc<dyn Assignment>) -> ScrapeManager {
        ScrapeManager {
            inner: Arc::new(Inner {
                sink,
                assignment,
                state: Mutex::new(State {
                    settings: ScrapeSettings::default(),
                    seed: 0,
                    pools: BTreeMap::new(),
                    files: HashMap::new(),
                    discovery: None,
                }),
            }),
        }
    }

    /// Loads `path` and applies it; on any error the running configuration
    /// stays and the error (file, line, field) is returned. Must be called
    /// inside a tokio runtime.
    pub fn reload_file(&self, path: &Path) -> Result<(), ConfigError> {
        let f = ScrapeFile::load(path)?;
        self.apply(f.settings(path));
        Ok(())
    }

    /// Applies a configuration (first load or reload). Must be called inside
    /// a tokio runtime.
    pub fn apply(&self, settings: ScrapeSettings) {
        let mut st = self.inner.state.lock();
        let mut seed_src = Vec::new();
        for (k, v) in &settings.external_labels {
            seed_src.extend_from_slice(k.as_bytes());
            seed_src.push(0xff);
            seed_src.extend_from_slice(v.as_bytes());
            seed_src.push(0xff);
        }
        st.seed = xxhash_rust::xxh3::xxh3_64(&seed_src);
        st.settings = settings;
        let jobs: Vec<Arc<JobSettings>> = st.settings.jobs.iter().cloned().map(Arc::new).collect();
        let removed: Vec<String> = st
            .pools
            .keys()
            .filter(|k| !jobs.iter().any(|j| &j.job_name == *k))
            .cloned()
            .collect();
        for name in removed {
            if let Some(pool) = st.pools.remove(&name) {
                for (_, h) in pool.loops {
                    let _ = h.tx.send(Control::Stop { stale: true });
                }
            }
        }
        for job in jobs {
            let groups = st.groups(&job, true);
            self.sync_pool(&mut st, job, groups);
        }
        if st.discovery.is_none() {
            let me = self.clone();
            st.discovery = Some(tokio::spawn(async move { me.watch_files().await }));
        }
    }

    /// Re-reads changed file_sd files and syncs the pools whose targets
    /// changed.
    async fn watch_files(self) {
        let mut tick = tokio::time::interval(FILE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut st = self.inner.state.lock();
            let jobs: Vec<Arc<JobSettings>> = st
                .pools
                .values()
                .filter(|p| !p.job.file_sd_configs.is_empty())
                .map(|p| Arc::clone(&p.job))
                .collect();
            for job in jobs {
                let groups = st.groups(&job, false);
                let same = st
                    .pools
                    .get(&job.job_name)
                    .is_some_and(|p| p.groups == groups);
                if !same {
                    self.sync_pool(&mut st, job, groups);
                }
            }
        }
    }

    fn sync_pool(&self, st: &mut State, job: Arc<JobSettings>, groups: Vec<Labels>) {
        let seed = st.seed;
        let pool = st
            .pools
            .entry(job.job_name.clone())
            .or_insert_with(|| Pool {
                job: Arc::clone(&job),
                loops: HashMap::new(),
                dropped: Vec::new(),
                errors: Vec::new(),
                groups: Vec::new(),
            });
        pool.job = Arc::clone(&job);
        pool.dropped.clear();
        pool.errors.clear();
        let mut want: HashMap<Labels, Target> = HashMap::new();
        for g in &groups {
            match target::populate(&job, g) {
                Ok(Populated::Active(t)) => {
                    let sl = t.series_labels();
                    if self.inner.assignment.is_mine(&sl) {
                        want.entry(sl).or_insert(t);
                    }
                }
                Ok(Populated::Dropped(d)) => pool.dropped.push(d),
                Err(e) => {
                    tracing::warn!(job = %job.job_name, labels = %g, error = %e, "creating target failed");
                    pool.errors.push(format!("{g}: {e}"));
                }
            }
        }
        pool.groups = groups;
        if job.keep_dropped_targets > 0 {
            pool.dropped
                .truncate(usize::try_from(job.keep_dropped_targets).unwrap_or(usize::MAX));
        }
        if job.target_limit > 0 && want.len() as u64 > job.target_limit {
            pool.errors.push(format!(
                "target_limit exceeded (number of targets: {}, limit: {})",
                want.len(),
                job.target_limit
            ));
            want.clear();
        }
        pool.loops.retain(|k, h| {
            let keep = want.contains_key(k);
            if !keep {
                let _ = h.tx.send(Control::Stop { stale: true });
            }
            keep
        });
        for (key, t) in want {
            if let Some(h) = pool.loops.get_mut(&key) {
                if h.target != t || h.job != job {
                    h.target = t.clone();
                    h.job = Arc::clone(&job);
                    let _ = h.tx.send(Control::Run(Arc::clone(&job), Box::new(t)));
                }
                continue;
            }
            let status = Arc::new(RwLock::new(TargetStatus::default()));
            let (tx, rx) = watch::channel(Control::Run(Arc::clone(&job), Box::new(t.clone())));
            let task = tokio::spawn(scrape_loop::run(
                rx,
                Arc::clone(&self.inner.sink),
                LoopState::new(Arc::clone(&status)),
                seed,
            ));
            pool.loops.insert(
                key,
                LoopHandle {
                    tx,
                    status,
                    target: t,
                    job: Arc::clone(&job),
                    task,
                },
            );
        }
    }

    /// What every job is doing (for `/api/v1/targets`).
    pub fn snapshot(&self) -> Vec<PoolSnapshot> {
        let st = self.inner.state.lock();
        st.pools
            .values()
            .map(|p| {
                let mut active: Vec<ActiveSnapshot> = p
                    .loops
                    .values()
                    .map(|h| ActiveSnapshot {
                        target: h.target.clone(),
                        status: h.status.read().clone(),
                    })
                    .collect();
                active.sort_by(|a, b| a.target.labels.cmp(&b.target.labels));
                PoolSnapshot {
                    job: Arc::clone(&p.job),
                    active,
                    dropped: p.dropped.clone(),
                    errors: p.errors.clone(),
                }
            })
            .collect()
    }

    /// The running configuration.
    pub fn settings(&self) -> ScrapeSettings {
        self.inner.state.lock().settings.clone()
    }

    /// Stops discovery and every loop without staleness markers (process
    /// shutdown), waiting for in-flight scrapes to finish their writes.
    pub async fn shutdown(&self) {
        let (tasks, discovery) = {
            let mut st = self.inner.state.lock();
            let mut tasks = Vec::new();
            for (_, pool) in std::mem::take(&mut st.pools) {
                for (_, h) in pool.loops {
                    let _ = h.tx.send(Control::Stop { stale: false });
                    tasks.push(h.task);
                }
            }
            (tasks, st.discovery.take())
        };
        if let Some(d) = discovery {
            d.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.json", "a.json"));
        assert!(glob_match("t?-*.yml", "t1-x.yml"));
        assert!(!glob_match("*.json", "a.yml"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbd"));
    }

    #[test]
    fn sd_files() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("a.json");
        std::fs::write(
            &j,
            r#"[{"targets": ["h1:1", "h2:2"], "labels": {"env": "p"}}]"#,
        )
        .unwrap();
        let y = dir.path().join("b.yml");
        std::fs::write(&y, "- targets: ['h3:3']\n").unwrap();
        std::fs::write(dir.path().join("c.txt"), "").unwrap();
        let g = read_sd_file(&j).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].get("env"), Some("p"));
        assert_eq!(g[0].get("__address__"), Some("h1:1"));
        assert_eq!(
            g[0].get("__meta_filepath"),
            Some(j.display().to_string().as_str())
        );
        assert_eq!(read_sd_file(&y).unwrap().len(), 1);
        assert!(read_sd_file(&dir.path().join("c.txt")).is_err());
        std::fs::write(&y, "- targets: ['h3:3']\n  labels: {'bad-name': x}\n").unwrap();
        assert!(read_sd_file(&y).is_err());
        let files = expand("*.json", dir.path());
        assert_eq!(files, vec![j]);
    }
}
