//! The openraft type configuration of the meta group and short aliases for
//! the generic openraft types the rest of the crate names.

use openraft::type_config::alias;

use crate::types::{Applied, Command};

openraft::declare_raft_types!(
    /// The meta group's Raft types: log entries carry [`Command`]s, applying
    /// one yields [`Applied`]; a node is known by its gRPC address.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
);

/// A Raft handle of the meta group.
pub type MetaRaft = openraft::Raft<TypeConfig, crate::sm_store::StateMachineStore>;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot whose data is the serialized [`crate::types::MetaState`].
pub type Snapshot = alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub use openraft::impls::BasicNode;
