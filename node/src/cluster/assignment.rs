//! Which scrape targets this node scrapes in a cluster: those whose shard
//! it is the primary of in the latest applied shard map
//! ([`PrimaryAssignment`]), and the task that makes the scrape manager
//! re-evaluate its targets when the primaries change
//! ([`follow_primaries`]).
//!
//! Owns: the scrape side of placement. A target's shard comes from the
//! same rule as its series' ([`super::shard_of_labels`], with the map's
//! placement labels), so the primary ingests its own targets' series
//! locally. Must not: scrape or write anything itself.
//!
//! While a primary moves, the old and the new primary may both scrape a
//! target for a moment, or neither (until the new one has applied the
//! map); the old one ends its series with staleness markers, as Prometheus
//! does for a target that goes away.

use std::sync::Arc;

use pharos_meta::types::{MetaState, NodeId, ShardMap};
use pharos_meta::MetaClient;
use pharos_storage::labels::Labels;
use tokio::task::JoinHandle;

use crate::scrape::manager::ScrapeManager;
use crate::scrape::target::Assignment;

/// The cluster's scrape assignment. Without a shard map (the cluster is
/// still forming) nothing is scraped.
pub struct PrimaryAssignment {
    node_id: NodeId,
    meta: Arc<dyn MetaClient>,
}

impl PrimaryAssignment {
    pub fn new(node_id: NodeId, meta: Arc<dyn MetaClient>) -> PrimaryAssignment {
        PrimaryAssignment { node_id, meta }
    }
}

/// Whether `node` is the primary of `target_labels`' shard under `map`.
pub fn is_primary_for(map: &ShardMap, node: NodeId, target_labels: &Labels) -> bool {
    let shard = super::shard_of_labels(target_labels, map);
    map.assignment(shard).and_then(|a| a.primary()) == Some(node)
}

impl Assignment for PrimaryAssignment {
    fn is_mine(&self, target_labels: &Labels) -> bool {
        let state = self.meta.state();
        state
            .shard_map
            .as_ref()
            .is_some_and(|m| is_primary_for(m, self.node_id, target_labels))
    }
}

/// The primaries of every shard (what scrape assignment depends on).
fn primaries(s: &MetaState) -> Option<Vec<Option<NodeId>>> {
    s.shard_map
        .as_ref()
        .map(|m| m.assignments.iter().map(|a| a.primary()).collect())
}

/// Re-applies the scrape manager's settings whenever the shard primaries
/// change, so it starts and stops targets by the new map. Ends when the
/// meta state channel closes.
pub fn follow_primaries(meta: Arc<dyn MetaClient>, scrape: ScrapeManager) -> JoinHandle<()> {
    let mut rx = meta.watch();
    tokio::spawn(async move {
        let mut last = primaries(&rx.borrow_and_update());
        loop {
            if rx.changed().await.is_err() {
                return;
            }
            let now = primaries(&rx.borrow_and_update());
            if now != last {
                tracing::debug!("shard primaries changed: re-evaluating scrape targets");
                scrape.apply(scrape.settings());
                last = now;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_meta::types::Command;
    use pharos_meta::MemMetaClient;

    #[tokio::test]
    async fn each_target_has_exactly_one_scraper() {
        let meta = Arc::new(MemMetaClient::default());
        for id in 1..=3 {
            meta.add_node(id, format!("127.0.0.1:{id}")).await.unwrap();
        }
        let nodes: Vec<PrimaryAssignment> = (1..=3)
            .map(|id| PrimaryAssignment::new(id, Arc::clone(&meta) as Arc<dyn MetaClient>))
            .collect();
        let target = |i: usize| {
            let instance = format!("h{i}:9100");
            Labels::from_pairs([("instance", instance.as_str()), ("job", "node")])
        };
        // No map yet: nobody scrapes.
        assert!(nodes.iter().all(|n| !n.is_mine(&target(0))));
        meta.propose(Command::InitShards {
            shards: 16,
            replication_factor: 2,
            placement_labels: vec!["instance".into(), "job".into()],
        })
        .await
        .unwrap();
        let mut per_node = [0usize; 3];
        for i in 0..200 {
            let owners: Vec<usize> = (0..3).filter(|&n| nodes[n].is_mine(&target(i))).collect();
            assert_eq!(owners.len(), 1, "target {i}: {owners:?}");
            per_node[owners[0]] += 1;
        }
        assert!(per_node.iter().all(|&c| c > 20), "{per_node:?}");
        // The owner is the primary of the series' shard.
        let map = meta.shard_map().unwrap();
        let l = target(7);
        let shard = crate::cluster::shard_of_labels(&l, &map);
        let primary = map.assignment(shard).unwrap().primary().unwrap();
        assert!(nodes[(primary - 1) as usize].is_mine(&l));
    }
}
