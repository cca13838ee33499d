//! The rebalancing planner: a pure function from the replicated state to the
//! next small step of shard moves.
//!
//! The leader calls [`plan_step`] whenever membership or the map changes and
//! proposes the returned commands (each carries the shard epoch it was
//! planned against, so a stale plan is rejected, never misapplied). Rules:
//! - at most one command per shard per step, and at most
//!   [`PlannerConfig::max_new_replicas`] new replicas per step cluster-wide
//!   (each one is a data copy);
//! - a replica is moved by *adding* the new one (pending), waiting for the
//!   node to report [`Command::ShardReplicaCaughtUp`], and only then
//!   removing the old one, so a step removes at most one up-to-date replica
//!   and only from a shard with more than the effective replication factor
//!   of eligible ones: a majority of the old up-to-date replicas survives;
//! - replicas on draining, down or removed nodes are replaced first, then
//!   under-replicated shards are filled, then load is evened out (a node
//!   holding two or more replicas more than another gives one up), then
//!   primaries are evened out within each shard's replica set.
//!
//! At a fixpoint (empty plan, nothing pending) every shard has exactly the
//! effective replication factor of replicas, all on active nodes, and the
//! replica counts of active nodes differ by at most one.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Command, MetaState, NodeId, ShardAssignment, ShardId};

/// Limits on one planning step.
#[derive(Debug, Clone, Copy)]
pub struct PlannerConfig {
    /// New (pending) replicas started per step across all shards.
    pub max_new_replicas: usize,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            max_new_replicas: 16,
        }
    }
}

/// The next step: commands to propose, at most one per shard.
pub fn plan_step(state: &MetaState, cfg: &PlannerConfig) -> Vec<Command> {
    let Some(map) = &state.shard_map else {
        return Vec::new();
    };
    let eligible: BTreeSet<NodeId> = state.active_nodes().into_iter().collect();
    if eligible.is_empty() {
        return Vec::new();
    }
    let rf = state.effective_rf();
    let mut load: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    for (n, c) in map.replica_counts() {
        *load.entry(n).or_insert(0) += c;
    }
    let mut primaries: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    for (n, c) in map.primary_counts() {
        *primaries.entry(n).or_insert(0) += c;
    }
    let mut budget = cfg.max_new_replicas;
    let mut out = Vec::new();
    for (i, a) in map.assignments.iter().enumerate() {
        let shard = i as ShardId;
        let mut plan = ShardPlan {
            shard,
            a,
            eligible: &eligible,
            rf,
            load: &mut load,
            primaries: &mut primaries,
            budget: &mut budget,
        };
        if let Some(cmd) = plan.next() {
            out.push(cmd);
        }
    }
    out
}

struct ShardPlan<'a> {
    shard: ShardId,
    a: &'a ShardAssignment,
    eligible: &'a BTreeSet<NodeId>,
    rf: usize,
    load: &'a mut BTreeMap<NodeId, usize>,
    primaries: &'a mut BTreeMap<NodeId, usize>,
    budget: &'a mut usize,
}

impl ShardPlan<'_> {
    fn next(&mut self) -> Option<Command> {
        let a = self.a;
        // A move to a node that left: cancel it.
        if let Some(n) = a.pending.iter().find(|n| !self.eligible.contains(n)) {
            return Some(self.remove(*n));
        }
        // Wait for the in-flight copy before touching this shard again.
        if !a.pending.is_empty() {
            return None;
        }
        let eligible_up = a
            .replicas
            .iter()
            .filter(|n| self.eligible.contains(n))
            .count();
        if let Some(gone) = a.replicas.iter().find(|n| !self.eligible.contains(n)) {
            if eligible_up >= self.rf && a.replicas.len() > 1 {
                return Some(self.remove(*gone));
            }
            return self.add_least_loaded();
        }
        if a.replicas.len() < self.rf {
            return self.add_least_loaded();
        }
        if a.replicas.len() > self.rf {
            // Drop the most loaded; on ties prefer a non-primary (later in
            // the list) so the primary stays put.
            let victim = a
                .replicas
                .iter()
                .enumerate()
                .max_by_key(|(pos, n)| (self.load_of(**n), *pos))
                .map(|(_, n)| *n)?;
            return Some(self.remove(victim));
        }
        let busiest = a
            .replicas
            .iter()
            .copied()
            .max_by_key(|n| self.load_of(*n))?;
        if let Some(idle) = self.least_loaded_outside() {
            if self.load_of(busiest) >= self.load_of(idle) + 2 && *self.budget > 0 {
                return self.add(idle);
            }
        }
        let primary = a.primary()?;
        let candidate = a
            .replicas
            .iter()
            .copied()
            .min_by_key(|n| (self.primaries_of(*n), *n))?;
        if self.primaries_of(primary) >= self.primaries_of(candidate) + 2 {
            *self.primaries.entry(primary).or_insert(0) -= 1;
            *self.primaries.entry(candidate).or_insert(0) += 1;
            return Some(Command::SetShardPrimary {
                shard: self.shard,
                node: candidate,
                expected_epoch: a.epoch,
            });
        }
        None
    }

    fn load_of(&self, n: NodeId) -> usize {
        self.load.get(&n).copied().unwrap_or(0)
    }

    fn primaries_of(&self, n: NodeId) -> usize {
        self.primaries.get(&n).copied().unwrap_or(0)
    }

    fn least_loaded_outside(&self) -> Option<NodeId> {
        self.eligible
            .iter()
            .copied()
            .filter(|n| !self.a.holds(*n))
            .min_by_key(|n| (self.load_of(*n), *n))
    }

    fn add_least_loaded(&mut self) -> Option<Command> {
        if *self.budget == 0 {
            return None;
        }
        let n = self.least_loaded_outside()?;
        self.add(n)
    }

    fn add(&mut self, n: NodeId) -> Option<Command> {
        *self.budget = self.budget.saturating_sub(1);
        *self.load.entry(n).or_insert(0) += 1;
        Some(Command::AddShardReplica {
            shard: self.shard,
            node: n,
            expected_epoch: self.a.epoch,
        })
    }

    fn remove(&mut self, n: NodeId) -> Command {
        if let Some(l) = self.load.get_mut(&n) {
            *l = l.saturating_sub(1);
        }
        if self.a.primary() == Some(n) {
            if let Some(p) = self.primaries.get_mut(&n) {
                *p = p.saturating_sub(1);
            }
            if let Some(next) = self.a.replicas.get(1) {
                *self.primaries.entry(*next).or_insert(0) += 1;
            }
        }
        Command::RemoveShardReplica {
            shard: self.shard,
            node: n,
            expected_epoch: self.a.epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Applied, NodeState};
    use proptest::prelude::*;

    fn cluster(nodes: u64, shards: u32, rf: u32) -> MetaState {
        let mut s = MetaState::default();
        for id in 1..=nodes {
            s.apply(&Command::AddNode {
                id,
                addr: format!("n{id}"),
            });
        }
        let r = s.apply(&Command::InitShards {
            shards,
            replication_factor: rf,
            placement_labels: vec![],
        });
        assert!(matches!(r, Applied::Ok { .. }), "{r:?}");
        s
    }

    fn up_to_date(s: &MetaState) -> Vec<BTreeSet<NodeId>> {
        s.shard_map
            .as_ref()
            .map(|m| {
                m.assignments
                    .iter()
                    .map(|a| a.replicas.iter().copied().collect())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs the planner to a fixpoint, reporting every pending replica as
    /// caught up after each step (what the nodes do), and checks the
    /// per-step safety rules. Returns the number of steps.
    fn converge(s: &mut MetaState, cfg: &PlannerConfig, max_steps: usize) -> usize {
        for step in 0..max_steps {
            let before = up_to_date(s);
            let cmds = plan_step(s, cfg);
            let pending_any = s
                .shard_map
                .as_ref()
                .is_some_and(|m| m.assignments.iter().any(|a| !a.pending.is_empty()));
            if cmds.is_empty() && !pending_any {
                return step;
            }
            let mut shards_touched = BTreeSet::new();
            let mut added = 0;
            for c in &cmds {
                let shard = match c {
                    Command::AddShardReplica { shard, .. } => {
                        added += 1;
                        *shard
                    }
                    Command::RemoveShardReplica { shard, .. }
                    | Command::SetShardPrimary { shard, .. } => *shard,
                    other => panic!("unexpected planner command {other:?}"),
                };
                assert!(shards_touched.insert(shard), "two commands for {shard}");
                let r = s.apply(c);
                assert!(matches!(r, Applied::Ok { .. }), "{c:?} → {r:?}");
            }
            assert!(added <= cfg.max_new_replicas);
            let after = up_to_date(s);
            let rf = s.effective_rf();
            for (old, new) in before.iter().zip(&after) {
                let kept = old.intersection(new).count();
                assert!(
                    kept + 1 >= old.len(),
                    "lost two replicas: {old:?} → {new:?}"
                );
                assert!(!new.is_empty());
                if old.len() >= 3 {
                    assert!(kept * 2 > old.len(), "majority lost: {old:?} → {new:?}");
                }
                if new.len() < old.len() {
                    assert!(new.len() >= rf.min(old.len()), "{old:?} → {new:?}, rf {rf}");
                }
            }
            // The nodes finish their copies.
            let pending: Vec<_> = s
                .shard_map
                .as_ref()
                .map(|m| {
                    m.assignments
                        .iter()
                        .enumerate()
                        .flat_map(|(i, a)| a.pending.iter().map(move |n| (i as ShardId, *n)))
                        .collect()
                })
                .unwrap_or_default();
            for (shard, node) in pending {
                let r = s.apply(&Command::ShardReplicaCaughtUp { shard, node });
                assert!(matches!(r, Applied::Ok { .. }));
            }
        }
        panic!("no fixpoint within {max_steps} steps");
    }

    fn assert_balanced(s: &MetaState) {
        let map = s.shard_map.as_ref().unwrap();
        let active = s.active_nodes();
        let rf = s.effective_rf();
        for a in &map.assignments {
            assert_eq!(a.replicas.len(), rf, "{a:?}");
            assert!(a.pending.is_empty());
            assert!(a.replicas.iter().all(|n| active.contains(n)), "{a:?}");
        }
        let counts = map.replica_counts();
        let loads: Vec<usize> = active
            .iter()
            .map(|n| counts.get(n).copied().unwrap_or(0))
            .collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= 1, "replica loads {loads:?}");
    }

    #[test]
    fn join_rebalances_from_one_node() {
        let mut s = cluster(1, 16, 3);
        for id in 2..=4 {
            s.apply(&Command::AddNode {
                id,
                addr: format!("n{id}"),
            });
        }
        let cfg = PlannerConfig::default();
        converge(&mut s, &cfg, 200);
        assert_balanced(&s);
        let primaries = s.shard_map.as_ref().unwrap().primary_counts();
        assert_eq!(primaries.len(), 4, "{primaries:?}");
        assert!(primaries.values().all(|c| *c == 4), "{primaries:?}");
    }

    #[test]
    fn draining_node_is_emptied() {
        let mut s = cluster(4, 8, 3);
        s.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Draining,
        });
        converge(&mut s, &PlannerConfig::default(), 200);
        assert_balanced(&s);
        assert!(!s
            .shard_map
            .as_ref()
            .unwrap()
            .replica_counts()
            .contains_key(&2));
        assert_eq!(
            s.apply(&Command::RemoveNode { id: 2 }),
            Applied::Ok { epoch: None }
        );
    }

    #[test]
    fn balanced_map_plans_nothing() {
        let s = cluster(3, 12, 3);
        assert!(plan_step(&s, &PlannerConfig::default()).is_empty());
    }

    #[test]
    fn budget_limits_new_replicas() {
        let mut s = cluster(1, 32, 2);
        s.apply(&Command::AddNode {
            id: 2,
            addr: "n2".into(),
        });
        let cmds = plan_step(
            &s,
            &PlannerConfig {
                max_new_replicas: 3,
            },
        );
        assert_eq!(cmds.len(), 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn converges_and_keeps_majorities(
            initial in 1u64..5,
            joined in 0u64..4,
            shards in 1u32..40,
            rf in 1u32..5,
            drained in proptest::collection::vec(any::<bool>(), 8),
            down in 0usize..8,
            budget in 1usize..10,
        ) {
            let mut s = cluster(initial, shards, rf);
            for id in initial + 1..=initial + joined {
                s.apply(&Command::AddNode { id, addr: format!("n{id}") });
            }
            let total = initial + joined;
            // Drain some, keeping at least one active node.
            for id in 1..=total {
                let active = s.active_nodes().len();
                if drained[(id as usize) % drained.len()] && active > 1 && id % 3 == 0 {
                    s.apply(&Command::SetNodeState { id, state: NodeState::Draining });
                }
            }
            let down_id = (down as u64 % total) + 1;
            if s.active_nodes().len() > 1 && down % 2 == 1 {
                s.apply(&Command::SetNodeState { id: down_id, state: NodeState::Down });
            }
            let cfg = PlannerConfig { max_new_replicas: budget };
            // Every replica may need a move (3 steps each), spread over the budget.
            let bound = 3 * (shards as usize * rf as usize / budget + shards as usize) + 20;
            converge(&mut s, &cfg, bound);
            assert_balanced(&s);
        }
    }
}
