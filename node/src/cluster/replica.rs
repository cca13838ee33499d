//! The `Replica` gRPC service this node serves to its peers: the receiving
//! end of replicated writes ([`super::write`]) and fan-out reads
//! ([`super::read`]). This file only dispatches; the semantics live beside
//! the sending side of each path.

use std::sync::Arc;

use pharos_proto::cluster::replica_server::{Replica, ReplicaServer};
use pharos_proto::cluster::{
    DeleteReply, DeleteRequest, LabelsReply, LabelsRequest, MetadataPush, MetadataReply,
    SelectRequest, WriteReply, WriteRequest,
};
use tonic::{Request, Response, Status};

use super::peers::MAX_MESSAGE;
use super::{read, write, ClusterCtx};

/// The service over one node's [`ClusterCtx`].
#[derive(Clone)]
pub struct ReplicaService {
    ctx: Arc<ClusterCtx>,
}

impl ReplicaService {
    pub fn new(ctx: Arc<ClusterCtx>) -> ReplicaService {
        ReplicaService { ctx }
    }

    /// The tonic server, with the data path's message size limits.
    pub fn into_server(self) -> ReplicaServer<ReplicaService> {
        ReplicaServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn write(&self, req: Request<WriteRequest>) -> Result<Response<WriteReply>, Status> {
        write::serve_write(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    type SelectStream = read::SelectStream;

    async fn select(
        &self,
        req: Request<SelectRequest>,
    ) -> Result<Response<Self::SelectStream>, Status> {
        read::serve_select(Arc::clone(&self.ctx), req.into_inner())
            .await
            .map(Response::new)
    }

    async fn label_names(
        &self,
        req: Request<LabelsRequest>,
    ) -> Result<Response<LabelsReply>, Status> {
        read::serve_label_names(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn label_values(
        &self,
        req: Request<LabelsRequest>,
    ) -> Result<Response<LabelsReply>, Status> {
        read::serve_label_values(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteReply>, Status> {
        read::serve_delete(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn push_metadata(
        &self,
        req: Request<MetadataPush>,
    ) -> Result<Response<MetadataReply>, Status> {
        write::serve_metadata(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }
}
