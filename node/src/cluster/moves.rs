//! The receiving end of shard moves: when the meta leader's planner adds
//! this node as a *pending* replica of a shard (a node joined, or a
//! replica's node was marked down or draining), this node copies the
//! shard's samples from an up-to-date replica and then reports
//! `ShardReplicaCaughtUp`, after which the planner may drop the replica it
//! replaces.
//!
//! Owns: deciding when a pending replica here is complete. Must not: change
//! any other placement, or report a replica complete that is missing
//! samples: the report lets the planner remove an old copy.
//!
//! A pending replica receives every new write from the moment it is added
//! (the coordinator sends to pending replicas too), so copying everything
//! the up-to-date replica holds, from the beginning of time, after the
//! replica was added leaves no gap. The copy goes through the restarted
//! replica's catch-up machinery ([`super::catchup::pull_shards`]): samples
//! it already holds are skipped, so a retry costs only reading.
//!
//! Limit: the copy is appended to this node's head, which accepts samples
//! only within its out-of-order window behind its newest sample (1h by
//! default in cluster mode). A shard holding older samples cannot be
//! copied completely: its replica stays pending (receiving writes, never
//! read, never counted), the old replica is never removed, and a warning
//! says so. Moving old data needs block shipping (object storage), which
//! is not built yet.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pharos_meta::types::{Command, ShardId, ShardMap};
use pharos_meta::MetaError;
use tokio::task::JoinHandle;

use super::catchup::{pull_shards, CatchUpOptions};
use super::ClusterCtx;

/// Between two attempts at the same pending shards.
const RETRY: Duration = Duration::from_secs(10);

/// Shards this node holds as a pending replica under `map`.
pub fn pending_here(map: &ShardMap, node: u64) -> BTreeSet<ShardId> {
    map.assignments
        .iter()
        .enumerate()
        .filter(|(_, a)| a.pending.contains(&node))
        .map(|(i, _)| i as ShardId)
        .collect()
}

/// Copies every pending shard of this node once and reports those that are
/// complete; returns them.
pub async fn fill_pending_once(ctx: &Arc<ClusterCtx>) -> Vec<ShardId> {
    let Some(map) = ctx.meta.shard_map() else {
        return Vec::new();
    };
    let pending: Vec<ShardId> = pending_here(&map, ctx.node_id).into_iter().collect();
    let mut done = Vec::new();
    for shard in pending {
        let opts = CatchUpOptions::default();
        let report = match pull_shards(ctx, &map, &[shard], i64::MIN, &opts).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(node = ctx.node_id, shard, error = %e, "copying a pending replica failed; retrying");
                continue;
            }
        };
        let complete = report.shards == 1
            && report.failed_shards.is_empty()
            && report.too_old == 0
            && report.rejected_other == 0;
        if !complete {
            tracing::warn!(
                node = ctx.node_id,
                shard,
                ?report,
                "pending replica not complete (samples refused or no source): it stays pending"
            );
            continue;
        }
        match ctx
            .meta
            .propose(Command::ShardReplicaCaughtUp {
                shard,
                node: ctx.node_id,
            })
            .await
        {
            Ok(_) => {
                tracing::info!(
                    node = ctx.node_id,
                    shard,
                    samples = report.samples_appended,
                    "pending replica copied: now up to date"
                );
                done.push(shard);
            }
            // The move was cancelled or replanned meanwhile.
            Err(MetaError::Rejected(r)) => {
                tracing::info!(node = ctx.node_id, shard, %r, "caught-up report refused")
            }
            Err(e) => {
                tracing::warn!(node = ctx.node_id, shard, error = %e, "reporting a caught-up replica failed; retrying")
            }
        }
    }
    done
}

/// Fills pending replicas whenever the map gives this node some, retrying
/// incomplete ones every [`RETRY`].
pub fn spawn(ctx: Arc<ClusterCtx>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut rx = ctx.meta.watch();
        loop {
            let has_pending = rx
                .borrow_and_update()
                .shard_map
                .as_ref()
                .is_some_and(|m| !pending_here(m, ctx.node_id).is_empty());
            if has_pending {
                fill_pending_once(&ctx).await;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RETRY), if has_pending => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testkit::TestCluster;
    use pharos_meta::MetaClient;
    use pharos_storage::labels::Labels;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pending_replica_is_copied_then_reported_up_to_date() {
        let c = TestCluster::start(3, 4, 2).await;
        let map = c.meta.shard_map().unwrap();
        // A shard not held by node 3, and a series in it.
        let shard = (0..4)
            .find(|&s| !map.assignment(s).unwrap().holds(3))
            .unwrap();
        let (labels, _) = (0..1000)
            .map(|i| {
                let inst = format!("h{i}:1");
                let l = Labels::from_pairs([("__name__", "m"), ("instance", &inst), ("job", "j")]);
                let s = crate::cluster::shard_of_labels(&l, &map);
                (l, s)
            })
            .find(|(_, s)| *s == shard)
            .unwrap();
        let now = 1_700_000_000_000i64;
        for &n in &map.assignment(shard).unwrap().replicas {
            let db = std::sync::Arc::clone(&c.node(n).ctx().db);
            let l = labels.clone();
            tokio::task::spawn_blocking(move || {
                let batch: Vec<(Labels, i64, f64)> = (0..50)
                    .map(|k| (l.clone(), now + k * 1000, k as f64))
                    .collect();
                db.append(&batch).unwrap();
            })
            .await
            .unwrap();
        }
        let epoch = map.assignment(shard).unwrap().epoch;
        c.meta
            .propose(Command::AddShardReplica {
                shard,
                node: 3,
                expected_epoch: epoch,
            })
            .await
            .unwrap();
        let ctx = Arc::clone(c.node(3).ctx());
        assert_eq!(
            pending_here(&c.meta.shard_map().unwrap(), 3),
            BTreeSet::from([shard])
        );
        assert_eq!(fill_pending_once(&ctx).await, vec![shard]);
        let a = c
            .meta
            .shard_map()
            .unwrap()
            .assignment(shard)
            .unwrap()
            .clone();
        assert!(a.replicas.contains(&3) && a.pending.is_empty(), "{a:?}");
        // Node 3 holds the copy.
        let db = Arc::clone(&ctx.db);
        let n = tokio::task::spawn_blocking(move || {
            use pharos_storage::chunk::{SampleIterator, ValueType};
            use pharos_storage::labels::Matcher;
            use pharos_storage::querier::Querier;
            let series = db
                .select(i64::MIN, i64::MAX, &[Matcher::equal("__name__", "m")], None)
                .unwrap();
            series
                .iter()
                .map(|s| {
                    let mut it = s.iter_range(i64::MIN, i64::MAX);
                    let mut n = 0;
                    while it.next() == ValueType::Float {
                        n += 1;
                    }
                    n
                })
                .sum::<usize>()
        })
        .await
        .unwrap();
        assert_eq!(n, 50);
    }
}
