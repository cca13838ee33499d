//! One node's member of the meta group: the Raft instance over the durable
//! stores, plus the leader's rebalancing loop.
//!
//! Start order for `pharos-node`: [`MetaNode::start`] with the node's meta
//! directory and a network factory ([`crate::grpc::GrpcNetworkFactory`] in
//! production), serve [`crate::grpc::MetaRaftService`] on the node's gRPC
//! port, then, unless [`MetaNode::is_initialized`] (a restart: the log,
//! vote and snapshot are recovered), either [`MetaNode::bootstrap`] (the
//! first node of a new cluster) or [`crate::grpc::join_cluster`] through
//! any member.
//!
//! The rebalancer runs on every node but only acts while this node is the
//! leader: on every applied change (and on a timer) it proposes
//! [`crate::planner::plan_step`]'s commands. Proposals carry shard epochs,
//! so racing a stale plan against a new leader's is harmless.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::network::{NetSnapshot, RaftNetworkFactory};
use openraft::{Config, Instant as _};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::MetaError;
use crate::log_store::LogStore;
use crate::planner::{plan_step, PlannerConfig};
use crate::raft::{BasicNode, MetaRaft, TypeConfig};
use crate::sm_store::StateMachineStore;
use crate::types::{Command, MetaState, NodeId, NodeState};

/// Settings of one meta node.
#[derive(Debug, Clone)]
pub struct MetaNodeConfig {
    pub id: NodeId,
    /// The address peers reach this node's Raft service at.
    pub addr: String,
    /// The node's meta directory (log and snapshot).
    pub dir: PathBuf,
    /// Heartbeat interval; elections time out after 3–6 heartbeats.
    pub heartbeat: Duration,
    pub planner: PlannerConfig,
    /// How often the leader re-plans without a state change.
    pub rebalance_interval: Duration,
    /// Most voters in the meta group; further nodes join as learners.
    pub max_voters: usize,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so slightly lagging followers
    /// catch up from the log instead of a full snapshot.
    pub keep_logs_behind_snapshot: u64,
    /// The leader marks a member `Down` (and the planner replaces its
    /// replicas) after this long without a heartbeat acknowledgement;
    /// `None` leaves it to the operator.
    pub down_after: Option<Duration>,
}

impl MetaNodeConfig {
    /// Defaults: 100 ms heartbeats, a rebalance check every 2 s, 5 voters,
    /// a snapshot every 5000 entries keeping 1000 entries behind it, members
    /// marked down after 5 minutes of silence (replacing a replica copies
    /// data, so a restart or short partition must not trigger it).
    pub fn new(id: NodeId, addr: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            addr: addr.into(),
            dir: dir.into(),
            heartbeat: Duration::from_millis(100),
            planner: PlannerConfig::default(),
            rebalance_interval: Duration::from_secs(2),
            max_voters: 5,
            snapshot_every: 5000,
            keep_logs_behind_snapshot: 1000,
            down_after: Some(Duration::from_secs(300)),
        }
    }
}

/// A running meta node.
pub struct MetaNode {
    pub(crate) cfg: MetaNodeConfig,
    pub(crate) raft: MetaRaft,
    pub(crate) sm: StateMachineStore,
    rebalancer: JoinHandle<()>,
}

impl MetaNode {
    /// Opens the stores in `cfg.dir` and starts Raft with `network`.
    pub async fn start<N>(cfg: MetaNodeConfig, network: N) -> Result<Self, MetaError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network: NetSnapshot<TypeConfig, SnapshotData = Vec<u8>>,
    {
        let hb = cfg.heartbeat.as_millis().max(1) as u64;
        let raft_cfg = Config {
            cluster_name: "pharos-meta".into(),
            heartbeat_interval: hb,
            election_timeout_min: hb * 3,
            election_timeout_max: hb * 6,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.keep_logs_behind_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MetaError::Config {
            node: cfg.id,
            message: e.to_string(),
        })?;
        let storage = |dir: PathBuf| {
            move |source| MetaError::Storage {
                path: dir.clone(),
                source,
            }
        };
        let log_dir = cfg.dir.join("log");
        let sm_dir = cfg.dir.join("sm");
        let log = LogStore::open(&log_dir).map_err(storage(log_dir))?;
        let sm = StateMachineStore::open(&sm_dir).map_err(storage(sm_dir))?;
        let raft = MetaRaft::new(cfg.id, Arc::new(raft_cfg), network, log, sm.clone())
            .await
            .map_err(|e| MetaError::Fatal {
                node: cfg.id,
                message: e.to_string(),
            })?;
        let rebalancer = tokio::spawn(rebalance_loop(
            raft.clone(),
            sm.subscribe(),
            cfg.planner,
            cfg.rebalance_interval,
            cfg.down_after,
        ));
        Ok(Self {
            cfg,
            raft,
            sm,
            rebalancer,
        })
    }

    /// Makes this node the single member of a new meta group and records
    /// it. Fails harmlessly (openraft refuses) if the group already exists.
    pub async fn bootstrap(&self) -> Result<(), MetaError> {
        let members = [(
            self.cfg.id,
            BasicNode {
                addr: self.cfg.addr.clone(),
            },
        )]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
        self.raft
            .initialize(members)
            .await
            .map_err(|e| MetaError::Membership {
                node: self.cfg.id,
                message: e.to_string(),
            })?;
        // Election of the sole voter is immediate; wait for it so the
        // proposal below does not race it.
        self.raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(self.cfg.id, "bootstrap")
            .await
            .map_err(|e| MetaError::NoQuorum {
                node: self.cfg.id,
                message: e.to_string(),
            })?;
        crate::client::propose_local(
            &self.raft,
            Command::AddNode {
                id: self.cfg.id,
                addr: self.cfg.addr.clone(),
            },
        )
        .await
        .map(|_| ())
    }

    /// Whether this node already belongs to a meta group (it recovered one
    /// from disk or was added): then it must neither bootstrap nor join.
    pub async fn is_initialized(&self) -> Result<bool, MetaError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| MetaError::Fatal {
                node: self.cfg.id,
                message: e.to_string(),
            })
    }

    /// The Raft handle: serve peers' RPCs with it.
    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// The latest state this node has applied.
    pub fn state(&self) -> Arc<MetaState> {
        self.sm.state()
    }

    /// Every newly applied state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetaState>> {
        self.sm.subscribe()
    }

    /// Stops the rebalancer and Raft.
    pub async fn shutdown(&self) {
        self.rebalancer.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.cfg.id, error = %e, "meta raft shutdown");
        }
    }
}

async fn rebalance_loop(
    raft: MetaRaft,
    mut changes: watch::Receiver<Arc<MetaState>>,
    cfg: PlannerConfig,
    interval: Duration,
    down_after: Option<Duration>,
) {
    let mut leader_since: Option<Instant> = None;
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(interval) => {}
        }
        if !raft.is_leader() {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        let state = changes.borrow_and_update().clone();
        let mut cmds = match down_after {
            Some(after) => liveness_changes(&raft, &state, after, since),
            None => Vec::new(),
        };
        cmds.extend(plan_step(&state, &cfg));
        for cmd in cmds {
            match crate::client::propose_local(&raft, cmd.clone()).await {
                Ok(_) => tracing::debug!(%cmd, "rebalance step"),
                // A concurrent change moved the epoch: re-plan next round.
                Err(MetaError::Rejected(r)) => tracing::debug!(%cmd, %r, "rebalance step refused"),
                Err(e) => {
                    tracing::info!(%cmd, error = %e, "rebalance paused");
                    break;
                }
            }
        }
    }
}

/// The leader's failure detector: a member that has not acknowledged a
/// heartbeat for `after` (counting from when this node became leader, for
/// members never heard from) is marked `Down`, so the planner replaces its
/// replicas; a `Down` member heard from again is marked `Active`.
fn liveness_changes(
    raft: &MetaRaft,
    state: &MetaState,
    after: Duration,
    leader_since: Instant,
) -> Vec<Command> {
    let metrics = raft.metrics().borrow_watched().clone();
    let Some(heartbeats) = &metrics.heartbeat else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (id, last_ack) in heartbeats {
        let Some(node) = state.nodes.get(id) else {
            continue;
        };
        let silent_for = match last_ack {
            Some(t) => t.elapsed(),
            None => leader_since.elapsed(),
        };
        match (node.state, silent_for > after) {
            (NodeState::Active, true) => {
                tracing::warn!(node = id, ?silent_for, "meta member silent: marking down");
                out.push(Command::SetNodeState {
                    id: *id,
                    state: NodeState::Down,
                });
            }
            (NodeState::Down, false) => {
                tracing::info!(node = id, "meta member back: marking active");
                out.push(Command::SetNodeState {
                    id: *id,
                    state: NodeState::Active,
                });
            }
            _ => {}
        }
    }
    out
}
