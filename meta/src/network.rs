//! Raft transport: the in-memory router used by in-process cluster tests.
//! (The gRPC transport lives in [`crate::grpc`].)
//!
//! [`MemRouter`] delivers each RPC by calling the target's `Raft` handle
//! directly. Tests cut links with [`MemRouter::isolate`] and
//! [`MemRouter::partition`] (an RPC across a cut link fails with
//! `Unreachable` as a dropped connection would, in both directions), lose
//! messages with [`MemRouter::drop_one_in`] and slow them with
//! [`MemRouter::set_delay`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;

use crate::raft::{BasicNode, MetaRaft, Snapshot, TypeConfig, Vote};
use crate::types::NodeId;

/// Why an in-memory RPC was not delivered.
#[derive(Debug, thiserror::Error)]
#[error("node {to} unreachable from node {from}: {why}")]
pub struct Undeliverable {
    pub from: NodeId,
    pub to: NodeId,
    pub why: &'static str,
}

#[derive(Default)]
struct RouterInner {
    nodes: BTreeMap<NodeId, MetaRaft>,
    /// Unordered pairs that cannot talk.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Drop one RPC in this many (0: none), deterministically by count.
    drop_one_in: u64,
    sent: u64,
    delay: Duration,
}

/// An in-process network of Raft nodes. Clones share the same network.
#[derive(Clone, Default)]
pub struct MemRouter {
    inner: Arc<Mutex<RouterInner>>,
}

impl MemRouter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `raft` reachable as node `id`.
    pub fn register(&self, id: NodeId, raft: MetaRaft) {
        self.inner.lock().nodes.insert(id, raft);
    }

    /// Removes node `id` (as if its process died).
    pub fn unregister(&self, id: NodeId) {
        self.inner.lock().nodes.remove(&id);
    }

    /// Cuts every link of `id`.
    pub fn isolate(&self, id: NodeId) {
        let mut inner = self.inner.lock();
        let others: Vec<NodeId> = inner.nodes.keys().copied().filter(|n| *n != id).collect();
        for o in others {
            inner.cut.insert(pair(id, o));
        }
    }

    /// Splits the registered nodes into groups that only talk within
    /// themselves; nodes in no group are isolated.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut inner = self.inner.lock();
        let ids: Vec<NodeId> = inner.nodes.keys().copied().collect();
        let group_of = |n: NodeId| -> Option<usize> { groups.iter().position(|g| g.contains(&n)) };
        inner.cut.clear();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                let (ga, gb) = (group_of(*a), group_of(*b));
                if ga.is_none() || ga != gb {
                    inner.cut.insert(pair(*a, *b));
                }
            }
        }
    }

    /// Restores every link (drops and delays stay as set).
    pub fn heal(&self) {
        self.inner.lock().cut.clear();
    }

    /// Loses one RPC in `n` (its request never arrives); 0 turns it off.
    pub fn drop_one_in(&self, n: u64) {
        self.inner.lock().drop_one_in = n;
    }

    /// Delays every RPC by `d` before delivery.
    pub fn set_delay(&self, d: Duration) {
        self.inner.lock().delay = d;
    }

    /// The network as seen from node `from`.
    pub fn factory(&self, from: NodeId) -> MemNetworkFactory {
        MemNetworkFactory {
            router: self.clone(),
            from,
        }
    }

    fn route(&self, from: NodeId, to: NodeId) -> Result<MetaRaft, Undeliverable> {
        let mut inner = self.inner.lock();
        inner.sent += 1;
        if inner.drop_one_in > 0 && inner.sent % inner.drop_one_in == 0 {
            return Err(Undeliverable {
                from,
                to,
                why: "dropped",
            });
        }
        if inner.cut.contains(&pair(from, to)) {
            return Err(Undeliverable {
                from,
                to,
                why: "link cut",
            });
        }
        inner.nodes.get(&to).cloned().ok_or(Undeliverable {
            from,
            to,
            why: "not running",
        })
    }
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

/// Creates [`MemConnection`]s for one node.
pub struct MemNetworkFactory {
    router: MemRouter,
    from: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for MemNetworkFactory {
    type Network = MemConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> MemConnection {
        MemConnection {
            router: self.router.clone(),
            from: self.from,
            to: target,
        }
    }
}

/// One node's link to one peer.
pub struct MemConnection {
    router: MemRouter,
    from: NodeId,
    to: NodeId,
}

impl MemConnection {
    async fn target(&self) -> Result<MetaRaft, Unreachable<TypeConfig>> {
        let delay = self.router.inner.lock().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.router
            .route(self.from, self.to)
            .map_err(|e| Unreachable::new(&e))
    }

    /// Re-checks the link after the call, so a partition that starts while
    /// a request is in flight drops its response too.
    fn recheck(&self) -> Result<(), Unreachable<TypeConfig>> {
        let inner = self.router.inner.lock();
        if inner.cut.contains(&pair(self.from, self.to)) {
            return Err(Unreachable::new(&Undeliverable {
                from: self.from,
                to: self.to,
                why: "link cut while in flight",
            }));
        }
        Ok(())
    }
}

impl RaftNetworkV2<TypeConfig> for MemConnection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let resp = self
            .target()
            .await?
            .append_entries(rpc)
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.recheck()?;
        Ok(resp)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let resp = self
            .target()
            .await?
            .vote(rpc)
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.recheck()?;
        Ok(resp)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let resp = self
            .target()
            .await?
            .pre_vote(rpc)
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.recheck()?;
        Ok(resp)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let resp = self
            .target()
            .await?
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        self.recheck()?;
        Ok(resp)
    }
}
