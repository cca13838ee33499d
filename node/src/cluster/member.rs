//! Starting and stopping this node's membership in a cluster: the meta
//! group's Raft member, the one gRPC server (meta Raft + data path
//! `Replica`), cluster formation (bootstrap or join, then the shard map),
//! the rule-leadership lease, the cluster metrics, and the copying of
//! shard replicas moved here ([`super::moves`]).
//!
//! Owns: the start order and the shutdown order of those parts. Must not:
//! open or close storage (the server does), serve HTTP, or decide data
//! placement (the state machine and the planner in `pharos-meta` do).
//!
//! Start order (as `pharos-meta` requires): bind the gRPC port; start the
//! [`MetaNode`] over a [`GrpcNetworkFactory`] whose channels the data path
//! shares; serve `MetaRaft` and `Replica` on the port; then, in the
//! background, unless the member recovered its membership from disk:
//! bootstrap (no join address other than itself) or join through the first
//! join address that answers (retried with backoff); then, once
//! `expect_nodes` nodes are members, the leader creates the shard map
//! (`InitShards`, refused harmlessly if another node already did).
//!
//! A restarted member marks itself catching up ([`super::catchup::begin`])
//! before it serves anything, so the restart point is the newest sample it
//! recovered from disk, not one a peer sent after the restart; it pulls
//! what it missed once the shard map is known.
//!
//! Shutdown order: background tasks, the meta member (Raft stops), then the
//! gRPC server (in-flight data RPCs finish first, bounded). The caller
//! flushes storage afterwards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pharos_meta::grpc::{
    join_cluster, Channels, GrpcMetaClient, GrpcNetworkFactory, MetaRaftService,
};
use pharos_meta::types::{Command, MetaState, NodeId, Rejection};
use pharos_meta::{MetaClient, MetaError, MetaNode, MetaNodeConfig};
use pharos_storage::db::Db;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::leader::LeaderLease;
use super::metrics::ClusterMetrics;
use super::replica::ReplicaService;
use super::ClusterCtx;
use crate::config::cluster::ClusterConfig;
use crate::sink::MetadataStore;

/// Longest the gRPC server may take to finish in-flight RPCs on shutdown.
const GRPC_DRAIN: Duration = Duration::from_secs(5);
/// Longest between two join attempts.
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often formation re-checks without a state change.
const FORMATION_POLL: Duration = Duration::from_millis(500);

/// Why the member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cluster mode needs pharos.cluster.node_id (flag --node-id)")]
    NoNodeId,
    #[error("binding the cluster gRPC address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the meta group member in {dir}: {source}")]
    Meta { dir: PathBuf, source: MetaError },
}

/// What the rest of the node reads about the cluster (HTTP API, metrics,
/// the scrape assignment, the rule leader).
pub struct ClusterHandle {
    pub node_id: NodeId,
    /// The address peers reach this node's gRPC service at.
    pub advertise: String,
    pub ctx: Arc<ClusterCtx>,
    pub meta: Arc<dyn MetaClient>,
    pub node: Arc<MetaNode>,
    pub lease: Arc<LeaderLease>,
    pub metrics: ClusterMetrics,
}

impl ClusterHandle {
    /// The latest applied metadata.
    pub fn state(&self) -> Arc<MetaState> {
        self.meta.state()
    }

    /// Waits until the shard map exists (the cluster has formed).
    pub async fn wait_for_shard_map(&self) {
        wait_for_shard_map(self.meta.watch()).await
    }
}

async fn wait_for_shard_map(mut rx: watch::Receiver<Arc<MetaState>>) {
    loop {
        if rx.borrow_and_update().shard_map.is_some() {
            return;
        }
        if rx.changed().await.is_err() {
            // The meta member stopped: the map will never come.
            return std::future::pending().await;
        }
    }
}

/// A running cluster member.
pub struct Member {
    handle: Arc<ClusterHandle>,
    grpc_addr: SocketAddr,
    grpc_stop: Option<oneshot::Sender<()>>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Member {
    /// Starts the member over this node's storage (see the module doc for
    /// the order). Returns once the gRPC port serves; formation goes on in
    /// the background. Must be called inside a Tokio runtime.
    pub async fn start(
        cfg: &ClusterConfig,
        data_dir: &Path,
        db: Arc<Db>,
        metadata: Arc<MetadataStore>,
    ) -> Result<Member, StartError> {
        let id = cfg.node_id.ok_or(StartError::NoNodeId)?;
        let addr = cfg.grpc_listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        // With port 0 (tests) peers must be told the port actually bound.
        let advertise = cfg.advertise.clone().unwrap_or_else(|| local.to_string());

        let channels = Channels::default();
        let dir = data_dir.join("meta");
        let mut mcfg = MetaNodeConfig::new(id, advertise.clone(), &dir);
        mcfg.heartbeat = cfg.heartbeat.as_std();
        let node = MetaNode::start(mcfg, GrpcNetworkFactory::new(channels.clone()))
            .await
            .map_err(|source| StartError::Meta {
                dir: dir.clone(),
                source,
            })?;
        let node = Arc::new(node);
        let meta: Arc<dyn MetaClient> =
            Arc::new(GrpcMetaClient::new(Arc::clone(&node), channels.clone()));
        let ctx = ClusterCtx::with_channels(id, db, Arc::clone(&meta), metadata, channels.clone());
        // Before the gRPC port serves peers' writes (see the module doc).
        let restart = super::catchup::begin(&ctx);

        let raft_svc = MetaRaftService::new(Arc::clone(&node), channels).into_server();
        let replica_svc = ReplicaService::new(Arc::clone(&ctx)).into_server();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        // Nagle off: a streamed Select answer or a write reply must not wait
        // for the peer's delayed ACK (≈40 ms per round trip otherwise).
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let grpc_task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(raft_svc)
                .add_service(replica_svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                }),
        );
        tracing::info!(node = id, grpc = %local, %advertise, "cluster member serving gRPC");

        let lease = LeaderLease::new(Arc::clone(&meta), cfg.heartbeat.as_std());
        let metrics = ClusterMetrics::default();
        let handle = Arc::new(ClusterHandle {
            node_id: id,
            advertise: advertise.clone(),
            ctx,
            meta: Arc::clone(&meta),
            node: Arc::clone(&node),
            lease: Arc::clone(&lease),
            metrics: metrics.clone(),
        });
        let tasks = vec![
            tokio::spawn(form(Arc::clone(&node), meta, cfg.clone(), advertise)),
            lease.spawn(),
            metrics.spawn_updater(Arc::clone(&handle)),
            tokio::spawn(catch_up(Arc::clone(&handle), restart)),
            super::moves::spawn(Arc::clone(&handle.ctx)),
        ];
        Ok(Member {
            handle,
            grpc_addr: local,
            grpc_stop: Some(stop_tx),
            grpc_task,
            tasks,
        })
    }

    pub fn handle(&self) -> &Arc<ClusterHandle> {
        &self.handle
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Keeps `task` until shutdown, which aborts it.
    pub fn own(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Stops background tasks, the meta member, then the gRPC server.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.handle.node.shutdown().await;
        if let Some(s) = self.grpc_stop.take() {
            let _ = s.send(());
        }
        match tokio::time::timeout(GRPC_DRAIN, &mut self.grpc_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cluster gRPC server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cluster gRPC server task failed"),
            Err(_) => {
                tracing::warn!("cluster gRPC requests still running after {GRPC_DRAIN:?}; closing");
                self.grpc_task.abort();
            }
        }
        tracing::info!(node = self.handle.node_id, "cluster member stopped");
    }
}

/// Once the shard map is known, pulls what this replica missed while it was
/// down (nothing on a fresh node).
async fn catch_up(h: Arc<ClusterHandle>, restart: Option<super::catchup::RestartPoint>) {
    let Some(point) = restart else {
        tracing::info!(node = h.node_id, "fresh node: nothing to catch up");
        return;
    };
    h.wait_for_shard_map().await;
    let opts = super::catchup::CatchUpOptions::default();
    match super::catchup::catch_up_from(Arc::clone(&h.ctx), point, opts).await {
        Ok(report) => tracing::info!(node = h.node_id, ?report, "catch-up finished"),
        Err(e) => tracing::warn!(node = h.node_id, error = %e, "catch-up failed"),
    }
}

/// Joins or bootstraps the meta group if this member has none yet, then
/// creates the shard map once enough nodes are members.
async fn form(node: Arc<MetaNode>, meta: Arc<dyn MetaClient>, cfg: ClusterConfig, me: String) {
    let id = node.id();
    match node.is_initialized().await {
        Ok(true) => tracing::info!(node = id, "meta membership recovered from disk"),
        Ok(false) => {
            let seeds: Vec<&String> = cfg.join.iter().filter(|a| **a != me).collect();
            if seeds.is_empty() {
                tracing::info!(node = id, "bootstrapping a new cluster");
                if let Err(e) = node.bootstrap().await {
                    tracing::error!(node = id, error = %e, "bootstrapping the meta group failed");
                    return;
                }
            } else {
                join(id, &me, &seeds).await;
            }
        }
        Err(e) => {
            tracing::error!(node = id, error = %e, "reading the meta membership failed");
            return;
        }
    }
    let mut rx = meta.watch();
    loop {
        let state = rx.borrow_and_update().clone();
        if let Some(map) = &state.shard_map {
            tracing::info!(
                node = id,
                shards = map.shards,
                replication_factor = map.replication_factor,
                nodes = state.nodes.len(),
                "cluster formed: shard map ready"
            );
            return;
        }
        if state.nodes.len() >= cfg.expect_nodes && node.raft().is_leader() {
            let cmd = Command::InitShards {
                shards: cfg.shards,
                replication_factor: cfg.replication_factor,
                placement_labels: cfg.placement_labels.clone(),
            };
            match meta.propose(cmd).await {
                Ok(_) => tracing::info!(node = id, shards = cfg.shards, "shard map created"),
                Err(MetaError::Rejected(Rejection::ShardsAlreadyInitialized)) => {}
                Err(e) => {
                    tracing::warn!(node = id, error = %e, "creating the shard map failed; retrying")
                }
            }
        } else {
            tracing::debug!(
                node = id,
                members = state.nodes.len(),
                expect = cfg.expect_nodes,
                "waiting for members before creating the shard map"
            );
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(FORMATION_POLL) => {}
        }
    }
}

/// Asks the seeds in turn to add this node until one succeeds.
async fn join(id: NodeId, me: &str, seeds: &[&String]) {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        for seed in seeds {
            match join_cluster(seed, id, me).await {
                Ok(()) => {
                    tracing::info!(node = id, via = %seed, "joined the cluster");
                    return;
                }
                Err(e) => {
                    // The first attempts fail while the seed starts: quiet.
                    if attempt > 3 {
                        tracing::warn!(node = id, via = %seed, attempt, error = %e, "joining failed; retrying");
                    } else {
                        tracing::debug!(node = id, via = %seed, error = %e, "joining failed; retrying");
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(JOIN_BACKOFF_MAX);
    }
}
