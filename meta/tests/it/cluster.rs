//! In-process meta clusters over the in-memory router: elections, commits,
//! leader loss, partitions, joins with rebalancing, restart from disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pharos_meta::network::MemRouter;
use pharos_meta::types::{Command, MetaState, NodeId, RuleGroup};
use pharos_meta::{MetaClient, MetaError, MetaNode, MetaNodeConfig, RaftMetaClient};

const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Cluster {
    pub(crate) router: MemRouter,
    pub(crate) nodes: BTreeMap<NodeId, Arc<MetaNode>>,
    pub(crate) dir: tempfile::TempDir,
    /// Snapshot policy override (entries between snapshots).
    pub(crate) snapshot_every: Option<u64>,
    /// Failure-detector override.
    pub(crate) down_after: Option<Duration>,
}

fn config(dir: &std::path::Path, id: NodeId) -> MetaNodeConfig {
    let mut cfg = MetaNodeConfig::new(id, format!("mem-{id}"), dir.join(format!("n{id}")));
    cfg.heartbeat = Duration::from_millis(50);
    cfg.rebalance_interval = Duration::from_millis(200);
    cfg
}

impl Cluster {
    /// Starts `n` nodes; node 1 bootstraps and adds the others.
    pub(crate) async fn start(n: u64) -> Self {
        let mut c = Cluster {
            router: MemRouter::new(),
            nodes: BTreeMap::new(),
            dir: tempfile::tempdir().unwrap(),
            snapshot_every: None,
            down_after: None,
        };
        for id in 1..=n {
            c.start_node(id).await;
        }
        c.nodes[&1].bootstrap().await.unwrap();
        for id in 2..=n {
            c.client(1).add_node(id, format!("mem-{id}")).await.unwrap();
        }
        c
    }

    pub(crate) async fn start_node(&mut self, id: NodeId) {
        let mut cfg = config(self.dir.path(), id);
        if let Some(n) = self.snapshot_every {
            cfg.snapshot_every = n;
            cfg.keep_logs_behind_snapshot = 0;
        }
        if self.down_after.is_some() {
            cfg.down_after = self.down_after;
        }
        let node = MetaNode::start(cfg, self.router.factory(id)).await.unwrap();
        self.router.register(id, node.raft().clone());
        self.nodes.insert(id, Arc::new(node));
    }

    pub(crate) async fn kill(&mut self, id: NodeId) {
        self.router.unregister(id);
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    pub(crate) fn client(&self, id: NodeId) -> RaftMetaClient {
        RaftMetaClient::new(self.nodes[&id].clone())
    }

    /// Waits until the nodes in `among` agree on one leader among them.
    pub(crate) async fn leader(&self, among: &[NodeId]) -> NodeId {
        tokio::time::timeout(WAIT, async {
            loop {
                let mut seen = Vec::new();
                for id in among {
                    seen.push(self.nodes[id].raft().current_leader().await);
                }
                if let Some(Some(l)) = seen.first() {
                    // A recovered vote names the old leader before it has
                    // re-established itself: require a quorum-confirmed one.
                    if among.contains(l)
                        && seen.iter().all(|s| *s == Some(*l))
                        && matches!(self.client(*l).is_leader_confirmed().await, Ok(true))
                    {
                        return *l;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("no agreed leader")
    }

    /// Waits until `pred` holds on the applied state of every node in `on`.
    pub(crate) async fn until(&self, on: &[NodeId], what: &str, pred: impl Fn(&MetaState) -> bool) {
        let r = tokio::time::timeout(WAIT, async {
            for id in on {
                let mut rx = self.nodes[id].subscribe();
                while !pred(&rx.borrow_and_update()) {
                    rx.changed().await.unwrap();
                }
            }
        })
        .await;
        assert!(r.is_ok(), "timed out waiting for {what}");
    }

    pub(crate) async fn shutdown(self) {
        for n in self.nodes.values() {
            n.shutdown().await;
        }
    }
}

fn rules(ns: &str) -> Command {
    Command::PutRuleGroups {
        namespace: ns.into(),
        groups: vec![RuleGroup {
            name: ns.into(),
            source: String::new(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_a_leader_and_applies_everywhere() {
    let c = Cluster::start(3).await;
    let leader = c.leader(&[1, 2, 3]).await;
    c.client(leader).propose(rules("a")).await.unwrap();
    c.until(&[1, 2, 3], "rule group on all", |s| {
        s.rule_groups.contains_key("a") && s.nodes.len() == 3
    })
    .await;
    // A follower refuses writes and names the leader.
    let follower = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    match c.client(follower).propose(rules("b")).await {
        Err(MetaError::NotLeader { leader: l, .. }) => assert_eq!(l, Some(leader)),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(!c.client(follower).is_leader_confirmed().await.unwrap());
    assert!(c.client(leader).is_leader_confirmed().await.unwrap());

    // The metrics follow Raft and the applied state.
    let m = pharos_meta::metrics::MetaMetrics::default();
    let updater = m.spawn_updater(&c.nodes[&leader]);
    tokio::time::timeout(WAIT, async {
        while m.is_leader.get() != 1 || m.last_applied_index.get() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("metrics updated");
    updater.abort();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_client_passes_shared_suite() {
    let c = Cluster::start(3).await;
    let leader = c.leader(&[1, 2, 3]).await;
    c.until(&[leader], "all nodes recorded", |s| s.nodes.len() == 3)
        .await;
    crate::client_suite::run(&c.client(leader), 1).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced() {
    let mut c = Cluster::start(3).await;
    let old = c.leader(&[1, 2, 3]).await;
    c.kill(old).await;
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|n| *n != old).collect();
    let new = c.leader(&rest).await;
    assert_ne!(new, old);
    c.client(new).propose(rules("after")).await.unwrap();
    c.until(&rest, "write after failover", |s| {
        s.rule_groups.contains_key("after")
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_cannot_commit() {
    let c = Cluster::start(3).await;
    let old = c.leader(&[1, 2, 3]).await;
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|n| *n != old).collect();
    c.router.partition(&[&[old], &rest]);

    // The minority side: its write cannot commit, and it cannot confirm
    // its leadership.
    let client = c.client(old);
    let write = tokio::time::timeout(Duration::from_millis(800), client.propose(rules("lost")));
    match write.await {
        Err(_elapsed) => {}
        Ok(r) => assert!(r.is_err(), "minority committed: {r:?}"),
    }
    // Bounded: without a quorum the answer is an error, not a hang.
    let confirmed = client.is_leader_confirmed().await;
    assert!(
        matches!(confirmed, Err(MetaError::NoQuorum { .. }) | Ok(false)),
        "{confirmed:?}"
    );

    // The majority elects a leader and commits.
    let new = c.leader(&rest).await;
    c.client(new).propose(rules("kept")).await.unwrap();

    // After healing, the old leader follows and converges; the minority's
    // write is gone.
    c.router.heal();
    c.until(&[1, 2, 3], "convergence after heal", |s| {
        s.rule_groups.contains_key("kept")
    })
    .await;
    for id in [1, 2, 3] {
        assert!(!c.nodes[&id].state().rule_groups.contains_key("lost"));
    }
    c.shutdown().await;
}

/// Node 4 joins a 3-node cluster with rf 2: the leader's rebalancer moves
/// replicas to it (each new replica reports caught-up, as the data path
/// will) until every node holds its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_triggers_rebalancing() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader(&[1, 2, 3]).await;
    c.until(&[leader], "all nodes recorded", |s| s.nodes.len() == 3)
        .await;
    c.client(leader)
        .propose(Command::InitShards {
            shards: 12,
            replication_factor: 2,
            placement_labels: vec![],
        })
        .await
        .unwrap();
    c.start_node(4).await;
    c.client(leader).add_node(4, "mem-4".into()).await.unwrap();

    let reporter = report_catch_up(c.client(leader));
    c.until(&[1, 2, 3, 4], "balanced map", |s| {
        let Some(m) = &s.shard_map else { return false };
        let counts = m.replica_counts();
        m.assignments
            .iter()
            .all(|a| a.pending.is_empty() && a.replicas.len() == 2)
            && [1, 2, 3, 4].iter().all(|n| counts.get(n) == Some(&6))
    })
    .await;
    reporter.abort();
    // Node 4 is a voter too (fewer than 5 voters).
    let voters: Vec<NodeId> = c.nodes[&leader].raft().voter_ids().collect();
    assert!(voters.contains(&4), "{voters:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_cluster_recovers_state_from_disk() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader(&[1, 2, 3]).await;
    c.client(leader).propose(rules("durable")).await.unwrap();
    c.until(&[1, 2, 3], "applied", |s| {
        s.rule_groups.contains_key("durable")
    })
    .await;
    for id in [1, 2, 3] {
        c.kill(id).await;
    }
    for id in [1, 2, 3] {
        c.start_node(id).await;
        assert!(c.nodes[&id].is_initialized().await.unwrap());
    }
    let leader = c.leader(&[1, 2, 3]).await;
    c.until(&[1, 2, 3], "recovered", |s| {
        s.rule_groups.contains_key("durable") && s.nodes.len() == 3
    })
    .await;
    c.client(leader).propose(rules("later")).await.unwrap();
    c.shutdown().await;
}

/// Logs are purged behind snapshots, so a node joining late catches up by a
/// full snapshot transfer, and a restarted node recovers from its own
/// snapshot plus the log after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_catches_up_by_snapshot() {
    let mut c = Cluster {
        router: MemRouter::new(),
        nodes: BTreeMap::new(),
        dir: tempfile::tempdir().unwrap(),
        snapshot_every: Some(10),
        down_after: None,
    };
    for id in 1..=3 {
        c.start_node(id).await;
    }
    c.nodes[&1].bootstrap().await.unwrap();
    for id in 2..=3 {
        c.client(1).add_node(id, format!("mem-{id}")).await.unwrap();
    }
    let leader = c.leader(&[1, 2, 3]).await;
    for i in 0..40 {
        c.client(leader)
            .propose(rules(&format!("ns{i}")))
            .await
            .unwrap();
    }
    // The leader has snapshotted and purged its log.
    let m = c.nodes[&leader]
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some() && m.snapshot.is_some(), "purged")
        .await
        .unwrap();
    assert!(m.purged.unwrap().index > 10);
    c.start_node(4).await;
    c.client(leader).add_node(4, "mem-4".into()).await.unwrap();
    c.until(&[4], "snapshot installed on the joiner", |s| {
        (0..40).all(|i| s.rule_groups.contains_key(&format!("ns{i}"))) && s.nodes.len() == 4
    })
    .await;
    c.nodes[&4]
        .raft()
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "joiner holds a snapshot")
        .await
        .unwrap();

    c.kill(4).await;
    c.start_node(4).await;
    c.until(&[4], "restart from own snapshot", |s| {
        s.rule_groups.len() == 40 && s.nodes.len() == 4
    })
    .await;
    c.shutdown().await;
}

/// At most five voters: the sixth node joins as a learner and still
/// receives every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixth_node_is_a_learner() {
    let c = Cluster::start(6).await;
    let all = [1, 2, 3, 4, 5, 6];
    let leader = c.leader(&all).await;
    let raft = c.nodes[&leader].raft();
    let voters: Vec<NodeId> = raft.voter_ids().collect();
    let learners: Vec<NodeId> = raft.learner_ids().collect();
    assert_eq!(voters, vec![1, 2, 3, 4, 5]);
    assert_eq!(learners, vec![6]);
    c.client(leader).propose(rules("to-learner")).await.unwrap();
    c.until(&all, "applied on voters and learner", |s| {
        s.rule_groups.contains_key("to-learner") && s.nodes.len() == 6
    })
    .await;
    c.shutdown().await;
}

/// Stand-in for the data path: reports every pending replica as caught up.
fn report_catch_up(client: RaftMetaClient) -> tokio::task::JoinHandle<()> {
    let mut rx = client.watch();
    tokio::spawn(async move {
        loop {
            let pending: Vec<(u32, NodeId)> = rx
                .borrow_and_update()
                .shard_map
                .iter()
                .flat_map(|m| {
                    m.assignments
                        .iter()
                        .enumerate()
                        .flat_map(|(i, a)| a.pending.iter().map(move |n| (i as u32, *n)))
                })
                .collect();
            for (shard, node) in pending {
                let _ = client
                    .propose(Command::ShardReplicaCaughtUp { shard, node })
                    .await;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Draining a node moves its replicas away (adding the new ones before
/// dropping the old); then it leaves the state and the Raft group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_node_is_removed() {
    let c = Cluster::start(4).await;
    let all = [1, 2, 3, 4];
    let leader = c.leader(&all).await;
    c.until(&[leader], "all nodes recorded", |s| s.nodes.len() == 4)
        .await;
    let client = c.client(leader);
    client
        .propose(Command::InitShards {
            shards: 8,
            replication_factor: 3,
            placement_labels: vec![],
        })
        .await
        .unwrap();
    let gone = all.into_iter().find(|n| *n != leader).unwrap();
    // Still holding replicas: refused.
    assert!(matches!(
        client.remove_member(gone).await,
        Err(MetaError::Rejected(_))
    ));
    client
        .propose(Command::SetNodeState {
            id: gone,
            state: pharos_meta::types::NodeState::Draining,
        })
        .await
        .unwrap();
    let reporter = report_catch_up(client.clone());
    c.until(&[leader], "drained", |s| {
        let Some(m) = &s.shard_map else { return false };
        !m.replica_counts().contains_key(&gone)
            && m.assignments.iter().all(|a| a.replicas.len() == 3)
    })
    .await;
    reporter.abort();
    client.remove_member(gone).await.unwrap();
    let raft = c.nodes[&leader].raft();
    assert!(!raft.voter_ids().any(|v| v == gone));
    assert!(!raft.learner_ids().any(|v| v == gone));
    assert!(!client.state().nodes.contains_key(&gone));
    c.client(leader)
        .propose(rules("after-removal"))
        .await
        .unwrap();
    c.shutdown().await;
}

/// A lossy, slow network: writes still commit and every node converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_slow_network_still_converges() {
    let c = Cluster::start(3).await;
    c.router.drop_one_in(4);
    c.router.set_delay(Duration::from_millis(3));
    let mut leader = c.leader(&[1, 2, 3]).await;
    for i in 0..20 {
        let ns = format!("lossy{i}");
        // A lost message can cost the leader its term: retry at the new one.
        let mut tries = 0;
        loop {
            match c.client(leader).propose(rules(&ns)).await {
                Ok(_) => break,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 20, "{ns}: {e}");
                    leader = c.leader(&[1, 2, 3]).await;
                }
            }
        }
    }
    c.until(&[1, 2, 3], "all writes everywhere", |s| {
        (0..20).all(|i| s.rule_groups.contains_key(&format!("lossy{i}")))
    })
    .await;
    c.shutdown().await;
}

/// The leader marks a silent member down, the planner moves its replicas to
/// the others; when it comes back it is marked active and gets its share
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_node_is_replaced_and_welcomed_back() {
    let mut c = Cluster {
        router: MemRouter::new(),
        nodes: BTreeMap::new(),
        dir: tempfile::tempdir().unwrap(),
        snapshot_every: None,
        down_after: Some(Duration::from_millis(600)),
    };
    for id in 1..=4 {
        c.start_node(id).await;
    }
    c.nodes[&1].bootstrap().await.unwrap();
    for id in 2..=4 {
        c.client(1).add_node(id, format!("mem-{id}")).await.unwrap();
    }
    let leader = c.leader(&[1, 2, 3, 4]).await;
    c.client(leader)
        .propose(Command::InitShards {
            shards: 8,
            replication_factor: 2,
            placement_labels: vec![],
        })
        .await
        .unwrap();
    let reporter = report_catch_up(c.client(leader));
    let victim = [1, 2, 3, 4].into_iter().find(|n| *n != leader).unwrap();
    c.router.isolate(victim);
    c.until(&[leader], "victim down and replaced", |s| {
        let Some(m) = &s.shard_map else { return false };
        s.nodes[&victim].state == pharos_meta::types::NodeState::Down
            && !m.replica_counts().contains_key(&victim)
            && m.assignments.iter().all(|a| a.replicas.len() == 2)
    })
    .await;
    c.router.heal();
    c.until(&[leader], "victim back with its share", |s| {
        let Some(m) = &s.shard_map else { return false };
        s.nodes[&victim].state == pharos_meta::types::NodeState::Active
            && m.replica_counts().get(&victim) == Some(&4)
    })
    .await;
    reporter.abort();
    c.shutdown().await;
}
