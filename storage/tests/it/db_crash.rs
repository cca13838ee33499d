//! Crash safety of head persistence, compaction and retention: a child
//! process ingests with tiny blocks while a maintenance thread cuts,
//! compacts and checkpoints continuously, and is SIGKILLed at random
//! moments, over and over on the same directory. Afterwards every
//! acknowledged sample is present exactly once with its value, no sample is
//! stored twice on disk, and every block served is complete.
//!
//! The child is this test binary re-invoked on the ignored test
//! `db_crash::blocks_crash_child` with `PHAROS_BLOCKS_CRASH_DIR` set.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pharos_storage::chunk::{SampleIterator, ValueType};
use pharos_storage::db::{BlockOptions, Db, DbOptions};
use pharos_storage::labels::{Labels, MatchType, Matcher};
use pharos_storage::querier::Querier;
use pharos_storage::wal::{FsyncPolicy, WalOptions};

use crate::common::{run_child_until_killed, Acked, Rng};

const WRITERS: u64 = 2;
const SERIES_PER_BATCH: u64 = 8;
/// Block range in ms; timestamps advance by 1 per batch, so a block holds
/// a few hundred batches and a run cuts several and compacts some.
const RANGE: i64 = 200;
/// Run `r`'s timestamps start at `r * RUN_STRIDE`, after every earlier run.
const RUN_STRIDE: i64 = 1_000_000;

fn labels(writer: u64, s: u64) -> Labels {
    Labels::from_pairs([
        ("__name__", "blocks_crash"),
        ("writer", &writer.to_string()),
        ("s", &s.to_string()),
    ])
}

fn value(writer: u64, s: u64, t: i64) -> f64 {
    (t as f64) * 0.5 + (writer * 100 + s) as f64
}

fn open(dir: &Path) -> Db {
    let opts = DbOptions {
        wal: WalOptions {
            segment_size: 32 << 10,
            fsync: FsyncPolicy::Interval(Duration::from_millis(20)),
        },
        ..DbOptions::default()
    };
    let bopts = BlockOptions {
        block_range_ms: Some(RANGE),
        ..BlockOptions::default()
    };
    Db::open_with(dir, opts, bopts).unwrap()
}

/// Child: writers take turns on one clock (so no writer falls behind the
/// head's in-order bound), printing `ACK writer t` after each append; a
/// maintenance thread runs `Db::maintain` in a loop.
#[test]
#[ignore = "child process of db_crash::sigkill_during_head_persistence_and_compaction"]
fn blocks_crash_child() {
    let Ok(dir) = std::env::var("PHAROS_BLOCKS_CRASH_DIR") else {
        eprintln!("blocks_crash_child only runs as a child of the crash test");
        return;
    };
    let run: i64 = std::env::var("PHAROS_BLOCKS_CRASH_RUN")
        .unwrap()
        .parse()
        .unwrap();
    let db = Arc::new(open(Path::new(&dir)));
    let mut out = std::io::stdout().lock();
    writeln!(out, "OPEN blocks={}", db.blocks().len()).unwrap();
    out.flush().unwrap();
    drop(out);
    let clock = Arc::new(Mutex::new(run * RUN_STRIDE));
    let hs: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = Arc::clone(&db);
            let clock = Arc::clone(&clock);
            std::thread::spawn(move || loop {
                let mut c = clock.lock().unwrap();
                let t = *c + 1;
                let batch: Vec<(Labels, i64, f64)> = (0..SERIES_PER_BATCH)
                    .map(|s| (labels(w, s), t, value(w, s, t)))
                    .collect();
                let st = db.append(&batch).unwrap();
                assert!(st.rejected.is_empty(), "{:?}", st.rejected.first());
                *c = t;
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {w} {t}").unwrap();
                out.flush().unwrap();
            })
        })
        .collect();
    loop {
        db.maintain().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        if hs.iter().any(|h| h.is_finished()) {
            break;
        }
    }
    for h in hs {
        h.join().unwrap();
    }
}

/// Runs one child for `kill_after`, collecting its acknowledgements;
/// returns whether it got as far as opening the Db.
fn run_child(dir: &Path, run: i64, kill_after: Duration, acked: &Acked) -> bool {
    run_child_until_killed(
        "db_crash::blocks_crash_child",
        &[
            ("PHAROS_BLOCKS_CRASH_DIR", dir.display().to_string()),
            ("PHAROS_BLOCKS_CRASH_RUN", run.to_string()),
        ],
        "OPEN blocks=",
        kill_after,
        acked,
    )
}

#[test]
fn sigkill_during_head_persistence_and_compaction() {
    let mut rng = Rng::from_env("sigkill_blocks");
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let start = Instant::now();
    let (mut runs, mut opened) = (0i64, 0usize);
    while runs < 14 || opened < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {opened} of {runs} children opened the Db in time"
        );
        runs += 1;
        let ms = rng.range(100, 700);
        opened += usize::from(run_child(
            dir.path(),
            runs,
            Duration::from_millis(ms),
            &acked,
        ));
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the child never acknowledged anything");

    let db = open(dir.path());
    let rep = db.open_report();
    assert!(rep.corrupt_blocks.is_empty(), "{:?}", rep.corrupt_blocks);
    assert!(rep.corruptions().is_empty(), "{:?}", rep.corruptions());
    assert_eq!(rep.samples_rejected, 0);
    assert_eq!(rep.samples_unknown_series, 0);
    let opened_blocks = rep.blocks;
    let leftovers = rep.leftovers_removed;
    assert!(opened_blocks > 0, "no child ever persisted a block");
    // Nothing half-written is left or served.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".tmp") && !name.ends_with(".corrupt"),
            "{name}"
        );
    }
    for b in db.blocks().iter() {
        b.verify().unwrap();
    }

    // Every acknowledged batch is there, complete and with its values, and
    // nothing else is partial.
    let m = Matcher::new(MatchType::Equal, "__name__", "blocks_crash").unwrap();
    let mut got: BTreeMap<(u64, i64), BTreeMap<u64, u64>> = BTreeMap::new();
    for s in db
        .select(i64::MIN, i64::MAX, std::slice::from_ref(&m), None)
        .unwrap()
    {
        let w: u64 = s.labels.get("writer").unwrap().parse().unwrap();
        let k: u64 = s.labels.get("s").unwrap().parse().unwrap();
        let mut it = s.iter();
        while it.next() == ValueType::Float {
            let (t, v) = it.at();
            let prev = got.entry((w, t)).or_default().insert(k, v.to_bits());
            assert!(prev.is_none(), "{} served twice at {t}", s.labels);
        }
        assert!(it.err().is_none());
    }
    for &(w, t) in &acked {
        let b = got
            .get(&(w, t))
            .unwrap_or_else(|| panic!("acked batch writer={w} t={t} lost"));
        assert_eq!(
            b.len() as u64,
            SERIES_PER_BATCH,
            "acked batch {w}/{t} partial"
        );
    }
    for (&(w, t), b) in &got {
        assert_eq!(b.len() as u64, SERIES_PER_BATCH, "batch {w}/{t} partial");
        for (&s, &bits) in b {
            assert_eq!(bits, value(w, s, t).to_bits(), "writer={w} s={s} t={t}");
        }
    }
    // Batches were appended one at a time on one clock: each run's present
    // timestamps are a gap-free prefix.
    for run in 1..=runs {
        let ts: BTreeSet<i64> = got
            .keys()
            .filter(|(_, t)| t / RUN_STRIDE == run)
            .map(|k| k.1)
            .collect();
        let gap = ts
            .iter()
            .zip(run * RUN_STRIDE + 1..)
            .find(|(&t, want)| t != *want);
        assert!(gap.is_none(), "run {run}: first gap at {gap:?}");
    }

    // No sample is stored twice: after a final maintenance round (which
    // merges any overlapping blocks), blocks do not overlap and the samples
    // stored in blocks and head add up to exactly the distinct samples.
    db.maintain().unwrap();
    let blocks = db.blocks();
    for w in blocks.windows(2) {
        assert!(
            w[0].max_time() <= w[1].min_time(),
            "blocks {} and {} overlap",
            w[0].id(),
            w[1].id()
        );
    }
    let in_blocks: u64 = blocks.iter().map(|b| b.meta().stats.num_samples).sum();
    let in_head: usize = db
        .head()
        .select(i64::MIN, i64::MAX, &[m], None)
        .unwrap()
        .iter()
        .flat_map(|s| s.chunks.iter().map(|c| c.chunk.num_samples()))
        .sum();
    let distinct = got.len() as u64 * SERIES_PER_BATCH;
    assert_eq!(in_blocks + in_head as u64, distinct);
    println!(
        "blocks crash test: {runs} SIGKILLs ({opened} after open), {} acked batches, {} blocks on open ({leftovers} leftovers removed), {} after maintain, {} samples in WAL already in blocks, total {:?}",
        acked.len(),
        opened_blocks,
        blocks.len(),
        rep.samples_in_blocks,
        start.elapsed()
    );
}
