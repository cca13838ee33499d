//! Cluster status in `/metrics`: the meta group's own gauges
//! (`pharos_meta_*`, from [`pharos_meta::metrics::MetaMetrics`]: term,
//! leadership, applied and snapshot index, shard map version, nodes by
//! state) plus `pharos_cluster_*`: the leader's id, the commit index and
//! last log index, each peer's replication lag (on the leader), the
//! highest shard epoch, the replicas and primaries held here, and whether
//! the node is catching up.
//!
//! Raft's own numbers come from the meta node's Raft handle through
//! [`RaftView::of`], the one place outside `pharos-meta` that reads them.
//!
//! Owns: refreshing those gauges from the applied state; nothing here is
//! on a request path. The data path's own metrics (write and read
//! latencies by peer) live beside it ([`super::write`], [`super::read`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pharos_meta::metrics::MetaMetrics;
use pharos_meta::types::{MetaState, NodeId};
use pharos_meta::MetaNode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use super::member::ClusterHandle;

/// How often the gauges are refreshed without a state change (the leader
/// and the catch-up flag change without one).
const REFRESH: Duration = Duration::from_secs(1);

/// Raft's state on this node, as its metrics report it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftView {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    /// The highest log index this node knows committed (safe to apply).
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// On the leader: each follower's lag behind the leader's last log
    /// index, in entries (`None` while nothing is known matched).
    pub replication_lag: Vec<(NodeId, Option<u64>)>,
}

impl RaftView {
    /// Reads `node`'s Raft metrics (a snapshot; never waits for a change).
    pub async fn of(node: &MetaNode) -> RaftView {
        let raft = node.raft();
        let m = match raft
            .wait(Some(Duration::from_secs(1)))
            .metrics(|_| true, "current metrics")
            .await
        {
            Ok(m) => m,
            Err(_) => return RaftView::default(),
        };
        let last = m.last_log_index.unwrap_or(0);
        RaftView {
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: last,
            commit_index: m.local_committed.as_ref().map_or(0, |l| l.index),
            applied_index: m.last_applied.as_ref().map_or(0, |l| l.index),
            snapshot_index: m.snapshot.as_ref().map_or(0, |l| l.index),
            voters: raft.voter_ids().collect(),
            learners: raft.learner_ids().collect(),
            replication_lag: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .filter(|(id, _)| **id != m.id)
                        .map(|(id, matched)| {
                            (*id, matched.as_ref().map(|l| last.saturating_sub(l.index)))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Gauges of this node's cluster membership.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    pub meta: MetaMetrics,
    /// The meta leader's node id (0: none known).
    pub leader_id: Gauge,
    pub commit_index: Gauge,
    pub last_log_index: Gauge,
    /// Entries each follower lags behind the leader (leader only).
    pub replication_lag: Family<Vec<(&'static str, String)>, Gauge>,
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
            "pharos_cluster_raft_commit_index",
            "Highest meta log index known committed",
            &self.commit_index,
        );
        g(
            r,
            "pharos_cluster_raft_last_log_index",
            "Last index in this node's meta log",
            &self.last_log_index,
        );
        r.register(
            "pharos_cluster_raft_replication_lag_entries",
            "Meta log entries each peer lags behind the leader (exported by the leader)",
            self.replication_lag.clone(),
        );
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

    /// Sets the gauges from Raft's metrics.
    pub fn observe_raft(&self, v: &RaftView) {
        self.leader_id.set(v.leader.map_or(0, |l| l as i64));
        self.commit_index.set(v.commit_index as i64);
        self.last_log_index.set(v.last_log_index as i64);
        self.voters.set(v.voters.len() as i64);
        self.learners.set(v.learners.len() as i64);
        self.replication_lag.clear();
        for (peer, lag) in &v.replication_lag {
            if let Some(lag) = lag {
                self.replication_lag
                    .get_or_create(&vec![("peer", peer.to_string())])
                    .set(*lag as i64);
            }
        }
    }

    /// Follows `h` until aborted, refreshing every gauge.
    pub fn spawn_updater(&self, h: Arc<ClusterHandle>) -> JoinHandle<()> {
        let m = self.clone();
        tokio::spawn(async move {
            let _meta = AbortOnDrop(m.meta.spawn_updater(&h.node));
            let mut rx = h.meta.watch();
            loop {
                m.observe_state(h.node_id, &rx.borrow_and_update());
                m.observe_raft(&RaftView::of(&h.node).await);
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
