//! The `pharos.cluster` section: this node's part in a cluster. Cluster
//! mode is on when `node_id` is set (in the file or with `--node-id`);
//! without it the node runs alone and ignores the rest of the section.
//!
//! Owns: the schema, defaults and checks of the section. Must not: start
//! anything (see [`crate::cluster::member`]).
//!
//! `shards`, `replication_factor` and `placement_labels` only matter on the
//! node that creates the shard map (the leader, once `expect_nodes` nodes
//! are members); after that they are fixed in the replicated metadata and
//! changing them in the file has no effect.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ConfigError, PromDuration};

/// Settings of a cluster member.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id, unique and stable across restarts (flag
    /// `--node-id`). Setting it turns cluster mode on. Default unset.
    pub node_id: Option<u64>,
    /// Where the internal gRPC service (Raft and the data path) listens
    /// (flag `--grpc-listen`). Default `127.0.0.1:10090`.
    pub grpc_listen: SocketAddr,
    /// The `host:port` peers reach this node's gRPC service at (flag
    /// `--advertise`). Default: `grpc_listen` (which must then not be an
    /// unspecified address such as `0.0.0.0`).
    pub advertise: Option<String>,
    /// gRPC addresses of existing members to join through (flag `--join`,
    /// comma separated). Empty: this node bootstraps a new cluster (only on
    /// its first start; a restarted member recovers its membership from
    /// disk and ignores both).
    pub join: Vec<String>,
    /// The shard map is created once this many nodes are members (flag
    /// `--expect-nodes`). Default 1.
    pub expect_nodes: usize,
    /// Shards the hash space is cut into, fixed at creation. Default 256.
    pub shards: u32,
    /// Replicas per shard (capped at the number of nodes). Default 3.
    pub replication_factor: u32,
    /// Labels whose values place a series (and a scrape target). Default
    /// `[instance, job]`.
    pub placement_labels: Vec<String>,
    /// Raft heartbeat interval; elections time out after 3–6 heartbeats.
    /// Default 100ms.
    pub heartbeat: PromDuration,
    /// The head's out-of-order window in cluster mode when
    /// `storage.tsdb.out_of_order_time_window` is not set: a replica that
    /// was down receives the samples it missed late, and they must be
    /// accepted. Samples older than this behind a replica's newest are not
    /// recovered into it. Default 1h.
    pub out_of_order_window: PromDuration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 10090)),
            advertise: None,
            join: Vec::new(),
            expect_nodes: 1,
            shards: 256,
            replication_factor: 3,
            placement_labels: crate::cluster::DEFAULT_PLACEMENT_LABELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            heartbeat: PromDuration(100),
            out_of_order_window: PromDuration::from_secs(3600),
        }
    }
}

impl ClusterConfig {
    /// Whether this node runs as a cluster member.
    pub fn enabled(&self) -> bool {
        self.node_id.is_some()
    }

    /// The address peers use for this node.
    pub fn advertise_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.grpc_listen.to_string())
    }

    /// Checks what serde cannot; `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &str, msg: String| ConfigError::Semantic {
            path: path.to_path_buf(),
            msg: format!("pharos.cluster.{field}: {msg}"),
        };
        let Some(id) = self.node_id else {
            return Ok(());
        };
        if id == 0 {
            return Err(bad("node_id", "must be positive".into()));
        }
        match &self.advertise {
            Some(a) if !valid_host_port(a) => {
                return Err(bad("advertise", format!("{a:?} is not host:port")))
            }
            None if self.grpc_listen.ip().is_unspecified() => {
                return Err(bad(
                    "advertise",
                    format!(
                        "required when grpc_listen ({}) is an unspecified address: peers cannot \
                         reach it",
                        self.grpc_listen
                    ),
                ))
            }
            _ => {}
        }
        for j in &self.join {
            if !valid_host_port(j) {
                return Err(bad("join", format!("{j:?} is not host:port")));
            }
        }
        if self.expect_nodes == 0 {
            return Err(bad("expect_nodes", "must be at least 1".into()));
        }
        if self.shards == 0 || self.shards > 65_536 {
            return Err(bad(
                "shards",
                format!("{} is not in 1..=65536", self.shards),
            ));
        }
        if self.replication_factor == 0 {
            return Err(bad("replication_factor", "must be at least 1".into()));
        }
        for l in &self.placement_labels {
            if !pharos_storage::labels::is_valid_label_name(l) || l.starts_with("__") {
                return Err(bad(
                    "placement_labels",
                    format!("{l:?} is not a usable label name"),
                ));
            }
        }
        if self.heartbeat.as_millis() == 0 {
            return Err(bad("heartbeat", "must be positive".into()));
        }
        Ok(())
    }
}

/// `host:port` with a non-empty host and a numeric port.
fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !s.contains("://") && port.parse::<u16>().is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_and_cluster_mode() {
        let c = Config::parse("", Path::new("c.yml")).unwrap();
        assert!(!c.pharos.cluster.enabled());
        let c = Config::parse(
            "pharos:\n  cluster:\n    node_id: 2\n    grpc_listen: 127.0.0.1:7001\n    join: [\"h1:7000\"]\n",
            Path::new("c.yml"),
        )
        .unwrap();
        let k = &c.pharos.cluster;
        assert!(k.enabled());
        assert_eq!(k.advertise_addr(), "127.0.0.1:7001");
        assert_eq!(k.join, vec!["h1:7000".to_string()]);
        assert_eq!(k.shards, 256);
        assert_eq!(k.replication_factor, 3);
        assert_eq!(k.expect_nodes, 1);
        assert_eq!(k.placement_labels, vec!["instance", "job"]);
        assert_eq!(k.out_of_order_window, PromDuration::from_secs(3600));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let text = "pharos:\n  cluster:\n    node_id: 1\n    replicas: 3\n";
        match Config::parse(text, Path::new("/etc/p.yml")) {
            Err(ConfigError::Invalid { line, field, .. }) => {
                assert_eq!(line, 4);
                assert!(field.starts_with("pharos.cluster"), "{field}");
            }
            other => panic!("{other:?}"),
        }
        for (text, field) in [
            (
                "pharos:\n  cluster:\n    node_id: 0\n",
                "pharos.cluster.node_id",
            ),
            (
                "pharos:\n  cluster:\n    node_id: 1\n    join: [\"http://h:1\"]\n",
                "pharos.cluster.join",
            ),
            (
                "pharos:\n  cluster:\n    node_id: 1\n    grpc_listen: 0.0.0.0:7000\n",
                "pharos.cluster.advertise",
            ),
            (
                "pharos:\n  cluster:\n    node_id: 1\n    shards: 0\n",
                "pharos.cluster.shards",
            ),
            (
                "pharos:\n  cluster:\n    node_id: 1\n    placement_labels: [\"a-b\"]\n",
                "pharos.cluster.placement_labels",
            ),
        ] {
            let e = Config::parse(text, Path::new("/etc/p.yml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("/etc/p.yml: "), "{e}");
            assert!(e.contains(field), "{text}: {e}");
        }
    }
}
