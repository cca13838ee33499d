//! The crate's error type.

use std::path::PathBuf;

use crate::types::{NodeId, Rejection};

/// Errors of the meta store and its clients.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("meta storage in {path}: {source}")]
    Storage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid raft config for node {node}: {message}")]
    Config { node: NodeId, message: String },
    /// This node is not the leader; retry at the leader (if known).
    #[error("node {node} is not the meta leader (leader: {leader:?} at {leader_addr:?})")]
    NotLeader {
        node: NodeId,
        leader: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// The state machine refused the command; nothing changed.
    #[error("meta command rejected: {0}")]
    Rejected(#[from] Rejection),
    /// The outcome of a proposal is unknown (the leader changed after
    /// appending it); the caller must check the state before retrying.
    #[error("outcome of a proposal on node {node} is unknown: {message}")]
    Indeterminate { node: NodeId, message: String },
    #[error("no meta quorum reachable from node {node}: {message}")]
    NoQuorum { node: NodeId, message: String },
    #[error("raft on node {node} stopped: {message}")]
    Fatal { node: NodeId, message: String },
    #[error("meta membership change on node {node}: {message}")]
    Membership { node: NodeId, message: String },
    #[error("meta rpc to node {peer} ({addr}): {message}")]
    Rpc {
        peer: NodeId,
        addr: String,
        message: String,
    },
}
