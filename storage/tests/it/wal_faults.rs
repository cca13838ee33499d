//! WAL fault injection at random points: truncation anywhere in a segment
//! and byte corruption in the middle of the log.

use std::fs;
use std::path::{Path, PathBuf};

use pharos_storage::wal::{self, FsyncPolicy, Record, RefSample, Wal, WalOptions};

use crate::common::Rng;

fn opts() -> WalOptions {
    WalOptions {
        segment_size: 8 << 10,
        fsync: FsyncPolicy::Always,
    }
}

/// Writes `n` records; record `i` holds 5 samples of series `i % 7` at
/// timestamps `i*5 .. i*5+5`, so every sample identifies its record.
fn write_records(dir: &Path, n: u64) {
    let (w, _) = Wal::open(dir, opts(), |_| {}).unwrap();
    for i in 0..n {
        let s: Vec<RefSample> = (0..5)
            .map(|k| RefSample {
                series_ref: i % 7,
                t: (i * 5 + k) as i64,
                v: i as f64,
            })
            .collect();
        w.log(&[Record::Samples(&s)]).unwrap();
    }
}

/// Record ids seen by a replay, in order.
fn replay_ids(dir: &Path) -> (Vec<u64>, wal::ReplayStats) {
    let mut ids = Vec::new();
    let stats = wal::replay(dir, |r| {
        if let Record::Samples(s) = r {
            let id = s[0].t as u64 / 5;
            for (k, x) in s.iter().enumerate() {
                assert_eq!(
                    (x.t as u64, x.v, x.series_ref),
                    (id * 5 + k as u64, id as f64, id % 7)
                );
            }
            ids.push(id);
        }
    })
    .unwrap();
    (ids, stats)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    wal::list_dir(dir)
        .unwrap()
        .segments
        .into_iter()
        .map(|s| s.1)
        .collect()
}

#[test]
fn truncating_last_segment_at_random_offsets_keeps_a_prefix() {
    let mut rng = Rng::from_env("truncate");
    let src = tempfile::tempdir().unwrap();
    write_records(src.path(), 600);
    let segs = segments(src.path());
    assert!(segs.len() > 3);
    for _ in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        for p in &segs {
            fs::copy(p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        let last = dir.path().join(segs[segs.len() - 1].file_name().unwrap());
        let len = fs::metadata(&last).unwrap().len();
        let cut = rng.range(0, len);
        fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (ids, stats) = replay_ids(dir.path());
        assert!(
            stats.corruptions.is_empty(),
            "cut {cut}: {:?}",
            stats.corruptions
        );
        // Exactly a prefix of what was written survives.
        assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "cut {cut}");
        // Everything in the earlier segments survives.
        let (full_ids, _) = replay_ids(src.path());
        let before_last = full_ids.len() - {
            let d = tempfile::tempdir().unwrap();
            fs::copy(&segs[segs.len() - 1], d.path().join("00000000")).unwrap();
            replay_ids(d.path()).0.len()
        };
        assert!(ids.len() >= before_last, "cut {cut}");
        // A second replay finds a clean log.
        let (ids2, stats2) = replay_ids(dir.path());
        assert_eq!(ids2, ids);
        assert!(stats2.torn_tail.is_none() && stats2.corruptions.is_empty());
    }
}

#[test]
fn corrupting_a_random_middle_byte_is_reported_with_file_and_offset() {
    let mut rng = Rng::from_env("corrupt");
    let src = tempfile::tempdir().unwrap();
    write_records(src.path(), 600);
    let segs = segments(src.path());
    let (all, _) = replay_ids(src.path());
    for _ in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        for p in &segs {
            fs::copy(p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        // A segment that is neither first nor last, a byte past its header.
        let which = rng.range(1, segs.len() as u64 - 1) as usize;
        let path = dir.path().join(segs[which].file_name().unwrap());
        let mut bytes = fs::read(&path).unwrap();
        let off = rng.range(8, bytes.len() as u64) as usize;
        bytes[off] ^= 1 << rng.range(0, 8);
        fs::write(&path, &bytes).unwrap();

        let (ids, stats) = replay_ids(dir.path());
        assert_eq!(
            stats.corruptions.len(),
            1,
            "flip at {off}: {:?}",
            stats.corruptions
        );
        let c = &stats.corruptions[0];
        assert_eq!(c.path, path);
        // The reported offset is the start of the frame holding the byte.
        assert!(
            c.offset as usize <= off && c.offset >= 8,
            "flip at {off}, reported {}",
            c.offset
        );
        assert!(
            off - (c.offset as usize) < 200,
            "frame too far from flip: {c}"
        );
        // Nothing corrupt is returned, order is kept, and records outside
        // the damaged segment tail all survive.
        let lost: Vec<u64> = all.iter().copied().filter(|i| !ids.contains(i)).collect();
        assert!(!lost.is_empty());
        let first_lost = lost[0];
        assert_eq!(
            lost,
            (first_lost..first_lost + lost.len() as u64).collect::<Vec<_>>()
        );
        let mut seg_ids = Vec::new();
        let d = tempfile::tempdir().unwrap();
        fs::copy(&segs[which], d.path().join("00000000")).unwrap();
        seg_ids.extend(replay_ids(d.path()).0);
        assert!(
            lost.iter().all(|i| seg_ids.contains(i)),
            "lost records outside the corrupt segment"
        );
        assert_eq!(
            *lost.last().unwrap(),
            *seg_ids.last().unwrap(),
            "rest of segment skipped"
        );
    }
}
