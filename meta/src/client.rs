//! [`MetaClient`]: how the rest of Pharos reads and changes cluster metadata,
//! with a Raft-backed implementation ([`RaftMetaClient`]); the in-memory one
//! is [`crate::mem::MemMetaClient`]. Both pass the same shared test suite
//! (`tests/it/client_suite.rs`).
//!
//! # Consistency
//!
//! - [`MetaClient::propose`] returns after the command is committed and
//!   applied on the node that proposed it (the leader); its result is the
//!   replicated result.
//! - [`MetaClient::state`], [`MetaClient::shard_map`] and
//!   [`MetaClient::watch`] are this node's latest applied state: possibly
//!   stale, never ahead of the cluster, and never going backwards while the
//!   process runs. Callers that act on ownership call
//!   [`MetaClient::is_leader_confirmed`] (or carry epochs, which owners
//!   check) rather than trusting a local read.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use openraft::error::ClientWriteError;
use openraft::errors::RaftError;
use openraft::{ChangeMembers, ReadPolicy};
use tokio::sync::watch;

use crate::error::MetaError;
use crate::node::MetaNode;
use crate::raft::{BasicNode, MetaRaft, TypeConfig};
use crate::types::{Applied, Command, MetaState, NodeId, ShardMap};

/// A boxed future, so [`MetaClient`] can be used as `dyn MetaClient`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Access to the cluster metadata.
pub trait MetaClient: Send + Sync {
    /// Adds (or re-addresses) node `id`: it joins the Raft group (as a voter
    /// while there are fewer than the configured maximum, otherwise as a
    /// learner) and becomes eligible for shard replicas, which the leader's
    /// rebalancer then moves to it.
    fn add_node(&self, id: NodeId, addr: String) -> BoxFuture<'_, Result<(), MetaError>>;

    /// Replicates `cmd`; returns the shard's new epoch for shard commands.
    /// A refusal by the state machine is [`MetaError::Rejected`].
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<Option<u64>, MetaError>>;

    /// Whether this node is the leader, confirmed by a quorum now (a
    /// linearizable read barrier): `Ok(false)` if another node leads,
    /// [`MetaError::NoQuorum`] if no quorum answers in time.
    fn is_leader_confirmed(&self) -> BoxFuture<'_, Result<bool, MetaError>>;

    /// The latest locally applied state.
    fn state(&self) -> Arc<MetaState>;

    /// The latest locally applied shard map, if shards are initialized.
    fn shard_map(&self) -> Option<ShardMap> {
        self.state().shard_map.clone()
    }

    /// A receiver that sees every newly applied state (intermediate states
    /// may be skipped, order is kept).
    fn watch(&self) -> watch::Receiver<Arc<MetaState>>;
}

/// [`MetaClient`] over this node's [`MetaNode`]. Writes must reach the
/// leader: on a follower they fail with [`MetaError::NotLeader`] naming the
/// leader, for the caller (the node's gRPC layer) to forward.
#[derive(Clone)]
pub struct RaftMetaClient {
    node: Arc<MetaNode>,
}

impl RaftMetaClient {
    pub fn new(node: Arc<MetaNode>) -> Self {
        Self { node }
    }

    pub fn node(&self) -> &Arc<MetaNode> {
        &self.node
    }

    async fn add_node_impl(&self, id: NodeId, addr: String) -> Result<(), MetaError> {
        let raft = &self.node.raft;
        let me = self.node.cfg.id;
        let membership =
            |e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>| match e.forward_to_leader() {
                Some(f) => MetaError::NotLeader {
                    node: me,
                    leader: f.leader_id,
                    leader_addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
                },
                None => MetaError::Membership {
                    node: me,
                    message: format!("adding node {id} at {addr}: {e}"),
                },
            };
        let is_voter = raft.voter_ids().any(|v| v == id);
        if !is_voter {
            // Blocks until the learner has caught up, so promoting it
            // below cannot stall commits.
            raft.add_learner(id, BasicNode { addr: addr.clone() }, true)
                .await
                .map_err(membership)?;
            if raft.voter_ids().count() < self.node.cfg.max_voters {
                raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                    .await
                    .map_err(membership)?;
            }
        }
        propose_local(raft, Command::AddNode { id, addr }).await?;
        Ok(())
    }
}

impl RaftMetaClient {
    /// Removes node `id` from the cluster: forgets it in the state machine
    /// (refused with [`MetaError::Rejected`] while it holds replicas: set it
    /// `Draining` first and let the rebalancer empty it), then drops it from
    /// the Raft membership, promoting a learner first if it was a voter so
    /// the voter count holds. Leader only ([`MetaError::NotLeader`]
    /// otherwise).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MetaError> {
        let raft = &self.node.raft;
        let me = self.node.cfg.id;
        if raft.voter_ids().any(|v| v == id) && !raft.is_leader() {
            // Fail before changing anything.
            return Err(MetaError::NotLeader {
                node: me,
                leader: raft.current_leader().await,
                leader_addr: None,
            });
        }
        match propose_local(raft, Command::RemoveNode { id }).await {
            Ok(_) | Err(MetaError::Rejected(crate::types::Rejection::UnknownNode(_))) => {}
            Err(e) => return Err(e),
        }
        let membership =
            |e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>| MetaError::Membership {
                node: me,
                message: format!("removing node {id}: {e}"),
            };
        if raft.voter_ids().any(|v| v == id) {
            if let Some(learner) = raft.learner_ids().next() {
                raft.change_membership(ChangeMembers::AddVoterIds([learner].into()), false)
                    .await
                    .map_err(membership)?;
            }
            raft.change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                .await
                .map_err(membership)?;
        }
        if raft.learner_ids().any(|l| l == id) {
            raft.change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                .await
                .map_err(membership)?;
        }
        Ok(())
    }
}

impl MetaClient for RaftMetaClient {
    fn add_node(&self, id: NodeId, addr: String) -> BoxFuture<'_, Result<(), MetaError>> {
        Box::pin(self.add_node_impl(id, addr))
    }

    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<Option<u64>, MetaError>> {
        Box::pin(propose_local(&self.node.raft, cmd))
    }

    fn is_leader_confirmed(&self) -> BoxFuture<'_, Result<bool, MetaError>> {
        Box::pin(async move {
            let me = self.node.cfg.id;
            // Without a quorum the read barrier waits; a caller deciding
            // whether to act as leader needs a bounded answer.
            let limit = self.node.cfg.heartbeat * 20;
            let confirmed = tokio::time::timeout(
                limit,
                self.node.raft.ensure_linearizable(ReadPolicy::ReadIndex),
            )
            .await
            .map_err(|_| MetaError::NoQuorum {
                node: me,
                message: format!("leadership not confirmed within {limit:?}"),
            })?;
            match confirmed {
                Ok(_) => Ok(true),
                Err(e) => {
                    if e.forward_to_leader().is_some() {
                        return Ok(false);
                    }
                    match e.into_api_error() {
                        Some(api) => Err(MetaError::NoQuorum {
                            node: me,
                            message: api.to_string(),
                        }),
                        None => Err(MetaError::Fatal {
                            node: me,
                            message: "raft stopped".into(),
                        }),
                    }
                }
            }
        })
    }

    fn state(&self) -> Arc<MetaState> {
        self.node.state()
    }

    fn watch(&self) -> watch::Receiver<Arc<MetaState>> {
        self.node.subscribe()
    }
}

/// Proposes `cmd` through `raft` (which must be the leader).
pub(crate) async fn propose_local(raft: &MetaRaft, cmd: Command) -> Result<Option<u64>, MetaError> {
    let me = *raft.node_id();
    match raft.client_write(cmd).await {
        Ok(resp) => match resp.data {
            Applied::Ok { epoch } => Ok(epoch),
            Applied::Rejected(r) => Err(MetaError::Rejected(r)),
        },
        Err(e) => {
            if let Some(f) = e.forward_to_leader() {
                return Err(MetaError::NotLeader {
                    node: me,
                    leader: f.leader_id,
                    leader_addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
                });
            }
            match e.into_api_error() {
                Some(ClientWriteError::LogEntryDiscarded(f)) => Err(MetaError::Indeterminate {
                    node: me,
                    message: f.to_string(),
                }),
                Some(other) => Err(MetaError::Membership {
                    node: me,
                    message: other.to_string(),
                }),
                None => Err(MetaError::Fatal {
                    node: me,
                    message: "raft stopped".into(),
                }),
            }
        }
    }
}
