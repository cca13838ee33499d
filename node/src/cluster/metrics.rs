//! Cluster status in `/metrics`: the meta group's own gauges
//! (`pharos_meta_*`, from [`pharos_meta::metrics::MetaMetrics`]: term,
//! leadership, applied and snapshot index, shard map version, nodes by
//! state) plus this node's view of placement (`pharos_cluster_*`): the
//! leader's id, the highest shard epoch, the replicas and primaries held
//! here, and whether the node is catching up.
//!
//! Owns: refreshing those gauges from the applied state; nothing here is
//! on a request path. The data path's own metrics (write and read
//! latencies by peer) live beside it ([`super::write`], [`super::read`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pharos_meta::metrics::MetaMetrics;
use pharos_meta::types::{MetaState, NodeId};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use super::member::ClusterHandle;

/// How often the gauges are refreshed without a state change (the leader
/// and the catch-up flag change without one).
const REFRESH: Duration = Duration::from_secs(1);

/// Gauges of this node's cluster membership.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    pub meta: MetaMetrics,
    /// The meta leader's node id (0: none known).
    pub leader_id: Gauge,
    /// This node's id.
    pub node_id: Gauge,
    /// The highest epoch of any shard (grows on every placement change).
    pub shard_epoch_max: Gauge,
    /// Shards this node holds an up-to-date replica of.
    pub local_replicas: Gauge,
    /// Shards this node is being added to (pending replicas).
    pub local_pending: Gauge,
    /// Shards this node is the primary of (it scrapes their targets).
    pub local_primaries: Gauge,
    /// Voters and learners of the meta group, as this node sees them.
    pub voters: Gauge,
    pub learners: Gauge,
    /// 1 while this node catches up after a restart (it serves no reads).
    pub catching_up: Gauge,
}

impl ClusterMetrics {
    /// Registers every gauge in `r`.
    pub fn register(&self, r: &mut Registry) {
        self.meta.register(r);
        let g = |r: &mut Registry, name: &str, help: &str, g: &Gauge| {
            r.register(name, help, g.clone());
        };
        g(
            r,
            "pharos_cluster_leader_id",
            "Node id of the meta group's leader (0: none known)",
            &self.leader_id,
        );
        g(r, "pharos_cluster_node_id", "This node's id", &self.node_id);
        g(
            r,
            "pharos_cluster_shard_epoch_max",
            "Highest epoch of any shard in the applied shard map",
            &self.shard_epoch_max,
        );
        g(
            r,
            "pharos_cluster_local_replicas",
            "Shards this node holds an up-to-date replica of",
            &self.local_replicas,
        );
        g(
            r,
            "pharos_cluster_local_pending_replicas",
            "Shards this node is being added to as a replica",
            &self.local_pending,
        );
        g(
            r,
            "pharos_cluster_local_primaries",
            "Shards this node is the primary of",
            &self.local_primaries,
        );
        g(
            r,
            "pharos_cluster_voters",
            "Voters of the meta group",
            &self.voters,
        );
        g(
            r,
            "pharos_cluster_learners",
            "Learners of the meta group",
            &self.learners,
        );
        g(
            r,
            "pharos_cluster_catching_up",
            "1 while this node catches up on samples it missed",
            &self.catching_up,
        );
    }

    /// Sets the gauges derived from the applied state.
    pub fn observe_state(&self, me: NodeId, s: &MetaState) {
        self.node_id.set(me as i64);
        let Some(map) = &s.shard_map else {
            return;
        };
        let mut epoch = 0;
        let (mut replicas, mut pending, mut primaries) = (0, 0, 0);
        for a in &map.assignments {
            epoch = epoch.max(a.epoch);
            replicas += i64::from(a.replicas.contains(&me));
            pending += i64::from(a.pending.contains(&me));
            primaries += i64::from(a.primary() == Some(me));
        }
        self.shard_epoch_max.set(epoch as i64);
        self.local_replicas.set(replicas);
        self.local_pending.set(pending);
        self.local_primaries.set(primaries);
    }

    /// Follows `h` until aborted, refreshing every gauge.
    pub fn spawn_updater(&self, h: Arc<ClusterHandle>) -> JoinHandle<()> {
        let m = self.clone();
        tokio::spawn(async move {
            let _meta = AbortOnDrop(m.meta.spawn_updater(&h.node));
            let mut rx = h.meta.watch();
            loop {
                m.observe_state(h.node_id, &rx.borrow_and_update());
                let raft = h.node.raft();
                m.leader_id
                    .set(raft.current_leader().await.map_or(0, |l| l as i64));
                m.voters.set(raft.voter_ids().count() as i64);
                m.learners.set(raft.learner_ids().count() as i64);
                m.catching_up
                    .set(i64::from(h.ctx.catching_up.load(Ordering::Relaxed)));
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(REFRESH) => {}
                }
            }
        })
    }
}

/// Aborts the task when dropped (with the task that owns it).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_meta::types::Command;

    #[test]
    fn placement_gauges() {
        let mut s = MetaState::default();
        for id in 1..=3 {
            s.apply(&Command::AddNode {
                id,
                addr: String::new(),
            });
        }
        s.apply(&Command::InitShards {
            shards: 6,
            replication_factor: 2,
            placement_labels: vec![],
        });
        let m = ClusterMetrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.observe_state(2, &s);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        // 6 shards × 2 replicas over 3 nodes, primaries rotating.
        assert!(out.contains("pharos_cluster_local_replicas 4"), "{out}");
        assert!(out.contains("pharos_cluster_local_primaries 2"), "{out}");
        assert!(out.contains("pharos_cluster_node_id 2"), "{out}");
        assert!(out.contains("pharos_meta_term"), "{out}");
    }
}
