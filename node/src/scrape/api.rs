//! The JSON of `/api/v1/targets` and `/api/v1/targets/metadata`, in
//! Prometheus's shapes, built from a [`ScrapeManager`] snapshot. The server
//! adds the routes and wraps `data` in its usual `{"status":"success"}`
//! envelope.
//!
//! Must not: know about HTTP.

use std::collections::BTreeMap;
use std::time::SystemTime;

use pharos_storage::labels::{Labels, Matcher};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::manager::ScrapeManager;
use crate::config::duration::format_duration_ms;

/// `data` of `/api/v1/targets`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetsData {
    pub active_targets: Vec<ActiveTarget>,
    pub dropped_targets: Vec<DroppedTarget>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActiveTarget {
    pub discovered_labels: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub scrape_pool: String,
    pub scrape_url: String,
    pub global_url: String,
    pub last_error: String,
    /// RFC 3339; `0001-01-01T00:00:00Z` before the first scrape.
    pub last_scrape: String,
    pub last_scrape_duration: f64,
    /// `up`, `down` or `unknown`.
    pub health: &'static str,
    pub scrape_interval: String,
    pub scrape_timeout: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DroppedTarget {
    pub discovered_labels: BTreeMap<String, String>,
}

/// One entry of `/api/v1/targets/metadata`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetMetadata {
    pub target: BTreeMap<String, String>,
    pub metric: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub help: String,
    pub unit: String,
}

/// The `state` parameter of `/api/v1/targets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    Any,
    Active,
    Dropped,
}

impl StateFilter {
    /// Prometheus treats an unknown or empty value as `any`.
    pub fn parse(s: Option<&str>) -> StateFilter {
        match s.map(str::to_ascii_lowercase).as_deref() {
            Some("active") => StateFilter::Active,
            Some("dropped") => StateFilter::Dropped,
            _ => StateFilter::Any,
        }
    }
}

fn map(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn rfc3339(t: Option<SystemTime>) -> String {
    t.and_then(|t| OffsetDateTime::from(t).format(&Rfc3339).ok())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// Prometheus's `globalUrl`: the scrape URL with a loopback host replaced
/// by this machine's hostname, so the link works from elsewhere.
pub fn global_url(url: &str, hostname: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], &authority[i..]),
        _ => (authority, ""),
    };
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback && !hostname.is_empty() {
        format!("{scheme}://{hostname}{port}{path}")
    } else {
        url.to_string()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn dur(d: std::time::Duration) -> String {
    format_duration_ms(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `/api/v1/targets?state=…&scrapePool=…`.
pub fn targets(m: &ScrapeManager, state: StateFilter, scrape_pool: Option<&str>) -> TargetsData {
    let mut out = TargetsData {
        active_targets: Vec::new(),
        dropped_targets: Vec::new(),
    };
    let host = hostname();
    for pool in m.snapshot() {
        if scrape_pool.is_some_and(|p| p != pool.job.job_name) {
            continue;
        }
        if state != StateFilter::Dropped {
            for a in &pool.active {
                out.active_targets.push(ActiveTarget {
                    discovered_labels: map(&a.target.discovered),
                    labels: map(&a.target.series_labels()),
                    scrape_pool: pool.job.job_name.clone(),
                    scrape_url: a.target.url.clone(),
                    global_url: global_url(&a.target.url, &host),
                    last_error: a.status.last_error.clone(),
                    last_scrape: rfc3339(a.status.last_scrape),
                    last_scrape_duration: a.status.last_duration.as_secs_f64(),
                    health: a.status.health.as_str(),
                    scrape_interval: dur(a.target.interval),
                    scrape_timeout: dur(a.target.timeout),
                });
            }
        }
        if state != StateFilter::Active {
            for d in &pool.dropped {
                out.dropped_targets.push(DroppedTarget {
                    discovered_labels: map(d),
                });
            }
        }
    }
    out
}

/// `/api/v1/targets/metadata?match_target=…&metric=…&limit=…`: metadata of
/// the targets whose series labels match every matcher (all targets when
/// `match_target` is empty), optionally for one metric, at most `limit`
/// entries.
pub fn targets_metadata(
    m: &ScrapeManager,
    match_target: &[Matcher],
    metric: Option<&str>,
    limit: Option<usize>,
) -> Vec<TargetMetadata> {
    let mut out = Vec::new();
    for pool in m.snapshot() {
        for a in &pool.active {
            let labels = a.target.series_labels();
            if !match_target
                .iter()
                .all(|mt| mt.matches(labels.get_or_empty(&mt.name)))
            {
                continue;
            }
            let mut metas: Vec<_> = a.status.metadata.iter().collect();
            metas.sort_by(|x, y| x.0.cmp(y.0));
            for (name, meta) in metas {
                if metric.is_some_and(|want| want != name) {
                    continue;
                }
                if limit.is_some_and(|l| out.len() >= l) {
                    return out;
                }
                out.push(TargetMetadata {
                    target: map(&labels),
                    metric: name.clone(),
                    kind: meta.kind,
                    help: meta.help.clone(),
                    unit: meta.unit.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_filter() {
        assert_eq!(StateFilter::parse(Some("Active")), StateFilter::Active);
        assert_eq!(StateFilter::parse(Some("dropped")), StateFilter::Dropped);
        assert_eq!(StateFilter::parse(Some("x")), StateFilter::Any);
        assert_eq!(StateFilter::parse(None), StateFilter::Any);
        assert_eq!(rfc3339(None), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn global_urls() {
        assert_eq!(
            global_url("http://127.0.0.1:1/metrics", "vm"),
            "http://vm:1/metrics"
        );
        assert_eq!(
            global_url("http://localhost:9/m?a=b", "vm"),
            "http://vm:9/m?a=b"
        );
        assert_eq!(global_url("https://[::1]:9/m", "vm"), "https://vm:9/m");
        assert_eq!(
            global_url("http://10.0.0.1:9/m", "vm"),
            "http://10.0.0.1:9/m"
        );
        assert_eq!(
            global_url("http://127.0.0.1:1/metrics", ""),
            "http://127.0.0.1:1/metrics"
        );
    }
}
