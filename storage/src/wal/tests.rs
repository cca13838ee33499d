//! WAL tests across writer, reader and checkpoint.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::segment::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::*;
use crate::labels::Labels;

/// A replayed record, owned.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Series(Vec<RefSeries>),
    Samples(Vec<RefSample>),
    Tombstones(Vec<Tombstone>),
    StSamples(Vec<RefStSample>),
}

impl Owned {
    fn as_record(&self) -> Record<'_> {
        match self {
            Owned::Series(s) => Record::Series(s),
            Owned::Samples(s) => Record::Samples(s),
            Owned::Tombstones(s) => Record::Tombstones(s),
            Owned::StSamples(s) => Record::StSamples(s),
        }
    }
    fn from_record(r: Record<'_>) -> Owned {
        match r {
            Record::Series(s) => Owned::Series(s.to_vec()),
            Record::Samples(s) => Owned::Samples(s.to_vec()),
            Record::Tombstones(s) => Owned::Tombstones(s.to_vec()),
            Record::StSamples(s) => Owned::StSamples(s.to_vec()),
        }
    }
}

/// Tests that are not about fsync use a long interval (one fsync at close)
/// so that they stay fast on a busy disk.
fn opts(segment_size: u64) -> WalOptions {
    WalOptions {
        segment_size,
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
    }
}

fn open(dir: &Path, segment_size: u64) -> (Wal, Vec<Owned>, ReplayStats) {
    let mut got = Vec::new();
    let (wal, stats) =
        Wal::open(dir, opts(segment_size), |r| got.push(Owned::from_record(r))).unwrap();
    (wal, got, stats)
}

fn replay_all(dir: &Path) -> (Vec<Owned>, ReplayStats) {
    let mut got = Vec::new();
    let stats = replay(dir, |r| got.push(Owned::from_record(r))).unwrap();
    (got, stats)
}

fn series(r: u64) -> Owned {
    Owned::Series(vec![RefSeries {
        series_ref: r,
        labels: Labels::from_pairs([("__name__", "m"), ("i", &r.to_string())]),
    }])
}

fn samples(r: u64, t0: i64, n: i64) -> Owned {
    Owned::Samples(
        (0..n)
            .map(|i| RefSample {
                series_ref: r,
                t: t0 + i,
                v: (t0 + i) as f64 * 0.5,
            })
            .collect(),
    )
}

/// A workload: series 0..4, then interleaved sample records.
fn workload() -> Vec<Owned> {
    let mut recs: Vec<Owned> = (0..4).map(series).collect();
    for round in 0..30 {
        for r in 0..4 {
            recs.push(samples(r, round * 10, 10));
        }
        if round % 5 == 0 {
            // Samples with start timestamps, for series 2 and 3.
            recs.push(Owned::StSamples(
                (2..4)
                    .map(|r| RefStSample {
                        series_ref: r,
                        t: round * 10 + 5,
                        v: round as f64,
                        st: round * 10 - 60,
                    })
                    .collect(),
            ));
        }
        if round == 10 {
            recs.push(Owned::Tombstones(vec![Tombstone {
                series_ref: 1,
                mint: 0,
                maxt: 5,
            }]));
        }
    }
    recs
}

fn write_all(wal: &Wal, recs: &[Owned]) {
    for r in recs {
        wal.log(&[r.as_record()]).unwrap();
    }
}

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    list_dir(dir).unwrap().segments
}

/// Byte offsets of every frame in a well-formed segment.
fn frame_offsets(path: &Path) -> Vec<u64> {
    let b = fs::read(path).unwrap();
    let mut off = SEGMENT_HEADER_LEN as usize;
    let mut out = Vec::new();
    while off + FRAME_HEADER_LEN <= b.len() {
        out.push(off as u64);
        let len = u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize;
        off += FRAME_HEADER_LEN + len;
    }
    out
}

#[test]
fn round_trip_across_segments_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let recs = workload();
    let (wal, got, _) = open(dir.path(), 2048);
    assert!(got.is_empty());
    write_all(&wal, &recs[..60]);
    drop(wal);
    let (wal, got, stats) = open(dir.path(), 2048);
    assert_eq!(got, recs[..60]);
    assert!(stats.corruptions.is_empty());
    write_all(&wal, &recs[60..]);
    assert!(wal.stats().segments_created > 1);
    drop(wal);
    let (got, stats) = replay_all(dir.path());
    assert_eq!(got, recs);
    assert!(stats.segments > 3, "small segments must rotate: {stats:?}");
    assert!(stats.corruptions.is_empty() && stats.torn_tail.is_none());
    // Plain samples plus the start-timestamp ones (2 every 5th round).
    assert_eq!(stats.samples, 30 * 4 * 10 + 6 * 2);
}

#[test]
fn one_call_with_many_records_splits_at_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let recs = workload();
    let (wal, _, _) = open(dir.path(), 1024);
    let batch: Vec<Record<'_>> = recs.iter().map(Owned::as_record).collect();
    wal.log(&batch).unwrap();
    drop(wal);
    let (got, stats) = replay_all(dir.path());
    assert_eq!(got, recs);
    assert!(stats.segments > 3);
    // No segment holds more than its limit unless a single frame is bigger.
    for (_, p) in segments(dir.path()) {
        let offs = frame_offsets(&p);
        let len = fs::metadata(&p).unwrap().len();
        assert!(
            len <= 1024 || offs.len() == 1,
            "{} is {len} bytes",
            p.display()
        );
    }
}

#[test]
fn torn_tail_is_truncated_at_every_cut() {
    let recs = workload();
    let base = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(base.path(), 1 << 20);
    write_all(&wal, &recs);
    drop(wal);
    let seg = segments(base.path()).last().unwrap().1.clone();
    let full = fs::read(&seg).unwrap();
    let offs = frame_offsets(&seg);
    assert_eq!(offs.len(), recs.len());
    // Cut inside the header, inside frame headers, inside payloads.
    let mut cuts: Vec<u64> = vec![3];
    for &o in offs.iter().step_by(7) {
        cuts.extend([
            o + 1,
            o + FRAME_HEADER_LEN as u64,
            o + FRAME_HEADER_LEN as u64 + 3,
        ]);
    }
    for cut in cuts {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(seg.file_name().unwrap());
        fs::write(&p, &full[..cut as usize]).unwrap();
        // Every frame starting before the cut is complete except the one the
        // cut falls in.
        let complete = offs.iter().filter(|&&o| o < cut).count().saturating_sub(1);
        let (wal, got, stats) = open(dir.path(), 1 << 20);
        assert_eq!(got, recs[..complete], "cut at {cut}");
        assert!(
            stats.corruptions.is_empty(),
            "cut at {cut}: {:?}",
            stats.corruptions
        );
        // A segment torn inside its header is removed, and the writer then
        // creates a fresh segment under the same index.
        let expected_len = if cut < SEGMENT_HEADER_LEN {
            Some(SEGMENT_HEADER_LEN)
        } else {
            Some(offs[complete])
        };
        assert_eq!(
            fs::metadata(&p).ok().map(|m| m.len()),
            expected_len,
            "cut at {cut}"
        );
        assert!(stats.torn_tail.is_some());
        // The writer continues in a new segment; the next replay is clean.
        write_all(&wal, &recs[..2]);
        drop(wal);
        let (got, stats) = replay_all(dir.path());
        assert_eq!(got.len(), complete + 2);
        assert!(stats.corruptions.is_empty() && stats.torn_tail.is_none());
    }
}

#[test]
fn zero_filled_tail_is_torn_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let recs = workload();
    let (wal, _, _) = open(dir.path(), 1 << 20);
    write_all(&wal, &recs[..10]);
    drop(wal);
    let seg = segments(dir.path()).last().unwrap().1.clone();
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    let (_, got, stats) = open(dir.path(), 1 << 20);
    assert_eq!(got, recs[..10]);
    assert!(stats.corruptions.is_empty());
    assert_eq!(stats.torn_tail.as_ref().map(|t| t.1), Some(len));
}

#[test]
fn corrupt_middle_record_is_reported_and_later_segments_replay() {
    let dir = tempfile::tempdir().unwrap();
    let recs = workload();
    let (wal, _, _) = open(dir.path(), 1 << 20);
    write_all(&wal, &recs[..40]);
    drop(wal);
    let (wal, _, _) = open(dir.path(), 1 << 20);
    write_all(&wal, &recs[40..80]);
    drop(wal);
    let (wal, _, _) = open(dir.path(), 1 << 20);
    write_all(&wal, &recs[80..]);
    drop(wal);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 3);
    let mid = &segs[1].1;
    let offs = frame_offsets(mid);
    let bad = offs[15];
    let mut bytes = fs::read(mid).unwrap();
    bytes[bad as usize + FRAME_HEADER_LEN + 5] ^= 0x40;
    fs::write(mid, &bytes).unwrap();

    let (got, stats) = replay_all(dir.path());
    assert_eq!(stats.corruptions.len(), 1);
    let c = &stats.corruptions[0];
    assert_eq!(&c.path, mid);
    assert_eq!(c.offset, bad);
    assert_eq!(c.skipped_bytes, bytes.len() as u64 - bad);
    assert!(c.reason.contains("checksum"), "{c}");
    let msg = WalError::Corrupt(c.clone()).to_string();
    assert!(msg.contains(&mid.display().to_string()) && msg.contains(&bad.to_string()));
    // Segment 0 whole, segment 1 up to the bad record, segment 2 whole.
    let mut want: Vec<Owned> = recs[..40].to_vec();
    want.extend_from_slice(&recs[40..55]);
    want.extend_from_slice(&recs[80..]);
    assert_eq!(got, want);
    assert!(stats.torn_tail.is_none());
}

#[test]
fn corrupt_frame_header_and_segment_header_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let recs = workload();
    for chunk in recs.chunks(40) {
        let (wal, _, _) = open(dir.path(), 1 << 20);
        write_all(&wal, chunk);
        drop(wal);
    }
    let segs = segments(dir.path());
    // Length field of a frame in segment 0; magic of segment 1.
    let offs = frame_offsets(&segs[0].1);
    let mut b = fs::read(&segs[0].1).unwrap();
    b[offs[3] as usize + 1] ^= 0xff;
    fs::write(&segs[0].1, &b).unwrap();
    let mut b1 = fs::read(&segs[1].1).unwrap();
    b1[0] = b'X';
    fs::write(&segs[1].1, &b1).unwrap();
    let (got, stats) = replay_all(dir.path());
    let where_: Vec<(PathBuf, u64)> = stats
        .corruptions
        .iter()
        .map(|c| (c.path.clone(), c.offset))
        .collect();
    assert_eq!(
        where_,
        vec![(segs[0].1.clone(), offs[3]), (segs[1].1.clone(), 0)]
    );
    let mut want = recs[..3].to_vec();
    want.extend_from_slice(&recs[80..]);
    assert_eq!(got, want);
}

#[test]
fn corrupt_last_record_of_last_segment_is_corruption_not_torn() {
    // A complete frame with a bad payload checksum was fully written, so it
    // is not a crash artefact: it must be reported, not silently dropped.
    let dir = tempfile::tempdir().unwrap();
    let recs = workload();
    let (wal, _, _) = open(dir.path(), 1 << 20);
    write_all(&wal, &recs[..5]);
    drop(wal);
    let seg = segments(dir.path()).last().unwrap().1.clone();
    let mut b = fs::read(&seg).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    fs::write(&seg, &b).unwrap();
    let (_, got, stats) = open(dir.path(), 1 << 20);
    assert_eq!(got, recs[..4]);
    assert_eq!(stats.corruptions.len(), 1);
    assert!(stats.torn_tail.is_none());
}

#[test]
fn checkpoint_then_replay_equals_filtered_history() {
    let dir = tempfile::tempdir().unwrap();
    let recs = workload();
    let (wal, _, _) = open(dir.path(), 1500);
    write_all(&wal, &recs[..70]);
    let keep = |r: u64| r != 2;
    let mint = 100;
    let cp = wal.checkpoint(keep, mint).unwrap().unwrap();
    assert!(cp.segments_deleted > 1);
    assert!(cp.samples_dropped > 0 && cp.series_dropped == 1);
    write_all(&wal, &recs[70..]);
    drop(wal);

    let filter = |o: &Owned| -> Option<Owned> {
        let o = match o {
            Owned::Series(s) => {
                Owned::Series(s.iter().filter(|x| keep(x.series_ref)).cloned().collect())
            }
            Owned::Samples(s) => Owned::Samples(
                s.iter()
                    .filter(|x| keep(x.series_ref) && x.t >= mint)
                    .copied()
                    .collect(),
            ),
            Owned::Tombstones(s) => Owned::Tombstones(
                s.iter()
                    .filter(|x| keep(x.series_ref) && x.maxt >= mint)
                    .copied()
                    .collect(),
            ),
            Owned::StSamples(s) => Owned::StSamples(
                s.iter()
                    .filter(|x| keep(x.series_ref) && x.t >= mint)
                    .copied()
                    .collect(),
            ),
        };
        (!o.as_record().is_empty()).then_some(o)
    };
    let mut want: Vec<Owned> = recs[..70].iter().filter_map(filter).collect();
    want.extend_from_slice(&recs[70..]);
    let (got, stats) = replay_all(dir.path());
    assert_eq!(stats.checkpoint, Some(cp.index));
    assert_eq!(got, want);

    // A second checkpoint folds the first one in.
    let (wal, got2, _) = open(dir.path(), 1500);
    assert_eq!(got2, want);
    let cp2 = wal.checkpoint(|_| true, 0).unwrap().unwrap();
    assert!(cp2.index > cp.index);
    drop(wal);
    let (got3, _) = replay_all(dir.path());
    assert_eq!(got3, want);
    let l = list_dir(dir.path()).unwrap();
    assert_eq!(l.checkpoints.len(), 1);
    assert!(l.segments.iter().all(|s| s.0 > cp2.index));
}

#[test]
fn interrupted_checkpoint_leftovers_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let recs = workload();
    let (wal, _, _) = open(dir.path(), 1500);
    write_all(&wal, &recs);
    drop(wal);
    let segs = segments(dir.path());
    // Simulate a crash after publishing a checkpoint but before deletion,
    // plus a half-written checkpoint from another attempt.
    let upto = segs[2].0;
    checkpoint(dir.path(), upto, |_| true, i64::MIN).unwrap();
    for (_, p) in &segs[..3] {
        fs::write(p, b"stale leftovers, not a segment").unwrap();
    }
    fs::create_dir(
        dir.path()
            .join(format!("{}.tmp", checkpoint_name(upto + 1))),
    )
    .unwrap();
    let (wal, got, stats) = open(dir.path(), 1500);
    assert_eq!(got, recs);
    assert!(stats.corruptions.is_empty(), "{:?}", stats.corruptions);
    drop(wal);
    let l = list_dir(dir.path()).unwrap();
    assert!(l.tmp_checkpoints.is_empty());
    assert!(l.segments.iter().all(|s| s.0 > upto));
}

#[test]
fn concurrent_writers_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_size: 64 << 10,
        fsync: FsyncPolicy::Always,
    };
    let (wal, _) = Wal::open(dir.path(), o, |_| {}).unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let s = [RefSample {
                        series_ref: t,
                        t: i,
                        v: i as f64,
                    }];
                    wal.log(&[Record::Samples(&s)]).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let st = wal.stats();
    assert_eq!(st.log_calls, 400);
    assert!(st.fsyncs <= st.log_calls + st.segments_created);
    drop(wal);
    let (got, _) = replay_all(dir.path());
    // Per writer, its records appear in the order it logged them.
    let mut next = [0i64; 8];
    for o in got {
        let Owned::Samples(s) = o else {
            panic!("unexpected {o:?}")
        };
        let w = s[0].series_ref as usize;
        assert_eq!(s[0].t, next[w]);
        next[w] += 1;
    }
    assert_eq!(next, [50; 8]);
}

#[test]
fn interval_policy_syncs_in_background_and_stops_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_size: 1 << 20,
        fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
    };
    let (wal, _) = Wal::open(dir.path(), o, |_| {}).unwrap();
    let recs = workload();
    write_all(&wal, &recs[..10]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while wal.stats().fsyncs == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "background fsync never ran"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    wal.close().unwrap();
    let (got, _) = replay_all(dir.path());
    assert_eq!(got, recs[..10]);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Replaying arbitrary damage of a valid segment never panics, never
        /// returns a record that was not written, and keeps written order.
        #[test]
        fn damaged_segments_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            is_last in any::<bool>(),
        ) {
            let recs = workload();
            let dir = tempfile::tempdir().unwrap();
            let seg = dir.path().join(segment_name(0));
            let mut b = source_segment().clone();
            for (i, x) in &flips {
                let i = i.index(b.len());
                b[i] ^= x;
            }
            let keep = cut.index(b.len() + 1);
            b.truncate(keep);
            fs::write(&seg, &b).unwrap();
            if !is_last {
                // Make the damaged segment a middle one.
                fs::write(dir.path().join(segment_name(seg_index(&seg) + 1)), super::super::segment::segment_header()).unwrap();
            }
            let (got, _) = replay_all(dir.path());
            let mut pos = 0;
            for g in &got {
                let found = recs[pos..30].iter().position(|r| r == g);
                prop_assert!(found.is_some(), "replayed a record that was never written: {g:?}");
                pos += found.unwrap() + 1;
            }
        }
    }

    /// A segment holding the first 30 workload records, written once.
    fn source_segment() -> &'static Vec<u8> {
        static SEG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        SEG.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _, _) = open(dir.path(), 1 << 20);
            write_all(&wal, &workload()[..30]);
            drop(wal);
            fs::read(&segments(dir.path()).last().unwrap().1).unwrap()
        })
    }

    fn seg_index(p: &Path) -> u64 {
        p.file_name().unwrap().to_str().unwrap().parse().unwrap()
    }
}

#[test]
fn second_writer_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), 1 << 20);
    let err = Wal::open(dir.path(), opts(1 << 20), |_| {}).err().unwrap();
    assert!(matches!(err, WalError::Locked { .. }), "{err}");
    drop(wal);
    let (_wal2, _, _) = open(dir.path(), 1 << 20);
}

#[test]
fn checkpoint_without_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, _) = open(dir.path(), 1500);
    write_all(&wal, &workload());
    let cp = wal.checkpoint(|_| true, i64::MIN).unwrap().unwrap();
    drop(wal);
    fs::remove_file(cp.path.join(segment_name(0))).unwrap();
    let (_, stats) = replay_all(dir.path());
    assert_eq!(stats.corruptions.len(), 1);
    assert_eq!(stats.corruptions[0].path, cp.path);
}
