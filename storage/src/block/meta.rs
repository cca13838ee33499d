//! `meta.json`: a block's id, time range, statistics and compaction
//! lineage, field for field as Prometheus writes it (tab-indented JSON, the
//! same omitted-when-empty fields), so either side reads the other's blocks.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{sync_dir, BlockError, Ulid};

/// File name of the block metadata.
pub const META_FILENAME: &str = "meta.json";
/// The only `meta.json` version in use.
pub const META_VERSION: u32 = 1;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_samples: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_series: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_chunks: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

/// A parent block of a compacted block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDesc {
    pub ulid: Ulid,
    pub min_time: i64,
    pub max_time: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCompaction {
    /// 1 for a block cut from the head, parents' max + 1 after compaction.
    pub level: u32,
    /// Level-1 blocks whose data this block holds (itself for level 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Ulid>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deletable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<BlockDesc>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub failed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// Contents of `meta.json`. Times in milliseconds; `max_time` is exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockMeta {
    pub ulid: Ulid,
    pub min_time: i64,
    pub max_time: i64,
    #[serde(default)]
    pub stats: BlockStats,
    #[serde(default)]
    pub compaction: BlockCompaction,
    pub version: u32,
}

impl BlockMeta {
    /// Reads `dir/meta.json`.
    pub fn read(dir: &Path) -> Result<BlockMeta, BlockError> {
        let path = dir.join(META_FILENAME);
        let b = std::fs::read(&path).map_err(|source| BlockError::Io {
            path: path.clone(),
            source,
        })?;
        let meta: BlockMeta = serde_json::from_slice(&b).map_err(|source| BlockError::Meta {
            path: path.clone(),
            source,
        })?;
        if meta.version != META_VERSION {
            return Err(BlockError::MetaVersion {
                path,
                version: meta.version,
            });
        }
        Ok(meta)
    }

    /// Writes `dir/meta.json` atomically (temporary file, fsync, rename,
    /// fsync of the directory).
    pub fn write(&self, dir: &Path) -> Result<(), BlockError> {
        let path = dir.join(META_FILENAME);
        let tmp = dir.join(format!("{META_FILENAME}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| BlockError::Io { path: p, source }
        };
        let mut out = Vec::with_capacity(512);
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser)
            .map_err(|source| BlockError::Meta {
                path: path.clone(),
                source,
            })?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&out).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_matches_prometheus() {
        let id: Ulid = "01BKGV7JBM69T2G1BGBGM6KB12".parse().unwrap();
        let m = BlockMeta {
            ulid: id,
            min_time: 0,
            max_time: 7_200_000,
            stats: BlockStats {
                num_samples: 10,
                num_series: 2,
                num_chunks: 2,
                num_tombstones: 0,
            },
            compaction: BlockCompaction {
                level: 1,
                sources: vec![id],
                ..Default::default()
            },
            version: 1,
        };
        let dir = tempfile::tempdir().unwrap();
        m.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(META_FILENAME)).unwrap();
        let want = "{\n\t\"ulid\": \"01BKGV7JBM69T2G1BGBGM6KB12\",\n\t\"minTime\": 0,\n\t\"maxTime\": 7200000,\n\t\"stats\": {\n\t\t\"numSamples\": 10,\n\t\t\"numSeries\": 2,\n\t\t\"numChunks\": 2\n\t},\n\t\"compaction\": {\n\t\t\"level\": 1,\n\t\t\"sources\": [\n\t\t\t\"01BKGV7JBM69T2G1BGBGM6KB12\"\n\t\t]\n\t},\n\t\"version\": 1\n}";
        assert_eq!(text, want);
        assert_eq!(BlockMeta::read(dir.path()).unwrap(), m);
    }

    #[test]
    fn reads_foreign_fields_and_rejects_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(META_FILENAME);
        std::fs::write(&p, r#"{"ulid":"01BKGV7JBM69T2G1BGBGM6KB12","minTime":1,"maxTime":2,"stats":{},"compaction":{"level":3,"parents":[{"ulid":"01BKGV7JBM69T2G1BGBGM6KB13","minTime":1,"maxTime":2}]},"version":1,"thanos":{"labels":{}}}"#).unwrap();
        let m = BlockMeta::read(dir.path()).unwrap();
        assert_eq!(m.compaction.level, 3);
        assert_eq!(m.compaction.parents.len(), 1);
        std::fs::write(
            &p,
            r#"{"ulid":"01BKGV7JBM69T2G1BGBGM6KB12","minTime":1,"maxTime":2,"version":2}"#,
        )
        .unwrap();
        assert!(matches!(
            BlockMeta::read(dir.path()),
            Err(BlockError::MetaVersion { version: 2, .. })
        ));
    }
}
