//! Crash safety: ingestion in a child process that is SIGKILLed at random
//! moments, over and over on the same directory; afterwards every
//! acknowledged sample must be present exactly once with its value, and
//! nothing unacknowledged may be corrupt or partial.
//!
//! The child is this test binary re-invoked on the ignored test
//! `crash::crash_child` with `PHAROS_CRASH_DIR` set.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pharos_storage::chunk::{SampleIterator, ValueType};
use pharos_storage::db::{Db, DbOptions};
use pharos_storage::labels::{Labels, MatchType, Matcher};
use pharos_storage::querier::Querier;
use pharos_storage::wal::{FsyncPolicy, WalOptions};

use crate::common::{run_child_until_killed, Acked, Rng};

const WRITERS: u64 = 4;
const SERIES_PER_BATCH: u64 = 10;
/// Timestamps of run `r` start at `r * RUN_STRIDE`, so every run appends in
/// order after everything earlier runs wrote.
const RUN_STRIDE: i64 = 1_000_000;

fn labels(writer: u64, s: u64) -> Labels {
    Labels::from_pairs([
        ("__name__", "crash_test"),
        ("writer", &writer.to_string()),
        ("s", &s.to_string()),
    ])
}

fn value(writer: u64, s: u64, t: i64) -> f64 {
    (t as f64) * 0.25 + (writer * 1000 + s) as f64
}

fn db_opts(policy: &str) -> DbOptions {
    let fsync = match policy {
        "always" => FsyncPolicy::Always,
        _ => FsyncPolicy::Interval(Duration::from_millis(50)),
    };
    DbOptions {
        wal: WalOptions {
            // Small segments so that kills also land around rotations.
            segment_size: 64 << 10,
            fsync,
        },
        ..DbOptions::default()
    }
}

/// Child entry point: appends batches forever, printing `ACK writer t` after
/// each `append` returns.
#[test]
#[ignore = "child process of crash::sigkill_during_ingestion"]
fn crash_child() {
    let Ok(dir) = std::env::var("PHAROS_CRASH_DIR") else {
        eprintln!("crash_child only runs as the child of sigkill_during_ingestion");
        return;
    };
    let run: i64 = std::env::var("PHAROS_CRASH_RUN").unwrap().parse().unwrap();
    let policy = std::env::var("PHAROS_CRASH_POLICY").unwrap();
    let db = Arc::new(Db::open(&dir, db_opts(&policy)).unwrap());
    // Written straight to stdout: the test harness may capture `println!`.
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "OPEN corruptions={}",
        db.open_report().corruptions().len()
    )
    .unwrap();
    out.flush().unwrap();
    drop(out);
    let hs: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                let mut t = run * RUN_STRIDE;
                loop {
                    t += 1;
                    let batch: Vec<(Labels, i64, f64)> = (0..SERIES_PER_BATCH)
                        .map(|s| (labels(w, s), t, value(w, s, t)))
                        .collect();
                    let st = db.append(&batch).unwrap();
                    assert!(st.rejected.is_empty(), "{:?}", st.rejected);
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {w} {t}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    // Checkpoint continuously so kills also land inside checkpoints (tmp
    // directory, rename, segment deletion). `mint = i64::MIN` keeps every
    // sample, so the expected data does not change.
    loop {
        std::thread::sleep(Duration::from_millis(30));
        db.checkpoint(i64::MIN).unwrap();
        if hs.iter().any(|h| h.is_finished()) {
            break;
        }
    }
    for h in hs {
        h.join().unwrap();
    }
}

/// Samples by (writer, t) → series index → value bits, checking on the way
/// that the head holds no timestamp twice.
fn read_all(db: &Db) -> BTreeMap<(u64, i64), BTreeMap<u64, u64>> {
    let m = Matcher::new(MatchType::Equal, "__name__", "crash_test").unwrap();
    let mut out: BTreeMap<(u64, i64), BTreeMap<u64, u64>> = BTreeMap::new();
    for s in db.select(i64::MIN, i64::MAX, &[m], None).unwrap() {
        let w: u64 = s.labels.get("writer").unwrap().parse().unwrap();
        let k: u64 = s.labels.get("s").unwrap().parse().unwrap();
        let stored: usize = s.chunks.iter().map(|c| c.chunk.num_samples()).sum();
        let mut it = s.iter();
        let mut n = 0;
        while it.next() == ValueType::Float {
            let (t, v) = it.at();
            n += 1;
            let prev = out.entry((w, t)).or_default().insert(k, v.to_bits());
            assert!(prev.is_none(), "{} has two samples at {t}", s.labels);
        }
        assert!(it.err().is_none(), "{:?}", it.err());
        assert_eq!(
            stored, n,
            "{} stores {stored} samples but yields {n}",
            s.labels
        );
    }
    out
}

fn run_child(dir: &Path, policy: &str, run: i64, kill_after: Duration, acked: &Acked) -> bool {
    run_child_until_killed(
        "crash::crash_child",
        &[
            ("PHAROS_CRASH_DIR", dir.display().to_string()),
            ("PHAROS_CRASH_RUN", run.to_string()),
            ("PHAROS_CRASH_POLICY", policy.to_string()),
        ],
        "OPEN corruptions=",
        kill_after,
        acked,
    )
}

#[test]
fn sigkill_during_ingestion() {
    sigkill_scenario("always", 24, 20);
}

/// The interval policy promises the same for a process crash (the page
/// cache outlives the process), just not for a power loss.
#[test]
fn sigkill_during_ingestion_interval_fsync() {
    sigkill_scenario("interval", 10, 8);
}

fn sigkill_scenario(policy: &str, min_runs: i64, min_opened: usize) {
    let mut rng = Rng::from_env(&format!("sigkill_{policy}"));
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let start = Instant::now();
    // At least `min_runs` kills, `min_opened` of them after the child opened
    // the Db (a loaded machine may start children slowly), in a time budget.
    let mut runs: i64 = 0;
    let mut opened_runs = 0;
    while runs < min_runs || opened_runs < min_opened {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "only {opened_runs} of {runs} children opened the Db in time"
        );
        runs += 1;
        // Mostly mid-ingestion; sometimes early, during replay or open.
        let ms = if rng.range(0, 5) == 0 {
            rng.range(5, 60)
        } else {
            rng.range(80, 400)
        };
        opened_runs += usize::from(run_child(
            dir.path(),
            policy,
            runs,
            Duration::from_millis(ms),
            &acked,
        ));
    }
    let acked = acked.lock().unwrap().clone();
    let db = Db::open(dir.path(), db_opts(policy)).unwrap();
    let report = db.open_report();
    assert!(
        report.corruptions().is_empty(),
        "{:?}",
        report.corruptions()
    );
    assert_eq!(report.samples_rejected, 0);
    assert_eq!(report.samples_unknown_series, 0);
    let got = read_all(&db);

    // Every acknowledged batch is there, complete, with its values.
    for &(w, t) in &acked {
        let b = got
            .get(&(w, t))
            .unwrap_or_else(|| panic!("acked batch writer={w} t={t} lost"));
        assert_eq!(
            b.len() as u64,
            SERIES_PER_BATCH,
            "acked batch writer={w} t={t} partial"
        );
    }
    // Nothing else is corrupt or partial: a batch is one WAL record.
    let mut unacked_present = 0;
    for (&(w, t), b) in &got {
        assert!(w < WRITERS && t > RUN_STRIDE && t < (runs + 1) * RUN_STRIDE);
        assert_eq!(
            b.len() as u64,
            SERIES_PER_BATCH,
            "batch writer={w} t={t} partial"
        );
        for (&s, &bits) in b {
            assert_eq!(bits, value(w, s, t).to_bits(), "writer={w} s={s} t={t}");
        }
        unacked_present += usize::from(!acked.contains(&(w, t)));
    }
    // Within a run a writer's batches are consecutive: no acked batch may
    // follow a lost one.
    for w in 0..WRITERS {
        for run in 1..=runs {
            let ts: Vec<i64> = got
                .keys()
                .filter(|(ww, t)| *ww == w && t / RUN_STRIDE == run)
                .map(|k| k.1)
                .collect();
            let want: Vec<i64> = (0..ts.len() as i64)
                .map(|i| run * RUN_STRIDE + 1 + i)
                .collect();
            assert_eq!(ts, want, "writer {w} run {run} has a gap");
        }
    }
    println!(
        "crash test (fsync={policy}): {runs} SIGKILLs ({opened_runs} after open), {} acked batches ({} samples), {} durable-but-unacked batches, WAL replay {} samples in {:?} from checkpoint {:?} + {} segments, total {:?}",
        acked.len(),
        acked.len() as u64 * SERIES_PER_BATCH,
        unacked_present,
        report.replay.samples,
        report.replay.duration,
        report.replay.checkpoint,
        report.replay.segments,
        start.elapsed()
    );
    assert!(!acked.is_empty(), "the child never acknowledged anything");
    assert!(
        report.replay.checkpoint.is_some(),
        "no child ever completed a checkpoint"
    );
}
