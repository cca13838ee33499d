//! `pharos-meta`: cluster metadata replicated with openraft: membership, the
//! shard map, the block catalog and the rule-group store.
//!
//! Used only by `pharos-node`; the only crate that touches openraft. It owns
//! no data of the time-series path: it decides who owns what, and records
//! what exists.
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
