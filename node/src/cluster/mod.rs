//! The cluster: this node's part in a Pharos cluster of several nodes.
//!
//! Owns: the wiring between the meta group (`pharos-meta`: membership and
//! the shard map in Raft) and the data path — the replicating
//! [`crate::sink::WriteSink`] ([`write`]), the fan-out
//! [`pharos_query::queryable::Queryable`] ([`read`]), the internal gRPC
//! `Replica` service other nodes call ([`replica`]), and the placement rule
//! ([`placement_hash`], [`shard_of_labels`]); and this node's membership:
//! start and shutdown ([`member`]), the rule leader ([`leader`]), the
//! scrape assignment ([`assignment`]), the copying of replicas moved here
//! ([`moves`]), cluster metrics ([`metrics`]), the
//! read-only `/api/v1/cluster/*` handlers ([`api`], the only HTTP here) and
//! the local multi-process launcher behind `pharos cluster` ([`launcher`]).
//! Must not: touch openraft beyond the meta node's handle (only
//! `pharos-meta` implements consensus), or evaluate PromQL.
//!
//! Invariants:
//! - A write is acknowledged only when, for every shard it touches, a
//!   majority of the shard's up-to-date replicas have it in their WAL.
//! - Every data RPC carries the shard epochs it was routed with; a replica
//!   whose map differs answers with a [`pharos_proto::cluster::Redirect`]
//!   and applies nothing.
//! - A read that cannot reach a replica of every shard it needs fails,
//!   naming the shards, unless the caller accepted a partial answer.

pub mod api;
pub mod assignment;
pub mod catchup;
pub mod handoff;
pub mod launcher;
pub mod leader;
pub mod member;
pub mod metrics;
pub mod moves;
pub mod peers;
pub mod read;
pub mod replica;
pub mod write;

#[cfg(test)]
pub(crate) mod testkit;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pharos_meta::grpc::Channels;
use pharos_meta::types::{NodeId, ShardId, ShardMap};
use pharos_meta::MetaClient;
use pharos_storage::db::Db;
use pharos_storage::labels::Labels;

use crate::sink::MetadataStore;

pub use peers::Peers;

/// Labels whose values form the placement key unless the cluster was
/// created with others (sorted; `Labels::hash_for` ignores order anyway).
pub const DEFAULT_PLACEMENT_LABELS: [&str; 2] = ["instance", "job"];

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The shard map does not exist yet (the cluster is still forming).
    #[error("the cluster has no shard map yet")]
    NoShardMap,
    /// Not enough replicas of some shards answered.
    #[error("shards without enough replicas: {0}")]
    Unavailable(String),
    /// A peer could not be reached or failed.
    #[error("node {node} ({addr}): {message}")]
    Peer {
        node: NodeId,
        addr: String,
        message: String,
    },
    /// A node id that is not (or no longer) a cluster member.
    #[error("node {0} is not a cluster member")]
    UnknownNode(NodeId),
    #[error(transparent)]
    Meta(#[from] pharos_meta::MetaError),
    #[error(transparent)]
    Storage(#[from] pharos_storage::StorageError),
}

/// What the data path of one node shares: its storage, its view of the
/// metadata, and its connections to peers.
pub struct ClusterCtx {
    pub node_id: NodeId,
    pub db: Arc<Db>,
    pub meta: Arc<dyn MetaClient>,
    pub peers: Peers,
    /// Metric metadata served by `/api/v1/metadata`.
    pub metadata: Arc<MetadataStore>,
    /// Set while this node is catching up after a restart: its replicas may
    /// miss samples, so it refuses reads (peers fail over to another
    /// replica) and its own fan-out does not prefer local data.
    pub catching_up: AtomicBool,
    /// The runtime RPCs run on. [`crate::sink::WriteSink`] and
    /// [`pharos_query::queryable::Queryable`] are synchronous and called
    /// from blocking threads; they `block_on` this handle.
    pub runtime: tokio::runtime::Handle,
}

impl ClusterCtx {
    /// Must be called inside a Tokio runtime (it keeps its handle).
    pub fn new(
        node_id: NodeId,
        db: Arc<Db>,
        meta: Arc<dyn MetaClient>,
        metadata: Arc<MetadataStore>,
    ) -> Arc<ClusterCtx> {
        let channels = Channels::default();
        ClusterCtx::with_channels(node_id, db, meta, metadata, channels)
    }

    /// As [`ClusterCtx::new`], with the data path sharing `channels` with
    /// the meta group's transport (one connection per peer). Must be called
    /// inside a Tokio runtime.
    pub fn with_channels(
        node_id: NodeId,
        db: Arc<Db>,
        meta: Arc<dyn MetaClient>,
        metadata: Arc<MetadataStore>,
        channels: Channels,
    ) -> Arc<ClusterCtx> {
        let peers = Peers::with_channels(Arc::clone(&meta), channels);
        Arc::new(ClusterCtx {
            node_id,
            db,
            meta,
            peers,
            metadata,
            catching_up: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The latest shard map this node has applied.
    pub fn shard_map(&self) -> Result<ShardMap, ClusterError> {
        self.meta.shard_map().ok_or(ClusterError::NoShardMap)
    }
}

/// The placement-key hash of a series: the hash of the `placement_labels`
/// when the series has all of them (every series of a scrape target lands
/// in one shard), else the series hash. See ARCHITECTURE.md "Placement".
pub fn placement_hash(labels: &Labels, placement_labels: &[String]) -> u64 {
    if !placement_labels.is_empty() && placement_labels.iter().all(|n| labels.has(n)) {
        // Per sample on the write path: no allocation for the usual few
        // placement labels.
        let mut few = [""; 4];
        if placement_labels.len() <= few.len() {
            for (slot, n) in few.iter_mut().zip(placement_labels) {
                *slot = n.as_str();
            }
            labels.hash_for(&few[..placement_labels.len()])
        } else {
            let names: Vec<&str> = placement_labels.iter().map(String::as_str).collect();
            labels.hash_for(&names)
        }
    } else {
        labels.hash()
    }
}

/// The shard a series belongs to under `map`.
pub fn shard_of_labels(labels: &Labels, map: &ShardMap) -> ShardId {
    map.shard_for_hash(placement_hash(labels, &map.placement_labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::target::{placement_key, shard_of};

    #[test]
    fn placement_agrees_with_the_scrape_assignment() {
        // The scrape manager picks targets with its own copy of the rule;
        // both must put a target's series in the same shard.
        let names: Vec<String> = DEFAULT_PLACEMENT_LABELS
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (i, l) in [
            Labels::from_pairs([("__name__", "up"), ("instance", "a:9100"), ("job", "node")]),
            Labels::from_pairs([("__name__", "x"), ("job", "node")]),
            Labels::from_pairs([("__name__", "y")]),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(placement_hash(&l, &names), placement_key(&l), "case {i}");
            assert_eq!(
                shard_of(placement_hash(&l, &names), 256),
                shard_of(placement_key(&l), 256)
            );
        }
    }

    #[test]
    fn series_of_one_target_share_a_placement_key() {
        let names: Vec<String> = DEFAULT_PLACEMENT_LABELS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = Labels::from_pairs([("__name__", "up"), ("instance", "h:1"), ("job", "j")]);
        let b = Labels::from_pairs([("__name__", "other"), ("instance", "h:1"), ("job", "j")]);
        assert_eq!(placement_hash(&a, &names), placement_hash(&b, &names));
        assert_ne!(a.hash(), b.hash());
    }
}
