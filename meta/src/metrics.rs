//! The meta group's own metrics (`pharos_meta_*`), for the node's
//! `prometheus-client` registry. [`MetaMetrics::spawn_updater`] refreshes
//! them from Raft's metrics and the applied state on every change; nothing
//! here is on a request path.

use std::sync::Arc;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::node::MetaNode;
use crate::types::{MetaState, NodeState};

type StateLabel = Vec<(&'static str, &'static str)>;

/// Gauges describing this node's view of the meta group.
#[derive(Clone, Default)]
pub struct MetaMetrics {
    pub is_leader: Gauge,
    pub term: Gauge,
    pub last_applied_index: Gauge,
    pub snapshot_index: Gauge,
    pub shard_map_version: Gauge,
    pub pending_replicas: Gauge,
    pub nodes: Family<StateLabel, Gauge>,
    pub blocks: Gauge,
}

impl MetaMetrics {
    /// Registers every gauge in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pharos_meta_is_leader",
            "1 if this node leads the meta group",
            self.is_leader.clone(),
        );
        registry.register("pharos_meta_term", "Current Raft term", self.term.clone());
        registry.register(
            "pharos_meta_last_applied_index",
            "Index of the last log entry applied to the metadata state machine",
            self.last_applied_index.clone(),
        );
        registry.register(
            "pharos_meta_snapshot_index",
            "Last log index covered by this node's snapshot",
            self.snapshot_index.clone(),
        );
        registry.register(
            "pharos_meta_shard_map_version",
            "Version of the applied shard map (increases on every shard change)",
            self.shard_map_version.clone(),
        );
        registry.register(
            "pharos_meta_pending_replicas",
            "Shard replicas being copied (added, not yet caught up)",
            self.pending_replicas.clone(),
        );
        registry.register(
            "pharos_meta_nodes",
            "Cluster nodes by state",
            self.nodes.clone(),
        );
        registry.register(
            "pharos_meta_catalog_blocks",
            "Blocks in the catalog, deleted ones included",
            self.blocks.clone(),
        );
    }

    /// Sets the state-derived gauges.
    pub fn observe_state(&self, s: &MetaState) {
        let map = s.shard_map.as_ref();
        self.shard_map_version
            .set(map.map_or(0, |m| m.version as i64));
        self.pending_replicas.set(map.map_or(0, |m| {
            m.assignments.iter().map(|a| a.pending.len() as i64).sum()
        }));
        for (state, label) in [
            (NodeState::Active, "active"),
            (NodeState::Draining, "draining"),
            (NodeState::Down, "down"),
        ] {
            let n = s.nodes.values().filter(|n| n.state == state).count();
            self.nodes
                .get_or_create(&vec![("state", label)])
                .set(n as i64);
        }
        self.blocks.set(s.blocks.len() as i64);
    }

    /// Follows `node` until it shuts down, refreshing every gauge.
    pub fn spawn_updater(&self, node: &Arc<MetaNode>) -> JoinHandle<()> {
        let metrics = self.clone();
        let mut raft_rx = node.raft().metrics();
        let mut state_rx = node.subscribe();
        tokio::spawn(async move {
            loop {
                {
                    let m = raft_rx.borrow_watched();
                    metrics
                        .is_leader
                        .set(i64::from(m.state == ServerState::Leader));
                    metrics.term.set(m.current_term as i64);
                    metrics
                        .last_applied_index
                        .set(m.last_applied.map_or(0, |l| l.index as i64));
                    metrics
                        .snapshot_index
                        .set(m.snapshot.map_or(0, |l| l.index as i64));
                }
                metrics.observe_state(&state_rx.borrow_and_update());
                tokio::select! {
                    r = raft_rx.changed() => if r.is_err() { return },
                    r = state_rx.changed() => if r.is_err() { return },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    #[test]
    fn state_gauges_are_exported() {
        let m = MetaMetrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        let mut s = MetaState::default();
        for id in 1..=3 {
            s.apply(&Command::AddNode {
                id,
                addr: String::new(),
            });
        }
        s.apply(&Command::SetNodeState {
            id: 3,
            state: NodeState::Draining,
        });
        s.apply(&Command::InitShards {
            shards: 4,
            replication_factor: 2,
            placement_labels: vec![],
        });
        s.apply(&Command::AddShardReplica {
            shard: 0,
            node: 2,
            expected_epoch: 1,
        });
        m.observe_state(&s);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("pharos_meta_nodes{state=\"active\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("pharos_meta_nodes{state=\"draining\"} 1"),
            "{out}"
        );
        assert!(out.contains("pharos_meta_pending_replicas 0"), "{out}");
        assert!(out.contains("pharos_meta_shard_map_version 1"), "{out}");
    }
}
