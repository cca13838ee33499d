//! Persistent blocks in the Prometheus TSDB block format
//! (`storage/docs/block.md`): a directory named by the block's ULID holding
//! `meta.json`, `index`, `chunks/000001…` and `tombstones`.
//!
//! Owns: writing a block from a set of series ([`BlockWriter`]), opening and
//! querying one ([`Block`], a [`Querier`](crate::querier::Querier)), and
//! deleting data from one by tombstones ([`Block::delete`]).
//!
//! Invariants:
//! - a block directory without the `.tmp` suffix is complete: it is written
//!   under `<ulid>.tmp`, every file and the directory are fsynced, and only
//!   then renamed into place (and the parent directory fsynced);
//! - a block holds samples in `[min_time, max_time)` only (`max_time` is
//!   exclusive, as in `meta.json`), each series' chunks are sorted, do not
//!   overlap, and hold at most [`MAX_SAMPLES_PER_CHUNK`] samples when Pharos
//!   cut them;
//! - apart from `tombstones` (and `meta.json`'s tombstone count) a block is
//!   never modified after it is written.

mod chunks;
mod meta;
mod reader;
mod tombstones;
mod ulid;
mod writer;

use std::path::{Path, PathBuf};

pub use chunks::{
    segment_path, ChunkReader, ChunkWriter, CHUNKS_FORMAT_V1, DEFAULT_SEGMENT_SIZE, MAGIC_CHUNKS,
    SEGMENT_HEADER_SIZE,
};
pub use meta::{BlockCompaction, BlockDesc, BlockMeta, BlockStats, META_FILENAME, META_VERSION};
pub use reader::Block;
pub use tombstones::{
    coalesce, Tombstones, MAGIC_TOMBSTONES, TOMBSTONES_FILENAME, TOMBSTONES_FORMAT_V1,
};
pub use ulid::{Ulid, UlidError};
pub use writer::{BlockWriter, WriteOptions};

use crate::chunk::ChunkError;
use crate::index::IndexError;

/// Samples per chunk when Pharos (re-)cuts chunks, as Prometheus does.
pub const MAX_SAMPLES_PER_CHUNK: usize = 120;
/// Name of the index file inside a block.
pub const INDEX_FILENAME: &str = "index";
/// Name of the chunk segment directory inside a block.
pub const CHUNKS_DIRNAME: &str = "chunks";
/// Suffix of a block directory still being written.
pub const TMP_SUFFIX: &str = ".tmp";

/// Errors of block files. Each names the file (and offset, block id or
/// series) it is about.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{path}: I/O error: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{path}: invalid meta.json: {source}")]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: unsupported meta.json version {version}")]
    MetaVersion { path: PathBuf, version: u32 },
    #[error("chunk segment {path}: {what}")]
    BadSegment { path: PathBuf, what: String },
    #[error("chunk segment {path}: corrupt chunk at offset {offset}: {what}")]
    CorruptChunk {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("bad chunk reference {chunk_ref:#x}: {what}")]
    BadChunkRef { chunk_ref: u64, what: String },
    #[error("block {block}: series {series}: {source}")]
    SeriesChunk {
        block: Ulid,
        series: String,
        #[source]
        source: Box<BlockError>,
    },
    #[error("block {block}: series {series}: chunk error: {source}")]
    Chunk {
        block: Ulid,
        series: String,
        #[source]
        source: ChunkError,
    },
    #[error("tombstones {path}: corrupt at offset {offset}: {what}")]
    Tombstones {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: block time range [{min_time}, {max_time}) is empty")]
    EmptyRange {
        path: PathBuf,
        min_time: i64,
        max_time: i64,
    },
    #[error("block {block}: verification failed: {what}")]
    Verify { block: Ulid, what: String },
    #[error("{0}")]
    Internal(String),
}

/// fsyncs a directory so that entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BlockError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|source| BlockError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Total size in bytes of the regular files under `dir` (recursively).
pub fn dir_size(dir: &Path) -> Result<u64, BlockError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| BlockError::Io { path: p, source }
    };
    let mut total = 0;
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let md = e.metadata().map_err(io(&e.path()))?;
        if md.is_dir() {
            total += dir_size(&e.path())?;
        } else {
            total += md.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod promtool_tests;
#[cfg(test)]
pub(crate) mod tests;
