//! Memory and throughput measurements of the head. They print what they
//! measure (run with `--nocapture`); only the memory bound is asserted, and
//! generously. Throughput numbers are meaningful only in `--release`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

use super::*;
use crate::chunk::SampleIterator;
use crate::querier::Querier;

/// Counts live heap bytes and allocations per thread, so a test can measure
/// what it allocates while other tests run in parallel threads.
struct CountingAlloc;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static LIVE_ALLOCS: Cell<isize> = const { Cell::new(0) };
    static TOTAL_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn account(bytes: isize, allocs: isize) {
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + bytes));
    let _ = LIVE_ALLOCS.try_with(|c| c.set(c.get() + allocs));
    if allocs > 0 {
        let _ = TOTAL_ALLOCS.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: delegates every call to `System` unchanged; the bookkeeping only
// touches const-initialised thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            account(l.size() as isize, 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            account(l.size() as isize, 1);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) };
        account(-(l.size() as isize), -1);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            account(new as isize - l.size() as isize, 0);
            let _ = TOTAL_ALLOCS.try_with(|c| c.set(c.get() + 1));
        }
        q
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn live() -> (isize, isize) {
    (LIVE_BYTES.with(Cell::get), LIVE_ALLOCS.with(Cell::get))
}

/// A deterministic xorshift, to make plausible scrape data without `rand`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// node-exporter-like series: 100 metric names × N instances, 4–6 labels.
fn series_labels(n: usize) -> Vec<Labels> {
    (0..n)
        .map(|i| {
            let metric = format!("node_metric_{}_total", i % 100);
            let inst = format!("host-{:05}.example.internal:9100", i / 100);
            let cpu = (i % 7).to_string();
            Labels::from_pairs([
                ("__name__", metric.as_str()),
                ("cpu", cpu.as_str()),
                ("instance", inst.as_str()),
                ("job", "node"),
                ("mode", if i % 2 == 0 { "idle" } else { "user" }),
            ])
        })
        .collect()
}

/// Value for sample `k` of series `i`: a mix of counters, flat gauges and
/// two-decimal gauges, as real scrapes look.
fn value(rng: &mut Rng, i: usize, k: i64, prev: f64) -> f64 {
    match i % 4 {
        0 | 1 => prev + (rng.next() % 1000) as f64,
        2 => 1.0,
        _ => ((rng.next() % 100_000) as f64) / 100.0,
    }
    .max(if k == 0 { 0.0 } else { f64::MIN })
}

#[test]
fn memory_per_active_series() {
    let n = if cfg!(debug_assertions) {
        10_000
    } else {
        100_000
    };
    let labels = series_labels(n);
    let label_bytes: usize = labels.iter().map(|l| l.byte_size()).sum();
    let before = live();
    let h = Head::new(HeadOptions::default());
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let refs: Vec<SeriesRef> = labels
        .iter()
        .map(|l| h.get_or_create(l).unwrap().0)
        .collect();
    drop(labels); // the head keeps its own references
    let mut vals = vec![0.0f64; n];
    // 120 samples (one full chunk) every 15s with a few ms of scrape jitter.
    for k in 0..120i64 {
        for (i, r) in refs.iter().enumerate() {
            let t = 1_700_000_000_000 + k * 15_000 + (rng.next() % 5) as i64;
            vals[i] = value(&mut rng, i, k, vals[i]);
            h.append_ref(*r, t, vals[i]).unwrap();
        }
    }
    let after = live();
    let bytes = (after.0 - before.0) as f64 - (n * std::mem::size_of::<f64>()) as f64;
    let allocs = (after.1 - before.1) as f64 - 1.0;
    let stats = h.stats();
    let chunk_bytes: usize = h
        .select(i64::MIN, i64::MAX, &[], None)
        .unwrap()
        .iter()
        .map(|s| s.chunks.iter().map(|c| c.chunk.byte_size()).sum::<usize>())
        .sum();
    let per_series = bytes / n as f64;
    // glibc malloc adds ~8–16 bytes per allocation on top.
    let with_malloc = (bytes + allocs * 16.0) / n as f64;
    eprintln!(
        "head memory: {n} series x 120 samples: {per_series:.0} B/series measured \
         ({with_malloc:.0} B with malloc overhead, {:.1} allocs/series), \
         estimate {} B/series; label bytes {:.0}/series, chunk data {:.2} B/sample",
        allocs / n as f64,
        stats.bytes_per_series(),
        label_bytes as f64 / n as f64,
        chunk_bytes as f64 / (n as f64 * 120.0),
    );
    assert_eq!(stats.num_series, n);
    assert!(
        with_malloc < 1536.0,
        "{with_malloc} B/series exceeds 1.5 KiB"
    );
    // The estimate should be in the right ballpark of the measurement.
    let est = stats.bytes_per_series() as f64;
    assert!(
        est > per_series * 0.5 && est < per_series * 2.0,
        "estimate {est} vs measured {per_series}"
    );
}

#[test]
fn append_ref_throughput_report() {
    let (n, rounds) = if cfg!(debug_assertions) {
        (1_000, 100)
    } else {
        (10_000, 1_000)
    };
    let run = |h: &Head, refs: &[SeriesRef], seed: u64| -> u64 {
        let mut rng = Rng(seed);
        let before = TOTAL_ALLOCS.with(Cell::get);
        for k in 0..rounds as i64 {
            // 1s steps: parallel writers drift apart, and must stay within the
            // head's 1h out-of-bounds window of each other.
            let t = k * 1_000 + (seed % 7) as i64;
            for (i, r) in refs.iter().enumerate() {
                let v = if i % 2 == 0 {
                    (k * 100 + i as i64) as f64
                } else {
                    (rng.next() % 1000) as f64 / 8.0
                };
                h.append_ref(*r, t, v).unwrap();
            }
        }
        TOTAL_ALLOCS.with(Cell::get) - before
    };
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };

    let h = Head::new(HeadOptions::default());
    let refs: Vec<SeriesRef> = series_labels(n)
        .iter()
        .map(|l| h.get_or_create(l).unwrap().0)
        .collect();
    let start = Instant::now();
    let allocs = run(&h, &refs, 1);
    let el = start.elapsed();
    let total = (n * rounds) as f64;
    eprintln!(
        "append_ref, 1 thread: {total} samples in {el:?}: {:.2} M samples/s; \
         {:.4} allocations per sample (chunk cuts only) ({profile} profile)",
        total / el.as_secs_f64() / 1e6,
        allocs as f64 / total,
    );
    // Chunk cuts allocate (a finished chunk, occasionally a longer chunk
    // list); individual samples must not.
    assert!(
        (allocs as f64 / total) < 0.05,
        "{allocs} allocations for {total} samples"
    );

    // All cores at once, each on its own series.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let h = Arc::new(Head::new(HeadOptions::default()));
    let per: Vec<Vec<SeriesRef>> = (0..threads)
        .map(|w| {
            series_labels(n)
                .iter()
                .map(|l| {
                    let l = l.builder().set("w", &w.to_string()).build();
                    h.get_or_create(&l).unwrap().0
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (w, refs) in per.iter().enumerate() {
            let h = &h;
            let run = &run;
            s.spawn(move || run(h, refs, w as u64 + 1));
        }
    });
    let el = start.elapsed();
    let total = (threads * n * rounds) as f64;
    eprintln!(
        "append_ref, {threads} threads: {total} samples in {el:?}: {:.2} M samples/s total ({profile} profile)",
        total / el.as_secs_f64() / 1e6,
    );
}

#[test]
fn select_and_decode_throughput_report() {
    let (n, samples) = if cfg!(debug_assertions) {
        (500, 480)
    } else {
        (5_000, 480)
    };
    let h = Head::new(HeadOptions {
        out_of_order_window_ms: 3_600_000,
        ..HeadOptions::default()
    });
    let mut rng = Rng(3);
    let refs: Vec<SeriesRef> = series_labels(n)
        .iter()
        .map(|l| h.get_or_create(l).unwrap().0)
        .collect();
    for k in 0..samples as i64 {
        for r in &refs {
            h.append_ref(*r, k * 15_000, (rng.next() % 100) as f64)
                .unwrap();
        }
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let start = Instant::now();
    let sel = h.select(i64::MIN, i64::MAX, &[], None).unwrap();
    let sel_el = start.elapsed();
    let start = Instant::now();
    let mut count = 0usize;
    let mut sum = 0.0;
    for s in &sel {
        let mut it = s.iter();
        while it.next() == crate::chunk::ValueType::Float {
            sum += it.at().1;
            count += 1;
        }
    }
    let el = start.elapsed();
    assert_eq!(count, n * samples);
    eprintln!(
        "select of {n} series: {sel_el:?}; decode {count} samples in {el:?}: {:.1} M samples/s (sum {sum}) ({profile} profile)",
        count as f64 / el.as_secs_f64() / 1e6
    );
}
