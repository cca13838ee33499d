//! Connections to the other nodes' internal gRPC services.
//!
//! Owns: one lazily connected tonic channel per peer (shared by the meta
//! group's Raft RPCs and the data path's `Replica` calls, which the peer
//! serves on the same port), looked up by node id through the applied
//! membership, so a re-addressed node is followed.

use std::sync::Arc;
use std::time::Duration;

use pharos_meta::grpc::Channels;
use pharos_meta::types::NodeId;
use pharos_meta::MetaClient;
use pharos_proto::cluster::replica_client::ReplicaClient;
use tonic::transport::Channel;

use super::ClusterError;

/// Largest data-path message (a write batch or one select reply batch).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Default deadline of a data-path RPC.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Channels to peers by node id.
#[derive(Clone)]
pub struct Peers {
    channels: Channels,
    meta: Arc<dyn MetaClient>,
}

impl Peers {
    pub fn new(meta: Arc<dyn MetaClient>) -> Peers {
        Peers::with_channels(meta, Channels::default())
    }

    /// Shares `channels` with the meta group's transport.
    pub fn with_channels(meta: Arc<dyn MetaClient>, channels: Channels) -> Peers {
        Peers { channels, meta }
    }

    /// The channel cache (to share with the meta group).
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// The gRPC address of `node` in the applied membership.
    pub fn addr(&self, node: NodeId) -> Result<String, ClusterError> {
        self.meta
            .state()
            .nodes
            .get(&node)
            .map(|n| n.addr.clone())
            .ok_or(ClusterError::UnknownNode(node))
    }

    /// A `Replica` client for `node`.
    pub fn replica(&self, node: NodeId) -> Result<ReplicaClient<Channel>, ClusterError> {
        let addr = self.addr(node)?;
        let ch = self
            .channels
            .get(node, &addr)
            .map_err(|e| ClusterError::Peer {
                node,
                addr: addr.clone(),
                message: e.to_string(),
            })?;
        Ok(ReplicaClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}
