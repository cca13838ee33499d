//! The `tombstones` file of a block, in Prometheus's format
//! (`tsdb/docs/format/tombstones.md`): magic `0x0130BA30` <4b>, version 1
//! <1b>, then one `uvarint(series id) varint(mint) varint(maxt)` triple per
//! deleted interval, then CRC32C <4b> over the triples (not the version
//! byte, as Prometheus computes it). Intervals are closed `[mint, maxt]`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{sync_dir, BlockError};
use crate::index::encoding::{crc32c, put_uvarint, put_varint, Cursor};

pub const TOMBSTONES_FILENAME: &str = "tombstones";
pub const MAGIC_TOMBSTONES: u32 = 0x0130_BA30;
pub const TOMBSTONES_FORMAT_V1: u8 = 1;

/// Deleted intervals per series id, each list sorted and coalesced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tombstones {
    by_series: BTreeMap<u64, Vec<(i64, i64)>>,
}

/// Sorts closed intervals and merges overlapping or adjacent ones.
pub fn coalesce(mut v: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    v.retain(|(a, b)| a <= b);
    v.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

impl Tombstones {
    pub fn is_empty(&self) -> bool {
        self.by_series.is_empty()
    }

    /// Number of intervals over all series (meta.json's `numTombstones`).
    pub fn num_intervals(&self) -> u64 {
        self.by_series.values().map(|v| v.len() as u64).sum()
    }

    pub fn get(&self, series: u64) -> &[(i64, i64)] {
        self.by_series.get(&series).map_or(&[], Vec::as_slice)
    }

    pub fn add(&mut self, series: u64, mint: i64, maxt: i64) {
        let e = self.by_series.entry(series).or_default();
        e.push((mint, maxt));
        *e = coalesce(std::mem::take(e));
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &[(i64, i64)])> {
        self.by_series.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9 + 12 * self.by_series.len());
        b.extend_from_slice(&MAGIC_TOMBSTONES.to_be_bytes());
        b.push(TOMBSTONES_FORMAT_V1);
        for (&id, ivs) in &self.by_series {
            for &(a, z) in ivs {
                put_uvarint(&mut b, id);
                put_varint(&mut b, a);
                put_varint(&mut b, z);
            }
        }
        let crc = crc32c(&b[5..]);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decodes a tombstones file's contents; `path` is used in errors.
    pub fn decode(path: &Path, b: &[u8]) -> Result<Tombstones, BlockError> {
        let corrupt = |offset: u64, what: String| BlockError::Tombstones {
            path: path.to_path_buf(),
            offset,
            what,
        };
        if b.len() < 9 {
            return Err(corrupt(0, format!("{} bytes is too short", b.len())));
        }
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC_TOMBSTONES {
            return Err(corrupt(0, format!("bad magic number {magic:#010x}")));
        }
        if b[4] != TOMBSTONES_FORMAT_V1 {
            return Err(corrupt(4, format!("unsupported format version {}", b[4])));
        }
        let body = &b[5..b.len() - 4];
        let n = b.len();
        let stored = u32::from_be_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
        let computed = crc32c(body);
        if stored != computed {
            return Err(corrupt(
                (n - 4) as u64,
                format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        let mut c = Cursor::new(body, 5);
        let mut t = Tombstones::default();
        while !c.is_empty() {
            let id = c.uvarint().map_err(|e| corrupt(e.offset, e.what.into()))?;
            let a = c.varint().map_err(|e| corrupt(e.offset, e.what.into()))?;
            let z = c.varint().map_err(|e| corrupt(e.offset, e.what.into()))?;
            t.add(id, a, z);
        }
        Ok(t)
    }

    /// Reads `dir/tombstones`; a missing file means no tombstones.
    pub fn read(dir: &Path) -> Result<Tombstones, BlockError> {
        let path = dir.join(TOMBSTONES_FILENAME);
        match std::fs::read(&path) {
            Ok(b) => Tombstones::decode(&path, &b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tombstones::default()),
            Err(source) => Err(BlockError::Io { path, source }),
        }
    }

    /// Writes `dir/tombstones` atomically (temporary file, fsync, rename).
    pub fn write(&self, dir: &Path) -> Result<(), BlockError> {
        let path = dir.join(TOMBSTONES_FILENAME);
        let tmp = dir.join(format!("{TOMBSTONES_FILENAME}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| BlockError::Io { path: p, source }
        };
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&self.encode()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_file_is_nine_bytes() {
        let b = Tombstones::default().encode();
        assert_eq!(b.len(), 9);
        assert_eq!(&b[..5], &[0x01, 0x30, 0xBA, 0x30, 1]);
        assert!(Tombstones::decode(Path::new("t"), &b).unwrap().is_empty());
    }

    #[test]
    fn add_coalesces() {
        let mut t = Tombstones::default();
        t.add(3, 10, 20);
        t.add(3, 21, 30);
        t.add(3, 50, 60);
        t.add(3, 55, 70);
        assert_eq!(t.get(3), &[(10, 30), (50, 70)]);
        assert_eq!(t.num_intervals(), 2);
        assert!(t.get(4).is_empty());
    }

    proptest! {
        #[test]
        fn round_trip_and_corruption(entries in proptest::collection::vec((0u64..1000, -1000i64..1000, 0i64..500), 0..30), flip in any::<prop::sample::Index>()) {
            let mut t = Tombstones::default();
            for (id, a, len) in entries {
                t.add(id, a, a + len);
            }
            let b = t.encode();
            prop_assert_eq!(Tombstones::decode(Path::new("t"), &b).unwrap(), t.clone());
            let mut bad = b.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 0x10;
            prop_assert!(Tombstones::decode(Path::new("t"), &bad).is_err());
        }
    }
}
