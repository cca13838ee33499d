//! Interoperability with the real Prometheus `promtool` (2.42 in CI): blocks
//! Pharos writes must read back sample-for-sample through `promtool tsdb
//! dump`, and blocks promtool creates must read back exactly through Pharos.
//!
//! Without `promtool` the tests print a note and pass, unless
//! `PHAROS_REQUIRE_PEERS=1`, which turns a missing peer into a failure.
//! `PROMTOOL` may point at a specific binary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use super::tests::series_of;
use super::*;
use crate::chunk::{collect_samples, STALE_NAN};
use crate::labels::Labels;
use crate::querier::Querier;
use crate::series::Series;

/// A series' labels and samples, as test data.
type LabeledSamples = (Labels, Vec<(i64, f64)>);

/// Two-hour aligned start near 2023-11-14, like a real head cut.
const T0: i64 = 1_699_999_200_000;
const STEP: i64 = 15_000;

fn promtool() -> Option<PathBuf> {
    let candidate = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("promtool"));
    let ok = Command::new(&candidate)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(candidate);
    }
    if std::env::var("PHAROS_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!(
            "PHAROS_REQUIRE_PEERS=1 but promtool ({}) cannot be run; install Prometheus's promtool or set PROMTOOL",
            candidate.display()
        );
    }
    eprintln!(
        "note: promtool not found ({}); skipping promtool interop test",
        candidate.display()
    );
    None
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Deterministic pseudo-random numbers (SplitMix64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Scrape-shaped test data: counters (with a reset), gauges with decimals,
/// integer gauges, values needing exponents, and stale markers.
fn workload(series_per_kind: usize, samples: usize) -> Vec<LabeledSamples> {
    let mut rng = Rng(42);
    let mut out = Vec::new();
    for i in 0..series_per_kind {
        let inst = format!("10.0.{}.{}:9100", i / 50, i % 50);
        let code = ["200", "404", "500"][i % 3];
        let mut v = 0.0;
        let counter: Vec<(i64, f64)> = (0..samples)
            .map(|k| {
                v += rng.below(100) as f64;
                if k == samples / 2 && i % 10 == 0 {
                    v = 0.0;
                }
                (T0 + k as i64 * STEP, v)
            })
            .collect();
        out.push((
            Labels::from_pairs([
                ("__name__", "http_requests_total"),
                ("code", code),
                ("instance", inst.as_str()),
                ("job", "node"),
            ]),
            counter,
        ));
        let mut g = 20.0 + i as f64;
        let gauge: Vec<(i64, f64)> = (0..samples)
            .map(|k| {
                g += (rng.below(2001) as f64 - 1000.0) / 1000.0;
                g = (g * 1000.0).round() / 1000.0;
                let mut val = g;
                if i % 7 == 0 && k % 50 == 49 {
                    val = STALE_NAN;
                }
                (T0 + k as i64 * STEP, val)
            })
            .collect();
        out.push((
            Labels::from_pairs([
                ("__name__", "node_temperature_celsius"),
                ("instance", inst.as_str()),
                ("sensor", "cpu \"die\"\n"),
            ]),
            gauge,
        ));
        let odd: Vec<(i64, f64)> = (0..samples)
            .map(|k| {
                let val = match k % 5 {
                    0 => 1.5e-7 * (k + 1) as f64,
                    1 => -3.25e12,
                    2 => (rng.below(1 << 40) as f64) * 1024.0,
                    3 => -0.0,
                    _ => 0.1 + 0.2,
                };
                // Jittered timestamps, as real scrapes have.
                (T0 + k as i64 * STEP + rng.below(500) as i64, val)
            })
            .collect();
        out.push((
            Labels::from_pairs([
                ("__name__", "odd_values"),
                ("instance", inst.as_str()),
                ("kind", "mixed"),
            ]),
            odd,
        ));
    }
    out
}

/// Parses `promtool tsdb dump` output (`{labels} value timestamp` lines).
fn parse_dump(text: &str) -> BTreeMap<(String, i64), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let mut parts = line.rsplitn(3, ' ');
        let ts: i64 = parts.next().unwrap().parse().unwrap();
        let v = parts.next().unwrap();
        let labels = parts.next().unwrap().to_string();
        let value = match v {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|e| panic!("value {other:?} in {line:?}: {e}")),
        };
        assert!(
            out.insert((labels, ts), value).is_none(),
            "duplicate sample {line}"
        );
    }
    out
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

#[test]
fn promtool_reads_pharos_blocks() {
    let Some(promtool) = promtool() else { return };
    let data = workload(100, 240);
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<Series> = data
        .iter()
        .map(|(l, s)| {
            let pairs: Vec<(&str, &str)> = l.iter().collect();
            series_of(&pairs, s, 120)
        })
        .collect();
    // Small segments, so chunk refs point into several files: checks that
    // Prometheus and Pharos number segments the same way.
    let meta = BlockWriter::new(dir.path(), T0, T0 + 7_200_000)
        .with_options(WriteOptions {
            segment_size: 64 << 10,
            ..Default::default()
        })
        .write(input)
        .unwrap();
    let id = meta.ulid.to_string();
    let segments = std::fs::read_dir(dir.path().join(&id).join("chunks"))
        .unwrap()
        .count();
    assert!(segments > 3, "{segments} segments");
    // `promtool tsdb dump` opens the directory as a whole Prometheus data
    // dir, which always has a WAL; a Pharos data dir has its own beside the
    // blocks.
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();

    let analyze = run(Command::new(&promtool)
        .args(["tsdb", "analyze"])
        .arg(dir.path())
        .arg(&id));
    assert!(analyze.contains(&format!("Block ID: {id}")), "{analyze}");
    assert!(analyze.contains("Series: 300"), "{analyze}");
    let list = run(Command::new(&promtool)
        .args(["tsdb", "list"])
        .arg(dir.path()));
    let row = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{list}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], T0.to_string(), "{row}");
    assert_eq!(cols[4], (300 * 240).to_string(), "numSamples: {row}");
    assert_eq!(cols[6], "300", "numSeries: {row}");

    // Full dump, then a sub-range dump (both bounds inclusive).
    for (lo, hi) in [(i64::MIN, i64::MAX), (T0 + 600_000, T0 + 1_800_000)] {
        let text = run(Command::new(&promtool)
            .args(["tsdb", "dump"])
            .arg(format!("--min-time={lo}"))
            .arg(format!("--max-time={hi}"))
            .arg(dir.path()));
        let got = parse_dump(&text);
        let mut want = BTreeMap::new();
        for (l, s) in &data {
            for &(t, v) in s.iter().filter(|(t, _)| (lo..=hi).contains(t)) {
                want.insert((l.to_string(), t), v);
            }
        }
        assert_eq!(got.len(), want.len(), "sample count for [{lo}, {hi}]");
        for ((k, w), (gk, g)) in want.iter().zip(&got) {
            assert_eq!(k, gk);
            assert!(
                same_value(*w, *g),
                "{k:?}: wrote {w:?}, promtool read {g:?}"
            );
        }
    }
}

/// Formats `v` for OpenMetrics so that it parses back to the same bits
/// (Rust's `{:?}` is the shortest round-tripping form).
fn om_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v:?}")
    }
}

#[test]
fn pharos_reads_promtool_blocks() {
    let Some(promtool) = promtool() else { return };
    // 3h of data at whole seconds, so promtool cuts two blocks.
    let mut rng = Rng(7);
    let steps = 3 * 3600 / 15;
    let mut families: Vec<(&str, &str, Vec<LabeledSamples>)> = Vec::new();
    let mut counters = Vec::new();
    let mut gauges = Vec::new();
    for i in 0..40 {
        let inst = format!("host-{i}");
        let mut c = 0.0;
        counters.push((
            Labels::from_pairs([("__name__", "jobs_total"), ("instance", inst.as_str())]),
            (0..steps)
                .map(|k| {
                    c += rng.below(10) as f64;
                    (T0 + k * STEP, c)
                })
                .collect::<Vec<_>>(),
        ));
        gauges.push((
            Labels::from_pairs([
                ("__name__", "queue_fill_ratio"),
                ("instance", inst.as_str()),
                ("q", "a b"),
            ]),
            (0..steps)
                .map(|k| {
                    let v = match k % 97 {
                        0 => f64::NAN,
                        1 => 1e-9,
                        _ => rng.below(100_000) as f64 / 1000.0 - 3.0,
                    };
                    (T0 + k * STEP + if k % 2 == 0 { 0 } else { 1000 }, v)
                })
                .collect::<Vec<_>>(),
        ));
    }
    families.push(("jobs", "counter", counters));
    families.push(("queue_fill_ratio", "gauge", gauges));

    let mut text = String::new();
    for (name, kind, series) in &families {
        text.push_str(&format!("# HELP {name} test data\n# TYPE {name} {kind}\n"));
        for (l, samples) in series {
            let labels: Vec<String> = l
                .iter()
                .filter(|(n, _)| *n != "__name__")
                .map(|(n, v)| format!("{n}=\"{v}\""))
                .collect();
            for &(t, v) in samples {
                text.push_str(&format!(
                    "{}{{{}}} {} {}\n",
                    l.metric_name().unwrap(),
                    labels.join(","),
                    om_value(v),
                    t / 1000
                ));
            }
        }
    }
    text.push_str("# EOF\n");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.om");
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("blocks");
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
        .arg(&input)
        .arg(&out));

    let mut blocks = Vec::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.join("meta.json").exists() {
            blocks.push(Block::open(&p).unwrap());
        }
    }
    assert!(
        blocks.len() >= 2,
        "expected several 2h blocks, got {}",
        blocks.len()
    );
    let mut got: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut total = 0;
    for b in &blocks {
        let m = b.meta();
        let checked = b.verify().unwrap();
        assert_eq!(checked.num_samples, m.stats.num_samples);
        total += m.stats.num_samples;
        for s in b.select(i64::MIN, i64::MAX, &[], None).unwrap() {
            for (t, v) in collect_samples(&mut s.iter()).unwrap() {
                assert!(
                    t >= m.min_time && t < m.max_time,
                    "sample {t} outside block {}",
                    m.ulid
                );
                assert!(got.insert((s.labels.to_string(), t), v).is_none());
            }
        }
        // Label metadata through the index.
        assert_eq!(
            b.label_names(i64::MIN, i64::MAX, &[]).unwrap(),
            vec!["__name__", "instance", "q"]
        );
        // Rewriting Prometheus's series and chunks with Pharos's writer
        // reproduces its index and chunk files byte for byte.
        let again = tempfile::tempdir().unwrap();
        let copy = BlockWriter::new(again.path(), m.min_time, m.max_time)
            .write(b.all_series().unwrap())
            .unwrap();
        assert_eq!(copy.stats, m.stats);
        let cdir = again.path().join(copy.ulid.to_string());
        for file in ["index", "chunks/000001", "tombstones"] {
            let ours = std::fs::read(cdir.join(file)).unwrap();
            let theirs = std::fs::read(b.dir().join(file)).unwrap();
            assert!(
                ours == theirs,
                "{file} differs from Prometheus's ({} vs {} bytes)",
                ours.len(),
                theirs.len()
            );
        }
    }
    let mut want = BTreeMap::new();
    for (_, _, series) in &families {
        for (l, samples) in series {
            for &(t, v) in samples {
                want.insert((l.to_string(), t), v);
            }
        }
    }
    assert_eq!(total as usize, want.len());
    assert_eq!(got.len(), want.len());
    for ((k, w), (gk, g)) in want.iter().zip(&got) {
        assert_eq!(k, gk);
        assert!(same_value(*w, *g), "{k:?}: wrote {w:?}, Pharos read {g:?}");
    }
}

/// Scrape-shaped data for one 2h block at 15s: per instance a counter, an
/// integer gauge, a gauge with 3 decimals and 8 histogram buckets. With
/// `jitter`, 1 scrape in 10 is a few ms off the grid (Prometheus aligns
/// jitter under 2ms, larger stays).
fn scrape_workload(instances: usize, jitter: bool) -> Vec<LabeledSamples> {
    let samples = 480;
    let mut rng = Rng(99);
    let mut out = Vec::new();
    let t = |k: usize, rng: &mut Rng| {
        let j = if jitter && rng.below(10) == 0 {
            rng.below(7) as i64 - 3
        } else {
            0
        };
        T0 + k as i64 * STEP + j
    };
    for i in 0..instances {
        let inst = format!("10.1.{}.{}:9100", i / 100, i % 100);
        let l = |pairs: &[(&str, &str)]| {
            let mut v = pairs.to_vec();
            v.push(("instance", inst.as_str()));
            Labels::from_pairs(v)
        };
        let mut c = 0.0;
        let s = (0..samples)
            .map(|k| {
                c += 50.0 + rng.below(20) as f64;
                (t(k, &mut rng), c)
            })
            .collect();
        out.push((l(&[("__name__", "node_network_receive_bytes_total")]), s));
        let mut g = 12.0;
        let s = (0..samples)
            .map(|k| {
                if rng.below(20) == 0 {
                    g += 1.0;
                }
                (t(k, &mut rng), g)
            })
            .collect();
        out.push((l(&[("__name__", "node_procs_running")]), s));
        let mut x: f64 = 0.5;
        let s = (0..samples)
            .map(|k| {
                x = ((x + (rng.below(21) as f64 - 10.0) / 1000.0).clamp(0.0, 1.0) * 1000.0).round()
                    / 1000.0;
                (t(k, &mut rng), x)
            })
            .collect();
        out.push((l(&[("__name__", "node_load_ratio")]), s));
        let les = ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"];
        let mut counts = [0.0f64; 8];
        let mut buckets: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 8];
        for k in 0..samples {
            let ts = t(k, &mut rng);
            let mut acc = 0.0;
            for (b, cnt) in counts.iter_mut().enumerate() {
                acc += rng.below(5) as f64;
                *cnt += acc;
                buckets[b].push((ts, *cnt));
            }
        }
        for (b, s) in buckets.into_iter().enumerate() {
            out.push((
                l(&[
                    ("__name__", "http_request_duration_seconds_bucket"),
                    ("le", les[b]),
                ]),
                s,
            ));
        }
    }
    out
}

/// Writes `data` as a Pharos block; returns (bytes on disk, samples).
fn pharos_block_size(dir: &std::path::Path, data: &[LabeledSamples]) -> (u64, u64) {
    let input: Vec<Series> = data
        .iter()
        .map(|(l, s)| {
            let pairs: Vec<(&str, &str)> = l.iter().collect();
            series_of(&pairs, s, 120)
        })
        .collect();
    let meta = BlockWriter::new(dir, T0, T0 + 7_200_000)
        .write(input)
        .unwrap();
    (
        dir_size(&dir.join(meta.ulid.to_string())).unwrap(),
        meta.stats.num_samples,
    )
}

/// Bytes per sample of a realistic 2h block, and of the block Prometheus
/// 2.42 (`promtool tsdb create-blocks-from`) makes from the same samples.
/// Run with `--nocapture` to see the figures.
#[test]
fn bytes_per_sample_of_a_scrape_shaped_block() {
    let dir = tempfile::tempdir().unwrap();
    let jittered = scrape_workload(200, true);
    let mut per_metric: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (l, s) in &jittered {
        let pairs: Vec<(&str, &str)> = l.iter().collect();
        let series = series_of(&pairs, s, 120);
        let e = per_metric.entry(l.metric_name().unwrap_or("")).or_default();
        e.0 += series
            .chunks
            .iter()
            .map(|c| c.chunk.bytes().len())
            .sum::<usize>();
        e.1 += series
            .chunks
            .iter()
            .map(|c| c.chunk.num_samples())
            .sum::<usize>();
    }
    for (name, (bytes, n)) in &per_metric {
        println!(
            "{name}: {:.3} B/sample in chunk data",
            *bytes as f64 / *n as f64
        );
    }
    let (size, n) = pharos_block_size(&dir.path().join("jittered"), &jittered);
    let bps = size as f64 / n as f64;
    println!("Pharos block, {} series, {n} samples, jittered timestamps: {size} bytes, {bps:.3} B/sample", jittered.len());
    // XOR chunks of scrape-shaped data land near Prometheus's figure; a
    // regression to raw 16-byte samples must fail.
    assert!(bps < 4.0, "{bps} B/sample");

    // Same shape on the exact grid, side by side with Prometheus.
    let grid = scrape_workload(50, false);
    let (size, n) = pharos_block_size(&dir.path().join("grid"), &grid);
    let pharos_bps = size as f64 / n as f64;
    println!("Pharos block, {n} samples on the 15s grid: {size} bytes, {pharos_bps:.3} B/sample");
    let Some(promtool) = promtool() else { return };
    let mut text = String::with_capacity(n as usize * 60);
    for (l, s) in &grid {
        let labels: Vec<String> = l
            .iter()
            .filter(|(n, _)| *n != "__name__")
            .map(|(n, v)| format!("{n}=\"{v}\""))
            .collect();
        for &(t, v) in s {
            text.push_str(&format!(
                "{}{{{}}} {} {}\n",
                l.metric_name().unwrap(),
                labels.join(","),
                om_value(v),
                t / 1000
            ));
        }
    }
    text.push_str("# EOF\n");
    let input = dir.path().join("grid.om");
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("prom");
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
        .arg(&input)
        .arg(&out));
    let mut psize = 0;
    let mut pn = 0;
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.join("meta.json").exists() {
            psize += dir_size(&p).unwrap();
            pn += BlockMeta::read(&p).unwrap().stats.num_samples;
        }
    }
    assert_eq!(pn, n, "promtool imported a different number of samples");
    let prom_bps = psize as f64 / pn as f64;
    println!("Prometheus 2.42 block of the same samples: {psize} bytes, {prom_bps:.3} B/sample");
    // Same chunk encoding and index format: within a few percent.
    assert!(
        pharos_bps <= prom_bps * 1.05,
        "Pharos {pharos_bps:.3} vs Prometheus {prom_bps:.3} B/sample"
    );
}

/// A block produced by vertical compaction (re-cut chunks, merged
/// replicas) is as readable by promtool as one cut from the head.
#[test]
fn promtool_reads_compacted_blocks() {
    let Some(promtool) = promtool() else { return };
    let data = workload(20, 480);
    let dir = tempfile::tempdir().unwrap();
    // Two "replicas": the first half and an overlapping second part.
    let half = |lo: i64, hi: i64| -> Vec<Series> {
        data.iter()
            .map(|(l, s)| {
                let pairs: Vec<(&str, &str)> = l.iter().collect();
                let part: Vec<(i64, f64)> = s
                    .iter()
                    .copied()
                    .filter(|(t, _)| (lo..hi).contains(t))
                    .collect();
                series_of(&pairs, &part, 100)
            })
            .collect()
    };
    let mid = T0 + 3_600_000;
    BlockWriter::new(dir.path(), T0, mid + 600_000)
        .write(half(T0, mid + 600_000))
        .unwrap();
    BlockWriter::new(dir.path(), mid - 600_000, T0 + 7_200_000)
        .write(half(mid - 600_000, T0 + 7_200_000))
        .unwrap();
    let c = crate::compact::Compactor::new(dir.path(), Default::default());
    let plan = c.plan().unwrap();
    assert_eq!(plan.len(), 2);
    let meta = c.compact(&plan).unwrap().unwrap();
    assert_eq!(meta.compaction.level, 2);
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();
    let analyze = run(Command::new(&promtool)
        .args(["tsdb", "analyze"])
        .arg(dir.path())
        .arg(meta.ulid.to_string()));
    assert!(analyze.contains("Series: 60"), "{analyze}");
    let got = parse_dump(&run(Command::new(&promtool)
        .args(["tsdb", "dump"])
        .arg(dir.path())));
    let mut want = BTreeMap::new();
    for (l, s) in &data {
        for &(t, v) in s {
            want.insert((l.to_string(), t), v);
        }
    }
    assert_eq!(got.len(), want.len());
    for ((k, w), (gk, g)) in want.iter().zip(&got) {
        assert_eq!(k, gk);
        assert!(
            same_value(*w, *g),
            "{k:?}: wrote {w:?}, promtool read {g:?}"
        );
    }
}

/// Tombstones Pharos writes are honoured by Prometheus's reader.
#[test]
fn promtool_honours_pharos_tombstones() {
    let Some(promtool) = promtool() else { return };
    let data = workload(10, 240);
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<Series> = data
        .iter()
        .map(|(l, s)| {
            let pairs: Vec<(&str, &str)> = l.iter().collect();
            series_of(&pairs, s, 120)
        })
        .collect();
    let meta = BlockWriter::new(dir.path(), T0, T0 + 7_200_000)
        .write(input)
        .unwrap();
    let block = Block::open(&dir.path().join(meta.ulid.to_string())).unwrap();
    let (lo, hi) = (T0 + 300_000, T0 + 900_000);
    let m = [crate::labels::Matcher::equal(
        "__name__",
        "node_temperature_celsius",
    )];
    assert_eq!(block.delete(lo, hi, &m).unwrap(), 10);
    let all = [crate::labels::Matcher::equal("instance", "10.0.0.3:9100")];
    assert_eq!(block.delete(T0 + 3_000_000, i64::MAX, &all).unwrap(), 3);
    drop(block);
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();
    let got = parse_dump(&run(Command::new(&promtool)
        .args(["tsdb", "dump"])
        .arg(dir.path())));
    let mut want = BTreeMap::new();
    for (l, s) in &data {
        for &(t, v) in s {
            let in_first =
                l.metric_name() == Some("node_temperature_celsius") && (lo..=hi).contains(&t);
            let in_second = l.get("instance") == Some("10.0.0.3:9100") && t >= T0 + 3_000_000;
            if !in_first && !in_second {
                want.insert((l.to_string(), t), v);
            }
        }
    }
    assert_eq!(got.len(), want.len());
    for ((k, w), (gk, g)) in want.iter().zip(&got) {
        assert_eq!(k, gk);
        assert!(same_value(*w, *g), "{k:?}");
    }
}
