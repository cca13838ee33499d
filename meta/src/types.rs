//! The replicated data model: nodes, the shard map, the block catalog, rule
//! groups, and the commands that change them.
//!
//! Everything here is plain data with serde derives: it travels in Raft log
//! entries and snapshots, so a field rename is a format change. Invariants of
//! [`ShardMap`] (checked by [`crate::state_machine`] on every command):
//! - `assignments.len() == shards`, fixed at [`Command::InitShards`];
//! - a shard's `replicas` and `pending` are disjoint and hold no duplicates;
//! - `epoch` strictly increases on every change of a shard's replicas,
//!   pending set or order; the map's `version` increases on every change of
//!   any shard.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's id in the cluster and in the Raft group.
pub type NodeId = u64;

/// A shard index in `0..shards`.
pub type ShardId = u32;

/// What a node is doing, as far as placement is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Eligible to hold replicas.
    Active,
    /// Leaving: the planner moves its replicas away, then it can be removed.
    Draining,
    /// Unreachable: holds no new replicas; the planner replaces its replicas.
    Down,
}

/// A cluster member as recorded in the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The node's internal gRPC address (`host:port`).
    pub addr: String,
    pub state: NodeState,
}

/// One shard's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ShardAssignment {
    /// Up-to-date replicas, in order; the first is the primary.
    pub replicas: Vec<NodeId>,
    /// Replicas being added: they receive writes but do not count (and are
    /// not read from) until they report [`Command::ShardReplicaCaughtUp`].
    pub pending: Vec<NodeId>,
    /// Increases on every change of this shard; requests carrying an older
    /// epoch are redirected.
    pub epoch: u64,
}

impl ShardAssignment {
    /// The primary (first replica), if the shard has any replica.
    pub fn primary(&self) -> Option<NodeId> {
        self.replicas.first().copied()
    }

    /// Whether `node` is an up-to-date or pending replica.
    pub fn holds(&self, node: NodeId) -> bool {
        self.replicas.contains(&node) || self.pending.contains(&node)
    }
}

/// The shard map: the hash space cut into `shards` equal ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    pub shards: u32,
    /// Configured replication factor; the effective one is capped at the
    /// number of active nodes.
    pub replication_factor: u32,
    /// The labels whose values form a series' placement key.
    pub placement_labels: Vec<String>,
    pub assignments: Vec<ShardAssignment>,
    /// Increases whenever any shard changes (a cheap "has the map moved").
    pub version: u64,
}

impl ShardMap {
    /// The shard owning placement hash `hash`: shard `i` owns
    /// `[i·2⁶⁴/N, (i+1)·2⁶⁴/N)`.
    pub fn shard_for_hash(&self, hash: u64) -> ShardId {
        // (hash · N) / 2⁶⁴ is exact in 128 bits and never reaches N.
        ((u128::from(hash) * u128::from(self.shards)) >> 64) as ShardId
    }

    /// Checks a request that was routed with `epoch` for `shard`: requests
    /// planned against an older epoch get a redirect with the current
    /// placement, never a silent apply.
    pub fn check_epoch(&self, shard: ShardId, epoch: u64) -> EpochCheck {
        match self.assignment(shard) {
            None => EpochCheck::UnknownShard,
            Some(a) if a.epoch == epoch => EpochCheck::Current,
            Some(a) if a.epoch > epoch => EpochCheck::Stale {
                epoch: a.epoch,
                replicas: a.replicas.clone(),
            },
            // The sender has seen a newer map than this node has applied.
            Some(a) => EpochCheck::Ahead {
                local_epoch: a.epoch,
            },
        }
    }

    /// The assignment of `shard`, if it exists.
    pub fn assignment(&self, shard: ShardId) -> Option<&ShardAssignment> {
        self.assignments.get(shard as usize)
    }

    /// How many replicas (up-to-date and pending) each node holds.
    pub fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut out = BTreeMap::new();
        for a in &self.assignments {
            for n in a.replicas.iter().chain(&a.pending) {
                *out.entry(*n).or_insert(0) += 1;
            }
        }
        out
    }

    /// How many shards each node is primary of.
    pub fn primary_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut out = BTreeMap::new();
        for a in &self.assignments {
            if let Some(p) = a.primary() {
                *out.entry(p).or_insert(0) += 1;
            }
        }
        out
    }
}

/// The outcome of [`ShardMap::check_epoch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpochCheck {
    Current,
    /// The request is stale: redirect to these replicas at this epoch.
    Stale {
        epoch: u64,
        replicas: Vec<NodeId>,
    },
    /// This node lags the sender: wait for the map to catch up, or refuse.
    Ahead {
        local_epoch: u64,
    },
    UnknownShard,
}

/// A block in the catalog (a Prometheus-format TSDB block a node produced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// The block's ULID.
    pub id: String,
    /// The node that wrote it.
    pub node: NodeId,
    /// The shards whose series it holds.
    pub shards: Vec<ShardId>,
    /// Inclusive minimum and exclusive maximum timestamp (ms), as in
    /// Prometheus's `meta.json`.
    pub min_time: i64,
    pub max_time: i64,
    pub num_series: u64,
    pub num_samples: u64,
    pub compaction_level: u32,
    /// Set by [`Command::MarkBlockDeleted`]; the entry stays so readers and
    /// the deleter agree on what is gone.
    pub deleted: bool,
}

/// One rule group, stored as its YAML source (the alerting crate parses it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleGroup {
    pub name: String,
    pub source: String,
}

/// The whole replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetaState {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub shard_map: Option<ShardMap>,
    pub blocks: BTreeMap<String, BlockMeta>,
    /// Rule groups by namespace (a rule file).
    pub rule_groups: BTreeMap<String, Vec<RuleGroup>>,
}

/// A change to the replicated state: the payload of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a node (as `Active`), or update the address of a known one.
    AddNode {
        id: NodeId,
        addr: String,
    },
    SetNodeState {
        id: NodeId,
        state: NodeState,
    },
    /// Forget a node; refused while it holds any replica.
    RemoveNode {
        id: NodeId,
    },
    /// Create the shard map; refused if it exists. The initial placement
    /// rotates over the active nodes so primaries are spread evenly.
    InitShards {
        shards: u32,
        replication_factor: u32,
        placement_labels: Vec<String>,
    },
    /// Compare-and-set a shard's replicas (all up to date), clearing pending
    /// ones: the administrative override.
    SetShardReplicas {
        shard: ShardId,
        replicas: Vec<NodeId>,
        expected_epoch: u64,
    },
    /// Start moving a replica to `node`: it becomes pending.
    AddShardReplica {
        shard: ShardId,
        node: NodeId,
        expected_epoch: u64,
    },
    /// Sent by a pending replica once it holds the shard's data: it becomes
    /// an up-to-date replica (appended last, so never the primary).
    ShardReplicaCaughtUp {
        shard: ShardId,
        node: NodeId,
    },
    /// Drop a replica (up-to-date or pending). Refused if it is the last
    /// up-to-date replica.
    RemoveShardReplica {
        shard: ShardId,
        node: NodeId,
        expected_epoch: u64,
    },
    /// Make an up-to-date replica the primary.
    SetShardPrimary {
        shard: ShardId,
        node: NodeId,
        expected_epoch: u64,
    },
    /// Add a block to the catalog; idempotent for an identical entry.
    RecordBlock {
        block: BlockMeta,
    },
    MarkBlockDeleted {
        id: String,
    },
    /// Replace the rule groups of `namespace` (empty removes it).
    PutRuleGroups {
        namespace: String,
        groups: Vec<RuleGroup>,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::AddNode { id, addr } => write!(f, "add-node {id} {addr}"),
            Command::SetNodeState { id, state } => write!(f, "set-node-state {id} {state:?}"),
            Command::RemoveNode { id } => write!(f, "remove-node {id}"),
            Command::InitShards {
                shards,
                replication_factor,
                ..
            } => write!(f, "init-shards {shards} rf={replication_factor}"),
            Command::SetShardReplicas {
                shard, replicas, ..
            } => write!(f, "set-shard-replicas {shard} {replicas:?}"),
            Command::AddShardReplica { shard, node, .. } => {
                write!(f, "add-shard-replica {shard} {node}")
            }
            Command::ShardReplicaCaughtUp { shard, node } => {
                write!(f, "shard-replica-caught-up {shard} {node}")
            }
            Command::RemoveShardReplica { shard, node, .. } => {
                write!(f, "remove-shard-replica {shard} {node}")
            }
            Command::SetShardPrimary { shard, node, .. } => {
                write!(f, "set-shard-primary {shard} {node}")
            }
            Command::RecordBlock { block } => write!(f, "record-block {}", block.id),
            Command::MarkBlockDeleted { id } => write!(f, "mark-block-deleted {id}"),
            Command::PutRuleGroups { namespace, groups } => {
                write!(f, "put-rule-groups {namespace} ({} groups)", groups.len())
            }
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Applied; for shard commands, the shard's new epoch.
    Ok { epoch: Option<u64> },
    /// Deterministically refused: the state is unchanged on every replica.
    Rejected(Rejection),
}

/// Why a command was refused. Part of the replicated result, so it must be a
/// pure function of the state and the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("node {0} is unknown")]
    UnknownNode(NodeId),
    #[error("node {node} still holds replicas of {shards} shards")]
    NodeHoldsReplicas { node: NodeId, shards: usize },
    #[error("the shard map already exists")]
    ShardsAlreadyInitialized,
    #[error("the shard map does not exist yet")]
    ShardsNotInitialized,
    #[error("invalid shard map parameters: {0}")]
    InvalidShardParams(String),
    #[error("no active node to place shards on")]
    NoActiveNodes,
    #[error("shard {shard} is out of range (0..{shards})")]
    UnknownShard { shard: ShardId, shards: u32 },
    #[error("shard {shard} is at epoch {actual}, not {expected}")]
    EpochMismatch {
        shard: ShardId,
        expected: u64,
        actual: u64,
    },
    #[error("invalid replica set for shard {shard}: {reason}")]
    InvalidReplicas { shard: ShardId, reason: String },
    #[error("node {node} is not an eligible replica target for shard {shard}: {reason}")]
    NotEligible {
        shard: ShardId,
        node: NodeId,
        reason: String,
    },
    #[error("block {0} conflicts with the catalog entry of the same id")]
    BlockConflict(String),
    #[error("block {id}: {reason}")]
    InvalidBlock { id: String, reason: String },
    #[error("block {0} is unknown")]
    UnknownBlock(String),
}
