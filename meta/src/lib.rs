//! `pharos-meta`: cluster metadata replicated with openraft: membership, the
//! shard map, the block catalog and the rule-group store.
//!
//! Used only by `pharos-node`; the only crate that touches openraft. It owns
//! no data of the time-series path: it decides who owns what, and records
//! what exists.
//!
//! Invariants:
//! - Every change goes through the Raft log as a [`types::Command`] and is
//!   applied by the pure [`types::MetaState::apply`]; a refused command is a
//!   replicated [`types::Rejection`], identical on every node.
//! - Shard changes are compare-and-set on the shard's epoch; the epoch grows
//!   on every change, so a request routed with an old map is redirected
//!   ([`types::ShardMap::check_epoch`]), never silently applied.
//! - A replica is moved by adding the new one (pending), waiting for its
//!   node to report `ShardReplicaCaughtUp`, then removing the old one.
//! - The Raft log and vote are fsynced before an operation is reported; a
//!   proposal's result is returned only after the state containing it is
//!   visible through [`MetaClient::state`] on the proposing node.
//!
//! Must not: evaluate rules, touch time-series data, or block a Tokio worker
//! on disk I/O (fsync runs on `spawn_blocking`).
//!
//! Wiring (for `pharos-node`): share one [`grpc::Channels`] between
//! [`grpc::GrpcNetworkFactory`], [`grpc::MetaRaftService`] and
//! [`grpc::GrpcMetaClient`]; `MetaNode::start(cfg, factory)`; serve
//! `MetaRaftService::new(node, channels).into_server()`; then, unless
//! `node.is_initialized()`, `node.bootstrap()` on the first node or
//! [`grpc::join_cluster`]`(seed, id, addr)` on the others.
//!
//! Layout:
//! - [`types`]: the replicated data model and [`types::Command`];
//! - [`state_machine`]: the deterministic `apply` (pure, no I/O);
//! - [`planner`]: the pure rebalancing planner (one small step at a time);
//! - [`raft`]: the openraft `TypeConfig`;
//! - [`log_store`]: the durable, CRC-checked Raft log (`RaftLogStorage`;
//!   format in `meta/docs/meta-store.md`);
//! - [`sm_store`]: the state machine store with on-disk snapshots
//!   (`RaftStateMachine`);
//! - [`network`]: the in-memory Raft transport for in-process clusters;
//! - [`node`]: one node's meta member (Raft + stores + rebalancer);
//! - [`client`]: the [`MetaClient`] trait and its Raft implementation;
//! - [`grpc`]: the tonic transport, its server, and the forwarding client;
//! - [`mem`]: the in-memory [`MetaClient`];
//! - [`metrics`]: `pharos_meta_*` gauges for the node registry.

pub mod client;
pub mod error;
pub mod grpc;
pub mod log_store;
pub mod mem;
pub mod metrics;
pub mod network;
pub mod node;
pub mod planner;
pub mod raft;
pub mod sm_store;
pub mod state_machine;
pub mod types;

pub use client::{MetaClient, RaftMetaClient};
pub use error::MetaError;
pub use mem::MemMetaClient;
pub use node::{MetaNode, MetaNodeConfig};
