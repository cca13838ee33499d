//! The configuration file: a Prometheus configuration file (YAML) plus one
//! extra top-level section, `pharos:`, for Pharos's own settings.
//!
//! Owns: the schema (one serde struct per section, `deny_unknown_fields`
//! everywhere we model fields), defaults, loading with errors that name the
//! file, line, column and field path, and the list of Prometheus sections
//! Pharos accepts but does not act on yet (logged as warnings by the server).
//! Must not: open storage, bind sockets or start anything.
//!
//! Depth of validation: `scrape_configs` is typed and validated by the
//! scraper's own types ([`crate::scrape::config`]), including relabeling,
//! TLS and auth, with errors naming the job's line; the top-level fields of
//! `global`, `remote_write`, `remote_read`, `storage` and `alerting` are
//! checked by name and type, and `alerting.alertmanagers` is checked by the
//! notifier's types when the server (or `pharos check config`) resolves it
//! ([`Config::alertmanagers`]). Unimplemented service discovery is accepted
//! as opaque YAML and listed by [`Config::inert_sections`].

pub mod cluster;
pub mod duration;
pub mod web;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

pub use duration::PromDuration;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `field` is the dotted path of the offending setting (empty at top
    /// level); line and column are 1-based.
    #[error("{path}:{line}:{column}: field {field:?}: {msg}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Semantic { path: PathBuf, msg: String },
}

/// The whole file. Every section is optional; an empty file is valid.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub global: GlobalConfig,
    /// Typed and validated by the scraper's own types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scrape_configs: Vec<crate::scrape::config::ScrapeConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scrape_config_files: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_files: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerting: Option<AlertingConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_write: Vec<RemoteWriteConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_read: Vec<RemoteReadConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Value>,
    #[serde(default)]
    pub pharos: PharosConfig,
}

/// Prometheus's `global` section.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_protocols: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_interval: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_query_offset: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_log_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_failure_log_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size_limit: Option<crate::scrape::config::ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_name_length_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value_length_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_dropped_targets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name_validation_scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_name_escaping_scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_scrape_classic_histograms: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convert_classic_histograms_to_nhcb: Option<bool>,
}

/// Declares a struct whose listed fields are all optional opaque or typed
/// settings, plus the HTTP client settings Prometheus shares between scrape
/// configs, remote write/read and Alertmanager configs.
macro_rules! with_http_client {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub basic_auth: Option<Value>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub authorization: Option<Value>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub oauth2: Option<Value>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub sigv4: Option<Value>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub azuread: Option<Value>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub google_iam: Option<Value>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub bearer_token: Option<Value>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub bearer_token_file: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub tls_config: Option<Value>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub proxy_url: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub no_proxy: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub proxy_from_environment: Option<bool>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub proxy_connect_header: Option<Value>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub follow_redirects: Option<bool>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub enable_http2: Option<bool>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub http_headers: Option<Value>,
        }
    };
}

/// Opaque service-discovery lists, by Prometheus's names.
macro_rules! sd_fields {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        with_http_client! {
            $(#[$m])*
            pub struct $name {
                $($(#[$fm])* pub $f: $t,)*
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub static_configs: Vec<StaticConfig>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub file_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub http_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub dns_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub kubernetes_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub consul_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub ec2_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub gce_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub azure_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub docker_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub dockerswarm_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub digitalocean_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub eureka_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub hetzner_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub ionos_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub kuma_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub lightsail_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub linode_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub marathon_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub nerve_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub nomad_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub openstack_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub ovhcloud_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub puppetdb_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub scaleway_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub serverset_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub triton_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub uyuni_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub vultr_sd_configs: Vec<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")] pub stackit_sd_configs: Vec<Value>,
            }
        }
    };
}

/// A `static_configs` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Prometheus's `alerting` section (accepted; alerting arrives later).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert_relabel_configs: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alertmanagers: Vec<AlertmanagerConfig>,
}

sd_fields! {
    /// One `alerting.alertmanagers` entry.
    pub struct AlertmanagerConfig {
        #[serde(default, skip_serializing_if = "Option::is_none")] pub timeout: Option<PromDuration>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub api_version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub path_prefix: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub scheme: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")] pub relabel_configs: Vec<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")] pub alert_relabel_configs: Vec<Value>,
    }
}

with_http_client! {
    /// One `remote_write` entry (accepted; Pharos does not forward yet).
    pub struct RemoteWriteConfig {
        pub url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub remote_timeout: Option<PromDuration>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub headers: Option<BTreeMap<String, String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub protobuf_message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub send_exemplars: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub send_native_histograms: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub round_robin_dns: Option<bool>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")] pub write_relabel_configs: Vec<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub queue_config: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub metadata_config: Option<Value>,
    }
}

with_http_client! {
    /// One `remote_read` entry (accepted; Pharos does not read remotes yet).
    pub struct RemoteReadConfig {
        pub url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub remote_timeout: Option<PromDuration>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub headers: Option<BTreeMap<String, String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub read_recent: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub filter_external_labels: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")] pub required_matchers: Option<BTreeMap<String, String>>,
    }
}

/// Prometheus's `storage` section. `tsdb.out_of_order_time_window` is
/// honoured (it sets the head's out-of-order window); exemplars are
/// accepted and not stored yet.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsdb: Option<TsdbConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exemplars: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TsdbConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_order_time_window: Option<PromDuration>,
}

/// Pharos's own settings (`pharos:`). Command-line flags override them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PharosConfig {
    /// HTTP listen address. Default `127.0.0.1:9090`.
    pub listen: SocketAddr,
    /// Data directory (WAL, blocks). Default `./data`.
    pub data_dir: PathBuf,
    pub web: WebSettings,
    pub remote_write_receiver: RemoteWriteReceiverConfig,
    pub wal: WalSettings,
    pub tsdb: TsdbSettings,
    pub query: QuerySettings,
    pub rules: RuleSettings,
    /// Cluster membership; off unless `cluster.node_id` is set.
    pub cluster: cluster::ClusterConfig,
}

impl Default for PharosConfig {
    fn default() -> Self {
        PharosConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            data_dir: PathBuf::from("./data"),
            web: WebSettings::default(),
            remote_write_receiver: RemoteWriteReceiverConfig::default(),
            wal: WalSettings::default(),
            tsdb: TsdbSettings::default(),
            query: QuerySettings::default(),
            rules: RuleSettings::default(),
            cluster: cluster::ClusterConfig::default(),
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// A Prometheus `--web.config.file` (TLS, basic auth). Default none.
    pub config_file: Option<PathBuf>,
    /// Serve `/api/v1/admin/*`. Default false.
    pub enable_admin_api: bool,
    /// Largest request body accepted by any endpoint other than remote
    /// write, which has its own limits. Default 8 MiB.
    pub max_request_body_bytes: usize,
    /// Slower requests are logged at info level. Default 10s.
    pub slow_request_log_threshold: PromDuration,
    /// The URL users reach this node under (flag `--web.external-url`),
    /// used in alerts' `generatorURL` and `$externalURL`. Default
    /// `http://<listen address>`.
    pub external_url: Option<String>,
    /// Serve `POST /-/reload` and `/-/quit` (flag
    /// `--web.enable-lifecycle`). Default false, as Prometheus.
    pub enable_lifecycle: bool,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            config_file: None,
            enable_admin_api: false,
            max_request_body_bytes: 8 << 20,
            slow_request_log_threshold: PromDuration::from_secs(10),
            external_url: None,
            enable_lifecycle: false,
        }
    }
}

/// The `/api/v1/write` receiver.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteReceiverConfig {
    /// Default true.
    pub enabled: bool,
    /// Largest snappy-compressed body. Default 32 MiB.
    pub max_compressed_bytes: usize,
    /// Largest decompressed body, checked against the declared length
    /// before allocating. Default 128 MiB.
    pub max_decompressed_bytes: usize,
    /// Most series in one request. Default 100,000.
    pub max_series_per_request: usize,
    /// Most requests decoded and appended at once; more are answered 429
    /// (the client backs off and retries). Default 32.
    pub max_concurrent_requests: usize,
}

impl Default for RemoteWriteReceiverConfig {
    fn default() -> Self {
        RemoteWriteReceiverConfig {
            enabled: true,
            max_compressed_bytes: 32 << 20,
            max_decompressed_bytes: 128 << 20,
            max_series_per_request: 100_000,
            max_concurrent_requests: 32,
        }
    }
}

/// When an acknowledged write is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// Before the write is acknowledged: survives power loss.
    Always,
    /// Every `fsync_interval`: survives a process crash; a power loss may
    /// lose the last interval.
    Interval,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalSettings {
    /// Default `always`.
    pub fsync: FsyncMode,
    /// Used with `fsync: interval`. Default 100ms.
    pub fsync_interval: PromDuration,
    /// WAL segment size in bytes. Default 128 MiB.
    pub segment_size: u64,
}

impl Default for WalSettings {
    fn default() -> Self {
        WalSettings {
            fsync: FsyncMode::Always,
            fsync_interval: PromDuration(100),
            segment_size: 128 << 20,
        }
    }
}

/// Blocks, compaction and retention of the local storage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TsdbSettings {
    /// Span of the blocks cut from the head. Default 2h.
    pub block_range: PromDuration,
    /// Delete blocks older than this behind the newest data; `0s` keeps
    /// everything. Default 15d (Prometheus's default).
    pub retention_time: PromDuration,
    /// Delete the oldest blocks while storage takes more bytes; 0 means no
    /// limit. Default 0.
    pub retention_bytes: u64,
    /// How often the head is cut into blocks, blocks compacted and
    /// retention applied. Default 1m.
    pub maintenance_interval: PromDuration,
}

impl Default for TsdbSettings {
    fn default() -> Self {
        TsdbSettings {
            block_range: PromDuration::from_secs(2 * 3600),
            retention_time: PromDuration::from_secs(15 * 24 * 3600),
            retention_bytes: 0,
            maintenance_interval: PromDuration::from_secs(60),
        }
    }
}

/// PromQL limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuerySettings {
    /// Longest a query may run (a request's `timeout` can only lower it).
    /// Default 2m.
    pub timeout: PromDuration,
    /// Most samples one query may hold at once. Default 50,000,000.
    pub max_samples: usize,
    /// Default 5m.
    pub lookback_delta: PromDuration,
    /// Most points per series a range query may return. Default 11,000.
    pub max_points_per_series: i64,
    /// Longest accepted PromQL text, in bytes. Default 64 KiB.
    pub max_query_length: usize,
    /// Allow experimental PromQL functions. Default false.
    pub enable_experimental_functions: bool,
    /// Most queries evaluated at once; others wait (the wait counts
    /// against their timeout). Default 20, as Prometheus.
    pub max_concurrency: usize,
}

impl Default for QuerySettings {
    fn default() -> Self {
        QuerySettings {
            timeout: PromDuration::from_secs(120),
            max_samples: 50_000_000,
            lookback_delta: PromDuration::from_secs(300),
            max_points_per_series: 11_000,
            max_query_length: 64 << 10,
            enable_experimental_functions: false,
            max_concurrency: 20,
        }
    }
}

/// Alert state across restarts and leader changes, and resends; the
/// defaults and flags are Prometheus's (`--rules.alert.*`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSettings {
    /// After a restart or a leader change, a pending alert keeps at least
    /// this much of its `for` wait; rules whose `for` is shorter are not
    /// restored from `ALERTS_FOR_STATE` (flag
    /// `--rules.alert.for-grace-period`). Default 10m.
    pub for_grace_period: PromDuration,
    /// Only `ALERTS_FOR_STATE` this recent is restored (flag
    /// `--rules.alert.for-outage-tolerance`). Default 1h.
    pub for_outage_tolerance: PromDuration,
    /// Firing alerts are re-sent to Alertmanager this often (flag
    /// `--rules.alert.resend-delay`). Default 1m.
    pub resend_delay: PromDuration,
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            for_grace_period: PromDuration::from_secs(600),
            for_outage_tolerance: PromDuration::from_secs(3600),
            resend_delay: PromDuration::from_secs(60),
        }
    }
}

/// Turns a serde_yaml error (with the path from serde_path_to_error) into
/// a [`ConfigError::Invalid`] naming file, line, column and field.
pub(crate) fn yaml_error(
    path: &Path,
    err: serde_path_to_error::Error<serde_yaml::Error>,
) -> ConfigError {
    let field = err.path().to_string();
    let field = if field == "." { String::new() } else { field };
    let inner = err.into_inner();
    let (line, column) = inner
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // serde_yaml appends " at line X column Y"; we print the location first.
    let mut msg = inner.to_string();
    if let Some(i) = msg.find(" at line ") {
        msg.truncate(i);
    }
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        field,
        msg,
    }
}

impl Config {
    /// Parses YAML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // An empty document is null in YAML, which is no mapping.
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| yaml_error(path, e))?;
        // The scraper's checks (job names, intervals, auth, label names)
        // name the line of the offending job; they run on the sections
        // already parsed, with the text only to locate lines.
        cfg.scrape_file().validate(text, path)?;
        cfg.validate(path)?;
        // The notifier's checks (scheme, api_version, auth), located at
        // the `alertmanagers:` key.
        if let Err(e) = cfg.alertmanagers(path) {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("alertmanagers:"))
                .map_or(0, |i| i + 1);
            let msg = match e {
                ConfigError::Semantic { msg, .. } => msg,
                other => other.to_string(),
            };
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column: 1,
                field: "alerting.alertmanagers".into(),
                msg,
            });
        }
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let semantic = |msg: String| ConfigError::Semantic {
            path: path.to_path_buf(),
            msg,
        };
        for name in self.global.external_labels.keys() {
            if !pharos_storage::labels::is_valid_label_name(name) {
                return Err(semantic(format!(
                    "global.external_labels: {name:?} is not a valid label name"
                )));
            }
        }
        let p = &self.pharos;
        if p.wal.fsync == FsyncMode::Interval && p.wal.fsync_interval.as_millis() == 0 {
            return Err(semantic(
                "pharos.wal.fsync_interval must be positive with fsync: interval".into(),
            ));
        }
        if p.query.max_points_per_series <= 0 {
            return Err(semantic(
                "pharos.query.max_points_per_series must be positive".into(),
            ));
        }
        if p.tsdb.block_range.as_millis() == 0 || p.tsdb.maintenance_interval.as_millis() == 0 {
            return Err(semantic(
                "pharos.tsdb.block_range and maintenance_interval must be positive".into(),
            ));
        }
        if p.query.max_concurrency == 0 || p.remote_write_receiver.max_concurrent_requests == 0 {
            return Err(semantic(
                "pharos.query.max_concurrency and pharos.remote_write_receiver.max_concurrent_requests must be positive".into(),
            ));
        }
        if p.query.timeout.as_millis() == 0 {
            return Err(semantic("pharos.query.timeout must be positive".into()));
        }
        if p.rules.resend_delay.as_millis() == 0 {
            return Err(semantic(
                "pharos.rules.resend_delay must be positive".into(),
            ));
        }
        p.cluster.validate(path)?;
        Ok(())
    }

    /// Prometheus sections present in the file that Pharos accepts but does
    /// not act on yet, each with the reason (the server logs them).
    pub fn inert_sections(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if !self.scrape_config_files.is_empty() {
            out.push((
                "scrape_config_files",
                "scrape configs in separate files are not read yet; put the jobs in scrape_configs",
            ));
        }
        for sc in &self.scrape_configs {
            for setting in sc.unsupported() {
                out.push((
                    setting,
                    "this scrape_configs setting is accepted and ignored",
                ));
            }
        }
        if let Some(a) = &self.alerting {
            if !a.alert_relabel_configs.is_empty() {
                out.push((
                    "alerting.alert_relabel_configs",
                    "alerts are sent without relabeling",
                ));
            }
            for am in &a.alertmanagers {
                if !am.relabel_configs.is_empty() || !am.alert_relabel_configs.is_empty() {
                    out.push((
                        "alerting.alertmanagers.relabel_configs",
                        "Alertmanager targets and their alerts are not relabeled",
                    ));
                }
                if !am.file_sd_configs.is_empty()
                    || !am.dns_sd_configs.is_empty()
                    || !am.kubernetes_sd_configs.is_empty()
                    || !am.consul_sd_configs.is_empty()
                {
                    out.push((
                        "alerting.alertmanagers",
                        "only static_configs are used to find Alertmanagers",
                    ));
                }
                if am.tls_config.is_some() || am.oauth2.is_some() || am.proxy_url.is_some() {
                    out.push((
                        "alerting.alertmanagers",
                        "tls_config, oauth2 and proxy_url of Alertmanagers are ignored",
                    ));
                }
            }
        }
        if self.global.rule_query_offset.is_some() {
            out.push((
                "global.rule_query_offset",
                "set query_offset on each rule group instead",
            ));
        }
        if !self.remote_write.is_empty() {
            out.push((
                "remote_write",
                "forwarding to remote storage is not implemented yet",
            ));
        }
        if !self.remote_read.is_empty() {
            out.push((
                "remote_read",
                "reading from remote storage is not implemented yet",
            ));
        }
        if self.storage.as_ref().is_some_and(|s| s.exemplars.is_some()) {
            out.push(("storage.exemplars", "exemplars are not stored yet"));
        }
        if self.tracing.is_some() {
            out.push(("tracing", "trace export is not implemented"));
        }
        out
    }

    /// The scrape manager's settings: global defaults applied to every
    /// job; relative `file_sd` paths resolve against `base_dir` (the config
    /// file's directory).
    pub fn scrape_settings(&self, base_dir: &Path) -> crate::scrape::config::ScrapeSettings {
        // `settings` takes the config file's path and uses its directory.
        self.scrape_file()
            .settings(&base_dir.join("prometheus.yml"))
    }

    /// The scrape sections of this config, as the scrape module reads them.
    fn scrape_file(&self) -> crate::scrape::config::ScrapeFile {
        use crate::scrape::config::{ScrapeFile, ScrapeGlobal};
        let g = &self.global;
        ScrapeFile {
            global: ScrapeGlobal {
                scrape_interval: g.scrape_interval,
                scrape_timeout: g.scrape_timeout,
                external_labels: g.external_labels.clone(),
                body_size_limit: g.body_size_limit,
                sample_limit: g.sample_limit,
                label_limit: g.label_limit,
                label_name_length_limit: g.label_name_length_limit,
                label_value_length_limit: g.label_value_length_limit,
            },
            scrape_configs: self.scrape_configs.clone(),
        }
    }

    /// `rule_files` patterns with relative ones made relative to
    /// `base_dir`, as Prometheus resolves them against the config file's
    /// directory.
    pub fn rule_globs(&self, base_dir: &Path) -> Vec<String> {
        self.rule_files
            .iter()
            .map(|g| {
                if Path::new(g).is_absolute() || base_dir.as_os_str().is_empty() {
                    g.clone()
                } else {
                    base_dir.join(g).to_string_lossy().into_owned()
                }
            })
            .collect()
    }

    /// The Alertmanagers of `alerting.alertmanagers` (static targets), in
    /// the notifier's form. `path` names the file in errors.
    pub fn alertmanagers(
        &self,
        path: &Path,
    ) -> Result<Vec<pharos_alerting::notifier::AlertmanagerConfig>, ConfigError> {
        use pharos_alerting::notifier as n;
        let Some(a) = &self.alerting else {
            return Ok(Vec::new());
        };
        let semantic = |i: usize, msg: String| ConfigError::Semantic {
            path: path.to_path_buf(),
            msg: format!("alerting.alertmanagers[{i}]: {msg}"),
        };
        // `AlertmanagerYaml` is not exported by pharos-alerting, so the
        // entries are rebuilt as YAML in its shape and deserialized.
        let mut list = Vec::new();
        for (i, am) in a.alertmanagers.iter().enumerate() {
            let mut m = serde_yaml::Mapping::new();
            let mut put = |k: &str, v: Value| {
                m.insert(Value::String(k.into()), v);
            };
            if let Some(s) = &am.scheme {
                put("scheme", Value::String(s.clone()));
            }
            if let Some(p) = &am.path_prefix {
                put("path_prefix", Value::String(p.clone()));
            }
            if let Some(t) = am.timeout {
                put("timeout", Value::String(t.to_string()));
            }
            if let Some(v) = &am.api_version {
                put("api_version", Value::String(v.clone()));
            }
            if let Some(v) = &am.basic_auth {
                put("basic_auth", v.clone());
            }
            if let Some(v) = &am.authorization {
                put("authorization", v.clone());
            }
            if let Some(v) = &am.bearer_token {
                put("bearer_token", v.clone());
            }
            let statics = am
                .static_configs
                .iter()
                .map(|s| serde_yaml::to_value(s).map_err(|e| semantic(i, e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            put("static_configs", Value::Sequence(statics));
            list.push(Value::Mapping(m));
        }
        let mut top = serde_yaml::Mapping::new();
        top.insert(Value::String("alertmanagers".into()), Value::Sequence(list));
        let cfg: n::AlertingConfig =
            serde_yaml::from_value(Value::Mapping(top)).map_err(|e| ConfigError::Semantic {
                path: path.to_path_buf(),
                msg: format!("alerting.alertmanagers: {e}"),
            })?;
        cfg.resolve().map_err(|msg| ConfigError::Semantic {
            path: path.to_path_buf(),
            msg: format!("alerting.alertmanagers: {msg}"),
        })
    }
}

/// Replaces the values of secret-bearing keys in a YAML tree with
/// `<secret>`, as Prometheus does when it shows its configuration.
pub fn mask_secrets(v: &mut Value) {
    const SECRET_KEYS: [&str; 7] = [
        "password",
        "bearer_token",
        "credentials",
        "client_secret",
        "secret_key",
        "access_key",
        "api_key",
    ];
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let secret = k.as_str().is_some_and(|k| SECRET_KEYS.contains(&k));
                if secret && !val.is_null() {
                    *val = Value::String("<secret>".into());
                } else {
                    mask_secrets(val);
                }
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(mask_secrets),
        Value::Tagged(t) => mask_secrets(&mut t.value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration as shipped with Prometheus, unchanged, plus the
    /// sections most deployments add.
    const PROMETHEUS_YML: &str = r#"
# my global config
global:
  scrape_interval: 15s # Set the scrape interval to every 15 seconds. Default is every 1 minute.
  evaluation_interval: 15s # Evaluate rules every 15 seconds. The default is every 1 minute.
  external_labels:
    monitor: 'example'

alerting:
  alertmanagers:
    - static_configs:
        - targets: ['localhost:9093']

rule_files:
  - "first_rules.yml"

scrape_configs:
  - job_name: "prometheus"
    static_configs:
      - targets: ["localhost:9090"]
  - job_name: node
    scrape_interval: 5s
    kubernetes_sd_configs:
      - role: pod
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app]
        action: keep
        regex: node-exporter
    basic_auth:
      username: u
      password: hunter2

remote_write:
  - url: http://localhost:9201/write
    queue_config:
      max_samples_per_send: 1000
remote_read:
  - url: http://localhost:9201/read
    read_recent: true
storage:
  tsdb:
    out_of_order_time_window: 10m
"#;

    #[test]
    fn prometheus_config_parses_unchanged() {
        let c = Config::parse(PROMETHEUS_YML, Path::new("prometheus.yml")).unwrap();
        assert_eq!(c.scrape_configs.len(), 2);
        assert_eq!(c.global.scrape_interval, Some(PromDuration(15_000)));
        assert!(c.scrape_configs[1].kubernetes_sd_configs.is_some());
        assert_eq!(
            c.storage.unwrap().tsdb.unwrap().out_of_order_time_window,
            Some(PromDuration(600_000))
        );
        // Defaults for what the file does not say.
        assert_eq!(c.pharos.listen.to_string(), "127.0.0.1:9090");
        assert!(c.pharos.remote_write_receiver.enabled);
    }

    #[test]
    fn inert_sections_are_listed() {
        let c = Config::parse(PROMETHEUS_YML, Path::new("p.yml")).unwrap();
        let names: Vec<&str> = c.inert_sections().iter().map(|s| s.0).collect();
        for n in ["remote_write", "remote_read", "kubernetes_sd_configs"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        // Scraping, rules and alerting are acted on now.
        for n in ["scrape_configs", "rule_files", "alerting"] {
            assert!(!names.contains(&n), "{n} listed in {names:?}");
        }
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = "global:\n  scrape_interval: 15s\npharos:\n  wal:\n    fsync: always\n    fsnyc_interval: 1s\n";
        let err = Config::parse(text, Path::new("/etc/pharos.yml")).unwrap_err();
        let s = err.to_string();
        assert!(s.starts_with("/etc/pharos.yml:6:"), "{s}");
        assert!(s.contains("pharos.wal"), "{s}");
        assert!(s.contains("fsnyc_interval"), "{s}");
        let ConfigError::Invalid { line, .. } = err else {
            panic!("{s}")
        };
        assert_eq!(line, 6);
    }

    #[test]
    fn invalid_values_are_rejected_with_location() {
        let cases = [
            (
                "global:\n  scrape_interval: 15 seconds\n",
                2,
                "global.scrape_interval",
            ),
            ("pharos:\n  listen: nowhere\n", 2, "pharos.listen"),
            (
                "pharos:\n  wal:\n    fsync: sometimes\n",
                3,
                "pharos.wal.fsync",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    scrape_intervall: 1s\n",
                3,
                "scrape_configs[0]",
            ),
            ("bogus_section: 1\n", 1, ""),
        ];
        for (text, want_line, want_field) in cases {
            match Config::parse(text, Path::new("c.yml")) {
                Err(ConfigError::Invalid { line, field, .. }) => {
                    assert_eq!(line, want_line, "{text}");
                    assert!(field.starts_with(want_field), "{text}: {field}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn semantic_errors() {
        let dup = "scrape_configs:\n  - job_name: a\n  - job_name: a\n";
        match Config::parse(dup, Path::new("c.yml")) {
            Err(ConfigError::Invalid { line, field, .. }) => {
                assert_eq!(line, 2);
                assert_eq!(field, "scrape_configs[1].job_name");
            }
            other => panic!("{other:?}"),
        }
        let zero = "pharos:\n  query:\n    max_points_per_series: 0\n";
        assert!(Config::parse(zero, Path::new("c.yml")).is_err());
    }

    #[test]
    fn empty_file_is_defaults() {
        let c = Config::parse("", Path::new("c.yml")).unwrap();
        assert_eq!(c.pharos.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn secrets_are_masked() {
        let mut v: Value = serde_yaml::from_str(PROMETHEUS_YML).unwrap();
        mask_secrets(&mut v);
        let s = serde_yaml::to_string(&v).unwrap();
        assert!(!s.contains("hunter2"));
        assert!(s.contains("<secret>"));
    }

    #[test]
    fn scrape_rules_and_alerting_resolve() {
        let text = "global:\n  scrape_interval: 5s\n  external_labels: {site: a}\nrule_files: ['rules/*.yml', '/abs/r.yml']\nalerting:\n  alertmanagers:\n    - path_prefix: am\n      timeout: 3s\n      basic_auth: {username: u, password: p}\n      static_configs: [{targets: ['h:9093', 'i:9093']}]\nscrape_configs:\n  - job_name: j\n    static_configs: [{targets: ['t:1']}]\n";
        let path = Path::new("/etc/pharos/prometheus.yml");
        let c = Config::parse(text, path).unwrap();
        let s = c.scrape_settings(Path::new("/etc/pharos"));
        assert_eq!(s.jobs.len(), 1);
        assert_eq!(s.jobs[0].interval, std::time::Duration::from_secs(5));
        assert_eq!(s.external_labels.get("site").map(String::as_str), Some("a"));
        assert_eq!(s.base_dir, PathBuf::from("/etc/pharos"));
        assert_eq!(
            c.rule_globs(Path::new("/etc/pharos")),
            vec!["/etc/pharos/rules/*.yml".to_string(), "/abs/r.yml".into()]
        );
        let ams = c.alertmanagers(path).unwrap();
        assert_eq!(ams.len(), 2);
        assert_eq!(ams[1].alerts_url(), "http://i:9093/am/api/v2/alerts");
        assert_eq!(ams[0].timeout, std::time::Duration::from_secs(3));
        let bad = "global: {}\nalerting:\n  alertmanagers:\n    - scheme: gopher\n      static_configs: [{targets: ['h:1']}]\n";
        let e = Config::parse(bad, path).unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/pharos/prometheus.yml:3:1: field \"alerting.alertmanagers\""),
            "{e}"
        );
        assert!(e.contains("gopher"), "{e}");
        // Scrape settings are checked when the file is parsed.
        let bad =
            "scrape_configs:\n  - job_name: j\n    scrape_interval: 5s\n    scrape_timeout: 10s\n";
        let e = Config::parse(bad, path).unwrap_err().to_string();
        assert!(e.contains("scrape_timeout"), "{e}");
    }

    #[test]
    fn rule_settings_default_to_prometheus_and_are_checked() {
        let c = Config::parse("", Path::new("c.yml")).unwrap();
        assert_eq!(
            c.pharos.rules.for_grace_period,
            PromDuration::from_secs(600)
        );
        assert_eq!(
            c.pharos.rules.for_outage_tolerance,
            PromDuration::from_secs(3600)
        );
        assert_eq!(c.pharos.rules.resend_delay, PromDuration::from_secs(60));
        let c = Config::parse(
            "pharos:\n  rules:\n    for_grace_period: 1s\n    resend_delay: 2s\n",
            Path::new("c.yml"),
        )
        .unwrap();
        assert_eq!(c.pharos.rules.for_grace_period, PromDuration(1000));
        assert_eq!(c.pharos.rules.resend_delay, PromDuration(2000));
        let e = Config::parse(
            "pharos:\n  rules:\n    resend_delay: 0s\n",
            Path::new("c.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pharos.rules.resend_delay"), "{e}");
    }

    /// The commented example shipped in the repository stays valid.
    #[test]
    fn example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pharos.example.yml");
        let c = Config::load(&p).unwrap();
        assert!(c.pharos.remote_write_receiver.enabled);
        // Its cluster section documents the defaults, cluster mode off.
        assert_eq!(c.pharos.cluster, super::cluster::ClusterConfig::default());
        assert_eq!(c.pharos.rules, RuleSettings::default());
    }
}
