//! `/api/v1/cluster/*`: Pharos's own cluster status in the Prometheus JSON
//! envelope — `nodes` (members, their state, the leader, this node),
//! `shards` (the shard map) and `status` (the meta group as this node sees
//! it). On a single node each answers the error envelope with
//! `errorType: "unavailable"` and `"cluster mode is off"`, as Prometheus
//! answers for APIs that are switched off.
//!
//! Owns: the handlers and their JSON shapes. The views are read-only (this
//! node's applied state, which may lag the leader's by a heartbeat); the
//! one change, `POST /api/v1/admin/cluster/node_state` (admin API only),
//! proposes a node's placement state — `draining` empties a node before
//! it is taken away, `active` takes it back — and the leader's planner
//! does the moving.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use pharos_meta::types::{Command, MetaState, NodeId, NodeState, ShardMap};
use pharos_meta::MetaError;
use serde_json::{json, Value};

use super::member::ClusterHandle;
use super::metrics::RaftView;
use crate::error::ApiError;
use crate::http::{json_ok, AppState};

/// The error every cluster endpoint answers on a single node.
pub const CLUSTER_OFF: &str = "cluster mode is off";

/// The meta group as one node sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaView {
    pub node_id: NodeId,
    pub raft: RaftView,
    pub catching_up: bool,
}

impl MetaView {
    /// Reads `h`'s member.
    pub async fn of(h: &ClusterHandle) -> MetaView {
        MetaView {
            node_id: h.node_id,
            raft: RaftView::of(&h.node).await,
            catching_up: h.ctx.catching_up.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

fn state_name(s: NodeState) -> &'static str {
    match s {
        NodeState::Active => "active",
        NodeState::Draining => "draining",
        NodeState::Down => "down",
    }
}

fn role(v: &MetaView, id: NodeId) -> &'static str {
    if v.raft.voters.contains(&id) {
        "voter"
    } else if v.raft.learners.contains(&id) {
        "learner"
    } else {
        "none"
    }
}

/// `data` of `/api/v1/cluster/nodes`.
pub fn nodes_json(s: &MetaState, v: &MetaView) -> Value {
    let counts = s
        .shard_map
        .as_ref()
        .map(|m| (m.replica_counts(), m.primary_counts()));
    Value::Array(
        s.nodes
            .values()
            .map(|n| {
                let (replicas, primaries) = counts.as_ref().map_or((0, 0), |(r, p)| {
                    (
                        r.get(&n.id).copied().unwrap_or(0),
                        p.get(&n.id).copied().unwrap_or(0),
                    )
                });
                json!({
                    "id": n.id,
                    "addr": n.addr,
                    "state": state_name(n.state),
                    "role": role(v, n.id),
                    "is_leader": v.raft.leader == Some(n.id),
                    "this_node": n.id == v.node_id,
                    "replicas": replicas,
                    "primaries": primaries,
                })
            })
            .collect(),
    )
}

/// `data` of `/api/v1/cluster/shards`.
pub fn shards_json(m: &ShardMap) -> Value {
    json!({
        "version": m.version,
        "shards": m.shards,
        "replication_factor": m.replication_factor,
        "placement_labels": m.placement_labels,
        "assignments": m.assignments.iter().enumerate().map(|(i, a)| json!({
            "shard": i,
            "replicas": a.replicas,
            "pending": a.pending,
            "epoch": a.epoch,
        })).collect::<Vec<_>>(),
    })
}

/// `data` of `/api/v1/cluster/status`.
pub fn status_json(s: &MetaState, v: &MetaView) -> Value {
    json!({
        "node_id": v.node_id,
        "leader": v.raft.leader,
        "is_leader": v.raft.leader == Some(v.node_id),
        "term": v.raft.term,
        "last_log_index": v.raft.last_log_index,
        "commit_index": v.raft.commit_index,
        "applied_index": v.raft.applied_index,
        "snapshot_index": v.raft.snapshot_index,
        "replication_lag": v.raft.replication_lag.iter().map(|(p, lag)| json!({
            "node": p,
            "lag_entries": lag,
        })).collect::<Vec<_>>(),
        "catching_up": v.catching_up,
        "shard_map_version": s.shard_map.as_ref().map(|m| m.version),
        "members": s.nodes.values().map(|n| json!({
            "id": n.id,
            "addr": n.addr,
            "state": state_name(n.state),
            "role": role(v, n.id),
        })).collect::<Vec<_>>(),
    })
}

fn ok(data: &Value) -> Response {
    json_ok(crate::http::json::success(&data.to_string(), &[], &[]))
}

fn cluster(st: &AppState) -> Result<&Arc<ClusterHandle>, ApiError> {
    st.cluster
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable(CLUSTER_OFF.into()))
}

/// `GET /api/v1/cluster/nodes`.
pub async fn nodes(State(st): State<Arc<AppState>>) -> Response {
    match cluster(&st) {
        Ok(h) => ok(&nodes_json(&h.state(), &MetaView::of(h).await)),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/cluster/shards`; `unavailable` until the map exists.
pub async fn shards(State(st): State<Arc<AppState>>) -> Response {
    let h = match cluster(&st) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match &h.state().shard_map {
        Some(m) => ok(&shards_json(m)),
        None => ApiError::Unavailable(super::ClusterError::NoShardMap.to_string()).into_response(),
    }
}

/// `GET /api/v1/cluster/status`.
pub async fn status(State(st): State<Arc<AppState>>) -> Response {
    match cluster(&st) {
        Ok(h) => ok(&status_json(&h.state(), &MetaView::of(h).await)),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/admin/cluster/node_state?node=ID&state=draining|active`
/// (with `--web.enable-admin-api`): marks a node draining (the planner
/// moves its replicas to the other active nodes, copy first, and makes it
/// no shard's primary; it keeps serving meanwhile) or active again.
/// Answers once the leader has applied the change; watch
/// `/api/v1/cluster/nodes` for its replicas to reach 0.
pub async fn set_node_state(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let run = async {
        if !st.settings.web.enable_admin_api {
            return Err(ApiError::Unavailable("admin APIs disabled".into()));
        }
        let h = cluster(&st)?;
        let p =
            crate::http::params::Params::from_request(req, st.settings.web.max_request_body_bytes)
                .await?;
        let id: NodeId = p
            .get("node")
            .ok_or_else(|| ApiError::bad("missing parameter \"node\""))?
            .parse()
            .map_err(|e| ApiError::param("node", e))?;
        let state = match p.get("state") {
            Some("draining") => NodeState::Draining,
            Some("active") => NodeState::Active,
            other => {
                return Err(ApiError::param(
                    "state",
                    format!("{other:?}: want draining or active"),
                ))
            }
        };
        match h.meta.propose(Command::SetNodeState { id, state }).await {
            Ok(_) => Ok(ok(&json!({"node": id, "state": state_name(state)}))),
            Err(MetaError::Rejected(r)) => Err(ApiError::bad(r.to_string())),
            Err(e) => Err(ApiError::Unavailable(e.to_string())),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_meta::types::Command;

    fn state() -> MetaState {
        let mut s = MetaState::default();
        for id in 1..=3 {
            s.apply(&Command::AddNode {
                id,
                addr: format!("127.0.0.1:{}", 10089 + id),
            });
        }
        s.apply(&Command::SetNodeState {
            id: 3,
            state: NodeState::Down,
        });
        s
    }

    fn view() -> MetaView {
        MetaView {
            node_id: 2,
            raft: RaftView {
                leader: Some(1),
                term: 4,
                last_log_index: 18,
                commit_index: 18,
                applied_index: 17,
                snapshot_index: 0,
                voters: vec![1, 2, 3],
                learners: vec![],
                replication_lag: vec![],
            },
            catching_up: false,
        }
    }

    #[test]
    fn nodes_show_state_leader_and_this_node() {
        let v = nodes_json(&state(), &view());
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0]["id"], 1);
        assert_eq!(a[0]["is_leader"], true);
        assert_eq!(a[0]["this_node"], false);
        assert_eq!(a[1]["this_node"], true);
        assert_eq!(a[1]["addr"], "127.0.0.1:10091");
        assert_eq!(a[2]["state"], "down");
        assert_eq!(a[2]["role"], "voter");
        assert_eq!(a[0]["replicas"], 0);
    }

    #[test]
    fn shards_list_every_assignment() {
        let mut s = state();
        s.apply(&Command::SetNodeState {
            id: 3,
            state: NodeState::Active,
        });
        s.apply(&Command::InitShards {
            shards: 4,
            replication_factor: 3,
            placement_labels: vec!["instance".into(), "job".into()],
        });
        let m = s.shard_map.as_ref().unwrap();
        let v = shards_json(m);
        assert_eq!(v["shards"], 4);
        assert_eq!(v["replication_factor"], 3);
        let a = v["assignments"].as_array().unwrap();
        assert_eq!(a.len(), 4);
        for (i, x) in a.iter().enumerate() {
            assert_eq!(x["shard"], i);
            assert_eq!(x["replicas"].as_array().unwrap().len(), 3);
            assert!(x["pending"].as_array().unwrap().is_empty());
        }
        let n = nodes_json(&s, &view());
        assert_eq!(n[0]["replicas"], 4);
        let st = status_json(&s, &view());
        assert_eq!(st["leader"], 1);
        assert_eq!(st["is_leader"], false);
        assert_eq!(st["term"], 4);
        assert_eq!(st["commit_index"], 18);
        assert_eq!(st["members"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn error_envelope_when_off() {
        let e = ApiError::Unavailable(CLUSTER_OFF.into());
        assert_eq!(
            e.body(),
            r#"{"status":"error","errorType":"unavailable","error":"cluster mode is off"}"#
        );
    }
}
