//! The gRPC transport of the meta group (`pharos.meta.MetaRaft`, see
//! `proto/proto/pharos/meta.proto`): the server side ([`MetaRaftService`]),
//! the openraft network over it ([`GrpcNetworkFactory`], one cached tonic
//! `Channel` per peer), and [`GrpcMetaClient`], the production
//! [`MetaClient`] that forwards writes from a follower to the leader.
//!
//! Raft messages travel as JSON in opaque `bytes` fields; a snapshot is
//! client-streamed in [`SNAPSHOT_CHUNK`] pieces, the first carrying the vote
//! and snapshot meta.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use pharos_proto::meta::meta_raft_client::MetaRaftClient;
use pharos_proto::meta::meta_raft_server::{MetaRaft as MetaRaftRpc, MetaRaftServer};
use pharos_proto::meta::{AddNodeRequest, RaftReply, RaftRequest, SnapshotChunk};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::client::{propose_local, BoxFuture, MetaClient, RaftMetaClient};
use crate::error::MetaError;
use crate::node::MetaNode;
use crate::raft::{BasicNode, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::types::{Applied, Command, MetaState, NodeId};

/// Snapshot bytes per streamed message.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Largest Raft message accepted (append batches of big commands).
const MAX_MESSAGE: usize = 64 << 20;

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    vote: Vote,
    meta: SnapshotMeta,
}

/// Serves one node's Raft RPCs and forwarded writes.
#[derive(Clone)]
pub struct MetaRaftService {
    node: Arc<MetaNode>,
    channels: Channels,
}

impl MetaRaftService {
    /// `channels` is used to relay joins to the leader; share the node's
    /// [`GrpcNetworkFactory`]'s.
    pub fn new(node: Arc<MetaNode>, channels: Channels) -> Self {
        Self { node, channels }
    }

    /// The tonic service to add to the node's gRPC server.
    pub fn into_server(self) -> MetaRaftServer<Self> {
        MetaRaftServer::new(self).max_decoding_message_size(MAX_MESSAGE)
    }
}

fn decode<T: DeserializeOwned>(data: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(data).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

fn reply<T: Serialize, E: std::fmt::Display>(
    r: Result<T, E>,
) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(match r {
        Ok(v) => RaftReply {
            data: serde_json::to_vec(&v).map_err(|e| Status::internal(e.to_string()))?,
            error: String::new(),
        },
        Err(e) => RaftReply {
            data: Vec::new(),
            error: e.to_string(),
        },
    }))
}

#[tonic::async_trait]
impl MetaRaftRpc for MetaRaftService {
    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.into_inner().data, "append")?;
        reply(self.node.raft().append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(&req.into_inner().data, "vote")?;
        reply(self.node.raft().vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(&req.into_inner().data, "pre-vote")?;
        reply(self.node.raft().pre_vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let mut stream = req.into_inner();
        let mut header: Option<SnapshotHeader> = None;
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if header.is_none() {
                header = Some(decode(&chunk.header, "snapshot header")?);
            }
            data.extend_from_slice(&chunk.data);
        }
        let h = header.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let snapshot = Snapshot {
            meta: h.meta,
            snapshot: data,
        };
        reply(
            self.node
                .raft()
                .install_full_snapshot(h.vote, snapshot)
                .await,
        )
    }

    async fn propose(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let cmd: Command = decode(&req.into_inner().data, "command")?;
        tracing::debug!(node = self.node.id(), %cmd, "forwarded proposal");
        let r = match propose_local(self.node.raft(), cmd).await {
            Ok(epoch) => Ok(Applied::Ok { epoch }),
            Err(MetaError::Rejected(r)) => Ok(Applied::Rejected(r)),
            Err(e) => Err(e),
        };
        reply(r)
    }

    async fn add_node(&self, req: Request<AddNodeRequest>) -> Result<Response<RaftReply>, Status> {
        let AddNodeRequest {
            id,
            addr,
            forwarded,
        } = req.into_inner();
        tracing::info!(node = self.node.id(), joining = id, %addr, forwarded, "add node");
        let r = if forwarded {
            RaftMetaClient::new(self.node.clone())
                .add_node(id, addr)
                .await
        } else {
            GrpcMetaClient::new(self.node.clone(), self.channels.clone())
                .add_node(id, addr)
                .await
        };
        reply(r)
    }
}

/// Cached channels to peers, shared by all connections of one node.
#[derive(Clone, Default)]
pub struct Channels {
    by_peer: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
}

impl Channels {
    /// The channel to `peer` at `addr`, created (lazily connecting) on first
    /// use and replaced if the peer's address changed.
    pub fn get(&self, peer: NodeId, addr: &str) -> Result<Channel, MetaError> {
        let mut map = self.by_peer.lock();
        if let Some((a, ch)) = map.get(&peer) {
            if a == addr {
                return Ok(ch.clone());
            }
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| MetaError::Rpc {
                peer,
                addr: addr.to_string(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let ch = endpoint.connect_lazy();
        map.insert(peer, (addr.to_string(), ch.clone()));
        Ok(ch)
    }

    fn client(&self, peer: NodeId, addr: &str) -> Result<MetaRaftClient<Channel>, MetaError> {
        Ok(MetaRaftClient::new(self.get(peer, addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}

/// The openraft network over gRPC.
#[derive(Clone, Default)]
pub struct GrpcNetworkFactory {
    channels: Channels,
}

impl GrpcNetworkFactory {
    pub fn new(channels: Channels) -> Self {
        Self { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcConnection {
        GrpcConnection {
            target,
            addr: node.addr.clone(),
            client: self.channels.client(target, &node.addr),
        }
    }
}

/// A connection to one peer (a clone of its cached channel).
pub struct GrpcConnection {
    target: NodeId,
    addr: String,
    /// An invalid address is reported on every call rather than at
    /// creation, which openraft does not allow to fail.
    client: Result<MetaRaftClient<Channel>, MetaError>,
}

#[derive(Debug, thiserror::Error)]
#[error("meta rpc {rpc} to node {peer} ({addr}): {message}")]
struct RpcFailure {
    rpc: &'static str,
    peer: NodeId,
    addr: String,
    message: String,
}

impl GrpcConnection {
    fn failure(&self, rpc: &'static str, message: String) -> RpcFailure {
        RpcFailure {
            rpc,
            peer: self.target,
            addr: self.addr.clone(),
            message,
        }
    }

    fn client(
        &self,
        rpc: &'static str,
    ) -> Result<MetaRaftClient<Channel>, Unreachable<TypeConfig>> {
        match &self.client {
            Ok(c) => Ok(c.clone()),
            Err(e) => Err(Unreachable::new(&self.failure(rpc, e.to_string()))),
        }
    }

    /// Sends one JSON-encoded unary RPC and decodes the reply.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        rpc: &'static str,
        req: &Req,
        ttl: Duration,
        call: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(MetaRaftClient<Channel>, RaftRequest) -> Fut,
        Fut: Future<Output = Result<Response<RaftReply>, Status>>,
    {
        let data = serde_json::to_vec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.failure(rpc, e.to_string()))))?;
        let client = self.client(rpc)?;
        let r = tokio::time::timeout(ttl, call(client, RaftRequest { data })).await;
        let reply = match r {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &self.failure(rpc, format!("no reply within {ttl:?}")),
                )))
            }
            Ok(Err(status)) => return Err(self.status_error(rpc, status)),
            Ok(Ok(resp)) => resp.into_inner(),
        };
        self.decode_reply(rpc, reply)
            .map_err(|f| RPCError::Unreachable(Unreachable::new(&f)))
    }

    fn decode_reply<Resp: DeserializeOwned>(
        &self,
        rpc: &'static str,
        reply: RaftReply,
    ) -> Result<Resp, RpcFailure> {
        if !reply.error.is_empty() {
            // The peer's Raft is stopping: treat it as unreachable.
            return Err(self.failure(rpc, reply.error));
        }
        serde_json::from_slice(&reply.data).map_err(|e| self.failure(rpc, e.to_string()))
    }

    fn status_error(&self, rpc: &'static str, status: Status) -> RPCError<TypeConfig> {
        let f = self.failure(rpc, status.to_string());
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                RPCError::Unreachable(Unreachable::new(&f))
            }
            _ => RPCError::Network(NetworkError::new(&f)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for GrpcConnection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary("append", &rpc, option.hard_ttl(), |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary("vote", &rpc, option.hard_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary("pre-vote", &rpc, option.hard_ttl(), |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let rpc = "snapshot";
        let header = serde_json::to_vec(&SnapshotHeader {
            vote,
            meta: snapshot.meta,
        })
        .map_err(|e| {
            StreamingError::Network(NetworkError::new(&self.failure(rpc, e.to_string())))
        })?;
        let mut chunks: Vec<SnapshotChunk> = snapshot
            .snapshot
            .chunks(SNAPSHOT_CHUNK)
            .map(|d| SnapshotChunk {
                header: Vec::new(),
                data: d.to_vec(),
            })
            .collect();
        match chunks.first_mut() {
            Some(first) => first.header = header,
            None => chunks.push(SnapshotChunk {
                header,
                data: Vec::new(),
            }),
        }
        let mut client = self.client(rpc)?;
        let send = client.install_snapshot(futures_util::stream::iter(chunks));
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = tokio::time::timeout(option.hard_ttl(), send) => r,
        };
        let reply = match reply {
            Err(_) => {
                return Err(StreamingError::Unreachable(Unreachable::new(
                    &self.failure(rpc, "timed out".into()),
                )))
            }
            Ok(Err(status)) => {
                return Err(match self.status_error(rpc, status) {
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    RPCError::Network(n) => StreamingError::Network(n),
                    other => StreamingError::Network(NetworkError::new(&other)),
                })
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        self.decode_reply(rpc, reply)
            .map_err(|f| StreamingError::Unreachable(Unreachable::new(&f)))
    }
}

/// The production [`MetaClient`]: reads and leader checks are local; writes
/// go through this node's Raft when it leads and are forwarded over gRPC to
/// the leader otherwise.
#[derive(Clone)]
pub struct GrpcMetaClient {
    local: RaftMetaClient,
    channels: Channels,
}

impl GrpcMetaClient {
    /// `channels` should be the node's [`GrpcNetworkFactory`]'s, so writes
    /// reuse the Raft connections.
    pub fn new(node: Arc<MetaNode>, channels: Channels) -> Self {
        Self {
            local: RaftMetaClient::new(node),
            channels,
        }
    }

    fn leader_client(
        &self,
        leader: Option<NodeId>,
        addr: Option<String>,
        not_leader: MetaError,
    ) -> Result<(NodeId, String, MetaRaftClient<Channel>), MetaError> {
        match (leader, addr) {
            (Some(id), Some(addr)) => {
                let c = self.channels.client(id, &addr)?;
                Ok((id, addr, c))
            }
            _ => Err(not_leader),
        }
    }

    fn rpc_error(peer: NodeId, addr: &str, message: String) -> MetaError {
        MetaError::Rpc {
            peer,
            addr: addr.to_string(),
            message,
        }
    }

    async fn propose_impl(&self, cmd: Command) -> Result<Option<u64>, MetaError> {
        let err = match self.local.propose(cmd.clone()).await {
            Err(e @ MetaError::NotLeader { .. }) => e,
            other => return other,
        };
        let MetaError::NotLeader {
            leader,
            ref leader_addr,
            ..
        } = err
        else {
            return Err(err);
        };
        let (id, addr, mut c) = self.leader_client(leader, leader_addr.clone(), err)?;
        let data =
            serde_json::to_vec(&cmd).map_err(|e| Self::rpc_error(id, &addr, e.to_string()))?;
        let reply = c
            .propose(RaftRequest { data })
            .await
            .map_err(|s| Self::rpc_error(id, &addr, s.to_string()))?
            .into_inner();
        if !reply.error.is_empty() {
            return Err(Self::rpc_error(id, &addr, reply.error));
        }
        match serde_json::from_slice::<Applied>(&reply.data) {
            Ok(Applied::Ok { epoch }) => Ok(epoch),
            Ok(Applied::Rejected(r)) => Err(MetaError::Rejected(r)),
            Err(e) => Err(Self::rpc_error(id, &addr, e.to_string())),
        }
    }

    async fn add_node_impl(&self, node: NodeId, node_addr: String) -> Result<(), MetaError> {
        let err = match self.local.add_node(node, node_addr.clone()).await {
            Err(e @ MetaError::NotLeader { .. }) => e,
            other => return other,
        };
        let MetaError::NotLeader {
            leader,
            ref leader_addr,
            ..
        } = err
        else {
            return Err(err);
        };
        let (id, addr, mut c) = self.leader_client(leader, leader_addr.clone(), err)?;
        let reply = c
            .add_node(AddNodeRequest {
                id: node,
                addr: node_addr,
                forwarded: true,
            })
            .await
            .map_err(|s| Self::rpc_error(id, &addr, s.to_string()))?
            .into_inner();
        if !reply.error.is_empty() {
            return Err(Self::rpc_error(id, &addr, reply.error));
        }
        Ok(())
    }
}

impl MetaClient for GrpcMetaClient {
    fn add_node(&self, id: NodeId, addr: String) -> BoxFuture<'_, Result<(), MetaError>> {
        Box::pin(self.add_node_impl(id, addr))
    }

    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<Option<u64>, MetaError>> {
        Box::pin(self.propose_impl(cmd))
    }

    fn is_leader_confirmed(&self) -> BoxFuture<'_, Result<bool, MetaError>> {
        self.local.is_leader_confirmed()
    }

    fn state(&self) -> Arc<MetaState> {
        self.local.state()
    }

    fn watch(&self) -> watch::Receiver<Arc<MetaState>> {
        self.local.watch()
    }
}

/// Asks the member at `seed_addr` to add node `id` (reachable at `addr`) to
/// the cluster; the member relays it to the leader. Called by a starting
/// node that is not yet part of a meta group (its own [`MetaNode`] must
/// already be serving, since the leader replicates to it before returning).
pub async fn join_cluster(seed_addr: &str, id: NodeId, addr: &str) -> Result<(), MetaError> {
    let err = |message: String| MetaError::Rpc {
        peer: 0,
        addr: seed_addr.to_string(),
        message,
    };
    let channel = Endpoint::from_shared(format!("http://{seed_addr}"))
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| err(e.to_string()))?;
    let reply = MetaRaftClient::new(channel)
        .add_node(AddNodeRequest {
            id,
            addr: addr.to_string(),
            forwarded: false,
        })
        .await
        .map_err(|s| err(s.to_string()))?
        .into_inner();
    if reply.error.is_empty() {
        Ok(())
    } else {
        Err(err(reply.error))
    }
}
