//! `pharos-meta`: cluster metadata replicated with openraft: membership, the
//! shard map, the block catalog and the rule-group store, with its admin
//! surface. Used only by `pharos-node`; the only crate that touches openraft.
//!
//! Built in issue 7; empty until then.
