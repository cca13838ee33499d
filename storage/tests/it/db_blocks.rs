//! `Db` over days of data: head persistence into blocks, compaction,
//! restart, retention and deletes, checked against the samples appended.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pharos_storage::block::{Block, BlockMeta};
use pharos_storage::chunk::{SampleIterator, ValueType};
use pharos_storage::db::{BlockOptions, Db, DbOptions};
use pharos_storage::labels::{Labels, MatchType, Matcher};
use pharos_storage::querier::Querier;
use pharos_storage::wal::{FsyncPolicy, WalOptions};

const HOUR: i64 = 3600 * 1000;
const STEP: i64 = 15_000;
/// A 6h-aligned start near 2023-11-14, so block and compaction ranges fall
/// on round boundaries.
const T0: i64 = 1_699_999_200_000 - 1_699_999_200_000 % (6 * HOUR);
const SERIES: u64 = 300;

type Dump = BTreeMap<String, Vec<(i64, u64)>>;

fn lbl(i: u64) -> Labels {
    Labels::from_pairs([
        ("__name__", "db_blocks"),
        ("job", if i % 2 == 0 { "even" } else { "odd" }),
        ("i", &i.to_string()),
    ])
}

fn value(i: u64, t: i64) -> f64 {
    ((t - T0) / STEP) as f64 * 0.5 + i as f64
}

fn opts() -> DbOptions {
    DbOptions {
        wal: WalOptions {
            segment_size: 1 << 20,
            fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
        },
        ..DbOptions::default()
    }
}

fn all() -> Matcher {
    Matcher::new(MatchType::Equal, "__name__", "db_blocks").unwrap()
}

/// Every sample of every series through `Db`'s querier; also checks no
/// timestamp is served twice.
fn dump(db: &Db, mint: i64, maxt: i64) -> Dump {
    let mut out = Dump::new();
    for s in db.select(mint, maxt, &[all()], None).unwrap() {
        let mut it = s.iter_range(mint, maxt);
        let mut v = Vec::new();
        while it.next() == ValueType::Float {
            let (t, x) = it.at();
            if let Some(&(last, _)) = v.last() {
                assert!(t > last, "{}: {t} after {last}", s.labels);
            }
            v.push((t, x.to_bits()));
        }
        assert!(it.err().is_none());
        if !v.is_empty() {
            out.insert(s.labels.to_string(), v);
        }
    }
    out
}

/// What was appended, minus `deleted(i, t)`, restricted to `[lo, hi)`.
fn expected(end: i64, lo: i64, hi: i64, deleted: impl Fn(u64, i64) -> bool) -> Dump {
    let mut out = Dump::new();
    for i in 0..SERIES {
        let v: Vec<(i64, u64)> = (0..)
            .map(|k| T0 + k * STEP)
            .take_while(|&t| t < end)
            .filter(|&t| t >= lo && t < hi && !deleted(i, t))
            .map(|t| (t, value(i, t).to_bits()))
            .collect();
        if !v.is_empty() {
            out.insert(lbl(i).to_string(), v);
        }
    }
    out
}

/// Appends `[from, to)` at 15s for every series, one batch per timestamp,
/// calling `maintain` at every whole hour as the server's loop would.
fn ingest(db: &Db, from: i64, to: i64) {
    let mut t = from;
    while t < to {
        let batch: Vec<(Labels, i64, f64)> =
            (0..SERIES).map(|i| (lbl(i), t, value(i, t))).collect();
        let st = db.append(&batch).unwrap();
        assert!(st.rejected.is_empty(), "{:?}", st.rejected.first());
        t += STEP;
        if (t - T0) % HOUR == 0 {
            db.maintain().unwrap();
        }
    }
}

/// Block directories on disk (name → meta), checking each against
/// `Block::verify`.
fn on_disk(dir: &Path) -> BTreeMap<String, BlockMeta> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".tmp"),
            "leftover {name} in {}",
            dir.display()
        );
        // The WAL and anything else that is not a block (a ULID name).
        if name.parse::<pharos_storage::block::Ulid>().is_err() {
            continue;
        }
        let b = Block::open(&e.path()).unwrap();
        b.verify().unwrap();
        out.insert(name, b.meta());
    }
    out
}

fn ranges(db: &Db) -> Vec<(i64, i64, u32)> {
    db.blocks()
        .iter()
        .map(|b| {
            let m = b.meta();
            (m.min_time - T0, m.max_time - T0, m.compaction.level)
        })
        .collect()
}

#[test]
fn ten_hours_become_blocks_compact_survive_restart_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let end = T0 + 10 * HOUR;
    let db = Db::open(dir.path(), opts()).unwrap();
    // Series 7 loses [1h, 3h30m] midway: the first half from a block (its
    // tombstones), the second from the head (a WAL tombstone).
    let gone = |i: u64, t: i64| i == 7 && (T0 + HOUR..=T0 + 7 * HOUR / 2).contains(&t);
    ingest(&db, T0, T0 + 4 * HOUR);
    assert_eq!(ranges(&db), vec![(0, 2 * HOUR, 1)]);
    let m = Matcher::new(MatchType::Equal, "i", "7").unwrap();
    let st = db
        .delete(&[all(), m], T0 + HOUR, T0 + 7 * HOUR / 2)
        .unwrap();
    assert_eq!((st.block_series, st.head_series), (1, 1));
    assert_eq!(
        dump(&db, i64::MIN, i64::MAX),
        expected(T0 + 4 * HOUR, i64::MIN, i64::MAX, gone)
    );
    ingest(&db, T0 + 4 * HOUR, end);

    // Cuts at 3h+, 5h+, 7h+ and 9h+ of data gave [0,2h) … [6h,8h); once
    // the three before the newest filled the aligned 6h range they were
    // merged into [0,6h) (level 2), as Prometheus's planner does.
    assert_eq!(ranges(&db), vec![(0, 6 * HOUR, 2), (6 * HOUR, 8 * HOUR, 1)]);
    let disk = on_disk(dir.path());
    assert_eq!(disk.len(), 2, "{:?}", disk.keys());
    let l2 = &db.blocks()[0];
    assert!(disk.contains_key(&l2.id().to_string()));
    // The compaction dropped the deleted samples (and the head cut never
    // wrote its share): no tombstones left, sample count exact.
    let want_l2 = expected(end, T0, T0 + 6 * HOUR, gone);
    assert_eq!(l2.tombstones().num_intervals(), 0);
    assert_eq!(
        l2.meta().stats.num_samples,
        want_l2.values().map(|v| v.len() as u64).sum::<u64>()
    );
    assert_eq!(l2.meta().compaction.sources.len(), 3);
    // The head kept only the last two hours.
    assert_eq!(db.head().min_time(), T0 + 8 * HOUR);
    let want = expected(end, i64::MIN, i64::MAX, gone);
    assert_eq!(dump(&db, i64::MIN, i64::MAX), want);
    // Sub-ranges crossing block and head boundaries.
    for (lo, hi) in [
        (T0 + 3 * HOUR, T0 + 7 * HOUR),
        (T0 + 5 * HOUR + 7_000, T0 + 9 * HOUR),
    ] {
        assert_eq!(dump(&db, lo, hi - 1), expected(end, lo, hi, gone));
    }
    let jobs = db.label_values("job", T0, T0 + HOUR, &[]).unwrap();
    assert_eq!(jobs, vec!["even".to_string(), "odd".to_string()]);
    let names = db.label_names(T0, end, &[]).unwrap();
    assert_eq!(names, vec!["__name__", "i", "job"]);
    // A snapshot of the block set stays readable across a compaction that
    // deletes its blocks.
    let held = db.blocks();
    drop(db);

    let db = Db::open(dir.path(), opts()).unwrap();
    let rep = db.open_report();
    assert_eq!(rep.blocks, 2);
    assert!(rep.corrupt_blocks.is_empty());
    assert_eq!(rep.samples_rejected, 0);
    assert_eq!(ranges(&db), vec![(0, 6 * HOUR, 2), (6 * HOUR, 8 * HOUR, 1)]);
    assert_eq!(db.head().min_valid_time(), T0 + 8 * HOUR);
    assert_eq!(dump(&db, i64::MIN, i64::MAX), want);
    drop(db);

    // Retention of 1h behind the newest block's end (8h): [0,6h) goes.
    let bopts = BlockOptions {
        retention_time_ms: Some(HOUR),
        ..BlockOptions::default()
    };
    let db = Db::open_with(dir.path(), opts(), bopts).unwrap();
    let r = db.maintain().unwrap();
    assert!(r.head_blocks.is_empty() && r.compacted.is_empty());
    assert_eq!(r.retention_deleted, vec![held[0].id()]);
    assert_eq!(ranges(&db), vec![(6 * HOUR, 8 * HOUR, 1)]);
    assert_eq!(on_disk(dir.path()).len(), 1);
    assert_eq!(
        dump(&db, i64::MIN, i64::MAX),
        expected(end, T0 + 6 * HOUR, i64::MAX, gone)
    );
    // The deleted block's files were unlinked, yet a reader holding it
    // still gets its data.
    let s = held[0].select(T0, T0 + HOUR, &[all()], None).unwrap();
    assert_eq!(s.len(), SERIES as usize);
}

#[test]
fn corrupt_and_unfinished_blocks_are_skipped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    ingest(&db, T0, T0 + 4 * HOUR);
    let blocks = db.blocks();
    assert_eq!(blocks.len(), 1);
    let id = blocks[0].id().to_string();
    drop(blocks);
    let want = dump(&db, i64::MIN, i64::MAX);
    // An unfinished write, and a second copy of the block whose index is
    // garbage.
    let tmp = dir.path().join("01HF0000000000000000000000.tmp");
    std::fs::create_dir_all(tmp.join("chunks")).unwrap();
    let bad = dir.path().join("01HF0000000000000000000001");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["meta.json", "tombstones"] {
        std::fs::copy(dir.path().join(&id).join(f), bad.join(f)).unwrap();
    }
    std::fs::create_dir_all(bad.join("chunks")).unwrap();
    std::fs::write(bad.join("index"), b"not an index").unwrap();

    // While another Db owns the directory, open fails without touching it.
    assert!(Db::open(dir.path(), opts()).is_err());
    assert!(tmp.exists() && bad.exists());
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    let rep = db.open_report();
    assert_eq!(rep.blocks, 1);
    assert_eq!(rep.corrupt_blocks.len(), 1);
    assert_eq!(rep.corrupt_blocks[0].0, bad);
    assert!(rep.leftovers_removed >= 1);
    assert!(!tmp.exists());
    assert!(dir
        .path()
        .join("01HF0000000000000000000001.corrupt")
        .exists());
    assert_eq!(dump(&db, i64::MIN, i64::MAX), want);
    // Compaction keeps working with the bad block set aside.
    ingest(&db, T0 + 4 * HOUR, T0 + 6 * HOUR);
    assert_eq!(db.blocks().len(), 2);
}

#[test]
fn head_deletes_replay_from_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    ingest(&db, T0, T0 + HOUR);
    let m = Matcher::new(MatchType::Regex, "i", "1[0-9]").unwrap();
    let st = db.delete(&[m], T0 + 600_000, T0 + 1_200_000).unwrap();
    assert_eq!((st.head_series, st.block_series), (10, 0));
    // Appends after the delete are not hidden by it.
    ingest(&db, T0 + HOUR, T0 + 2 * HOUR);
    let gone =
        |i: u64, t: i64| (10..20).contains(&i) && (T0 + 600_000..=T0 + 1_200_000).contains(&t);
    let want = expected(T0 + 2 * HOUR, i64::MIN, i64::MAX, gone);
    assert_eq!(dump(&db, i64::MIN, i64::MAX), want);
    assert!(db.delete(&[], 0, 1).is_err());
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(db.open_report().tombstones_applied, 10);
    assert_eq!(dump(&db, i64::MIN, i64::MAX), want);
    // Cut to blocks: the deleted samples never reach disk.
    ingest(&db, T0 + 2 * HOUR, T0 + 4 * HOUR);
    let b = &db.blocks()[0];
    assert_eq!(
        b.meta().stats.num_samples,
        expected(T0 + 2 * HOUR, T0, T0 + 2 * HOUR, gone)
            .values()
            .map(|v| v.len() as u64)
            .sum::<u64>()
    );
    assert_eq!(
        dump(&db, i64::MIN, i64::MAX),
        expected(T0 + 4 * HOUR, i64::MIN, i64::MAX, gone)
    );
}

#[test]
fn background_thread_persists_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(Db::open(dir.path(), opts()).unwrap());
    let bg = db.start_background(Duration::from_millis(20));
    assert!(bg.is_running());
    let mut t = T0;
    while t < T0 + 4 * HOUR {
        let batch: Vec<(Labels, i64, f64)> = (0..20).map(|i| (lbl(i), t, value(i, t))).collect();
        assert!(db.append(&batch).unwrap().rejected.is_empty());
        t += STEP;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.blocks().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(bg);
    assert_eq!(ranges(&db), vec![(0, 2 * HOUR, 1)]);
    let got = dump(&db, i64::MIN, i64::MAX);
    assert_eq!(got.len(), 20);
    assert!(got.values().all(|v| v.len() == (4 * HOUR / STEP) as usize));
}

/// `promtool tsdb analyze` accepts a block Db compacted (skipped without
/// promtool unless `PHAROS_REQUIRE_PEERS=1`).
#[test]
fn promtool_analyzes_a_compacted_db_block() {
    let promtool = std::env::var_os("PROMTOOL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "promtool".into());
    let available = Command::new(&promtool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert_ne!(
            std::env::var("PHAROS_REQUIRE_PEERS").as_deref(),
            Ok("1"),
            "PHAROS_REQUIRE_PEERS=1 but promtool ({}) cannot be run",
            promtool.display()
        );
        eprintln!("note: promtool not found; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    ingest(&db, T0, T0 + 10 * HOUR);
    let b = db.blocks()[0].clone();
    assert_eq!(b.meta().compaction.level, 2);
    let id = b.id().to_string();
    drop(db);
    // Analyze a copy: promtool opens a whole data dir and would try to read
    // our WAL too.
    let copy = tempfile::tempdir().unwrap();
    let dst = copy.path().join(&id);
    std::fs::create_dir_all(dst.join("chunks")).unwrap();
    std::fs::create_dir_all(copy.path().join("wal")).unwrap();
    for e in std::fs::read_dir(b.dir()).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    for e in std::fs::read_dir(b.dir().join("chunks")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join("chunks").join(e.file_name())).unwrap();
    }
    let out = Command::new(&promtool)
        .args(["tsdb", "analyze"])
        .arg(copy.path())
        .arg(&id)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("Block ID: {id}")), "{text}");
    assert!(text.contains(&format!("Series: {SERIES}")), "{text}");
}

/// Timings of the block path (run in release, ignored by default):
/// `cargo test --release -p pharos-storage --test it db_blocks::perf -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run in release"]
fn perf_head_persistence_and_compaction() {
    use std::time::Instant;
    let n: u64 = std::env::var("PHAROS_PERF_SERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let series: Vec<Labels> = (0..n)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", "perf"),
                ("instance", &format!("host-{}", i / 10)),
                ("i", &i.to_string()),
            ])
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let (mut append, mut cut, mut compact) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut t = T0;
    let end = T0 + 10 * HOUR;
    while t < end {
        let batch: Vec<(Labels, i64, f64)> = series
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), t, ((t - T0) / STEP) as f64 + i as f64))
            .collect();
        let s = Instant::now();
        db.append(&batch).unwrap();
        append += s.elapsed();
        t += STEP;
        if (t - T0) % HOUR == 0 {
            let s = Instant::now();
            db.compact_head().unwrap();
            cut += s.elapsed();
            let s = Instant::now();
            db.compact_blocks().unwrap();
            compact += s.elapsed();
        }
    }
    let samples = n * (10 * HOUR / STEP) as u64;
    let blocks = db.blocks();
    let in_blocks: u64 = blocks.iter().map(|b| b.meta().stats.num_samples).sum();
    let bytes: u64 = blocks.iter().map(|b| b.size_bytes().unwrap()).sum();
    let s = Instant::now();
    let got = db
        .select(
            T0,
            T0 + 10 * HOUR,
            &[Matcher::new(MatchType::Equal, "__name__", "perf").unwrap()],
            None,
        )
        .unwrap();
    let mut read = 0u64;
    for x in &got {
        let mut it = x.iter();
        while it.next() == ValueType::Float {
            read += 1;
        }
    }
    let q = s.elapsed();
    assert_eq!(read, samples);
    println!(
        "perf: {n} series x 10h @15s = {samples} samples; append {:.0} samples/s; \
         4 head cuts {:?} total ({:.0} samples/s); compaction {:?}; blocks {:?}; \
         {in_blocks} samples in blocks, {:.2} B/sample on disk; full read {:?} ({:.0} samples/s)",
        samples as f64 / append.as_secs_f64(),
        cut,
        (4 * n * (2 * HOUR / STEP) as u64) as f64 / cut.as_secs_f64(),
        compact,
        ranges(&db),
        bytes as f64 / in_blocks as f64,
        q,
        samples as f64 / q.as_secs_f64(),
    );
}

/// Append latency while a head cut runs on another thread (release,
/// ignored): the cut holds the append lock for one store only, so appends
/// keep going.
#[test]
#[ignore = "measurement; run in release"]
fn perf_appends_continue_during_head_cut() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    let n: u64 = 10_000;
    let series: Vec<Labels> = (0..n)
        .map(|i| Labels::from_pairs([("__name__", "perf"), ("i", &i.to_string())]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), opts()).unwrap());
    let batch_at = |t: i64| -> Vec<(Labels, i64, f64)> {
        series.iter().map(|l| (l.clone(), t, t as f64)).collect()
    };
    let mut t = T0;
    while t <= T0 + 3 * HOUR + 15 * 60_000 {
        db.append(&batch_at(t)).unwrap();
        t += STEP;
    }
    let done = Arc::new(AtomicBool::new(false));
    let (db2, done2) = (Arc::clone(&db), Arc::clone(&done));
    let cutter = std::thread::spawn(move || {
        let s = Instant::now();
        let m = db2.compact_head().unwrap();
        done2.store(true, Ordering::SeqCst);
        (s.elapsed(), m.len())
    });
    let (mut during, mut worst) = (0, Duration::ZERO);
    while !done.load(Ordering::SeqCst) {
        let s = Instant::now();
        db.append(&batch_at(t)).unwrap();
        worst = worst.max(s.elapsed());
        during += 1;
        t += STEP;
    }
    let (cut, blocks) = cutter.join().unwrap();
    assert_eq!(blocks, 1);
    println!(
        "perf: head cut of {n} series x 2h took {cut:?}; {during} batches of {n} samples appended meanwhile, slowest {worst:?}"
    );
}

#[test]
fn size_retention_deletes_oldest_blocks_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    ingest(&db, T0, T0 + 6 * HOUR);
    // [0,2h) [2h,4h): the planner waits for the 6h range to fill.
    assert_eq!(ranges(&db), vec![(0, 2 * HOUR, 1), (2 * HOUR, 4 * HOUR, 1)]);
    drop(db);
    let dir_size = |p: &Path| -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        e.metadata().unwrap().len()
                    }
                })
                .sum()
        }
        walk(p)
    };
    // Budget: the newest block and the WAL (as it will be once reopened,
    // with its new segment) fit, the older block does not.
    let db = Db::open(dir.path(), opts()).unwrap();
    let newest = db.blocks()[1].clone();
    let budget = dir_size(newest.dir()) + dir_size(&dir.path().join("wal")) + 1024;
    drop(db);
    let bopts = BlockOptions {
        retention_bytes: Some(budget),
        ..BlockOptions::default()
    };
    let db = Db::open_with(dir.path(), opts(), bopts).unwrap();
    let gone = db.apply_retention().unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(ranges(&db), vec![(2 * HOUR, 4 * HOUR, 1)]);
    assert_eq!(db.blocks()[0].id(), newest.id());
    assert_eq!(
        dump(&db, i64::MIN, i64::MAX),
        expected(T0 + 6 * HOUR, T0 + 2 * HOUR, i64::MAX, |_, _| false)
    );
}

#[test]
fn out_of_order_chunks_straddling_a_cut_are_persisted_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.head.out_of_order_window_ms = 30 * 60_000;
    let db = Db::open(dir.path(), o.clone()).unwrap();
    let l = Labels::from_pairs([("__name__", "db_blocks"), ("i", "ooo")]);
    let mut want: BTreeMap<i64, u64> = BTreeMap::new();
    let mut put = |db: &Db, t: i64| {
        let v = (t % 1_000_003) as f64;
        let st = db.append(&[(l.clone(), t, v)]).unwrap();
        assert!(st.rejected.is_empty(), "{:?}", st.rejected.first());
        want.insert(t, v.to_bits());
    };
    let mut t = T0;
    while t <= T0 + 2 * HOUR + 20 * 60_000 {
        put(&db, t);
        t += STEP;
    }
    // 40 out-of-order samples from 1h50m to 2h10m: more than one
    // out-of-order chunk, one of them across the 2h block boundary.
    for k in 0..40 {
        put(&db, T0 + 110 * 60_000 + 7_000 + k * 30_000);
    }
    while t < T0 + 6 * HOUR {
        put(&db, t);
        t += STEP;
        if (t - T0) % HOUR == 0 {
            db.maintain().unwrap();
        }
    }
    assert_eq!(ranges(&db), vec![(0, 2 * HOUR, 1), (2 * HOUR, 4 * HOUR, 1)]);
    let check = |db: &Db| {
        let got = db.select(i64::MIN, i64::MAX, &[all()], None).unwrap();
        assert_eq!(got.len(), 1);
        let mut seen = BTreeMap::new();
        let mut it = got[0].iter();
        while it.next() == ValueType::Float {
            let (t, v) = it.at();
            seen.insert(t, v.to_bits());
        }
        assert_eq!(seen, want);
        // Stored exactly once: blocks plus head hold the distinct samples.
        let in_blocks: u64 = db.blocks().iter().map(|b| b.meta().stats.num_samples).sum();
        let in_head: usize = db
            .head()
            .series_for_range(T0 + 4 * HOUR, i64::MAX)
            .iter()
            .flat_map(|s| s.chunks.iter().map(|c| c.chunk.num_samples()))
            .sum();
        assert_eq!(in_blocks + in_head as u64, want.len() as u64);
    };
    check(&db);
    drop(db);
    let db = Db::open(dir.path(), o).unwrap();
    check(&db);
}

/// Reads racing head cuts and compactions never miss acknowledged data: a
/// read sees every persisted range either in the block set it took or in
/// the head.
#[test]
fn reads_during_maintenance_see_every_acknowledged_sample() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;
    const N: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), opts()).unwrap());
    let acked = Arc::new(AtomicI64::new(i64::MIN));
    let stop = Arc::new(AtomicBool::new(false));
    let maint = {
        let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) {
                db.maintain().unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    let reader = {
        let (db, acked, stop) = (Arc::clone(&db), Arc::clone(&acked), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                let upto = acked.load(Ordering::SeqCst);
                if upto == i64::MIN {
                    continue;
                }
                let got = db.select(T0, upto, &[all()], None).unwrap();
                assert_eq!(got.len() as u64, N);
                for s in &got {
                    let mut it = s.iter_range(T0, upto);
                    let mut n = 0;
                    while it.next() == ValueType::Float {
                        n += 1;
                    }
                    assert_eq!(n, (upto - T0) / STEP + 1, "{} read up to {upto}", s.labels);
                }
                reads += 1;
            }
            reads
        })
    };
    let mut t = T0;
    while t < T0 + 9 * HOUR {
        let batch: Vec<(Labels, i64, f64)> = (0..N).map(|i| (lbl(i), t, value(i, t))).collect();
        assert!(db.append(&batch).unwrap().rejected.is_empty());
        acked.store(t, Ordering::SeqCst);
        t += STEP;
    }
    // Let the reader run against the final state too.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let rounds = maint.join().unwrap();
    let reads = reader.join().unwrap();
    assert!(rounds > 0 && reads > 0);
    assert!(db.blocks().len() >= 2, "{:?}", ranges(&db));
}

/// The out-of-order window as the issue asks it to be tested: 1h. A sample
/// exactly one hour behind the newest is accepted, one millisecond older is
/// refused with an error naming the series, and what was accepted survives
/// a restart and a head cut.
#[test]
fn one_hour_out_of_order_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.head.out_of_order_window_ms = HOUR;
    let db = Db::open(dir.path(), o.clone()).unwrap();
    let l = Labels::from_pairs([("__name__", "db_blocks"), ("i", "ooo1h")]);
    let mut want: BTreeMap<i64, u64> = BTreeMap::new();
    let mut t = T0;
    while t <= T0 + 3 * HOUR {
        let st = db.append(&[(l.clone(), t, 1.0)]).unwrap();
        assert!(st.rejected.is_empty());
        want.insert(t, 1.0f64.to_bits());
        t += STEP;
    }
    let newest = t - STEP;
    let edge = newest - HOUR + 7; // off the 15 s grid, so not a duplicate
    let st = db.append(&[(l.clone(), edge, 2.0)]).unwrap();
    assert!(st.rejected.is_empty(), "{:?}", st.rejected.first());
    want.insert(edge, 2.0f64.to_bits());
    // Exactly one hour behind the newest sample is inside the window: the
    // same value again is an accepted no-op (outside the window it would be
    // refused as out of order).
    let st = db.append(&[(l.clone(), newest - HOUR, 1.0)]).unwrap();
    assert!(st.rejected.is_empty(), "{:?}", st.rejected.first());
    let st = db.append(&[(l.clone(), newest - HOUR - 1, 4.0)]).unwrap();
    assert_eq!(st.rejected.len(), 1);
    let msg = st.rejected[0].error.to_string();
    assert!(msg.contains("ooo1h"), "error must name the series: {msg}");

    fn check(db: &Db, want: &BTreeMap<i64, u64>) {
        let got = db.select(i64::MIN, i64::MAX, &[all()], None).unwrap();
        assert_eq!(got.len(), 1);
        let mut seen = BTreeMap::new();
        let mut it = got[0].iter();
        while it.next() == ValueType::Float {
            let (t, v) = it.at();
            seen.insert(t, v.to_bits());
        }
        assert_eq!(&seen, want);
    }
    check(&db, &want);
    drop(db);
    let db = Db::open(dir.path(), o).unwrap();
    check(&db, &want);
    // One more hour moves [0, 2h) into a block; the out-of-order sample
    // there must come along exactly once.
    let mut t = newest + STEP;
    while t <= T0 + 4 * HOUR {
        db.append(&[(l.clone(), t, 1.0)]).unwrap();
        want.insert(t, 1.0f64.to_bits());
        t += STEP;
    }
    db.maintain().unwrap();
    assert_eq!(ranges(&db), vec![(0, 2 * HOUR, 1)]);
    check(&db, &want);
}

/// A second `Db` on a directory in use is refused before it changes
/// anything: the running one's mapped head chunk files stay in place.
#[test]
fn second_db_on_a_directory_in_use_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    // 200 samples: one completed chunk per series, so chunks_head/ has a file.
    ingest(&db, T0, T0 + 200 * STEP);
    let files = |p: &Path| {
        std::fs::read_dir(p.join("chunks_head"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    };
    let before = files(dir.path());
    assert!(!before.is_empty(), "a cut chunk should be on disk");
    let err = Db::open(dir.path(), opts())
        .err()
        .expect("second open must fail");
    assert!(err.to_string().contains("in use"), "{err}");
    assert_eq!(files(dir.path()), before);
    assert_eq!(
        dump(&db, i64::MIN, i64::MAX),
        expected(T0 + 200 * STEP, i64::MIN, i64::MAX, |_, _| false)
    );
}
