use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::block::tests::series_of;
use crate::block::{
    Block, BlockCompaction, BlockDesc, BlockMeta, BlockStats, BlockWriter, Ulid, WriteOptions,
};
use crate::chunk::collect_samples;
use crate::labels::Matcher;
use crate::querier::Querier;

const H: i64 = 3600 * 1000;

fn meta(min: i64, max: i64) -> BlockMeta {
    BlockMeta {
        ulid: Ulid::new(),
        min_time: min,
        max_time: max,
        stats: BlockStats {
            num_samples: 1,
            num_series: 100,
            num_chunks: 1,
            num_tombstones: 0,
        },
        compaction: BlockCompaction {
            level: 1,
            ..Default::default()
        },
        version: 1,
    }
}

/// Writes a level-1 block of `n` series `m{i="…"}` sampled every 15s in
/// `[from, to)`, values from `f(series, t)`.
fn write_block(
    dir: &Path,
    from: i64,
    to: i64,
    n: usize,
    f: impl Fn(usize, i64) -> f64,
) -> BlockMeta {
    let series = (0..n)
        .map(|i| {
            let iv = format!("{i}");
            let s: Vec<(i64, f64)> = (0..)
                .map(|k| from + k * 15_000)
                .take_while(|&t| t < to)
                .map(|t| (t, f(i, t)))
                .collect();
            series_of(&[("__name__", "m"), ("i", &iv)], &s, 120)
        })
        .collect();
    BlockWriter::new(dir, from, to).write(series).unwrap()
}

/// All samples in the blocks of `dir`, by series and time. A sample held by
/// several blocks must have the same value in each.
fn all_samples(dir: &Path) -> BTreeMap<(String, i64), u64> {
    let mut out = BTreeMap::new();
    for m in list_blocks(dir).unwrap() {
        let b = Block::open(&dir.join(m.ulid.to_string())).unwrap();
        for s in b.select(i64::MIN, i64::MAX, &[], None).unwrap() {
            for (t, v) in collect_samples(&mut s.iter()).unwrap() {
                if let Some(prev) = out.insert((s.labels.to_string(), t), v.to_bits()) {
                    assert_eq!(prev, v.to_bits(), "conflicting values at {t}");
                }
            }
        }
    }
    out
}

#[test]
fn ranges_follow_prometheus() {
    assert_eq!(
        exponential_ranges(2 * H, 4, 3),
        vec![2 * H, 6 * H, 18 * H, 54 * H]
    );
    // 15d retention caps blocks at 36h.
    assert_eq!(
        block_ranges(2 * H, Some(15 * 24 * H)),
        vec![2 * H, 6 * H, 18 * H]
    );
    // Without retention, 31 days: 2h … 486h.
    assert_eq!(block_ranges(2 * H, None).last(), Some(&(486 * H)));
    // A tiny retention still keeps the head block size.
    assert_eq!(block_ranges(2 * H, Some(H)), vec![2 * H]);
}

#[test]
fn planner_picks_full_ranges_overlaps_and_tombstoned_blocks() {
    let p = Planner::new(block_ranges(2 * H, None));
    let b: Vec<BlockMeta> = (0..4).map(|i| meta(i * 2 * H, (i + 1) * 2 * H)).collect();
    // Three 2h blocks fill [0, 6h); the newest block is left alone.
    assert_eq!(p.plan(&b), vec![b[0].ulid, b[1].ulid, b[2].ulid]);
    // Two blocks of an unfinished 6h range wait for the third.
    assert!(p.plan(&b[..3]).is_empty());
    assert!(p.plan(&b[..1]).is_empty() && p.plan(&[]).is_empty());
    // Overlaps win over everything.
    let mut o = b.clone();
    o.push(meta(H, 3 * H));
    let mut got = p.plan(&o);
    got.sort();
    let mut want = vec![b[0].ulid, b[1].ulid, o[4].ulid];
    want.sort();
    assert_eq!(got, want);
    // A 6h block after the newest range that fills up: [0,6h) is compacted
    // already, and [6h,12h) has three blocks plus a newer one.
    let mut c = vec![meta(0, 6 * H)];
    c.extend((3..7).map(|i| meta(i * 2 * H, (i + 1) * 2 * H)));
    assert_eq!(p.plan(&c), vec![c[1].ulid, c[2].ulid, c[3].ulid]);
    // Four 6h blocks fill [0, 18h) only with the third; with a newer block
    // after them, the three are merged.
    let d: Vec<BlockMeta> = (0..3)
        .map(|i| meta(i * 6 * H, (i + 1) * 6 * H))
        .chain([meta(18 * H, 20 * H)])
        .collect();
    assert_eq!(p.plan(&d), vec![d[0].ulid, d[1].ulid, d[2].ulid]);
    // A big block with >5% tombstones is rewritten on its own.
    let mut big = meta(0, 54 * H);
    big.stats.num_tombstones = 10;
    let newer = meta(54 * H, 56 * H);
    assert_eq!(p.plan(&[big.clone(), newer.clone()]), vec![big.ulid]);
    big.stats.num_tombstones = 1;
    assert!(p.plan(&[big, newer]).is_empty());
}

#[test]
fn horizontal_compaction_merges_adjacent_blocks_and_deletes_sources() {
    let dir = tempfile::tempdir().unwrap();
    let f = |i: usize, t: i64| (i as i64 * 1000 + t / 15_000) as f64;
    let metas: Vec<BlockMeta> = (0..4)
        .map(|k| write_block(dir.path(), k * 2 * H, (k + 1) * 2 * H, 20, f))
        .collect();
    let before = all_samples(dir.path());
    let c = Compactor::new(dir.path(), CompactorOptions::default());
    let written = c.run().unwrap();
    assert_eq!(written.len(), 1);
    let m = &written[0];
    assert_eq!((m.min_time, m.max_time), (0, 6 * H));
    assert_eq!(m.compaction.level, 2);
    let mut srcs: Vec<Ulid> = metas[..3].iter().map(|m| m.ulid).collect();
    srcs.sort();
    assert_eq!(m.compaction.sources, srcs);
    assert_eq!(
        m.compaction.parents,
        metas[..3]
            .iter()
            .map(|p| BlockDesc {
                ulid: p.ulid,
                min_time: p.min_time,
                max_time: p.max_time
            })
            .collect::<Vec<_>>()
    );
    // Chunks were reused, not re-cut.
    assert_eq!(
        m.stats.num_chunks,
        metas[..3].iter().map(|p| p.stats.num_chunks).sum::<u64>()
    );
    assert_eq!(
        m.stats.num_samples,
        metas[..3].iter().map(|p| p.stats.num_samples).sum::<u64>()
    );
    let left: Vec<Ulid> = list_blocks(dir.path())
        .unwrap()
        .iter()
        .map(|m| m.ulid)
        .collect();
    assert_eq!(left, vec![m.ulid, metas[3].ulid]);
    assert_eq!(all_samples(dir.path()), before);
    // Nothing else to do, and no leftovers.
    assert!(c.plan().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn vertical_compaction_dedups_and_recuts_chunks() {
    let dir = tempfile::tempdir().unwrap();
    // Two replicas' blocks of the same range: equal samples where both have
    // data, each with a series of its own and gaps the other fills.
    let a = write_block(dir.path(), 0, 2 * H, 10, |i, t| (i as i64 + t) as f64);
    let b = write_block(dir.path(), H, 3 * H, 12, |i, t| (i as i64 + t) as f64);
    let before = all_samples(dir.path());
    let c = Compactor::new(dir.path(), CompactorOptions::default());
    assert_eq!(c.plan().unwrap().len(), 2);
    let m = c.compact(&c.plan().unwrap()).unwrap().unwrap();
    assert_eq!((m.min_time, m.max_time), (0, 3 * H));
    assert_eq!(m.stats.num_series, 12);
    let after = all_samples(dir.path());
    assert_eq!(after, before.clone());
    let unique = before.len() as u64;
    assert_eq!(m.stats.num_samples, unique);
    assert!(
        a.stats.num_samples + b.stats.num_samples > unique,
        "the blocks overlapped"
    );
    let blk = Block::open(&dir.path().join(m.ulid.to_string())).unwrap();
    for s in blk.select(i64::MIN, i64::MAX, &[], None).unwrap() {
        assert!(!s.has_overlapping_chunks(), "{}", s.labels);
        assert!(s.chunks.iter().all(|c| c.chunk.num_samples() <= 120));
        // 10 series span 3h = 720 samples = 6 full chunks.
        if s.labels.get("i").unwrap().parse::<usize>().unwrap() < 10 {
            assert_eq!(s.chunks.len(), 6, "{}", s.labels);
        }
    }
}

#[test]
fn compaction_drops_tombstoned_data() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_block(dir.path(), 0, 2 * H, 5, |_, t| t as f64);
    let b = Block::open(&dir.path().join(m.ulid.to_string())).unwrap();
    b.delete(0, H - 1, &[Matcher::equal("i", "1")]).unwrap();
    b.delete(i64::MIN, i64::MAX, &[Matcher::equal("i", "2")])
        .unwrap();
    drop(b);
    let before = all_samples(dir.path());
    let c = Compactor::new(dir.path(), CompactorOptions::default());
    // A repeated id is compacted once.
    let out = c.compact(&[m.ulid, m.ulid]).unwrap().unwrap();
    assert_eq!(out.stats.num_tombstones, 0);
    assert_eq!(out.stats.num_series, 4);
    assert_eq!(out.stats.num_samples, 5 * 480 - 240 - 480);
    assert_eq!(all_samples(dir.path()), before);
    let nb = Block::open(&dir.path().join(out.ulid.to_string())).unwrap();
    assert!(nb.tombstones().is_empty());
    assert!(!dir.path().join(m.ulid.to_string()).exists());

    // Deleting everything and compacting leaves no block at all.
    nb.delete(i64::MIN, i64::MAX, &[]).unwrap();
    drop(nb);
    assert!(c.compact(&[out.ulid]).unwrap().is_none());
    assert!(list_blocks(dir.path()).unwrap().is_empty());
}

#[test]
fn cleanup_removes_parents_and_unfinished_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_block(dir.path(), 0, 2 * H, 2, |_, t| t as f64);
    let b = write_block(dir.path(), 2 * H, 4 * H, 2, |_, t| t as f64);
    // As if a compaction was interrupted after writing its result.
    let merged = BlockWriter::new(dir.path(), 0, 4 * H)
        .with_options(WriteOptions {
            level: 2,
            sources: vec![a.ulid, b.ulid],
            parents: [&a, &b]
                .iter()
                .map(|m| BlockDesc {
                    ulid: m.ulid,
                    min_time: m.min_time,
                    max_time: m.max_time,
                })
                .collect(),
            ..Default::default()
        })
        .write(vec![series_of(&[("__name__", "m")], &[(0, 1.0)], 120)])
        .unwrap();
    let tmp = dir.path().join(format!("{}.tmp", Ulid::new()));
    std::fs::create_dir_all(tmp.join("chunks")).unwrap();
    let del = dir.path().join(format!("{}.tmp-for-deletion", Ulid::new()));
    std::fs::create_dir_all(&del).unwrap();
    let c = Compactor::new(dir.path(), CompactorOptions::default());
    let mut removed = c.cleanup().unwrap();
    removed.sort();
    let mut want = vec![a.ulid, b.ulid];
    want.sort();
    assert_eq!(removed, want);
    assert!(!tmp.exists() && !del.exists());
    let left: Vec<Ulid> = list_blocks(dir.path())
        .unwrap()
        .iter()
        .map(|m| m.ulid)
        .collect();
    assert_eq!(left, vec![merged.ulid]);
}

#[test]
fn retention_by_time_and_size() {
    let span = |i: i64, bytes: u64| BlockSpan {
        ulid: Ulid::from_parts(i as u64 + 1, 0),
        max_time: (i + 1) * 2 * H,
        bytes,
    };
    let blocks: Vec<BlockSpan> = (0..5).map(|i| span(i, 100)).collect();
    let time = RetentionPolicy {
        max_age_ms: Some(5 * H),
        max_bytes: None,
    };
    // Newest max time 10h: blocks ending before 5h go (2h and 4h).
    let got = beyond_retention(&blocks, &time, None, 0);
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        vec![blocks[0].ulid, blocks[1].ulid]
    );
    // A newer head moves the horizon.
    assert_eq!(beyond_retention(&blocks, &time, Some(13 * H), 0).len(), 3);
    let size = RetentionPolicy {
        max_age_ms: None,
        max_bytes: Some(350),
    };
    assert_eq!(beyond_retention(&blocks, &size, None, 0).len(), 2);
    // The WAL shares the budget.
    assert_eq!(beyond_retention(&blocks, &size, None, 100).len(), 3);
    assert!(beyond_retention(&blocks, &RetentionPolicy::default(), None, 0).is_empty());

    let dir = tempfile::tempdir().unwrap();
    let metas: Vec<BlockMeta> = (0..3)
        .map(|k| write_block(dir.path(), k * 2 * H, (k + 1) * 2 * H, 3, |_, t| t as f64))
        .collect();
    let deleted = apply_retention(
        dir.path(),
        &RetentionPolicy {
            max_age_ms: Some(3 * H),
            max_bytes: None,
        },
        None,
        0,
    )
    .unwrap();
    assert_eq!(deleted, vec![metas[0].ulid]);
    let one = crate::block::dir_size(&dir.path().join(metas[2].ulid.to_string())).unwrap();
    let deleted = apply_retention(
        dir.path(),
        &RetentionPolicy {
            max_age_ms: None,
            max_bytes: Some(one + 1),
        },
        None,
        0,
    )
    .unwrap();
    assert_eq!(deleted, vec![metas[1].ulid]);
    let left: Vec<Ulid> = list_blocks(dir.path())
        .unwrap()
        .iter()
        .map(|m| m.ulid)
        .collect();
    assert_eq!(left, vec![metas[2].ulid]);
}

/// Tombstones belong to their block: a deletion in one replica's block must
/// not remove the other replica's samples for the same series and times.
#[test]
fn vertical_merge_applies_tombstones_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_block(dir.path(), 0, 2 * H, 3, |i, t| (i as i64 + t) as f64);
    let b = write_block(dir.path(), H, 3 * H, 3, |i, t| (i as i64 + t) as f64);
    let ba = Block::open(&dir.path().join(a.ulid.to_string())).unwrap();
    // In A only: [0, 30m) (nobody else has it) and [1h, 90m) (B has it too).
    ba.delete(0, H / 2 - 1, &[Matcher::equal("i", "0")])
        .unwrap();
    ba.delete(H, 3 * H / 2 - 1, &[Matcher::equal("i", "0")])
        .unwrap();
    drop(ba);
    let before = all_samples(dir.path());
    let c = Compactor::new(dir.path(), CompactorOptions::default());
    let m = c.compact(&[a.ulid, b.ulid]).unwrap().unwrap();
    assert_eq!(all_samples(dir.path()), before);
    let s0: Vec<i64> = before
        .keys()
        .filter(|(l, _)| l.contains("i=\"0\""))
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(s0.first(), Some(&(H / 2)));
    assert!(s0.contains(&H) && s0.contains(&(H + 15_000)));
    assert_eq!(m.stats.num_samples, before.len() as u64);
}

#[test]
fn streaming_writer_rejects_unsorted_input_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let s1 = series_of(&[("__name__", "b")], &[(0, 1.0)], 120);
    let s2 = series_of(&[("__name__", "a")], &[(0, 1.0)], 120);
    let e = BlockWriter::new(dir.path(), 0, 10)
        .write_sorted(
            ["__name__", "a", "b"],
            vec![Ok(s1.clone()), Ok(s2)].into_iter(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("out of order"), "{e}");
    let e = BlockWriter::new(dir.path(), 0, 10)
        .write_sorted(
            ["__name__", "b"],
            vec![
                Ok(s1),
                Err(crate::block::BlockError::Internal("source failed".into())),
            ]
            .into_iter(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("source failed"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "partial block left behind"
    );
}

/// The life of a data directory: 2h blocks cut from a head, compacted into
/// larger ones, old ones dropped by retention; queries over the remaining
/// blocks always return exactly the samples still retained.
#[test]
fn head_blocks_compaction_and_retention_end_to_end() {
    use crate::head::{Head, HeadOptions};
    use crate::querier::MergeQuerier;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let head = Head::new(HeadOptions::default());
    let labels: Vec<crate::labels::Labels> = (0..10)
        .map(|i| {
            crate::labels::Labels::from_pairs([("__name__", "up"), ("i", format!("{i}").as_str())])
        })
        .collect();
    let steps = 12 * 3600 / 30; // 12h at 30s.
    for k in 0..steps {
        for (i, l) in labels.iter().enumerate() {
            head.append(l, k * 30_000, (i as i64 * 1_000_000 + k) as f64)
                .unwrap();
        }
    }
    let c = Compactor::new(dir.path(), CompactorOptions::default());
    for b in 0..6 {
        let (lo, hi) = (b * 2 * H, (b + 1) * 2 * H);
        BlockWriter::new(dir.path(), lo, hi)
            .write(head.series_for_range(lo, hi - 1))
            .unwrap();
        c.run().unwrap();
    }
    let metas = list_blocks(dir.path()).unwrap();
    let ranges: Vec<(i64, i64, u32)> = metas
        .iter()
        .map(|m| (m.min_time / H, m.max_time / H, m.compaction.level))
        .collect();
    // [0,6h) compacted once its range filled and a newer block existed;
    // [6h,12h) still has its newest block uncompacted.
    assert_eq!(ranges, vec![(0, 6, 2), (6, 8, 1), (8, 10, 1), (10, 12, 1)]);

    let read_all = || {
        let mut q = MergeQuerier::default();
        for m in list_blocks(dir.path()).unwrap() {
            q.push(Arc::new(
                Block::open(&dir.path().join(m.ulid.to_string())).unwrap(),
            ));
        }
        let mut n = 0;
        let mut first = i64::MAX;
        for s in q.select(i64::MIN, i64::MAX, &[], None).unwrap() {
            let i: i64 = s.labels.get("i").unwrap().parse().unwrap();
            for (t, v) in collect_samples(&mut s.iter()).unwrap() {
                assert_eq!(v, (i * 1_000_000 + t / 30_000) as f64);
                first = first.min(t);
                n += 1;
            }
        }
        (n, first)
    };
    assert_eq!(read_all(), (10 * steps, 0));

    // Keep 5h before the newest data: the 6h block ends 6h before it.
    let deleted = apply_retention(
        dir.path(),
        &RetentionPolicy {
            max_age_ms: Some(5 * H),
            max_bytes: None,
        },
        None,
        0,
    )
    .unwrap();
    assert_eq!(deleted, vec![metas[0].ulid]);
    assert_eq!(read_all(), (10 * (steps - 6 * 120), 6 * H));
}
