//! The scrape side of a `prometheus.yml`: `global` scrape defaults and
//! `external_labels`, and `scrape_configs` with every setting Pharos acts
//! on, typed and validated as Prometheus validates them.
//!
//! Owns: the serde types (deserializable from the same YAML as
//! [`crate::config::Config`], `deny_unknown_fields` inside every scrape
//! section), defaults, and [`ScrapeFile::parse`] whose errors name the file,
//! line and field (via [`crate::config::ConfigError`]).
//! Must not: start anything or touch the network; discovery and scraping
//! belong to the manager.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pharos_storage::labels::is_valid_label_name;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::relabel::RelabelConfig;
use crate::config::{ConfigError, PromDuration};

/// Prometheus's defaults.
pub const DEFAULT_SCRAPE_INTERVAL: PromDuration = PromDuration(60_000);
pub const DEFAULT_SCRAPE_TIMEOUT: PromDuration = PromDuration(10_000);
pub const DEFAULT_FILE_SD_REFRESH: PromDuration = PromDuration(300_000);

/// The parts of a `prometheus.yml` the scraper reads. Other top-level
/// sections are ignored here (the node's own config loader checks them).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ScrapeFile {
    #[serde(default)]
    pub global: ScrapeGlobal,
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
}

/// The `global` settings that matter to scraping; other global keys are
/// ignored here.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ScrapeGlobal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size_limit: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_name_length_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value_length_limit: Option<u64>,
}

/// A size as Prometheus writes it (`512`, `10KB`, `100MiB`; powers of 1024).
/// Zero means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
        let mult: u64 = match unit {
            "" | "B" => 1,
            "KB" | "KiB" => 1 << 10,
            "MB" | "MiB" => 1 << 20,
            "GB" | "GiB" => 1 << 30,
            "TB" | "TiB" => 1 << 40,
            "PB" | "PiB" => 1 << 50,
            "EB" | "EiB" => 1 << 60,
            _ => return Err(format!("invalid size unit in {s:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} overflows"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as 10MB")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}B", self.0))
    }
}

/// `basic_auth`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    #[serde(default)]
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// `authorization` (default type `Bearer`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
}

/// `tls_config`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
}

/// A `static_configs` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A `file_sd_configs` entry: files (the last path element may hold `*`
/// globs) holding JSON or YAML lists of static configs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<PromDuration>,
}

fn default_true() -> bool {
    true
}

/// One `scrape_configs` entry. Settings Prometheus accepts but Pharos does
/// not act on are accepted and listed by [`ScrapeConfig::unsupported`].
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default = "default_true")]
    pub honor_timestamps: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<TlsConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_sd_configs: Vec<FileSdConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_name_length_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value_length_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size_limit: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_http2: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_compression: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_dropped_targets: Option<u64>,
    // Accepted, not acted on (see `ScrapeConfig::unsupported`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_timestamps_staleness: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_protocols: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_classic_histograms: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_histogram_bucket_limit: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigv4: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azuread: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_iam: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_from_environment: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_connect_header: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gce_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerswarm_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digitalocean_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eureka_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hetzner_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ionos_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kuma_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightsail_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linode_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marathon_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nerve_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nomad_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovhcloud_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puppetdb_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaleway_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serverset_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triton_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uyuni_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vultr_sd_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stackit_sd_configs: Option<Value>,
}

impl ScrapeConfig {
    /// Settings present in this job that Pharos accepts but ignores.
    pub fn unsupported(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.track_timestamps_staleness.is_some() {
            out.push("track_timestamps_staleness");
        }
        if self.scrape_protocols.is_some() {
            out.push("scrape_protocols");
        }
        if self.scrape_classic_histograms.is_some() {
            out.push("scrape_classic_histograms");
        }
        if self.native_histogram_bucket_limit.is_some() {
            out.push("native_histogram_bucket_limit");
        }
        if self.oauth2.is_some() {
            out.push("oauth2");
        }
        if self.sigv4.is_some() {
            out.push("sigv4");
        }
        if self.azuread.is_some() {
            out.push("azuread");
        }
        if self.google_iam.is_some() {
            out.push("google_iam");
        }
        if self.proxy_url.is_some() {
            out.push("proxy_url");
        }
        if self.no_proxy.is_some() {
            out.push("no_proxy");
        }
        if self.proxy_from_environment.is_some() {
            out.push("proxy_from_environment");
        }
        if self.proxy_connect_header.is_some() {
            out.push("proxy_connect_header");
        }
        if self.http_headers.is_some() {
            out.push("http_headers");
        }
        if self.http_sd_configs.is_some() {
            out.push("http_sd_configs");
        }
        if self.dns_sd_configs.is_some() {
            out.push("dns_sd_configs");
        }
        if self.kubernetes_sd_configs.is_some() {
            out.push("kubernetes_sd_configs");
        }
        if self.consul_sd_configs.is_some() {
            out.push("consul_sd_configs");
        }
        if self.ec2_sd_configs.is_some() {
            out.push("ec2_sd_configs");
        }
        if self.gce_sd_configs.is_some() {
            out.push("gce_sd_configs");
        }
        if self.azure_sd_configs.is_some() {
            out.push("azure_sd_configs");
        }
        if self.docker_sd_configs.is_some() {
            out.push("docker_sd_configs");
        }
        if self.dockerswarm_sd_configs.is_some() {
            out.push("dockerswarm_sd_configs");
        }
        if self.digitalocean_sd_configs.is_some() {
            out.push("digitalocean_sd_configs");
        }
        if self.eureka_sd_configs.is_some() {
            out.push("eureka_sd_configs");
        }
        if self.hetzner_sd_configs.is_some() {
            out.push("hetzner_sd_configs");
        }
        if self.ionos_sd_configs.is_some() {
            out.push("ionos_sd_configs");
        }
        if self.kuma_sd_configs.is_some() {
            out.push("kuma_sd_configs");
        }
        if self.lightsail_sd_configs.is_some() {
            out.push("lightsail_sd_configs");
        }
        if self.linode_sd_configs.is_some() {
            out.push("linode_sd_configs");
        }
        if self.marathon_sd_configs.is_some() {
            out.push("marathon_sd_configs");
        }
        if self.nerve_sd_configs.is_some() {
            out.push("nerve_sd_configs");
        }
        if self.nomad_sd_configs.is_some() {
            out.push("nomad_sd_configs");
        }
        if self.openstack_sd_configs.is_some() {
            out.push("openstack_sd_configs");
        }
        if self.ovhcloud_sd_configs.is_some() {
            out.push("ovhcloud_sd_configs");
        }
        if self.puppetdb_sd_configs.is_some() {
            out.push("puppetdb_sd_configs");
        }
        if self.scaleway_sd_configs.is_some() {
            out.push("scaleway_sd_configs");
        }
        if self.serverset_sd_configs.is_some() {
            out.push("serverset_sd_configs");
        }
        if self.triton_sd_configs.is_some() {
            out.push("triton_sd_configs");
        }
        if self.uyuni_sd_configs.is_some() {
            out.push("uyuni_sd_configs");
        }
        if self.vultr_sd_configs.is_some() {
            out.push("vultr_sd_configs");
        }
        if self.stackit_sd_configs.is_some() {
            out.push("stackit_sd_configs");
        }
        out
    }
}

/// A scrape job with global defaults applied: what the manager runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    pub job_name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub metrics_path: String,
    pub scheme: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub tls_config: Option<TlsConfig>,
    pub static_configs: Vec<StaticConfig>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub relabel_configs: Vec<RelabelConfig>,
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// 0 = no limit, for every limit below.
    pub sample_limit: u64,
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    pub body_size_limit: u64,
    /// Most targets the job may have after relabeling (0 = no limit);
    /// past it no target of the job is scraped, as in Prometheus.
    pub target_limit: u64,
    /// Most dropped targets kept for the API (0 = all).
    pub keep_dropped_targets: u64,
}

/// Everything the scrape manager needs from a config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeSettings {
    pub external_labels: BTreeMap<String, String>,
    pub jobs: Vec<JobSettings>,
    /// Directory that relative file_sd paths are resolved against.
    pub base_dir: PathBuf,
}

impl ScrapeFile {
    /// Parses the scrape sections of a `prometheus.yml`; `path` names the
    /// file in errors and anchors relative file_sd paths.
    pub fn parse(text: &str, path: &Path) -> Result<ScrapeFile, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ScrapeFile::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let f: ScrapeFile =
            serde_path_to_error::deserialize(de).map_err(|e| crate::config::yaml_error(path, e))?;
        f.validate(text, path)?;
        Ok(f)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<ScrapeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ScrapeFile::parse(&text, path)
    }

    /// Checks what serde cannot (job names unique, label names, intervals,
    /// auth); `text` is the file's text, used only to name lines in errors.
    pub fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |line: usize, field: String, msg: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column: 1,
            field,
            msg,
        };
        for name in self.global.external_labels.keys() {
            if !is_valid_label_name(name) {
                return Err(invalid(
                    key_line(text, "external_labels", 0),
                    format!("global.external_labels.{name}"),
                    format!("{name:?} is not a valid label name"),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, sc) in self.scrape_configs.iter().enumerate() {
            let line = job_line(text, &sc.job_name);
            let at = |f: &str| format!("scrape_configs[{i}].{f}");
            if sc.job_name.is_empty() {
                return Err(invalid(line, at("job_name"), "job_name is empty".into()));
            }
            if !seen.insert(sc.job_name.as_str()) {
                return Err(invalid(
                    line,
                    at("job_name"),
                    format!(
                        "found multiple scrape configs with job name {:?}",
                        sc.job_name
                    ),
                ));
            }
            let scheme = sc.scheme.as_deref().unwrap_or("http");
            if scheme != "http" && scheme != "https" {
                return Err(invalid(
                    key_line(text, "scheme", line),
                    at("scheme"),
                    format!("unsupported scheme {scheme:?}; use http or https"),
                ));
            }
            if sc
                .metrics_path
                .as_deref()
                .is_some_and(|p| !p.starts_with('/'))
            {
                return Err(invalid(
                    key_line(text, "metrics_path", line),
                    at("metrics_path"),
                    "metrics_path must start with '/'".into(),
                ));
            }
            let (interval, timeout) = self.interval_and_timeout(sc);
            if interval.0 == 0 {
                return Err(invalid(
                    key_line(text, "scrape_interval", line),
                    at("scrape_interval"),
                    "scrape_interval must be positive".into(),
                ));
            }
            if timeout > interval {
                return Err(invalid(
                    key_line(text, "scrape_timeout", line),
                    at("scrape_timeout"),
                    format!(
                        "scrape timeout greater than scrape interval for scrape config with job name {:?}",
                        sc.job_name
                    ),
                ));
            }
            let auths = [
                sc.basic_auth.is_some(),
                sc.authorization.is_some(),
                sc.bearer_token.is_some() || sc.bearer_token_file.is_some(),
            ];
            if auths.iter().filter(|&&b| b).count() > 1 {
                return Err(invalid(
                    line,
                    at("authorization"),
                    "at most one of basic_auth, authorization and bearer_token(_file) may be configured".into(),
                ));
            }
            if let Some(a) = &sc.authorization {
                if a.credentials.is_some() && a.credentials_file.is_some() {
                    return Err(invalid(
                        key_line(text, "credentials_file", line),
                        at("authorization"),
                        "at most one of credentials and credentials_file may be configured".into(),
                    ));
                }
                if a.kind
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("basic"))
                {
                    return Err(invalid(
                        key_line(text, "authorization", line),
                        at("authorization.type"),
                        "authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                            .into(),
                    ));
                }
            }
            for (j, s) in sc.static_configs.iter().enumerate() {
                for name in s.labels.keys() {
                    if !is_valid_label_name(name) {
                        return Err(invalid(
                            key_line(text, name, line),
                            at(&format!("static_configs[{j}].labels.{name}")),
                            format!("{name:?} is not a valid label name"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn interval_and_timeout(&self, sc: &ScrapeConfig) -> (PromDuration, PromDuration) {
        let g_interval = self
            .global
            .scrape_interval
            .unwrap_or(DEFAULT_SCRAPE_INTERVAL);
        let g_timeout = self.global.scrape_timeout.unwrap_or(DEFAULT_SCRAPE_TIMEOUT);
        let interval = sc.scrape_interval.unwrap_or(g_interval);
        // As Prometheus: an unset timeout is the global one, capped at the
        // job's interval.
        let timeout = sc.scrape_timeout.unwrap_or(if g_timeout > interval {
            interval
        } else {
            g_timeout
        });
        (interval, timeout)
    }

    /// Applies global defaults; `path` is the config file (relative
    /// file_sd paths are resolved against its directory).
    pub fn settings(&self, path: &Path) -> ScrapeSettings {
        let g = &self.global;
        let limit = |job: Option<u64>, global: Option<u64>| job.or(global).unwrap_or(0);
        let jobs = self
            .scrape_configs
            .iter()
            .map(|sc| {
                let (interval, timeout) = self.interval_and_timeout(sc);
                let authorization = sc.authorization.clone().or_else(|| {
                    if sc.bearer_token.is_none() && sc.bearer_token_file.is_none() {
                        return None;
                    }
                    Some(Authorization {
                        kind: Some("Bearer".into()),
                        credentials: sc.bearer_token.clone(),
                        credentials_file: sc.bearer_token_file.clone(),
                    })
                });
                JobSettings {
                    job_name: sc.job_name.clone(),
                    interval: interval.as_std(),
                    timeout: timeout.as_std(),
                    metrics_path: sc.metrics_path.clone().unwrap_or_else(|| "/metrics".into()),
                    scheme: sc.scheme.clone().unwrap_or_else(|| "http".into()),
                    params: sc.params.clone(),
                    honor_labels: sc.honor_labels,
                    honor_timestamps: sc.honor_timestamps,
                    basic_auth: sc.basic_auth.clone(),
                    authorization,
                    tls_config: sc.tls_config.clone(),
                    static_configs: sc.static_configs.clone(),
                    file_sd_configs: sc.file_sd_configs.clone(),
                    relabel_configs: sc.relabel_configs.clone(),
                    metric_relabel_configs: sc.metric_relabel_configs.clone(),
                    sample_limit: limit(sc.sample_limit, g.sample_limit),
                    label_limit: limit(sc.label_limit, g.label_limit),
                    label_name_length_limit: limit(
                        sc.label_name_length_limit,
                        g.label_name_length_limit,
                    ),
                    label_value_length_limit: limit(
                        sc.label_value_length_limit,
                        g.label_value_length_limit,
                    ),
                    body_size_limit: sc.body_size_limit.or(g.body_size_limit).map_or(0, |b| b.0),
                    target_limit: sc.target_limit.unwrap_or(0),
                    keep_dropped_targets: sc.keep_dropped_targets.unwrap_or(0),
                }
            })
            .collect();
        ScrapeSettings {
            external_labels: g.external_labels.clone(),
            jobs,
            base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        }
    }
}

/// 1-based line of the `job_name: <name>` entry (0 when not found).
fn job_line(text: &str, job: &str) -> usize {
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start().trim_start_matches("- ").trim_start();
        if let Some(rest) = t.strip_prefix("job_name:") {
            let v = rest.trim().trim_matches(|c| c == '"' || c == '\'');
            if v == job {
                return i + 1;
            }
        }
    }
    0
}

/// 1-based line of the first `key:` at or after line `from` (else `from`).
fn key_line(text: &str, key: &str, from: usize) -> usize {
    let pat = format!("{key}:");
    for (i, l) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let t = l.trim_start().trim_start_matches("- ").trim_start();
        if t.starts_with(&pat) {
            return i + 1;
        }
    }
    from
}

#[cfg(test)]
mod tests {
    use super::*;

    const YML: &str = r#"
global:
  scrape_interval: 15s
  evaluation_interval: 15s
  external_labels:
    monitor: example
  sample_limit: 1000
rule_files: ["x.yml"]
scrape_configs:
  - job_name: node
    scrape_interval: 5s
    metrics_path: /probe
    scheme: https
    params:
      module: [http_2xx]
    honor_labels: true
    honor_timestamps: false
    basic_auth:
      username: u
      password: p
    tls_config:
      insecure_skip_verify: true
    static_configs:
      - targets: ["a:9100", "b:9100"]
        labels: {env: prod}
    file_sd_configs:
      - files: ["targets/*.json"]
        refresh_interval: 1m
    relabel_configs:
      - source_labels: [__address__]
        target_label: instance
        regex: '(.*):\d+'
    metric_relabel_configs:
      - action: labeldrop
        regex: tmp_.*
    sample_limit: 50
    label_limit: 30
    label_name_length_limit: 100
    label_value_length_limit: 200
    body_size_limit: 10MB
  - job_name: other
    bearer_token: secret
    kubernetes_sd_configs: [{role: pod}]
"#;

    #[test]
    fn parses_and_applies_defaults() {
        let f = ScrapeFile::parse(YML, Path::new("/etc/p/prometheus.yml")).unwrap();
        let s = f.settings(Path::new("/etc/p/prometheus.yml"));
        assert_eq!(s.external_labels["monitor"], "example");
        assert_eq!(s.base_dir, PathBuf::from("/etc/p"));
        let node = &s.jobs[0];
        assert_eq!(node.interval, Duration::from_secs(5));
        // Global timeout (10s) capped at the job's interval.
        assert_eq!(node.timeout, Duration::from_secs(5));
        assert_eq!(node.metrics_path, "/probe");
        assert!(node.honor_labels && !node.honor_timestamps);
        assert_eq!(node.params["module"], vec!["http_2xx".to_string()]);
        assert_eq!(node.sample_limit, 50);
        assert_eq!(node.body_size_limit, 10 << 20);
        assert_eq!(node.relabel_configs.len(), 1);
        assert_eq!(
            node.file_sd_configs[0].refresh_interval,
            Some(PromDuration(60_000))
        );
        let other = &s.jobs[1];
        assert_eq!(other.interval, Duration::from_secs(15));
        assert_eq!(other.timeout, Duration::from_secs(10));
        assert_eq!(other.metrics_path, "/metrics");
        assert!(other.honor_timestamps);
        assert_eq!(other.sample_limit, 1000, "global sample_limit applies");
        assert_eq!(
            other
                .authorization
                .as_ref()
                .and_then(|a| a.credentials.as_deref()),
            Some("secret")
        );
        assert_eq!(
            f.scrape_configs[1].unsupported(),
            vec!["kubernetes_sd_configs"]
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases = [
            ("scrape_configs:\n  - job_name: a\n    scrape_intervall: 1s\n", 3, "scrape_configs[0]"),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: hashmod\n        target_label: x\n",
                4,
                "scrape_configs[0].relabel_configs[0]",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - regex: '('\n",
                4,
                "scrape_configs[0].relabel_configs[0]",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    scrape_interval: 1s\n    scrape_timeout: 2s\n",
                4,
                "scrape_configs[0].scrape_timeout",
            ),
            (
                "scrape_configs:\n  - job_name: a\n  - job_name: a\n",
                2,
                "scrape_configs[1].job_name",
            ),
            ("scrape_configs:\n  - job_name: a\n    scheme: ftp\n", 3, "scrape_configs[0].scheme"),
            ("scrape_configs:\n  - job_name: a\n    body_size_limit: 10XB\n", 3, "scrape_configs[0].body_size_limit"),
            (
                "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: [x]\n        lables: {}\n",
                5,
                "scrape_configs[0].static_configs[0]",
            ),
        ];
        for (text, want_line, want_field) in cases {
            match ScrapeFile::parse(text, Path::new("p.yml")) {
                Err(ConfigError::Invalid {
                    line, field, path, ..
                }) => {
                    assert_eq!(path, PathBuf::from("p.yml"));
                    assert!(field.starts_with(want_field), "{text}: field {field}");
                    // serde reports a relabel rule's error at the rule; ours at the key.
                    assert!(
                        line == want_line || line == want_line + 1,
                        "{text}: line {line}, want {want_line}"
                    );
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert_eq!(ByteSize::parse("1KB"), Ok(ByteSize(1024)));
        assert_eq!(ByteSize::parse("2MiB"), Ok(ByteSize(2 << 20)));
        assert!(ByteSize::parse("1.5MB").is_err());
        assert!(ByteSize::parse("99999999999EB").is_err());
    }

    /// The node's own full example config stays readable by the scraper.
    #[test]
    fn node_example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pharos.example.yml");
        ScrapeFile::load(&p).unwrap();
    }
}
