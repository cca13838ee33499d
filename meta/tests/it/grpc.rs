//! A three-node meta group over real tonic gRPC on loopback: election,
//! joins through a follower (forwarded to the leader), replication, leader
//! loss, and a write forwarded from a follower.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pharos_meta::grpc::{Channels, GrpcMetaClient, GrpcNetworkFactory, MetaRaftService};
use pharos_meta::types::{Command, NodeId, RuleGroup};
use pharos_meta::{MetaClient, MetaNode, MetaNodeConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Running {
    node: Arc<MetaNode>,
    client: GrpcMetaClient,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(dir: &std::path::Path, id: NodeId) -> (Running, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cfg = MetaNodeConfig::new(id, addr.clone(), dir.join(format!("n{id}")));
    cfg.heartbeat = Duration::from_millis(50);
    // Snapshot and purge often, so a late joiner needs a streamed snapshot.
    cfg.snapshot_every = 10;
    cfg.keep_logs_behind_snapshot = 0;
    let channels = Channels::default();
    let node = Arc::new(
        MetaNode::start(cfg, GrpcNetworkFactory::new(channels.clone()))
            .await
            .unwrap(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let svc = MetaRaftService::new(node.clone(), channels.clone()).into_server();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    let client = GrpcMetaClient::new(node.clone(), channels);
    (
        Running {
            node,
            client,
            stop,
            server,
        },
        addr,
    )
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    r.server.abort();
    r.node.shutdown().await;
}

async fn wait_leader(nodes: &BTreeMap<NodeId, Running>) -> NodeId {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut seen = Vec::new();
            for r in nodes.values() {
                seen.push(r.node.raft().current_leader().await);
            }
            if let Some(Some(l)) = seen.first() {
                if nodes.contains_key(l)
                    && seen.iter().all(|s| *s == Some(*l))
                    && matches!(nodes[l].client.is_leader_confirmed().await, Ok(true))
                {
                    return *l;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("leader over grpc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=3 {
        let (r, addr) = start(dir.path(), id).await;
        nodes.insert(id, r);
        addrs.insert(id, addr);
    }
    nodes[&1].node.bootstrap().await.unwrap();
    nodes[&1]
        .client
        .add_node(2, addrs[&2].clone())
        .await
        .unwrap();
    // Node 3 joins by asking node 2, a follower, over the wire: relayed to
    // the leader.
    pharos_meta::grpc::join_cluster(&addrs[&2], 3, &addrs[&3])
        .await
        .unwrap();
    let leader = wait_leader(&nodes).await;
    assert_eq!(leader, 1);

    // A write through a follower is forwarded and replicated everywhere.
    let put = |ns: &str| Command::PutRuleGroups {
        namespace: ns.into(),
        groups: vec![RuleGroup {
            name: ns.into(),
            source: String::new(),
        }],
    };
    nodes[&3].client.propose(put("via-follower")).await.unwrap();
    for r in nodes.values() {
        let mut rx = r.client.watch();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !rx
                .borrow_and_update()
                .rule_groups
                .contains_key("via-follower")
                || rx.borrow().nodes.len() != 3
            {
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("replicated over grpc");
    }

    // Leader loss: the other two elect a new leader and keep committing.
    let old = nodes.remove(&leader).unwrap();
    stop(old).await;
    let new = wait_leader(&nodes).await;
    assert_ne!(new, leader);
    let follower = *nodes.keys().find(|n| **n != new).unwrap();
    nodes[&follower].client.propose(put("after")).await.unwrap();
    assert!(nodes[&new].client.is_leader_confirmed().await.unwrap());
    assert!(nodes[&new].client.state().rule_groups.contains_key("after"));

    // A late joiner catches up by a snapshot streamed over gRPC.
    for i in 0..30 {
        nodes[&new]
            .client
            .propose(put(&format!("ns{i}")))
            .await
            .unwrap();
    }
    nodes[&new]
        .node
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some_and(|p| p.index > 10), "leader purged")
        .await
        .unwrap();
    let (late, late_addr) = start(dir.path(), 5).await;
    nodes[&follower]
        .client
        .add_node(5, late_addr)
        .await
        .unwrap();
    let mut rx = late.client.watch();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !rx.borrow_and_update().rule_groups.contains_key("ns29") {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("late joiner caught up");
    late.node
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some(), "late joiner holds a snapshot")
        .await
        .unwrap();
    nodes.insert(5, late);
    for (_, r) in nodes {
        stop(r).await;
    }
}
