//! Storage benchmarks of issue 2: append throughput, bytes per sample in a
//! 2 h block, head memory per active series, select throughput and WAL
//! replay rate, on a deterministic scrape-shaped workload (`workload.rs`).
//!
//! `cargo bench -p pharos-storage --bench storage` runs every Pharos
//! measurement and prints a table plus `RESULT key value` lines.
//! `scripts/bench-storage` runs it and measures Prometheus 2.42 (and
//! VictoriaMetrics) on the same data; see `BENCHMARKS.md`.
//!
//! Other modes (used by the script, or by this binary on itself so each
//! memory figure comes from a fresh process):
//! - `--emit-openmetrics FILE`: the block workload as OpenMetrics text, for
//!   `promtool tsdb create-blocks-from openmetrics`;
//! - `--block-size DIR`: sizes of the block(s) in DIR;
//! - `--serve PORT_FILE --max-secs N`: loopback exporter of the workload;
//! - `--free-port`: prints a free 127.0.0.1 port;
//! - `--compare-blocks A B`: chunk-by-chunk differences of two blocks of
//!   the same series (e.g. Pharos's and promtool's);
//! - `--keep`: keep the bench's work directory (blocks, WAL) and print it;
//! - `--child head|wal-write`: internal (`--head-chunks mmap|heap` picks
//!   the head the `head` child measures: with `chunks_head/` files, as `Db`
//!   runs it, or all chunks on the heap, as `Head::new` keeps them).

/// Errors end the bench with a message; nothing here recovers from one.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(format!($($t)*).into())
    };
}

macro_rules! ensure {
    ($cond:expr, $($t:tt)*) => {
        if !$cond {
            bail!($($t)*)
        }
    };
}

mod exporter;
mod measure;
mod workload;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pharos_storage::block::BlockWriter;
use pharos_storage::chunk::{SampleIterator, ValueType};
use pharos_storage::db::{Db, DbOptions};
use pharos_storage::head::{Head, HeadOptions, SeriesRef};
use pharos_storage::labels::{Labels, MatchType, Matcher};
use pharos_storage::querier::Querier;
use pharos_storage::wal::{FsyncPolicy, WalOptions};

use measure::{live_heap, result, rss_bytes, BlockSize, CountingAlloc};
use workload::{target_labels, TargetGen, SERIES_PER_TARGET, T0};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Samples per series in a 2 h block on a 15 s grid.
const BLOCK_STEPS: usize = 480;
const BLOCK_MS: i64 = 2 * 60 * 60 * 1000;

struct Args {
    targets: usize,
    samples: usize,
    block_targets: usize,
    wal_samples: usize,
    seed: u64,
    tmp: PathBuf,
    max_secs: u64,
    keep: bool,
    mode: Mode,
    /// Completed head chunks in mapped `chunks_head/` files (`Db`'s head)
    /// or on the heap (`Head::new`).
    head_chunks_mapped: bool,
}

enum Mode {
    Bench,
    EmitOpenMetrics(PathBuf),
    BlockSize(PathBuf),
    Serve(PathBuf),
    FreePort,
    CompareBlocks(PathBuf, PathBuf),
    ChildHead,
    ChildWalWrite(PathBuf),
}

const USAGE: &str = "usage: storage [--targets N] [--samples S] [--block-targets B] \
[--wal-samples W] [--seed X] [--tmp DIR] \
[--keep] [--emit-openmetrics FILE | --block-size DIR | --serve PORT_FILE [--max-secs N] | \
--free-port | --compare-blocks A B]";

fn parse_args() -> crate::Result<Args> {
    let mut a = Args {
        targets: 500,
        samples: 12,
        block_targets: 20,
        wal_samples: 30,
        seed: 42,
        tmp: std::env::temp_dir(),
        max_secs: 120,
        keep: false,
        mode: Mode::Bench,
        head_chunks_mapped: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            // Passed by `cargo bench`.
            "--bench" => {}
            "--targets" => a.targets = val()?.parse()?,
            "--samples" => a.samples = val()?.parse()?,
            "--block-targets" => a.block_targets = val()?.parse()?,
            "--wal-samples" => a.wal_samples = val()?.parse()?,
            "--seed" => a.seed = val()?.parse()?,
            "--tmp" => a.tmp = val()?.into(),
            "--max-secs" => a.max_secs = val()?.parse()?,
            "--emit-openmetrics" => a.mode = Mode::EmitOpenMetrics(val()?.into()),
            "--block-size" => a.mode = Mode::BlockSize(val()?.into()),
            "--serve" => a.mode = Mode::Serve(val()?.into()),
            "--free-port" => a.mode = Mode::FreePort,
            "--keep" => a.keep = true,
            "--head-chunks" => {
                a.head_chunks_mapped = match val()?.as_str() {
                    "mmap" => true,
                    "heap" => false,
                    other => bail!("--head-chunks mmap|heap, not {other}"),
                }
            }
            "--compare-blocks" => {
                let first = val()?;
                a.mode = Mode::CompareBlocks(first.into(), val()?.into());
            }
            "--child" => {
                a.mode = match val()?.as_str() {
                    "head" => Mode::ChildHead,
                    "wal-write" => Mode::ChildWalWrite(val()?.into()),
                    other => bail!("unknown child mode {other}"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    ensure!(
        a.targets > 0 && a.block_targets > 0,
        "need at least one target"
    );
    Ok(a)
}

fn main() -> crate::Result<()> {
    let args = parse_args()?;
    match &args.mode {
        Mode::Bench => bench(&args),
        Mode::EmitOpenMetrics(f) => emit_openmetrics(f, args.block_targets, args.seed),
        Mode::BlockSize(d) => {
            BlockSize::of(d)?.report("dir");
            Ok(())
        }
        Mode::Serve(f) => exporter::serve(f, args.targets, args.seed, args.max_secs),
        Mode::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
        Mode::CompareBlocks(x, y) => compare_blocks(x, y),
        Mode::ChildHead => child_head(&args),
        Mode::ChildWalWrite(dir) => child_wal_write(dir, &args),
    }
}

/// Runs this binary with `extra` arguments, forwards and collects its
/// `RESULT` lines.
fn run_child(args: &Args, extra: &[&str]) -> crate::Result<BTreeMap<String, f64>> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args([
            "--targets",
            &args.targets.to_string(),
            "--samples",
            &args.samples.to_string(),
            "--wal-samples",
            &args.wal_samples.to_string(),
            "--seed",
            &args.seed.to_string(),
            "--tmp",
            args.tmp.to_str().ok_or("non-UTF-8 tmp dir")?,
        ])
        .args(extra)
        .output()?;
    std::io::stderr().write_all(&out.stderr)?;
    ensure!(
        out.status.success(),
        "child {extra:?} failed: {}",
        out.status
    );
    let mut r = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("{line}");
        let mut p = line.split_whitespace();
        if p.next() == Some("RESULT") {
            if let (Some(k), Some(v)) = (p.next(), p.next()) {
                r.insert(k.to_string(), v.parse()?);
            }
        }
    }
    Ok(r)
}

fn bench(args: &Args) -> crate::Result<()> {
    let work = tempfile::Builder::new()
        .prefix("pharos-bench-")
        .tempdir_in(&args.tmp)?;
    let mut r = BTreeMap::new();

    eprintln!("[1/3] 2h block of {} targets", args.block_targets);
    let block = pharos_block(
        &work.path().join("blocks"),
        args.block_targets,
        args.seed,
        &mut r,
    )?;
    block.report("pharos");

    eprintln!(
        "[2/3] head: {} targets x {} series, {}, 120, 130 and 480 samples each \
         (chunks_head mapped as in Db, then all on the heap)",
        args.targets, SERIES_PER_TARGET, args.samples
    );
    r.extend(run_child(
        args,
        &["--child", "head", "--head-chunks", "mmap"],
    )?);
    r.extend(run_child(
        args,
        &["--child", "head", "--head-chunks", "heap"],
    )?);

    eprintln!(
        "[3/3] Db::append + crash + WAL replay: {} samples per series",
        args.wal_samples
    );
    let wal_dir = work.path().join("db");
    r.extend(run_child(
        args,
        &[
            "--child",
            "wal-write",
            wal_dir.to_str().ok_or("non-UTF-8 tmp dir")?,
        ],
    )?);
    let opts = db_options();
    let start = Instant::now();
    let db = Db::open(&wal_dir, opts)?;
    let el = start.elapsed().as_secs_f64();
    let rep = db.open_report();
    ensure!(
        rep.samples_rejected == 0 && rep.samples_unknown_series == 0,
        "replay rejected samples: {rep:?}"
    );
    let n = rep.samples_applied as f64;
    result("replay_samples", n);
    result("replay_series", rep.series as f64);
    result("replay_seconds", el);
    result("replay_samples_per_sec", n / el);
    r.insert("replay_samples".into(), n);
    r.insert("replay_seconds".into(), el);
    r.insert("replay_samples_per_sec".into(), n / el);
    db.close()?;

    print_table(args, &block, &r);
    if args.keep {
        println!("work dir kept: {}", work.keep().display());
    }
    Ok(())
}

/// The block in `dir`, or the only block directly under it.
fn find_block(dir: &Path) -> crate::Result<PathBuf> {
    if dir.join("meta.json").exists() {
        return Ok(dir.to_path_buf());
    }
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.join("meta.json").exists() {
            found.push(p);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => bail!("{}: expected one block, found {n}", dir.display()),
    }
}

/// Compares two blocks series by series and chunk by chunk: chunk time
/// bounds, sample counts, encoded bytes, and decoded samples where the
/// bytes differ.
fn compare_blocks(a: &Path, b: &Path) -> crate::Result<()> {
    let (pa, pb) = (find_block(a)?, find_block(b)?);
    let sa = pharos_storage::block::Block::open(&pa)?.all_series()?;
    let sb = pharos_storage::block::Block::open(&pb)?.all_series()?;
    ensure!(sa.len() == sb.len(), "{} series vs {}", sa.len(), sb.len());
    let (mut bounds, mut bytes, mut samples_differ, mut chunks) = (0u64, 0u64, 0u64, 0u64);
    let mut size_delta = 0i64;
    let mut shown = 0;
    for (x, y) in sa.iter().zip(&sb) {
        ensure!(x.labels == y.labels, "series {} vs {}", x.labels, y.labels);
        ensure!(
            x.chunks.len() == y.chunks.len(),
            "{}: {} chunks vs {}",
            x.labels,
            x.chunks.len(),
            y.chunks.len()
        );
        for (cx, cy) in x.chunks.iter().zip(&y.chunks) {
            chunks += 1;
            let (bx, by) = (cx.chunk.bytes(), cy.chunk.bytes());
            size_delta += bx.len() as i64 - by.len() as i64;
            if (cx.min_time, cx.max_time, cx.chunk.num_samples())
                != (cy.min_time, cy.max_time, cy.chunk.num_samples())
            {
                bounds += 1;
            } else if bx != by {
                bytes += 1;
                let dx = pharos_storage::chunk::collect_samples(&mut cx.chunk.iter())?;
                let dy = pharos_storage::chunk::collect_samples(&mut cy.chunk.iter())?;
                let same = dx.len() == dy.len()
                    && dx
                        .iter()
                        .zip(&dy)
                        .all(|(p, q)| p.0 == q.0 && p.1.to_bits() == q.1.to_bits());
                if !same {
                    samples_differ += 1;
                }
                if shown < 3 {
                    shown += 1;
                    let at = bx
                        .iter()
                        .zip(by)
                        .position(|(p, q)| p != q)
                        .unwrap_or(bx.len().min(by.len()));
                    println!(
                        "{}: chunk [{}, {}] {} samples: {} vs {} bytes, first difference at byte {at}, decoded samples {}",
                        x.labels,
                        cx.min_time,
                        cx.max_time,
                        cx.chunk.num_samples(),
                        bx.len(),
                        by.len(),
                        if same { "equal" } else { "differ" }
                    );
                }
            }
        }
    }
    result("compare_chunks", chunks as f64);
    result("compare_chunks_other_bounds", bounds as f64);
    result("compare_chunks_other_bytes", bytes as f64);
    result("compare_chunks_other_samples", samples_differ as f64);
    result("compare_chunk_bytes_delta", size_delta as f64);
    Ok(())
}

fn db_options() -> DbOptions {
    DbOptions {
        wal: WalOptions {
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            ..WalOptions::default()
        },
        head: HeadOptions::default(),
    }
}

/// Appends `targets` × 480 steps to a head and writes the 2 h block.
fn pharos_block(
    parent: &Path,
    targets: usize,
    seed: u64,
    r: &mut BTreeMap<String, f64>,
) -> crate::Result<BlockSize> {
    let head = Head::new(HeadOptions::default());
    let mut gens: Vec<TargetGen> = (0..targets).map(|t| TargetGen::new(seed, t)).collect();
    let mut refs = Vec::with_capacity(targets * SERIES_PER_TARGET);
    for t in 0..targets {
        for l in target_labels(t) {
            refs.push(head.get_or_create(&l)?.0);
        }
    }
    for _ in 0..BLOCK_STEPS {
        for (t, g) in gens.iter_mut().enumerate() {
            let ts = g.step();
            for (j, v) in g.values.iter().enumerate() {
                head.append_ref(refs[t * SERIES_PER_TARGET + j], ts, *v)?;
            }
        }
    }
    std::fs::create_dir_all(parent)?;
    let start = Instant::now();
    let series = head.series_for_range(T0, T0 + BLOCK_MS - 1);
    let range_el = start.elapsed();
    // Chunk data bytes per sample by kind of series (without the chunk
    // framing the block file adds).
    let mut by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in &series {
        let e = by_kind
            .entry(workload::kind_of(s.labels.metric_name().unwrap_or("")))
            .or_default();
        for c in &s.chunks {
            e.0 += c.chunk.bytes().len();
            e.1 += c.chunk.num_samples();
        }
    }
    for (kind, (bytes, n)) in by_kind {
        result(
            &format!("pharos_chunk_data_bytes_per_sample_{kind}"),
            bytes as f64 / n.max(1) as f64,
        );
    }
    let start = Instant::now();
    let meta = BlockWriter::new(parent, T0, T0 + BLOCK_MS).write(series)?;
    let el = (range_el + start.elapsed()).as_secs_f64();
    let size = BlockSize::of(&parent.join(meta.ulid.to_string()))?;
    result("pharos_block_write_seconds", el);
    r.insert("pharos_block_write_seconds".into(), el);
    Ok(size)
}

/// The block workload as OpenMetrics text, series by series in label order,
/// timestamps as seconds with millisecond decimals.
fn emit_openmetrics(path: &Path, targets: usize, seed: u64) -> crate::Result<()> {
    let mut series: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
    for t in 0..targets {
        let mut g = TargetGen::new(seed, t);
        let mut s: Vec<(Labels, Vec<(i64, f64)>)> = target_labels(t)
            .into_iter()
            .map(|l| (l, Vec::with_capacity(BLOCK_STEPS)))
            .collect();
        for _ in 0..BLOCK_STEPS {
            let ts = g.step();
            for (j, v) in g.values.iter().enumerate() {
                s[j].1.push((ts, *v));
            }
        }
        series.extend(s);
    }
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut samples = 0u64;
    // A timestamp that does not survive text → float seconds → ms would
    // make the two databases store different data.
    let mut inexact = 0u64;
    for (l, s) in &series {
        let mut prefix = String::from(l.metric_name().unwrap_or(""));
        prefix.push('{');
        let rest: Vec<String> = l
            .iter()
            .filter(|(n, _)| *n != "__name__")
            .map(|(n, v)| format!("{n}=\"{v}\""))
            .collect();
        prefix.push_str(&rest.join(","));
        prefix.push('}');
        for &(t, v) in s {
            let ts = format!("{}.{:03}", t / 1000, t % 1000);
            let f: f64 = ts.parse()?;
            if (f * 1000.0) as i64 != t || (f * 1000.0).round() as i64 != t {
                inexact += 1;
            }
            writeln!(w, "{prefix} {v} {ts}")?;
            samples += 1;
        }
    }
    writeln!(w, "# EOF")?;
    w.flush()?;
    result("openmetrics_samples", samples as f64);
    result("openmetrics_series", series.len() as f64);
    result("openmetrics_inexact_timestamps", inexact as f64);
    Ok(())
}

/// Fresh process: head memory per series after `samples`, 120, 130 and 480
/// samples per series (RSS delta and live heap delta), append throughput,
/// then select throughput on the full head. With `--head-chunks mmap` (the
/// default, as `Db` runs) completed chunks go to `chunks_head/` files in a
/// temporary directory, written with `write(2)` and read through maps, so
/// they count in RSS only once read; with `heap` only the memory figures
/// are reported, under `heaphead_*`.
fn child_head(args: &Args) -> crate::Result<()> {
    let mapped = args.head_chunks_mapped;
    let key = if mapped { "head" } else { "heaphead" };
    let chunks_dir = tempfile::Builder::new()
        .prefix("pharos-bench-head-")
        .tempdir_in(&args.tmp)?;
    let targets = args.targets;
    let n_series = targets * SERIES_PER_TARGET;
    // Generator state and the ref table exist before the baseline: they are
    // the bench's, not the head's.
    let mut gens: Vec<TargetGen> = (0..targets).map(|t| TargetGen::new(args.seed, t)).collect();
    let mut refs: Vec<SeriesRef> = Vec::with_capacity(n_series);
    let rss0 = rss_bytes()?;
    let heap0 = live_heap();

    let head = if mapped {
        Head::with_chunks_dir(
            HeadOptions::default(),
            chunks_dir.path().join("chunks_head"),
        )?
    } else {
        Head::new(HeadOptions::default())
    };
    let start = Instant::now();
    for t in 0..targets {
        // Labels are built here and dropped once the head holds them, so
        // the head's copy of every label set is in the delta.
        for l in target_labels(t) {
            refs.push(head.get_or_create(&l)?.0);
        }
    }
    let create = start.elapsed().as_secs_f64();
    if mapped {
        result("head_series", n_series as f64);
        result("head_create_series_per_sec", n_series as f64 / create);
    }

    let mut append_time = Duration::ZERO;
    let mut appended = 0u64;
    let mut step = 0usize;
    let mut advance = |to: usize, step: &mut usize| -> crate::Result<()> {
        while *step < to {
            for (t, g) in gens.iter_mut().enumerate() {
                let ts = g.step();
                let refs = &refs[t * SERIES_PER_TARGET..(t + 1) * SERIES_PER_TARGET];
                let start = Instant::now();
                for (r, v) in refs.iter().zip(&g.values) {
                    head.append_ref(*r, ts, *v)?;
                }
                append_time += start.elapsed();
                appended += SERIES_PER_TARGET as u64;
            }
            *step += 1;
        }
        Ok(())
    };
    let report_mem = |label: &str| -> crate::Result<()> {
        let rss = rss_bytes()?;
        let heap = live_heap();
        let st = head.stats();
        let n = n_series as f64;
        result(
            &format!("{key}_{label}_rss_bytes_per_series"),
            (rss as f64 - rss0 as f64) / n,
        );
        result(
            &format!("{key}_{label}_heap_bytes_per_series"),
            (heap.0 - heap0.0) as f64 / n,
        );
        result(
            &format!("{key}_{label}_allocs_per_series"),
            (heap.1 - heap0.1) as f64 / n,
        );
        result(
            &format!("{key}_{label}_estimate_bytes_per_series"),
            st.bytes_per_series() as f64,
        );
        result(
            &format!("{key}_{label}_mapped_bytes_per_series"),
            st.mapped_chunk_bytes as f64 / n,
        );
        Ok(())
    };
    // Memory after the scrape count the other databases got ("s"), after a
    // full chunk (120 samples), just after the first cut (130, where
    // Prometheus 2.42 was measured) and after a whole 2 h block range (480).
    let mut checkpoints = vec![args.samples, 120, 130, BLOCK_STEPS];
    checkpoints.sort_unstable();
    checkpoints.dedup();
    for cp in checkpoints {
        advance(cp, &mut step)?;
        if cp == args.samples {
            report_mem("s")?;
        }
        for fixed in [120, 130, BLOCK_STEPS] {
            if cp == fixed {
                report_mem(&fixed.to_string())?;
            }
        }
    }
    if mapped {
        result("head_s_samples", args.samples as f64);
        result(
            "append_ref_samples_per_sec",
            appended as f64 / append_time.as_secs_f64(),
        );
        result("append_ref_samples", appended as f64);
    }
    // Select figures of the all-heap head are prefixed, to compare reading
    // mapped chunks with reading heap ones under the same load.
    let sel = if mapped { "" } else { "heaphead_" };

    // Select + decode through the Querier.
    let inst = format!("host-{:04}.dc1.example.net:9100", targets / 2);
    let re = |n: &str, v: &str| Matcher::new(MatchType::Regex, n, v);
    let queries: Vec<(&str, Vec<Matcher>)> = vec![
        (
            "sel_hist_buckets",
            vec![Matcher::equal(
                "__name__",
                "http_request_duration_seconds_bucket",
            )],
        ),
        (
            "sel_cpu_not_idle",
            vec![
                Matcher::equal("__name__", "node_cpu_seconds_total"),
                Matcher::new(MatchType::NotEqual, "mode", "idle")?,
            ],
        ),
        ("sel_one_target", vec![Matcher::equal("instance", &inst)]),
        (
            "sel_regex",
            vec![
                re("__name__", "node_load(1|5|15)")?,
                re("instance", "host-00[0-4].*")?,
            ],
        ),
    ];
    for (name, m) in &queries {
        let mut runs = 0u32;
        let mut sel_time = Duration::ZERO;
        let mut dec_time = Duration::ZERO;
        let (mut series, mut samples) = (0usize, 0usize);
        let mut checksum = 0.0;
        while runs < 3 || (sel_time + dec_time < Duration::from_secs(1) && runs < 200) {
            let start = Instant::now();
            let set = head.select(i64::MIN, i64::MAX, m, None)?;
            let mid = Instant::now();
            series = set.len();
            samples = 0;
            for s in &set {
                let mut it = s.iter();
                while it.next() == ValueType::Float {
                    checksum += it.at().1;
                    samples += 1;
                }
                if let Some(e) = it.err() {
                    bail!("decoding {}: {e}", s.labels);
                }
            }
            dec_time += mid.elapsed();
            sel_time += mid - start;
            runs += 1;
        }
        let total = (sel_time + dec_time).as_secs_f64();
        result(&format!("{sel}{name}_series"), series as f64);
        result(&format!("{sel}{name}_samples"), samples as f64);
        result(
            &format!("{sel}{name}_ms_per_query"),
            total * 1e3 / f64::from(runs),
        );
        result(
            &format!("{sel}{name}_samples_per_sec"),
            samples as f64 * f64::from(runs) / total,
        );
        result(
            &format!("{sel}{name}_select_share"),
            sel_time.as_secs_f64() / total,
        );
        // Keeps the decode loop from being optimised away.
        if checksum.is_nan() {
            eprintln!("checksum {checksum}");
        }
    }
    Ok(())
}

/// Fresh process: appends through `Db::append` (fsync every second), one
/// batch per target scrape, then exits without closing the database, as a
/// crash would leave it.
fn child_wal_write(dir: &Path, args: &Args) -> crate::Result<()> {
    let db = Db::open(dir, db_options())?;
    let mut gens: Vec<TargetGen> = (0..args.targets)
        .map(|t| TargetGen::new(args.seed, t))
        .collect();
    let mut batches: Vec<Vec<(Labels, i64, f64)>> = (0..args.targets)
        .map(|t| target_labels(t).into_iter().map(|l| (l, 0, 0.0)).collect())
        .collect();
    let mut el = Duration::ZERO;
    let mut n = 0u64;
    for _ in 0..args.wal_samples {
        for (g, batch) in gens.iter_mut().zip(&mut batches) {
            let ts = g.step();
            for (s, v) in batch.iter_mut().zip(&g.values) {
                s.1 = ts;
                s.2 = *v;
            }
            let start = Instant::now();
            let st = db.append(batch)?;
            el += start.elapsed();
            ensure!(
                st.rejected.is_empty(),
                "Db::append rejected {} samples, first: {:?}",
                st.rejected.len(),
                st.rejected.first()
            );
            n += st.appended as u64;
        }
    }
    result("db_append_samples", n as f64);
    result("db_append_samples_per_sec", n as f64 / el.as_secs_f64());
    result("db_append_batch_size", SERIES_PER_TARGET as f64);
    let wal_bytes = pharos_storage::block::dir_size(&dir.join("wal"))?;
    result("wal_bytes", wal_bytes as f64);
    result("wal_bytes_per_sample", wal_bytes as f64 / n as f64);
    std::io::stdout().flush()?;
    // No close, no destructors: what a killed process leaves behind.
    std::process::exit(0);
}

fn print_table(args: &Args, block: &BlockSize, r: &BTreeMap<String, f64>) {
    let g = |k: &str| r.get(k).copied().unwrap_or(f64::NAN);
    let m = |k: &str| g(k) / 1e6;
    println!();
    println!(
        "Pharos storage bench: {} targets x {SERIES_PER_TARGET} series = {} series (head), \
         block {} targets x {BLOCK_STEPS} samples",
        args.targets,
        args.targets * SERIES_PER_TARGET,
        args.block_targets
    );
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| append, `Head::append_ref`, 1 thread | {:.2} M samples/s |",
        m("append_ref_samples_per_sec")
    );
    println!(
        "| append, `Db::append` (WAL, fsync every 1 s, {SERIES_PER_TARGET}-sample batches), 1 thread | {:.2} M samples/s |",
        m("db_append_samples_per_sec")
    );
    println!(
        "| series creation, `Head::get_or_create` | {:.2} M series/s |",
        m("head_create_series_per_sec")
    );
    println!(
        "| 2 h block: bytes/sample, whole block | {:.3} ({} B / {} samples) |",
        block.per_sample(block.total),
        block.total,
        block.samples
    );
    println!(
        "| 2 h block: bytes/sample, chunks only | {:.3} |",
        block.per_sample(block.chunks)
    );
    for (label, what) in [
        ("s", format!("{} samples/series", args.samples)),
        ("120", "120 samples/series".to_string()),
        ("130", "130 samples/series".to_string()),
        ("480", "480 samples/series (2 h)".to_string()),
    ] {
        println!(
            "| head memory/series after {what}: RSS delta | {:.0} B |",
            g(&format!("head_{label}_rss_bytes_per_series"))
        );
        println!(
            "| head memory/series after {what}: live heap delta | {:.0} B ({:.1} allocations; {:.0} B in mapped chunks_head files) |",
            g(&format!("head_{label}_heap_bytes_per_series")),
            g(&format!("head_{label}_allocs_per_series")),
            g(&format!("head_{label}_mapped_bytes_per_series"))
        );
        println!(
            "| head memory/series after {what}, all chunks on the heap (`Head::new`): RSS / live heap delta | {:.0} B / {:.0} B |",
            g(&format!("heaphead_{label}_rss_bytes_per_series")),
            g(&format!("heaphead_{label}_heap_bytes_per_series"))
        );
    }
    for q in [
        "sel_hist_buckets",
        "sel_cpu_not_idle",
        "sel_one_target",
        "sel_regex",
    ] {
        println!(
            "| select+decode `{q}`: {:.0} series, {:.0} samples | {:.2} ms/query, {:.1} M samples/s (all-heap head: {:.2} ms/query, {:.1} M samples/s) |",
            g(&format!("{q}_series")),
            g(&format!("{q}_samples")),
            g(&format!("{q}_ms_per_query")),
            m(&format!("{q}_samples_per_sec")),
            g(&format!("heaphead_{q}_ms_per_query")),
            m(&format!("heaphead_{q}_samples_per_sec"))
        );
    }
    println!(
        "| WAL replay (`Db::open` after exit without close), {:.1} M samples | {:.2} M samples/s ({:.2} s) |",
        m("replay_samples"),
        m("replay_samples_per_sec"),
        g("replay_seconds")
    );
}
