//! A head with mapped chunk files must read exactly like one without, across
//! chunk cuts, file cuts and truncations, under concurrent appends, and
//! across a `Db` restart (which rebuilds the files from the WAL).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::chunk::collect_samples;
use crate::labels::Matcher;
use crate::querier::Querier;

const STEP: i64 = 15_000;

fn l(i: usize) -> Labels {
    let inst = format!("host-{i}:9100");
    Labels::from_pairs([
        ("__name__", "up"),
        ("job", "node"),
        ("instance", inst.as_str()),
    ])
}

/// A value that depends on (series, t) only, so readers can check samples.
fn value(i: usize, t: i64) -> f64 {
    ((t / STEP) % 97) as f64 * 1.5 + i as f64
}

fn all(h: &Head) -> Vec<(Labels, Vec<(i64, f64)>)> {
    h.select(
        i64::MIN,
        i64::MAX,
        &[Matcher::equal("__name__", "up")],
        None,
    )
    .unwrap()
    .into_iter()
    .map(|s| {
        let v = collect_samples(&mut s.iter()).unwrap();
        (s.labels, v)
    })
    .collect()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn append_range(heads: &[&Head], series: usize, from: i64, to: i64) {
    for k in from..to {
        let t = k * STEP;
        for i in 0..series {
            for h in heads {
                h.append(&l(i), t, value(i, t)).unwrap();
            }
        }
    }
}

#[test]
fn mapped_chunks_read_like_heap_chunks_across_cuts_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("chunks_head");
    let mapped = Head::with_chunks_dir_sized(HeadOptions::default(), &cdir, 1024).unwrap();
    let heap = Head::new(HeadOptions::default());
    assert_eq!(mapped.chunks_dir(), Some(cdir.as_path()));
    assert_eq!(heap.chunks_dir(), None);

    // Before the first cut nothing is on disk.
    append_range(&[&mapped, &heap], 8, 0, 119);
    assert_eq!(all(&mapped), all(&heap));
    assert_eq!(mapped.stats().mapped_chunk_bytes, 0);
    assert_eq!(files_in(&cdir), 0);

    // One cut per series: the first chunk moves to disk, reads unchanged.
    append_range(&[&mapped, &heap], 8, 119, 130);
    assert_eq!(all(&mapped), all(&heap));
    let s = mapped.stats();
    assert!(s.mapped_chunk_bytes > 0);
    assert_eq!(heap.stats().mapped_chunk_bytes, 0);
    assert!(
        s.series_bytes < heap.stats().series_bytes,
        "{s:?} vs {:?}",
        heap.stats()
    );
    let one = mapped.series(SeriesRef(1), i64::MIN, i64::MAX).unwrap();
    assert!(one.chunks[0].chunk.chunk_bytes().is_mapped());
    assert!(!one.chunks[1].chunk.chunk_bytes().is_mapped(), "open chunk");

    // A full 2h head: several files.
    append_range(&[&mapped, &heap], 8, 130, 480);
    let before = all(&mapped);
    assert_eq!(before, all(&heap));
    assert_eq!(before[0].1.len(), 480);
    let files = mapped.num_chunk_files();
    assert!(files >= 3, "{files} files of 1 KiB");
    assert_eq!(files_in(&cdir), files);

    let held = mapped.series(SeriesRef(1), i64::MIN, i64::MAX).unwrap();
    assert_eq!(held.labels, before[0].0);
    // Truncating the first hour drops its chunks and the files holding only
    // those; what is left reads the same as from the heap head.
    let cut = 240 * STEP;
    let r1 = mapped.truncate_before(cut);
    let r2 = heap.truncate_before(cut);
    assert_eq!(r1, r2);
    let after = all(&mapped);
    assert_eq!(after, all(&heap));
    assert!(after[0].1.first().unwrap().0 <= cut);
    assert!(mapped.num_chunk_files() < files);
    assert_eq!(files_in(&cdir), mapped.num_chunk_files());
    // A series read before the truncation still decodes afterwards, although
    // files it points into were deleted: its chunks hold their maps.
    assert_eq!(collect_samples(&mut held.iter()).unwrap(), before[0].1);

    // Everything gone: every file deleted.
    let dropped = mapped.truncate_before(i64::MAX);
    assert_eq!(dropped.len(), 8);
    assert_eq!(mapped.num_chunk_files(), 0);
    assert_eq!(files_in(&cdir), 0);
}

#[test]
fn open_chunk_starts_small_after_a_cut() {
    let h = Head::new(HeadOptions::default());
    for k in 0..121 {
        // Noisy values: ~8 bytes a sample, a chunk of ~1 KiB.
        h.append(&l(0), k * STEP, (k as f64).sin() * 1e3).unwrap();
    }
    // One full chunk (its exact size) and one sample in a fresh buffer.
    let full = h.series(SeriesRef(1), 0, i64::MAX).unwrap().chunks[0]
        .chunk
        .byte_size();
    let s = h.series_by_ref(1).unwrap();
    let st = s.state.lock();
    assert!(
        full > 200,
        "the test needs a chunk larger than a new buffer: {full}"
    );
    let list = st.heap_size() - full - 2 * std::mem::size_of::<usize>();
    assert!(list <= 256, "open buffer + list = {list} bytes");
}

#[test]
fn appends_and_reads_during_cuts_and_truncations() {
    let dir = tempfile::tempdir().unwrap();
    let h = Arc::new(
        Head::with_chunks_dir_sized(
            HeadOptions {
                samples_per_chunk: 8,
                out_of_order_window_ms: 0,
                stripe_size: 16,
                ..HeadOptions::default()
            },
            &dir.path().join("chunks_head"),
            1024,
        )
        .unwrap(),
    );
    let series = 16;
    let steps = 600i64;
    let done = Arc::new(AtomicBool::new(false));
    // Two writers in step (the head refuses a sample an hour behind its
    // newest, and the truncator follows the newest).
    let step = Arc::new(std::sync::Barrier::new(2));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (h, step) = (h.clone(), step.clone());
            std::thread::spawn(move || {
                for k in 0..steps {
                    step.wait();
                    let t = k * STEP;
                    for i in (w..series).step_by(2) {
                        h.append(&l(i), t, value(i, t)).unwrap();
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (h, done) = (h.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    for s in h
                        .select(i64::MIN, i64::MAX, &[Matcher::equal("job", "node")], None)
                        .unwrap()
                    {
                        let inst = s.labels.get("instance").unwrap().to_string();
                        let i: usize = inst["host-".len()..inst.len() - 5].parse().unwrap();
                        let got = collect_samples(&mut s.iter()).unwrap();
                        // Contiguous, in order, and the right values.
                        for w in got.windows(2) {
                            assert_eq!(w[1].0 - w[0].0, STEP, "{inst}");
                        }
                        for &(t, v) in &got {
                            assert_eq!(v, value(i, t), "{inst} at {t}");
                        }
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writing = Arc::new(AtomicBool::new(true));
    let truncator = {
        let (h, writing) = (h.clone(), writing.clone());
        std::thread::spawn(move || {
            let mut during_appends = 0;
            while writing.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(2));
                let newest = h.max_time();
                if newest > 100 * STEP && writing.load(Ordering::Relaxed) {
                    h.truncate_before(newest - 50 * STEP);
                    during_appends += 1;
                }
            }
            during_appends
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    writing.store(false, Ordering::Relaxed);
    assert!(
        truncator.join().unwrap() > 0,
        "no truncation while appending"
    );
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    // The newest samples are all there and the files match the count.
    for (labels, v) in all(&h) {
        assert_eq!(v.last().unwrap().0, (steps - 1) * STEP, "{labels}");
        assert!(v[0].0 > 0, "{labels}: truncated");
    }
    assert_eq!(
        files_in(&dir.path().join("chunks_head")),
        h.num_chunk_files()
    );
    assert!(h.stats().mapped_chunk_bytes > 0);
}

#[test]
fn db_restart_deletes_chunk_files_and_rebuilds_them_from_the_wal() {
    use crate::db::{Db, DbOptions};
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("chunks_head");
    let expect = {
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        for k in 0..300 {
            let t = k * STEP;
            let batch: Vec<_> = (0..4).map(|i| (l(i), t, value(i, t))).collect();
            db.append(&batch).unwrap();
        }
        assert!(db.head().stats().mapped_chunk_bytes > 0);
        assert!(files_in(&cdir) > 0);
        let expect = all(db.head());
        db.close().unwrap();
        expect
    };
    // A stray file from the previous run must not survive the open.
    std::fs::write(cdir.join("999999"), b"stale").unwrap();
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    assert!(!cdir.join("999999").exists());
    assert_eq!(all(db.head()), expect);
    assert!(db.head().stats().mapped_chunk_bytes > 0, "replay re-mapped");
    assert_eq!(files_in(&cdir), db.head().num_chunk_files());
}

#[test]
fn memory_per_series_with_a_full_head() {
    // 480 samples at 15s per series (a full 2h head), 5 labels; reported
    // for both kinds of head (run with --nocapture to see the figures).
    let dir = tempfile::tempdir().unwrap();
    let mapped = Head::with_chunks_dir(HeadOptions::default(), dir.path().join("c")).unwrap();
    let heap = Head::new(HeadOptions::default());
    append_range(&[&mapped, &heap], 200, 0, 480);
    let (m, h) = (mapped.stats(), heap.stats());
    println!(
        "bytes/series after 480 samples: mapped head {} (+{} B mapped), heap head {}",
        m.bytes_per_series(),
        m.mapped_chunk_bytes / m.num_series,
        h.bytes_per_series()
    );
    assert_eq!(m.num_chunks, h.num_chunks);
    assert_eq!(h.mapped_chunk_bytes, 0);
    // Three of four chunks moved out of the heap.
    assert!(m.bytes_per_series() + m.mapped_chunk_bytes / m.num_series / 2 < h.bytes_per_series());
}
