//! In-process clusters for the data path's tests: `n` nodes, each with its
//! own [`Db`] in a temporary directory and its own `Replica` gRPC server on
//! a free loopback port, sharing one in-memory [`MemMetaClient`] (the same
//! state machine Raft replicates, without Raft). A node can be stopped
//! (its server goes away, its peers see it as unreachable) and started
//! again on the same directory and port.

use std::net::SocketAddr;
use std::sync::Arc;

use pharos_meta::types::{Command, NodeId};
use pharos_meta::{MemMetaClient, MetaClient};
use pharos_storage::db::Db;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::replica::ReplicaService;
use super::ClusterCtx;
use crate::sink::MetadataStore;

/// One in-process node.
pub(crate) struct TestNode {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub ctx: Option<Arc<ClusterCtx>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestNode {
    /// The running node's context.
    pub(crate) fn ctx(&self) -> &Arc<ClusterCtx> {
        self.ctx.as_ref().expect("node is running")
    }
}

/// `n` nodes sharing one metadata store.
pub(crate) struct TestCluster {
    pub meta: Arc<MemMetaClient>,
    pub nodes: Vec<TestNode>,
}

impl TestCluster {
    /// Starts `n` nodes (ids 1..=n) and creates a shard map of `shards`
    /// shards with replication factor `rf` over them.
    pub(crate) async fn start(n: usize, shards: u32, rf: u32) -> TestCluster {
        let meta = Arc::new(MemMetaClient::default());
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as NodeId + 1;
            let dir = tempfile::tempdir().expect("tempdir");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("local addr");
            meta.add_node(id, addr.to_string()).await.expect("add node");
            let mut node = TestNode {
                id,
                addr,
                dir,
                ctx: None,
                stop: None,
                server: None,
            };
            serve(
                &mut node,
                Arc::clone(&meta) as Arc<dyn MetaClient>,
                listener,
            );
            nodes.push(node);
        }
        meta.propose(Command::InitShards {
            shards,
            replication_factor: rf,
            placement_labels: super::DEFAULT_PLACEMENT_LABELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        })
        .await
        .expect("init shards");
        TestCluster { meta, nodes }
    }

    /// Node `id`.
    pub(crate) fn node(&self, id: NodeId) -> &TestNode {
        &self.nodes[(id - 1) as usize]
    }

    /// Stops node `id`: its server goes away and its storage is closed.
    pub(crate) async fn stop(&mut self, id: NodeId) {
        let node = &mut self.nodes[(id - 1) as usize];
        if let Some(s) = node.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = node.server.take() {
            let _ = h.await;
        }
        if let Some(ctx) = node.ctx.take() {
            let db = Arc::clone(&ctx.db);
            drop(ctx);
            tokio::task::spawn_blocking(move || db.sync())
                .await
                .expect("sync task")
                .expect("sync");
        }
    }

    /// Starts a stopped node `id` again on its directory and port.
    pub(crate) async fn restart(&mut self, id: NodeId) {
        let meta = Arc::clone(&self.meta) as Arc<dyn MetaClient>;
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.ctx.is_none(), "node {id} is running");
        let listener = tokio::net::TcpListener::bind(node.addr)
            .await
            .expect("rebind the node's port");
        serve(node, meta, listener);
    }
}

fn serve(node: &mut TestNode, meta: Arc<dyn MetaClient>, listener: tokio::net::TcpListener) {
    let db = Arc::new(Db::open(node.dir.path(), Default::default()).expect("open db"));
    let ctx = ClusterCtx::new(node.id, db, meta, Arc::new(MetadataStore::new(10_000)));
    let svc = ReplicaService::new(Arc::clone(&ctx)).into_server();
    let (tx, rx) = oneshot::channel::<()>();
    // Nagle off: a streamed Select answer or a write reply must not wait
    // for the peer's delayed ACK (≈40 ms per round trip otherwise).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    node.server = Some(tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await;
    }));
    node.stop = Some(tx);
    node.ctx = Some(ctx);
}
