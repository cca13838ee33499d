//! Targets: turning discovered label sets into scrape targets (Prometheus's
//! label population and target relabeling), the spread of scrape start
//! times, and placement — which node scrapes a target.
//!
//! Owns: [`populate`], [`Target`], [`shard_of`], [`placement_key`] and the
//! [`Assignment`] seam (the cluster supplies its shard map through it).
//! Must not: do I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use pharos_storage::labels::{Labels, LabelsBuilder};

use super::config::JobSettings;
use super::relabel;
use crate::config::duration::{format_duration_ms, parse_duration_ms};

pub const ADDRESS_LABEL: &str = "__address__";
pub const SCHEME_LABEL: &str = "__scheme__";
pub const METRICS_PATH_LABEL: &str = "__metrics_path__";
pub const SCRAPE_INTERVAL_LABEL: &str = "__scrape_interval__";
pub const SCRAPE_TIMEOUT_LABEL: &str = "__scrape_timeout__";
pub const PARAM_PREFIX: &str = "__param_";
pub const META_PREFIX: &str = "__meta_";

/// A target to scrape, after relabeling.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub job: String,
    /// Labels before relabeling (shown by `/api/v1/targets`).
    pub discovered: Labels,
    /// Labels after relabeling, `__`-prefixed ones included (no `__meta_`).
    pub labels: Labels,
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Outcome of populating one discovered label set.
#[derive(Debug, Clone, PartialEq)]
pub enum Populated {
    Active(Target),
    /// Dropped by relabeling; carries the discovered labels.
    Dropped(Labels),
}

impl Target {
    /// The labels every series of this target gets: those without a `__`
    /// prefix.
    pub fn series_labels(&self) -> Labels {
        Labels::from_sorted_unchecked(self.labels.iter().filter(|(n, _)| !n.starts_with("__")))
    }

    /// Identity of the target within its job: labels and URL.
    pub fn hash(&self) -> u64 {
        let mut b = self.labels.as_bytes().to_vec();
        b.extend_from_slice(self.url.as_bytes());
        xxhash_rust::xxh3::xxh3_64(&b)
    }

    /// Delay from `now_ms` to this target's first scrape: every target gets
    /// a fixed phase within the interval derived from its hash (as
    /// Prometheus does), so targets are spread evenly and a restart keeps
    /// each target's phase.
    pub fn offset(&self, seed: u64, now_ms: u64) -> Duration {
        let iv = u64::try_from(self.interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let base = iv - now_ms % iv;
        let phase = (self.hash() ^ seed) % iv;
        let mut next = base + phase;
        if next >= iv {
            next -= iv;
        }
        Duration::from_millis(next)
    }
}

/// Adds the default port for the scheme when `addr` has none, as
/// Prometheus 2.x does.
fn with_port(addr: &str, scheme: &str) -> String {
    let has_port = match addr.rfind(']') {
        Some(i) => addr[i..].contains(':'),
        None => addr.contains(':'),
    };
    if has_port {
        addr.to_string()
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{addr}:{port}")
    }
}

/// Prometheus's label population: scrape defaults, params, target
/// relabeling, address checks, interval/timeout overrides, `instance`
/// defaulting to the address. `group` holds `__address__`, the group's
/// labels and any `__meta_*` labels.
pub fn populate(job: &JobSettings, group: &Labels) -> Result<Populated, String> {
    let mut lb = group.builder();
    let interval = format_duration_ms(u64::try_from(job.interval.as_millis()).unwrap_or(u64::MAX));
    let timeout = format_duration_ms(u64::try_from(job.timeout.as_millis()).unwrap_or(u64::MAX));
    let defaults = [
        ("job", job.job_name.as_str()),
        (SCRAPE_INTERVAL_LABEL, interval.as_str()),
        (SCRAPE_TIMEOUT_LABEL, timeout.as_str()),
        (METRICS_PATH_LABEL, job.metrics_path.as_str()),
        (SCHEME_LABEL, job.scheme.as_str()),
    ];
    for (n, v) in defaults {
        if lb.get(n).is_none() {
            lb.set(n, v);
        }
    }
    for (k, vs) in &job.params {
        let name = format!("{PARAM_PREFIX}{k}");
        if let Some(first) = vs.first() {
            if lb.get(&name).is_none() {
                lb.set(&name, first);
            }
        }
    }
    let discovered = lb.build();
    for r in &job.relabel_configs {
        if !relabel::apply(&mut lb, r) {
            return Ok(Populated::Dropped(discovered));
        }
    }
    let addr = lb.get(ADDRESS_LABEL).unwrap_or("").to_string();
    if addr.is_empty() {
        return Err("no address".into());
    }
    if addr.contains('/') {
        return Err(format!("{addr:?} is not a valid hostname"));
    }
    let scheme = lb.get(SCHEME_LABEL).unwrap_or("http").to_string();
    if scheme != "http" && scheme != "https" {
        return Err(format!("invalid scheme {scheme:?}"));
    }
    let addr = with_port(&addr, &scheme);
    lb.set(ADDRESS_LABEL, &addr);
    let dur = |name: &str| -> Result<Duration, String> {
        let v = lb.get(name).unwrap_or("");
        parse_duration_ms(v)
            .map(Duration::from_millis)
            .map_err(|e| format!("error parsing {name} {v:?}: {e}"))
    };
    let interval = dur(SCRAPE_INTERVAL_LABEL)?;
    let timeout = dur(SCRAPE_TIMEOUT_LABEL)?;
    if interval.is_zero() {
        return Err("scrape interval cannot be 0".into());
    }
    if timeout.is_zero() {
        return Err("scrape timeout cannot be 0".into());
    }
    if timeout > interval {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({} > {})",
            lb.get(SCRAPE_TIMEOUT_LABEL).unwrap_or(""),
            lb.get(SCRAPE_INTERVAL_LABEL).unwrap_or("")
        ));
    }
    lb.retain(|n| !n.starts_with(META_PREFIX));
    if lb.get("instance").is_none() {
        lb.set("instance", &addr);
    }
    let labels = lb.build();
    let url = scrape_url(&labels, job);
    Ok(Populated::Active(Target {
        job: job.job_name.clone(),
        discovered,
        labels,
        url,
        interval,
        timeout,
    }))
}

/// `scheme://address/path?params`, `__param_*` labels overriding the first
/// value of each configured parameter.
fn scrape_url(labels: &Labels, job: &JobSettings) -> String {
    let mut params: BTreeMap<String, Vec<String>> = job.params.clone();
    for (n, v) in labels.iter() {
        if let Some(k) = n.strip_prefix(PARAM_PREFIX) {
            let e = params.entry(k.to_string()).or_default();
            if e.is_empty() {
                e.push(v.to_string());
            } else {
                e[0] = v.to_string();
            }
        }
    }
    let mut url = format!(
        "{}://{}{}",
        labels.get(SCHEME_LABEL).unwrap_or("http"),
        labels.get(ADDRESS_LABEL).unwrap_or(""),
        labels.get(METRICS_PATH_LABEL).unwrap_or("/metrics")
    );
    if !params.is_empty() {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, vs) in &params {
            for v in vs {
                q.append_pair(k, v);
            }
        }
        url.push('?');
        url.push_str(&q.finish());
    }
    url
}

/// The label set a discovered target starts from.
pub fn group_labels(
    address: &str,
    labels: &BTreeMap<String, String>,
    extra: &[(&str, &str)],
) -> Labels {
    let mut lb = LabelsBuilder::new();
    for (n, v) in labels {
        lb.set(n, v);
    }
    for (n, v) in extra {
        lb.set(n, v);
    }
    lb.set(ADDRESS_LABEL, address);
    lb.build()
}

/// Which shard a placement-key hash falls in: shard `i` owns hashes
/// `[i·2⁶⁴/shards, (i+1)·2⁶⁴/shards)`.
pub fn shard_of(key_hash: u64, shards: u32) -> u32 {
    ((u128::from(key_hash) * u128::from(shards.max(1))) >> 64) as u32
}

/// The placement key of a label set: the hash of `job` and `instance` when
/// both are present (so a target's series share a shard), else the series
/// hash.
pub fn placement_key(labels: &Labels) -> u64 {
    if labels.has("job") && labels.has("instance") {
        labels.hash_for(&["instance", "job"])
    } else {
        labels.hash()
    }
}

/// Decides whether this node scrapes a target.
pub trait Assignment: Send + Sync {
    /// `target_labels` are the target's series labels (no `__` labels).
    fn is_mine(&self, target_labels: &Labels) -> bool;
}

/// A single node scrapes everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleNode;

impl Assignment for SingleNode {
    fn is_mine(&self, _target_labels: &Labels) -> bool {
        true
    }
}

/// A node of a cluster: scrapes the targets whose shard it is primary for.
/// The cluster supplies `is_primary(shard)` from its shard map.
pub struct Sharded<F: Fn(u32) -> bool + Send + Sync> {
    pub shards: u32,
    pub is_primary: F,
}

impl<F: Fn(u32) -> bool + Send + Sync> Assignment for Sharded<F> {
    fn is_mine(&self, target_labels: &Labels) -> bool {
        (self.is_primary)(shard_of(placement_key(target_labels), self.shards))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::config::ScrapeFile;
    use std::path::Path;

    fn job(yaml: &str) -> JobSettings {
        let f = ScrapeFile::parse(yaml, Path::new("p.yml")).unwrap();
        f.settings(Path::new("p.yml")).jobs.remove(0)
    }

    #[test]
    fn population_defaults_and_url() {
        let j = job("scrape_configs:\n  - job_name: n\n    scrape_interval: 1s\n    params:\n      module: [a, b]\n");
        let g = group_labels(
            "host",
            &BTreeMap::from([("env".to_string(), "p".to_string())]),
            &[("__meta_x", "1")],
        );
        let Populated::Active(t) = populate(&j, &g).unwrap() else {
            panic!()
        };
        assert_eq!(t.url, "http://host:80/metrics?module=a&module=b");
        assert_eq!(
            t.series_labels(),
            Labels::from_pairs([("env", "p"), ("instance", "host:80"), ("job", "n")])
        );
        assert!(!t.labels.has("__meta_x"));
        assert!(t.discovered.has("__meta_x"));
        assert_eq!(t.discovered.get("__param_module"), Some("a"));
        assert_eq!(t.interval, Duration::from_secs(1));
        assert_eq!(t.timeout, Duration::from_secs(1));
    }

    #[test]
    fn relabeling_drops_overrides_and_fails() {
        let j = job(r#"scrape_configs:
  - job_name: n
    relabel_configs:
      - source_labels: [__address__]
        regex: 'skip.*'
        action: drop
      - source_labels: [__address__]
        regex: '(.*):(\d+)'
        target_label: __param_target
        replacement: '$1'
      - target_label: __scheme__
        replacement: https
      - target_label: instance
        source_labels: [__address__]
        regex: '(.*):\d+'
      - target_label: __scrape_interval__
        replacement: 30s
"#);
        let d = populate(&j, &group_labels("skip:1", &BTreeMap::new(), &[])).unwrap();
        assert!(matches!(d, Populated::Dropped(l) if l.get("__address__") == Some("skip:1")));
        let Populated::Active(t) =
            populate(&j, &group_labels("[::1]:9100", &BTreeMap::new(), &[])).unwrap()
        else {
            panic!()
        };
        assert_eq!(t.url, "https://[::1]:9100/metrics?target=%5B%3A%3A1%5D");
        assert_eq!(t.series_labels().get("instance"), Some("[::1]"));
        assert_eq!(t.interval, Duration::from_secs(30));
        let j2 = job("scrape_configs:\n  - job_name: n\n    relabel_configs:\n      - target_label: __address__\n        replacement: 'a/b'\n");
        assert!(populate(&j2, &group_labels("x:1", &BTreeMap::new(), &[])).is_err());
        let j3 = job("scrape_configs:\n  - job_name: n\n    relabel_configs:\n      - target_label: __scrape_timeout__\n        replacement: 2m\n");
        assert!(populate(&j3, &group_labels("x:1", &BTreeMap::new(), &[])).is_err());
    }

    #[test]
    fn offsets_are_stable_and_within_the_interval() {
        let j = job("scrape_configs:\n  - job_name: n\n    scrape_interval: 10s\n");
        let mut phases = std::collections::HashSet::new();
        for i in 0..50 {
            let Populated::Active(t) =
                populate(&j, &group_labels(&format!("h{i}:1"), &BTreeMap::new(), &[])).unwrap()
            else {
                panic!()
            };
            let now = 1_000_000_123;
            let o = t.offset(7, now);
            assert!(o < Duration::from_secs(10));
            // The phase is fixed: now + offset lands on the same point of the cycle.
            let phase = (now + o.as_millis() as u64) % 10_000;
            let later = now + 3_456;
            assert_eq!(
                (later + t.offset(7, later).as_millis() as u64) % 10_000,
                phase
            );
            phases.insert(phase / 1000);
        }
        assert!(
            phases.len() >= 6,
            "phases spread over the interval: {phases:?}"
        );
    }

    #[test]
    fn shards_split_the_hash_space_evenly() {
        assert_eq!(shard_of(0, 256), 0);
        assert_eq!(shard_of(u64::MAX, 256), 255);
        assert_eq!(shard_of(1 << 56, 256), 1);
        assert_eq!(shard_of((1 << 56) - 1, 256), 0);
        assert_eq!(shard_of(u64::MAX / 3 + 1, 3), 1);
        assert_eq!(shard_of(123, 1), 0);
    }

    #[test]
    fn assignment() {
        let l = Labels::from_pairs([("job", "j"), ("instance", "i"), ("env", "x")]);
        assert!(SingleNode.is_mine(&l));
        let key = placement_key(&l);
        assert_eq!(
            key,
            placement_key(&Labels::from_pairs([("job", "j"), ("instance", "i")]))
        );
        let mine = shard_of(key, 16);
        let a = Sharded {
            shards: 16,
            is_primary: move |s| s == mine,
        };
        assert!(a.is_mine(&l));
        let b = Sharded {
            shards: 16,
            is_primary: move |s| s != mine,
        };
        assert!(!b.is_mine(&l));
        let no_instance = Labels::from_pairs([("job", "j")]);
        assert_eq!(placement_key(&no_instance), no_instance.hash());
    }
}
