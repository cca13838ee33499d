//! Local compaction and retention of the blocks in a data directory.
//!
//! Owns: planning which blocks to merge (Prometheus's leveled planner:
//! ranges 2h, 6h, 18h, 54h, … capped by retention / 10), executing merges —
//! horizontal (adjacent blocks, chunks reused as they are) and vertical
//! (overlapping blocks, samples with equal timestamps de-duplicated and
//! chunks re-cut at 120 samples) — with tombstoned data dropped and
//! lineage (`level`, `sources`, `parents`) recorded in `meta.json`; and
//! deleting whole blocks beyond a time or size retention.
//!
//! Invariants: a compaction never deletes a source before the merged block
//! is complete on disk; every block directory without a `.tmp` suffix is
//! complete; after [`Compactor::cleanup`] no block on disk is the parent of
//! another, so no data is read twice.
//!
//! Must not: decide when to cut blocks from the head or which blocks a
//! running query still reads (the caller holds open [`Block`]s, whose open
//! files stay readable after deletion on Unix).
//!
//! Concurrency contract: the caller serialises compaction, retention and
//! [`Block::delete`] on one data directory (a compaction reads its sources'
//! tombstones once; a deletion landing in a source after that would be lost
//! with the source).
//!
//! [`Block`]: crate::block::Block

mod compactor;
mod planner;
mod retention;

pub use compactor::{delete_block, list_blocks, Compactor, CompactorOptions, DELETION_SUFFIX};
pub use planner::{
    block_ranges, exponential_ranges, Planner, DEFAULT_BLOCK_DURATION, MAX_BLOCK_DURATION,
};
pub use retention::{apply_retention, beyond_retention, BlockSpan, RetentionPolicy};

#[cfg(test)]
mod tests;
