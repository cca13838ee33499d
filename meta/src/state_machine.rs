//! The deterministic state machine: [`MetaState::apply`].
//!
//! Every replica applies the same committed commands in the same order, so
//! `apply` must be a pure function of the state and the command: no clocks,
//! no randomness, no I/O, no iteration over hash maps. A command that is not
//! allowed in the current state is *rejected* ([`Applied::Rejected`]) and
//! leaves the state untouched; a rejection is a replicated result, not an
//! error of the store.

use crate::types::{
    Applied, BlockMeta, Command, MetaState, NodeId, NodeInfo, NodeState, Rejection,
    ShardAssignment, ShardId, ShardMap,
};

/// Upper bound on `shards` (placement is per shard; more is a mistake).
pub const MAX_SHARDS: u32 = 1 << 16;

impl MetaState {
    /// Nodes eligible to hold replicas, in id order.
    pub fn active_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.state == NodeState::Active)
            .map(|n| n.id)
            .collect()
    }

    /// The effective replication factor: the configured one capped at the
    /// number of active nodes (at least 1).
    pub fn effective_rf(&self) -> usize {
        let configured = self
            .shard_map
            .as_ref()
            .map_or(1, |m| m.replication_factor as usize);
        configured.min(self.active_nodes().len()).max(1)
    }

    /// Applies one command. See the module docs for the determinism rule.
    pub fn apply(&mut self, cmd: &Command) -> Applied {
        match self.try_apply(cmd) {
            Ok(epoch) => Applied::Ok { epoch },
            Err(r) => Applied::Rejected(r),
        }
    }

    fn try_apply(&mut self, cmd: &Command) -> Result<Option<u64>, Rejection> {
        match cmd {
            Command::AddNode { id, addr } => {
                let entry = self.nodes.entry(*id).or_insert_with(|| NodeInfo {
                    id: *id,
                    addr: addr.clone(),
                    state: NodeState::Active,
                });
                entry.addr = addr.clone();
                Ok(None)
            }
            Command::SetNodeState { id, state } => {
                let node = self.nodes.get_mut(id).ok_or(Rejection::UnknownNode(*id))?;
                node.state = *state;
                Ok(None)
            }
            Command::RemoveNode { id } => {
                if !self.nodes.contains_key(id) {
                    return Err(Rejection::UnknownNode(*id));
                }
                if let Some(map) = &self.shard_map {
                    let held = map.assignments.iter().filter(|a| a.holds(*id)).count();
                    if held > 0 {
                        return Err(Rejection::NodeHoldsReplicas {
                            node: *id,
                            shards: held,
                        });
                    }
                }
                self.nodes.remove(id);
                Ok(None)
            }
            Command::InitShards {
                shards,
                replication_factor,
                placement_labels,
            } => self.init_shards(*shards, *replication_factor, placement_labels),
            Command::SetShardReplicas {
                shard,
                replicas,
                expected_epoch,
            } => {
                let nodes = &self.nodes;
                if replicas.is_empty() {
                    return Err(invalid(*shard, "no replicas"));
                }
                for (i, r) in replicas.iter().enumerate() {
                    if !nodes.contains_key(r) {
                        return Err(Rejection::UnknownNode(*r));
                    }
                    if replicas[..i].contains(r) {
                        return Err(invalid(*shard, &format!("node {r} listed twice")));
                    }
                }
                self.update_shard(*shard, *expected_epoch, |a| {
                    a.replicas = replicas.clone();
                    a.pending.clear();
                    Ok(())
                })
            }
            Command::AddShardReplica {
                shard,
                node,
                expected_epoch,
            } => {
                match self.nodes.get(node) {
                    None => return Err(Rejection::UnknownNode(*node)),
                    Some(n) if n.state != NodeState::Active => {
                        return Err(Rejection::NotEligible {
                            shard: *shard,
                            node: *node,
                            reason: format!("node is {:?}", n.state),
                        })
                    }
                    Some(_) => {}
                }
                self.update_shard(*shard, *expected_epoch, |a| {
                    if a.holds(*node) {
                        return Err(Rejection::NotEligible {
                            shard: *shard,
                            node: *node,
                            reason: "already a replica".into(),
                        });
                    }
                    a.pending.push(*node);
                    Ok(())
                })
            }
            Command::ShardReplicaCaughtUp { shard, node } => {
                let current = self.shard(*shard)?.epoch;
                self.update_shard(*shard, current, |a| {
                    let Some(pos) = a.pending.iter().position(|n| n == node) else {
                        return Err(Rejection::NotEligible {
                            shard: *shard,
                            node: *node,
                            reason: "not a pending replica".into(),
                        });
                    };
                    a.pending.remove(pos);
                    a.replicas.push(*node);
                    Ok(())
                })
            }
            Command::RemoveShardReplica {
                shard,
                node,
                expected_epoch,
            } => self.update_shard(*shard, *expected_epoch, |a| {
                if let Some(pos) = a.pending.iter().position(|n| n == node) {
                    a.pending.remove(pos);
                    return Ok(());
                }
                let Some(pos) = a.replicas.iter().position(|n| n == node) else {
                    return Err(Rejection::NotEligible {
                        shard: *shard,
                        node: *node,
                        reason: "not a replica".into(),
                    });
                };
                if a.replicas.len() == 1 {
                    return Err(invalid(*shard, "cannot remove the last up-to-date replica"));
                }
                a.replicas.remove(pos);
                Ok(())
            }),
            Command::SetShardPrimary {
                shard,
                node,
                expected_epoch,
            } => self.update_shard(*shard, *expected_epoch, |a| {
                let Some(pos) = a.replicas.iter().position(|n| n == node) else {
                    return Err(Rejection::NotEligible {
                        shard: *shard,
                        node: *node,
                        reason: "not an up-to-date replica".into(),
                    });
                };
                let n = a.replicas.remove(pos);
                a.replicas.insert(0, n);
                Ok(())
            }),
            Command::RecordBlock { block } => self.record_block(block),
            Command::MarkBlockDeleted { id } => {
                let b = self
                    .blocks
                    .get_mut(id)
                    .ok_or_else(|| Rejection::UnknownBlock(id.clone()))?;
                b.deleted = true;
                Ok(None)
            }
            Command::PutRuleGroups { namespace, groups } => {
                if groups.is_empty() {
                    self.rule_groups.remove(namespace);
                } else {
                    self.rule_groups.insert(namespace.clone(), groups.clone());
                }
                Ok(None)
            }
        }
    }

    fn init_shards(
        &mut self,
        shards: u32,
        rf: u32,
        placement_labels: &[String],
    ) -> Result<Option<u64>, Rejection> {
        if self.shard_map.is_some() {
            return Err(Rejection::ShardsAlreadyInitialized);
        }
        if shards == 0 || shards > MAX_SHARDS {
            return Err(Rejection::InvalidShardParams(format!(
                "shards must be in 1..={MAX_SHARDS}, got {shards}"
            )));
        }
        if rf == 0 {
            return Err(Rejection::InvalidShardParams(
                "replication factor must be at least 1".into(),
            ));
        }
        let nodes = self.active_nodes();
        if nodes.is_empty() {
            return Err(Rejection::NoActiveNodes);
        }
        let rf_eff = (rf as usize).min(nodes.len());
        // Rotating the start node spreads primaries (and replicas) evenly.
        let assignments = (0..shards as usize)
            .map(|i| ShardAssignment {
                replicas: (0..rf_eff).map(|j| nodes[(i + j) % nodes.len()]).collect(),
                pending: Vec::new(),
                epoch: 1,
            })
            .collect();
        self.shard_map = Some(ShardMap {
            shards,
            replication_factor: rf,
            placement_labels: placement_labels.to_vec(),
            assignments,
            version: 1,
        });
        Ok(Some(1))
    }

    fn shard(&self, shard: ShardId) -> Result<&ShardAssignment, Rejection> {
        let map = self
            .shard_map
            .as_ref()
            .ok_or(Rejection::ShardsNotInitialized)?;
        map.assignment(shard).ok_or(Rejection::UnknownShard {
            shard,
            shards: map.shards,
        })
    }

    /// Compare-and-set on the shard's epoch, then `f` on a copy; commits the
    /// copy (epoch + 1, map version + 1) only if `f` accepts.
    fn update_shard(
        &mut self,
        shard: ShardId,
        expected_epoch: u64,
        f: impl FnOnce(&mut ShardAssignment) -> Result<(), Rejection>,
    ) -> Result<Option<u64>, Rejection> {
        let current = self.shard(shard)?;
        if current.epoch != expected_epoch {
            return Err(Rejection::EpochMismatch {
                shard,
                expected: expected_epoch,
                actual: current.epoch,
            });
        }
        let mut next = current.clone();
        f(&mut next)?;
        next.epoch += 1;
        let epoch = next.epoch;
        if let Some(map) = self.shard_map.as_mut() {
            map.assignments[shard as usize] = next;
            map.version += 1;
        }
        Ok(Some(epoch))
    }

    fn record_block(&mut self, block: &BlockMeta) -> Result<Option<u64>, Rejection> {
        if block.min_time > block.max_time {
            return Err(Rejection::InvalidBlock {
                id: block.id.clone(),
                reason: format!("min_time {} > max_time {}", block.min_time, block.max_time),
            });
        }
        match self.blocks.get(&block.id) {
            Some(existing) if existing == block => Ok(None),
            Some(_) => Err(Rejection::BlockConflict(block.id.clone())),
            None => {
                self.blocks.insert(block.id.clone(), block.clone());
                Ok(None)
            }
        }
    }
}

fn invalid(shard: ShardId, reason: &str) -> Rejection {
    Rejection::InvalidReplicas {
        shard,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RuleGroup;

    fn add(id: NodeId) -> Command {
        Command::AddNode {
            id,
            addr: format!("10.0.0.{id}:7000"),
        }
    }

    fn init(shards: u32, rf: u32) -> Command {
        Command::InitShards {
            shards,
            replication_factor: rf,
            placement_labels: vec!["job".into(), "instance".into()],
        }
    }

    /// Three active nodes, 4 shards, rf 2.
    fn populated() -> MetaState {
        let mut s = MetaState::default();
        for id in 1..=3 {
            assert_eq!(s.apply(&add(id)), Applied::Ok { epoch: None });
        }
        assert_eq!(s.apply(&init(4, 2)), Applied::Ok { epoch: Some(1) });
        s
    }

    fn ok(epoch: Option<u64>) -> Applied {
        Applied::Ok { epoch }
    }

    fn rejected(a: Applied) -> Rejection {
        match a {
            Applied::Rejected(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn block(id: &str) -> BlockMeta {
        BlockMeta {
            id: id.into(),
            node: 1,
            shards: vec![0, 3],
            min_time: 1000,
            max_time: 7_201_000,
            num_series: 10,
            num_samples: 1200,
            compaction_level: 1,
            deleted: false,
        }
    }

    #[test]
    fn add_node_fresh_and_update_addr() {
        let mut s = MetaState::default();
        assert_eq!(s.apply(&add(7)), ok(None));
        assert_eq!(s.nodes[&7].state, NodeState::Active);
        let mut p = populated();
        p.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Down,
        });
        assert_eq!(
            p.apply(&Command::AddNode {
                id: 2,
                addr: "new:1".into()
            }),
            ok(None)
        );
        // Re-adding keeps the state: only the address changes.
        assert_eq!(p.nodes[&2].addr, "new:1");
        assert_eq!(p.nodes[&2].state, NodeState::Down);
    }

    #[test]
    fn set_node_state() {
        let mut s = MetaState::default();
        let r = rejected(s.apply(&Command::SetNodeState {
            id: 1,
            state: NodeState::Draining,
        }));
        assert_eq!(r, Rejection::UnknownNode(1));
        let mut p = populated();
        assert_eq!(
            p.apply(&Command::SetNodeState {
                id: 3,
                state: NodeState::Draining
            }),
            ok(None)
        );
        assert_eq!(p.active_nodes(), vec![1, 2]);
        assert_eq!(p.effective_rf(), 2);
    }

    #[test]
    fn remove_node() {
        let mut s = MetaState::default();
        assert_eq!(
            rejected(s.apply(&Command::RemoveNode { id: 1 })),
            Rejection::UnknownNode(1)
        );
        s.apply(&add(1));
        assert_eq!(s.apply(&Command::RemoveNode { id: 1 }), ok(None));
        assert!(s.nodes.is_empty());

        let mut p = populated();
        let before = p.clone();
        // 4 shards × rf 2 over 3 nodes: node 1 holds shards 0, 2, 3.
        assert_eq!(
            rejected(p.apply(&Command::RemoveNode { id: 1 })),
            Rejection::NodeHoldsReplicas { node: 1, shards: 3 }
        );
        assert_eq!(p, before, "a rejection leaves the state untouched");
        p.apply(&add(4));
        assert_eq!(p.apply(&Command::RemoveNode { id: 4 }), ok(None));
    }

    #[test]
    fn init_shards() {
        let mut s = MetaState::default();
        assert_eq!(rejected(s.apply(&init(8, 3))), Rejection::NoActiveNodes);
        s.apply(&add(1));
        assert!(matches!(
            rejected(s.apply(&init(0, 3))),
            Rejection::InvalidShardParams(_)
        ));
        assert!(matches!(
            rejected(s.apply(&init(8, 0))),
            Rejection::InvalidShardParams(_)
        ));
        // rf capped at the one active node.
        assert_eq!(s.apply(&init(8, 3)), ok(Some(1)));
        let map = s.shard_map.as_ref().unwrap();
        assert!(map.assignments.iter().all(|a| a.replicas == vec![1]));
        assert_eq!(map.replication_factor, 3);

        let mut p = populated();
        assert_eq!(
            rejected(p.apply(&init(4, 2))),
            Rejection::ShardsAlreadyInitialized
        );
        let map = p.shard_map.as_ref().unwrap();
        let reps: Vec<_> = map.assignments.iter().map(|a| a.replicas.clone()).collect();
        assert_eq!(reps, vec![vec![1, 2], vec![2, 3], vec![3, 1], vec![1, 2]]);
        assert_eq!(map.placement_labels, vec!["job", "instance"]);
    }

    #[test]
    fn stale_epochs_are_redirected() {
        use crate::types::EpochCheck;
        let mut p = populated();
        p.apply(&Command::SetShardPrimary {
            shard: 1,
            node: 3,
            expected_epoch: 1,
        });
        let map = p.shard_map.as_ref().unwrap();
        assert_eq!(map.check_epoch(1, 2), EpochCheck::Current);
        assert_eq!(
            map.check_epoch(1, 1),
            EpochCheck::Stale {
                epoch: 2,
                replicas: vec![3, 2]
            }
        );
        assert_eq!(map.check_epoch(1, 5), EpochCheck::Ahead { local_epoch: 2 });
        assert_eq!(map.check_epoch(9, 1), EpochCheck::UnknownShard);
    }

    #[test]
    fn shard_for_hash_splits_evenly() {
        let p = populated();
        let map = p.shard_map.as_ref().unwrap();
        assert_eq!(map.shard_for_hash(0), 0);
        assert_eq!(map.shard_for_hash(u64::MAX / 4), 0);
        assert_eq!(map.shard_for_hash(u64::MAX / 4 + 1), 1);
        assert_eq!(map.shard_for_hash(u64::MAX / 2 + 1), 2);
        assert_eq!(map.shard_for_hash(u64::MAX), 3);
    }

    #[test]
    fn set_shard_replicas_compare_and_set() {
        let mut s = MetaState::default();
        s.apply(&add(1));
        let cmd = Command::SetShardReplicas {
            shard: 0,
            replicas: vec![1],
            expected_epoch: 1,
        };
        assert_eq!(rejected(s.apply(&cmd)), Rejection::ShardsNotInitialized);

        let mut p = populated();
        let set = |replicas: Vec<NodeId>, expected_epoch| Command::SetShardReplicas {
            shard: 1,
            replicas,
            expected_epoch,
        };
        assert_eq!(p.apply(&set(vec![3, 1], 1)), ok(Some(2)));
        assert_eq!(
            rejected(p.apply(&set(vec![1, 2], 1))),
            Rejection::EpochMismatch {
                shard: 1,
                expected: 1,
                actual: 2
            }
        );
        assert!(matches!(
            rejected(p.apply(&set(vec![], 2))),
            Rejection::InvalidReplicas { .. }
        ));
        assert!(matches!(
            rejected(p.apply(&set(vec![1, 1], 2))),
            Rejection::InvalidReplicas { .. }
        ));
        assert_eq!(
            rejected(p.apply(&set(vec![9], 2))),
            Rejection::UnknownNode(9)
        );
        assert_eq!(
            rejected(p.apply(&Command::SetShardReplicas {
                shard: 4,
                replicas: vec![1],
                expected_epoch: 1
            })),
            Rejection::UnknownShard {
                shard: 4,
                shards: 4
            }
        );
        let map = p.shard_map.as_ref().unwrap();
        assert_eq!(map.assignments[1].replicas, vec![3, 1]);
        assert_eq!(map.assignments[1].epoch, 2);
        assert_eq!(map.version, 2);
    }

    #[test]
    fn add_catch_up_remove_cycle() {
        let mut p = populated();
        p.apply(&add(4));
        // Shard 0 = [1, 2].
        let r = p.apply(&Command::AddShardReplica {
            shard: 0,
            node: 4,
            expected_epoch: 1,
        });
        assert_eq!(r, ok(Some(2)));
        let a = &p.shard_map.as_ref().unwrap().assignments[0];
        assert_eq!(
            (a.replicas.clone(), a.pending.clone()),
            (vec![1, 2], vec![4])
        );
        // Adding again, or an existing replica, is refused.
        for node in [4, 1] {
            assert!(matches!(
                rejected(p.apply(&Command::AddShardReplica {
                    shard: 0,
                    node,
                    expected_epoch: 2
                })),
                Rejection::NotEligible { .. }
            ));
        }
        assert!(matches!(
            rejected(p.apply(&Command::ShardReplicaCaughtUp { shard: 0, node: 3 })),
            Rejection::NotEligible { .. }
        ));
        assert_eq!(
            p.apply(&Command::ShardReplicaCaughtUp { shard: 0, node: 4 }),
            ok(Some(3))
        );
        assert_eq!(
            p.apply(&Command::RemoveShardReplica {
                shard: 0,
                node: 1,
                expected_epoch: 3
            }),
            ok(Some(4))
        );
        let a = &p.shard_map.as_ref().unwrap().assignments[0];
        assert_eq!(a.replicas, vec![2, 4]);
        assert_eq!(a.primary(), Some(2));
        assert!(a.pending.is_empty());
    }

    #[test]
    fn add_replica_requires_active_node() {
        let mut p = populated();
        p.apply(&add(4));
        p.apply(&Command::SetNodeState {
            id: 4,
            state: NodeState::Draining,
        });
        assert!(matches!(
            rejected(p.apply(&Command::AddShardReplica {
                shard: 0,
                node: 4,
                expected_epoch: 1
            })),
            Rejection::NotEligible { .. }
        ));
        assert_eq!(
            rejected(p.apply(&Command::AddShardReplica {
                shard: 0,
                node: 5,
                expected_epoch: 1
            })),
            Rejection::UnknownNode(5)
        );
    }

    #[test]
    fn remove_replica_rules() {
        let mut p = populated();
        let rm = |node, expected_epoch| Command::RemoveShardReplica {
            shard: 0,
            node,
            expected_epoch,
        };
        assert!(matches!(
            rejected(p.apply(&rm(3, 1))),
            Rejection::NotEligible { .. }
        ));
        assert_eq!(p.apply(&rm(1, 1)), ok(Some(2)));
        assert!(matches!(
            rejected(p.apply(&rm(2, 2))),
            Rejection::InvalidReplicas { .. }
        ));
        // A pending replica can be dropped (a cancelled move).
        p.apply(&Command::AddShardReplica {
            shard: 0,
            node: 3,
            expected_epoch: 2,
        });
        assert_eq!(p.apply(&rm(3, 3)), ok(Some(4)));
        let a = &p.shard_map.as_ref().unwrap().assignments[0];
        assert_eq!((a.replicas.clone(), a.pending.clone()), (vec![2], vec![]));
    }

    #[test]
    fn set_shard_primary() {
        let mut p = populated();
        let set = |node, expected_epoch| Command::SetShardPrimary {
            shard: 2,
            node,
            expected_epoch,
        };
        assert!(matches!(
            rejected(p.apply(&set(2, 1))),
            Rejection::NotEligible { .. }
        ));
        assert_eq!(p.apply(&set(1, 1)), ok(Some(2)));
        assert_eq!(
            p.shard_map.as_ref().unwrap().assignments[2].replicas,
            vec![1, 3]
        );
        assert!(matches!(
            rejected(p.apply(&set(3, 1))),
            Rejection::EpochMismatch { .. }
        ));
    }

    #[test]
    fn block_catalog() {
        let mut s = MetaState::default();
        assert_eq!(
            rejected(s.apply(&Command::MarkBlockDeleted { id: "x".into() })),
            Rejection::UnknownBlock("x".into())
        );
        let b = block("01J0000000000000000000000A");
        assert_eq!(
            s.apply(&Command::RecordBlock { block: b.clone() }),
            ok(None)
        );
        // Identical re-record is idempotent (a retried proposal).
        assert_eq!(
            s.apply(&Command::RecordBlock { block: b.clone() }),
            ok(None)
        );
        let mut other = b.clone();
        other.num_samples += 1;
        assert!(matches!(
            rejected(s.apply(&Command::RecordBlock { block: other })),
            Rejection::BlockConflict(_)
        ));
        let mut bad = block("bad");
        bad.min_time = bad.max_time + 1;
        assert!(matches!(
            rejected(s.apply(&Command::RecordBlock { block: bad })),
            Rejection::InvalidBlock { .. }
        ));
        assert_eq!(
            s.apply(&Command::MarkBlockDeleted { id: b.id.clone() }),
            ok(None)
        );
        assert!(s.blocks[&b.id].deleted);

        let mut p = populated();
        assert_eq!(p.apply(&Command::RecordBlock { block: b }), ok(None));
        assert_eq!(p.blocks.len(), 1);
    }

    #[test]
    fn rule_groups_replace_and_remove() {
        let mut s = MetaState::default();
        let g = |name: &str| RuleGroup {
            name: name.into(),
            source: format!("name: {name}\nrules: []\n"),
        };
        let put = |groups| Command::PutRuleGroups {
            namespace: "rules.yml".into(),
            groups,
        };
        assert_eq!(s.apply(&put(vec![g("a"), g("b")])), ok(None));
        assert_eq!(s.rule_groups["rules.yml"].len(), 2);
        assert_eq!(s.apply(&put(vec![g("c")])), ok(None));
        assert_eq!(s.rule_groups["rules.yml"], vec![g("c")]);
        assert_eq!(s.apply(&put(vec![])), ok(None));
        assert!(s.rule_groups.is_empty());
        let mut p = populated();
        assert_eq!(p.apply(&put(vec![g("a")])), ok(None));
        assert_eq!(p.rule_groups.len(), 1);
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let mut p = populated();
        p.apply(&Command::RecordBlock { block: block("b1") });
        let bytes = serde_json::to_vec(&p).unwrap();
        let back: MetaState = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, p);
    }
}
