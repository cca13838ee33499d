//! [`ChunkBytes`]: where an encoded chunk's bytes live — on the heap, or in
//! a read-only memory map of a file (the head's `chunks_head/` files, see
//! `storage/docs/head_chunks.md`).
//!
//! Invariant: a mapped range is checked against the map's length when it is
//! made, so dereferencing never reads past the mapping. Every clone holds an
//! `Arc` of the map, so the mapping outlives every reader of its chunks even
//! after the head has deleted the file (Linux keeps an unlinked file's pages
//! while they are mapped).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

/// The bytes of one encoded chunk. Cloning is a reference-count increment.
#[derive(Clone)]
pub struct ChunkBytes(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Arc<[u8]>),
    /// `len` bytes at `start` of a shared map; `u32` keeps this variant as
    /// small as the owned one (head chunk files are far below 4 GiB).
    Mapped {
        map: Arc<Mmap>,
        start: u32,
        len: u32,
    },
}

impl ChunkBytes {
    /// `len` bytes at `start` of `map`; `None` when the range is not inside
    /// the map or does not fit the offsets' `u32`.
    pub(crate) fn mapped(map: Arc<Mmap>, start: usize, len: usize) -> Option<ChunkBytes> {
        let end = start.checked_add(len)?;
        if end > map.len() {
            return None;
        }
        Some(ChunkBytes(Repr::Mapped {
            map,
            start: u32::try_from(start).ok()?,
            len: u32::try_from(len).ok()?,
        }))
    }

    /// Whether the bytes live in a file mapping rather than on the heap.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped { .. })
    }

    /// The heap buffer, when the bytes are on the heap.
    pub fn as_owned(&self) -> Option<&Arc<[u8]>> {
        match &self.0 {
            Repr::Owned(a) => Some(a),
            Repr::Mapped { .. } => None,
        }
    }

    /// Heap bytes held: the buffer's length when owned, 0 when mapped (the
    /// page cache holds mapped bytes, outside the process's heap).
    pub fn heap_size(&self) -> usize {
        match &self.0 {
            Repr::Owned(a) => a.len(),
            Repr::Mapped { .. } => 0,
        }
    }
}

impl Deref for ChunkBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(a) => a,
            Repr::Mapped { map, start, len } => {
                let start = *start as usize;
                // In range by construction; `get` keeps a logic error from
                // becoming a panic.
                map.get(start..start + *len as usize).unwrap_or(&[])
            }
        }
    }
}

impl From<Arc<[u8]>> for ChunkBytes {
    fn from(a: Arc<[u8]>) -> ChunkBytes {
        ChunkBytes(Repr::Owned(a))
    }
}

impl From<&[u8]> for ChunkBytes {
    fn from(b: &[u8]) -> ChunkBytes {
        ChunkBytes(Repr::Owned(Arc::from(b)))
    }
}

impl PartialEq for ChunkBytes {
    fn eq(&self, other: &ChunkBytes) -> bool {
        **self == **other
    }
}

impl Eq for ChunkBytes {}

impl fmt::Debug for ChunkBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.is_mapped() { "mapped" } else { "heap" };
        write!(f, "ChunkBytes({} bytes, {place})", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_range_is_checked_and_equal_to_owned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a test file nobody else touches.
        let map = Arc::new(unsafe { Mmap::map(&file) }.unwrap());
        let m = ChunkBytes::mapped(map.clone(), 2, 5).unwrap();
        assert!(m.is_mapped());
        assert_eq!(&*m, b"23456");
        assert_eq!(m.heap_size(), 0);
        assert_eq!(m, ChunkBytes::from(&b"23456"[..]));
        assert!(ChunkBytes::mapped(map.clone(), 6, 5).is_none());
        assert!(ChunkBytes::mapped(map, usize::MAX, 2).is_none());
    }
}
