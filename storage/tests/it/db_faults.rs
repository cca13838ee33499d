//! Damaged WAL under a `Db`: a segment truncated at random offsets, bytes
//! flipped in the middle. Checks what `Db::open` reports (file, offset) and
//! exactly which acknowledged batches survive.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use pharos_storage::chunk::{SampleIterator, ValueType};
use pharos_storage::db::{Db, DbOptions};
use pharos_storage::labels::{Labels, MatchType, Matcher};
use pharos_storage::querier::Querier;
use pharos_storage::wal::{self, FsyncPolicy, Record, WalOptions};

use crate::common::Rng;

const SERIES: u64 = 5;
const BATCHES: i64 = 400;

fn opts() -> DbOptions {
    DbOptions {
        wal: WalOptions {
            segment_size: 4 << 10,
            fsync: FsyncPolicy::Always,
        },
        ..DbOptions::default()
    }
}

fn lbl(s: u64) -> Labels {
    Labels::from_pairs([("__name__", "f"), ("s", &s.to_string())])
}

/// Batch `t` (1-based) holds one sample per series at `t`, value `t*10+s`.
fn populate(dir: &Path) {
    let db = Db::open(dir, opts()).unwrap();
    for t in 1..=BATCHES {
        let b: Vec<(Labels, i64, f64)> = (0..SERIES)
            .map(|s| (lbl(s), t, (t * 10) as f64 + s as f64))
            .collect();
        assert_eq!(db.append(&b).unwrap().appended, SERIES as usize);
    }
}

/// Batches present, checking each is complete and correct.
fn batches(db: &Db) -> Vec<i64> {
    let mut by_t: BTreeMap<i64, u64> = BTreeMap::new();
    let m = Matcher::new(MatchType::Equal, "__name__", "f").unwrap();
    for s in db.select(i64::MIN, i64::MAX, &[m], None).unwrap() {
        let k: u64 = s.labels.get("s").unwrap().parse().unwrap();
        let mut it = s.iter();
        while it.next() == ValueType::Float {
            let (t, v) = it.at();
            assert_eq!(v, (t * 10) as f64 + k as f64, "series {k} at {t}");
            *by_t.entry(t).or_default() += 1;
        }
    }
    for (t, n) in &by_t {
        assert_eq!(*n, SERIES, "batch {t} is partial");
    }
    by_t.into_keys().collect()
}

fn copy_dir(src: &Path) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir(dst.path().join("wal")).unwrap();
    for e in fs::read_dir(src.join("wal")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.path().join("wal").join(e.file_name())).unwrap();
    }
    dst
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    wal::list_dir(&dir.join("wal"))
        .unwrap()
        .segments
        .into_iter()
        .map(|s| s.1)
        .collect()
}

/// Timestamps of the batches whose Samples record lies in `seg`.
fn batches_in(seg: &Path) -> Vec<i64> {
    let d = tempfile::tempdir().unwrap();
    fs::copy(seg, d.path().join("00000000")).unwrap();
    let mut ts = Vec::new();
    wal::replay(d.path(), |r| {
        if let Record::Samples(s) = r {
            ts.push(s[0].t);
        }
    })
    .unwrap();
    ts
}

#[test]
fn db_survives_random_truncation_of_the_last_segment() {
    let mut rng = Rng::from_env("db_truncate");
    let src = tempfile::tempdir().unwrap();
    populate(src.path());
    let segs = segments(src.path());
    assert!(segs.len() > 4);
    let in_last = batches_in(&segs[segs.len() - 1]);
    for _ in 0..15 {
        let d = copy_dir(src.path());
        let last = segments(d.path()).pop().unwrap();
        let len = fs::metadata(&last).unwrap().len();
        let cut = rng.range(0, len);
        fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let db = Db::open(d.path(), opts()).unwrap();
        let r = db.open_report();
        assert!(
            r.corruptions().is_empty(),
            "cut {cut}: {:?}",
            r.corruptions()
        );
        assert_eq!((r.samples_rejected, r.samples_unknown_series), (0, 0));
        let got = batches(&db);
        // A prefix survives, at least everything before the last segment.
        assert_eq!(got, (1..=got.len() as i64).collect::<Vec<_>>(), "cut {cut}");
        assert!(
            got.len() as i64 >= in_last[0] - 1,
            "cut {cut} lost earlier segments"
        );
        // The Db keeps working on the repaired WAL.
        db.append(&[(lbl(0), BATCHES + 1, 0.0)]).unwrap();
        drop(db);
        let db = Db::open(d.path(), opts()).unwrap();
        assert!(db.open_report().corruptions().is_empty());
        assert!(db.open_report().replay.torn_tail.is_none());
    }
}

#[test]
fn db_reports_corruption_with_file_and_offset_and_keeps_the_rest() {
    let mut rng = Rng::from_env("db_corrupt");
    let src = tempfile::tempdir().unwrap();
    populate(src.path());
    let segs = segments(src.path());
    for _ in 0..15 {
        let d = copy_dir(src.path());
        let dsegs = segments(d.path());
        // Not the first segment (it holds the Series records) nor the last.
        let which = rng.range(1, dsegs.len() as u64 - 1) as usize;
        let mut bytes = fs::read(&dsegs[which]).unwrap();
        let off = rng.range(8, bytes.len() as u64) as usize;
        bytes[off] ^= 0x10;
        fs::write(&dsegs[which], &bytes).unwrap();

        let db = Db::open(d.path(), opts()).unwrap();
        let c = db.open_report().corruptions();
        assert_eq!(c.len(), 1, "flip at {off}: {c:?}");
        assert_eq!(c[0].path, dsegs[which]);
        assert!(
            c[0].offset as usize <= off,
            "flip at {off}, reported {}",
            c[0].offset
        );
        let msg = c[0].to_string();
        assert!(
            msg.contains(&dsegs[which].display().to_string())
                && msg.contains(&c[0].offset.to_string())
        );
        // Lost: a tail of that segment's batches, nothing else.
        let got = batches(&db);
        let seg_batches = batches_in(&segs[which]);
        let lost: Vec<i64> = (1..=BATCHES).filter(|t| !got.contains(t)).collect();
        assert!(!lost.is_empty());
        assert!(
            lost.iter().all(|t| seg_batches.contains(t)),
            "lost {lost:?} outside the segment"
        );
        assert_eq!(lost.last(), seg_batches.last());
    }
}

#[test]
fn db_corrupt_series_records_lose_only_their_series() {
    let src = tempfile::tempdir().unwrap();
    populate(src.path());
    let d = copy_dir(src.path());
    let first = segments(d.path()).remove(0);
    // The first frame of segment 0 is the Series record of all five series.
    let mut bytes = fs::read(&first).unwrap();
    bytes[8 + 12 + 3] ^= 0xff;
    fs::write(&first, &bytes).unwrap();
    let db = Db::open(d.path(), opts()).unwrap();
    let r = db.open_report();
    assert_eq!(r.corruptions().len(), 1);
    assert_eq!(
        (r.corruptions()[0].path.clone(), r.corruptions()[0].offset),
        (first, 8)
    );
    // Samples in later segments point at refs whose series are gone: they
    // are counted, not applied, and nothing is misattributed.
    assert!(r.samples_unknown_series > 0);
    assert!(batches(&db).is_empty());
}
