//! Chunk encodings, bit-compatible with Prometheus TSDB's `chunkenc`.
//!
//! A [`Chunk`] is an immutable, cheaply cloned byte buffer tagged with its
//! [`Encoding`]; the bytes are exactly what Prometheus writes into a block's
//! `chunks/` segment after the encoding byte, so blocks move both ways.
//! [`XorAppender`] builds float chunks, [`XorIterator`] decodes them, and
//! [`SampleIterator`] is the iterator shape (Prometheus's
//! `chunkenc.Iterator`) shared by chunk, series and query code.
//!
//! The format is specified in `storage/docs/chunk.md`.

mod bstream;
mod bytes;
mod xor;

use std::fmt;
use std::sync::Arc;

pub use bytes::ChunkBytes;
pub use xor::{XorAppender, XorIterator, CHUNK_HEADER_SIZE, MAX_SAMPLES_PER_CHUNK};

/// Bit pattern of Prometheus's staleness marker (`value.StaleNaN`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Prometheus's staleness marker as an `f64`. Compare with [`is_stale_nan`],
/// never with `==` (it is a NaN).
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// Whether `v` is the staleness marker (by bit pattern; other NaNs are not).
#[inline]
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Chunk encodings with Prometheus's numbering (the byte written before each
/// chunk in a block's `chunks/` files). `Histogram = 2` and
/// `FloatHistogram = 3` are reserved for native histograms; `0` is
/// Prometheus's "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum Encoding {
    Xor = 1,
}

impl Encoding {
    /// Decodes the encoding byte; `None` for unknown or not-yet-supported
    /// values (including the reserved histogram encodings 2 and 3).
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            1 => Some(Encoding::Xor),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Encoding {
    /// Prometheus's `Encoding.String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encoding::Xor => f.write_str("XOR"),
        }
    }
}

impl TryFrom<u8> for Encoding {
    type Error = ChunkError;
    fn try_from(b: u8) -> Result<Encoding, ChunkError> {
        Encoding::from_u8(b).ok_or(ChunkError::UnknownEncoding(b))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("unknown or unsupported chunk encoding {0}")]
    UnknownEncoding(u8),
    #[error("chunk of {len} bytes is shorter than its header")]
    TooShort { len: usize },
    #[error("chunk header claims {samples} samples but has only {len} bytes")]
    BadHeader { samples: usize, len: usize },
    #[error("chunk data ends early while reading sample {sample} ({len} bytes)")]
    Truncated { sample: usize, len: usize },
    #[error("expected a {want} chunk, got {got}")]
    WrongEncoding { want: Encoding, got: Encoding },
}

/// An immutable encoded chunk. Cloning is a reference-count increment.
/// The bytes are on the heap or in a read-only file map ([`ChunkBytes`]);
/// readers cannot tell the difference.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    encoding: Encoding,
    bytes: ChunkBytes,
}

impl Chunk {
    /// Wraps encoded bytes (header included), checking the header: at least
    /// the 2-byte sample count, and enough bytes for the first sample when the
    /// count is non-zero. Corruption further in surfaces as
    /// [`SampleIterator::err`].
    pub fn new(encoding: Encoding, bytes: Arc<[u8]>) -> Result<Chunk, ChunkError> {
        match encoding {
            Encoding::Xor => {
                if bytes.len() < CHUNK_HEADER_SIZE {
                    return Err(ChunkError::TooShort { len: bytes.len() });
                }
                let samples = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
                // First sample: >= 1 varint byte + 8 value bytes.
                if samples > 0 && bytes.len() < CHUNK_HEADER_SIZE + 9 {
                    return Err(ChunkError::BadHeader {
                        samples,
                        len: bytes.len(),
                    });
                }
            }
        }
        Ok(Chunk {
            encoding,
            bytes: bytes.into(),
        })
    }

    /// Trusted constructor for bytes this crate just encoded.
    pub(crate) fn from_parts(encoding: Encoding, bytes: Arc<[u8]>) -> Chunk {
        Chunk {
            encoding,
            bytes: bytes.into(),
        }
    }

    /// Trusted constructor for bytes this crate encoded and moved (e.g. into
    /// a mapped head chunk file).
    pub(crate) fn from_chunk_bytes(encoding: Encoding, bytes: ChunkBytes) -> Chunk {
        Chunk { encoding, bytes }
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Encoded bytes, header included (Prometheus's `Chunk.Bytes()`).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The shared heap buffer itself (for zero-copy hand-off); `None` when
    /// the bytes are mapped from a file (use [`Chunk::chunk_bytes`]).
    pub fn shared_bytes(&self) -> Option<&Arc<[u8]>> {
        self.bytes.as_owned()
    }

    /// The bytes with their owner (heap buffer or file map), for zero-copy
    /// hand-off of either kind.
    pub fn chunk_bytes(&self) -> &ChunkBytes {
        &self.bytes
    }

    /// Sample count from the header.
    pub fn num_samples(&self) -> usize {
        match self.bytes.get(..CHUNK_HEADER_SIZE) {
            Some(h) => usize::from(u16::from_be_bytes([h[0], h[1]])),
            None => 0,
        }
    }

    /// Decodes the chunk. The iterator holds its own reference to the bytes.
    pub fn iter(&self) -> XorIterator {
        XorIterator::new(self.bytes.clone())
    }

    /// Length of the encoded data (on the heap or mapped).
    pub fn byte_size(&self) -> usize {
        self.bytes.len()
    }

    /// Heap bytes held by the encoded data: 0 when it is mapped from a file.
    pub fn heap_size(&self) -> usize {
        self.bytes.heap_size()
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Chunk({}, {} samples, {} bytes)",
            self.encoding,
            self.num_samples(),
            self.bytes.len()
        )
    }
}

/// What an iterator is positioned at (Prometheus's `chunkenc.ValueType`).
/// Histogram kinds will be added when native histograms land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Exhausted (or failed: check [`SampleIterator::err`]).
    None,
    Float,
}

/// A forward iterator over samples in increasing timestamp order, shaped like
/// Prometheus's `chunkenc.Iterator`.
///
/// Contract: after `next`/`seek` return [`ValueType::Float`], `at`/`at_t`
/// describe the current sample; after they return [`ValueType::None`] the
/// iterator is exhausted and `err` says whether it ended early. `seek(t)`
/// advances to the first sample with timestamp `>= t` and never moves
/// backwards: if the current sample already satisfies it, it stays.
pub trait SampleIterator {
    fn next(&mut self) -> ValueType;
    fn seek(&mut self, t: i64) -> ValueType;
    fn at(&self) -> (i64, f64);
    fn at_t(&self) -> i64;
    /// Start timestamp of the current sample (ms; 0 = unknown, which is
    /// all a chunk itself can say: start timestamps travel beside chunks,
    /// see `Series::start_timestamps`).
    fn at_st(&self) -> i64 {
        0
    }
    fn err(&self) -> Option<&ChunkError>;
}

impl<I: SampleIterator + ?Sized> SampleIterator for Box<I> {
    #[inline]
    fn next(&mut self) -> ValueType {
        (**self).next()
    }
    #[inline]
    fn seek(&mut self, t: i64) -> ValueType {
        (**self).seek(t)
    }
    #[inline]
    fn at(&self) -> (i64, f64) {
        (**self).at()
    }
    #[inline]
    fn at_t(&self) -> i64 {
        (**self).at_t()
    }
    #[inline]
    fn at_st(&self) -> i64 {
        (**self).at_st()
    }
    fn err(&self) -> Option<&ChunkError> {
        (**self).err()
    }
}

/// An iterator over no samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyIterator;

impl SampleIterator for EmptyIterator {
    fn next(&mut self) -> ValueType {
        ValueType::None
    }
    fn seek(&mut self, _t: i64) -> ValueType {
        ValueType::None
    }
    fn at(&self) -> (i64, f64) {
        (i64::MIN, 0.0)
    }
    fn at_t(&self) -> i64 {
        i64::MIN
    }
    fn err(&self) -> Option<&ChunkError> {
        None
    }
}

/// Drains an iterator into `(t, v)` pairs (tests and small tools).
pub fn collect_samples(it: &mut dyn SampleIterator) -> Result<Vec<(i64, f64)>, ChunkError> {
    let mut out = Vec::new();
    while it.next() == ValueType::Float {
        out.push(it.at());
    }
    match it.err() {
        Some(e) => Err(e.clone()),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_nan() {
        assert!(is_stale_nan(STALE_NAN));
        assert!(STALE_NAN.is_nan());
        assert!(!is_stale_nan(f64::NAN));
        assert_eq!(Encoding::try_from(1u8), Ok(Encoding::Xor));
        assert!(Encoding::try_from(2u8).is_err());
        assert_eq!(Encoding::Xor.to_string(), "XOR");
    }
}
