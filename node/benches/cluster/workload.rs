//! The workload: scrape-shaped series, their values, and the remote-write
//! requests that carry them, encoded and compressed before any clock
//! starts.

use bytes::Bytes;
use pharos_proto::prometheus as prompb;
use prost::Message;

use crate::Result;

pub(crate) const STEP_MS: i64 = 15_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const JOBS: [&str; 5] = ["api", "web", "db", "cache", "batch"];
pub(crate) const CODES: [&str; 6] = ["200", "201", "400", "404", "500", "503"];
pub(crate) const MODES: [&str; 8] = [
    "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
];
pub(crate) const LE: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

/// SplitMix64 finaliser: a deterministic stand-in for randomness.
pub(crate) fn hash(parts: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &p in parts {
        let mut z = (h ^ p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

/// How a series' value moves from one step to the next.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    /// A request counter; errors are rarer than successes.
    Requests {
        code: usize,
    },
    /// Bucket `le` of histogram `hist`: its cumulative count.
    Bucket {
        hist: usize,
        le: usize,
    },
    Count {
        hist: usize,
    },
    Sum {
        hist: usize,
    },
    Cpu {
        idle: bool,
    },
    Gauge,
}

pub(crate) const SERIES_PER_INSTANCE: usize = 1_000;

/// The metric name, extra labels and shape of series `j` of an instance
/// (1,000 of them: 240 request counters, 480 buckets, 40 `_count`, 40
/// `_sum`, 64 CPU counters, 136 gauges).
pub(crate) fn series_def(j: usize) -> (&'static str, Vec<(&'static str, String)>, Shape) {
    match j {
        0..240 => {
            let (path, method, code) = (j / 12, (j / 6) % 2, j % 6);
            (
                "http_requests_total",
                vec![
                    ("path", format!("/api/v1/p{path:02}")),
                    ("method", ["GET", "POST"][method].to_string()),
                    ("code", CODES[code].to_string()),
                ],
                Shape::Requests { code },
            )
        }
        240..720 => {
            let (hist, le) = ((j - 240) / 12, (j - 240) % 12);
            (
                "http_request_duration_seconds_bucket",
                vec![
                    ("handler", format!("/h{hist:02}")),
                    ("le", LE[le].to_string()),
                ],
                Shape::Bucket { hist, le },
            )
        }
        720..760 => (
            "http_request_duration_seconds_count",
            vec![("handler", format!("/h{:02}", j - 720))],
            Shape::Count { hist: j - 720 },
        ),
        760..800 => (
            "http_request_duration_seconds_sum",
            vec![("handler", format!("/h{:02}", j - 760))],
            Shape::Sum { hist: j - 760 },
        ),
        800..864 => {
            let (cpu, mode) = ((j - 800) / 8, (j - 800) % 8);
            (
                "node_cpu_seconds_total",
                vec![("cpu", cpu.to_string()), ("mode", MODES[mode].to_string())],
                Shape::Cpu { idle: mode == 0 },
            )
        }
        _ => (
            "node_memory_bytes",
            vec![("area", format!("a{:03}", j - 864))],
            Shape::Gauge,
        ),
    }
}

pub(crate) fn instance_name(i: usize) -> String {
    format!("node-{i:03}.bench.internal:9100")
}

pub(crate) fn job_of(i: usize) -> &'static str {
    JOBS[i % JOBS.len()]
}

pub(crate) struct Workload {
    pub(crate) instances: usize,
    pub(crate) points: usize,
    pub(crate) start_ms: i64,
}

impl Workload {
    pub(crate) fn series(&self) -> usize {
        self.instances * SERIES_PER_INSTANCE
    }

    pub(crate) fn samples(&self) -> usize {
        self.series() * self.points
    }

    /// Query time: the grid point after the last sample.
    pub(crate) fn end_ms(&self) -> i64 {
        self.start_ms + self.points as i64 * STEP_MS
    }

    /// 0.5–14.5 s: keeps every sample off the 15 s grid the queries use.
    pub(crate) fn phase_ms(instance: usize) -> i64 {
        500 + (instance as i64 * 2_741) % 14_000
    }
}

/// Observations falling in bucket `le` alone (not cumulative) of one
/// histogram during step `k`.
pub(crate) fn bucket_obs(instance: usize, hist: usize, k: usize, le: usize) -> u64 {
    // More weight in the middle buckets, a thin tail.
    const WEIGHT: [u64; 12] = [1, 2, 3, 5, 8, 6, 4, 3, 2, 1, 1, 1];
    hash(&[instance as u64, hist as u64, k as u64, le as u64]) % (WEIGHT[le] + 1)
}

pub(crate) fn step_increment(shape: Shape, instance: usize, series: usize, k: usize) -> f64 {
    let h = hash(&[series as u64, k as u64, 0xC0FFEE]);
    let cumulative = |hist: usize, upto: usize| -> u64 {
        (0..=upto).map(|le| bucket_obs(instance, hist, k, le)).sum()
    };
    match shape {
        Shape::Requests { code } => match code {
            0 => (h % 40) as f64,
            1 => (h % 6) as f64,
            _ => f64::from(h % 8 == 0),
        },
        Shape::Bucket { hist, le } => cumulative(hist, le) as f64,
        Shape::Count { hist } => cumulative(hist, 11) as f64,
        // Multiples of 1/1024 keep the sums exact in binary.
        Shape::Sum { hist } => cumulative(hist, 11) as f64 * 0.125 + (h % 512) as f64 / 1024.0,
        Shape::Cpu { idle } => (h % if idle { 1_500 } else { 150 }) as f64 / 100.0,
        Shape::Gauge => 0.0,
    }
}

/// Pre-encoded, snappy-compressed requests per sender, in send order, with
/// their sample counts.
pub(crate) struct Requests {
    pub(crate) senders: Vec<Vec<(Bytes, usize)>>,
    pub(crate) raw_bytes: usize,
    pub(crate) wire_bytes: usize,
}

pub(crate) fn build_requests(w: &Workload, per_request: usize, senders: usize) -> Result<Requests> {
    struct S {
        ts: prompb::TimeSeries,
        shape: Shape,
        instance: usize,
        value: f64,
    }
    let mut series = Vec::with_capacity(w.series());
    for i in 0..w.instances {
        for j in 0..SERIES_PER_INSTANCE {
            let (name, extra, shape) = series_def(j);
            let mut labels = vec![
                ("__name__", name.to_string()),
                ("instance", instance_name(i)),
                ("job", job_of(i).to_string()),
            ];
            labels.extend(extra);
            labels.sort();
            let idx = i * SERIES_PER_INSTANCE + j;
            let value = match shape {
                Shape::Requests { .. } | Shape::Cpu { .. } => {
                    (hash(&[idx as u64, 1]) % 100_000) as f64
                }
                _ => 0.0,
            };
            series.push(S {
                ts: prompb::TimeSeries {
                    labels: labels
                        .into_iter()
                        .map(|(name, value)| prompb::Label {
                            name: name.to_string(),
                            value,
                        })
                        .collect(),
                    samples: vec![prompb::Sample::default()],
                    ..Default::default()
                },
                shape,
                instance: i,
                value,
            });
        }
    }
    let mut out = Requests {
        senders: vec![Vec::new(); senders],
        raw_bytes: 0,
        wire_bytes: 0,
    };
    let mut open: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0); senders];
    let mut snappy = snap::raw::Encoder::new();
    let mut close = |body: &mut Vec<u8>, n: usize, to: &mut Vec<(Bytes, usize)>| -> Result<()> {
        let c = snappy.compress_vec(body)?;
        out.raw_bytes += body.len();
        out.wire_bytes += c.len();
        to.push((Bytes::from(c), n));
        body.clear();
        Ok(())
    };
    for k in 0..w.points {
        for (idx, s) in series.iter_mut().enumerate() {
            match s.shape {
                Shape::Gauge => {
                    s.value = 2e9 + (hash(&[idx as u64, k as u64, 2]) % 50_000) as f64 * 4096.0
                }
                shape => s.value += step_increment(shape, s.instance, idx, k),
            }
            s.ts.samples[0] = prompb::Sample {
                value: s.value,
                timestamp: w.start_ms + k as i64 * STEP_MS + Workload::phase_ms(s.instance),
            };
            let sender = idx % senders;
            let (body, n) = &mut open[sender];
            // One `WriteRequest.timeseries` entry (field 1), appended.
            prost::encoding::message::encode(1, &s.ts, body);
            *n += 1;
            if *n == per_request {
                close(body, *n, &mut out.senders[sender])?;
                *n = 0;
            }
        }
    }
    for (sender, (body, n)) in open.iter_mut().enumerate() {
        if *n > 0 {
            close(body, *n, &mut out.senders[sender])?;
        }
    }
    // The appended entries must decode as one WriteRequest.
    let first = &out.senders[0][0];
    let raw = snap::raw::Decoder::new().decompress_vec(&first.0)?;
    let req = prompb::WriteRequest::decode(&raw[..])?;
    if req.timeseries.len() != first.1 || req.timeseries[0].samples.len() != 1 {
        bail!(
            "encoding check: {} series decoded, {} expected",
            req.timeseries.len(),
            first.1
        );
    }
    Ok(out)
}
