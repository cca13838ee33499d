//! The block index file, in Prometheus's index format version 2
//! (`tsdb/docs/format/index.md`; our notes in `storage/docs/index.md`).
//!
//! Owns: encoding and decoding of the `index` file of a block: symbol table,
//! series entries (labels as symbol references plus chunk metas), label
//! indices, postings lists, the label and postings offset tables and the TOC.
//! Chunk references are opaque `u64`s here (the block layer gives them
//! meaning).
//!
//! Invariants of a written index (the writer enforces them, the reader
//! checks what it relies on):
//! - symbols are unique and sorted bytewise; a series refers to them by
//!   position;
//! - series are sorted by [`Labels`](crate::labels::Labels) order, each entry
//!   starts at a 16-byte aligned offset and its id is `offset / 16`;
//! - a series' chunks are sorted by time and do not overlap
//!   (`min_time > previous max_time`), and their refs ascend;
//! - postings lists hold series ids in ascending order; the offset table
//!   lists `("", "")` (all series) first, then label pairs sorted by name and
//!   value;
//! - every section carries a CRC32 Castagnoli checksum, verified on read.

pub(crate) mod encoding;
mod postings;
mod reader;
mod writer;

use std::path::PathBuf;

pub use postings::{intersect, subtract, union_many};
pub use reader::{IndexReader, IndexSource, SeriesEntry};
pub use writer::{IndexStats, IndexWriter};

/// Magic number at the start of an index file.
pub const MAGIC_INDEX: u32 = 0xBAAA_D700;
/// Index format version Pharos writes and reads.
pub const FORMAT_V2: u8 = 2;
/// Series entries are aligned to this many bytes; a series id is its offset
/// divided by it.
pub const SERIES_ALIGN: u64 = 16;
/// Length of the table of contents at the end of the file.
pub const TOC_LEN: usize = 6 * 8 + 4;

/// Where a chunk of a series lives, and the time range it covers
/// (both ends inclusive, as in Prometheus's chunk metas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    pub min_time: i64,
    pub max_time: i64,
    /// Opaque to the index; for blocks, `segment << 32 | offset`.
    pub chunk_ref: u64,
}

/// Errors reading or writing an index file. Each names the file, and for
/// decoding errors the byte offset where the problem was found.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {path}: I/O error: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index {path}: file is {size} bytes, too small to be an index")]
    TooSmall { path: PathBuf, size: u64 },
    #[error("index {path}: bad magic number {found:#010x} (want {MAGIC_INDEX:#010x})")]
    BadMagic { path: PathBuf, found: u32 },
    #[error("index {path}: unsupported index format version {version} (Pharos reads version 2)")]
    UnsupportedVersion { path: PathBuf, version: u8 },
    #[error("index {path}: {section} checksum mismatch at offset {offset}: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        path: PathBuf,
        section: &'static str,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("index {path}: corrupt {section} at offset {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        section: &'static str,
        offset: u64,
        what: String,
    },
    #[error("index {path}: series {series} added out of order (after {previous})")]
    SeriesOutOfOrder {
        path: PathBuf,
        series: String,
        previous: String,
    },
    #[error("index {path}: series {series}: {what}")]
    BadSeries {
        path: PathBuf,
        series: String,
        what: String,
    },
    #[error("index {path}: label {what:?} of series {series} is not in the symbol table")]
    UnknownSymbol {
        path: PathBuf,
        series: String,
        what: String,
    },
    #[error("index {path}: {what}")]
    TooLarge { path: PathBuf, what: String },
}

#[cfg(test)]
mod tests;
