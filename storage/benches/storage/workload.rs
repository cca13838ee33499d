//! A deterministic, scrape-shaped workload: `targets` node/app exporters,
//! each exposing the same [`SERIES_PER_TARGET`] series, scraped every 15 s.
//!
//! Per target (196 series):
//! - 40 counters: `node_cpu_seconds_total` (4 cpus × 4 modes, 2 decimals, as
//!   node_exporter's USER_HZ-based values), `http_requests_total`
//!   (4 handlers × 2 methods × 2 codes, Poisson increments),
//!   `node_network_{receive,transmit}_{bytes,packets}_total` (2 devices,
//!   large integer increments);
//! - 30 integer gauges: queue lengths (random walk), goroutines, open fds,
//!   running/blocked procs, memory byte counts in 4 KiB pages, replica counts
//!   that rarely change;
//! - 30 gauges with 2–3 decimals: load averages (2), temperatures (3), cache
//!   hit ratios and filesystem free ratios (3);
//! - 96 histogram series: `http_request_duration_seconds` (4 handlers × 12
//!   `le` buckets + `_sum` + `_count`, log-normal latencies, full-precision
//!   `_sum`) and `http_response_size_bytes` (4 handlers × 8 buckets + `_sum`
//!   + `_count`, integer sums).
//!
//! Timestamps: each target has a fixed offset in the 15 s interval (as
//! Prometheus spreads targets); 80% of scrapes land exactly on the target's
//! grid (Prometheus snaps scrape timestamps within 2 ms of the grid onto it,
//! its default `--scrape.timestamp-tolerance`), the other 20% are 1–20 ms
//! late.
//!
//! Everything is derived from `(seed, target)` with a private xorshift, so the
//! same arguments produce the same samples in every mode (Pharos head, block,
//! OpenMetrics file, loopback exporter).

use pharos_storage::labels::Labels;

/// Series each target exposes.
pub(crate) const SERIES_PER_TARGET: usize = 196;
/// Scrape interval of the generated timestamps (ms).
pub(crate) const INTERVAL_MS: i64 = 15_000;
/// Start of the generated data: a multiple of 2 h, so a 2 h block holds
/// exactly one 2 h window.
pub(crate) const T0: i64 = 1_700_006_400_000;

const HANDLERS: [&str; 4] = ["/api/v1/query", "/api/v1/write", "/metrics", "/healthz"];
const LATENCY_LE: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LATENCY_LE_STR: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
const SIZE_LE: [f64; 7] = [100.0, 1000.0, 10000.0, 100000.0, 1e6, 1e7, 1e8];
const SIZE_LE_STR: [&str; 8] = [
    "100", "1000", "10000", "100000", "1e+06", "1e+07", "1e+08", "+Inf",
];

/// xorshift64* — small, fast, and ours.
#[derive(Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // splitmix64 finaliser, so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    #[inline]
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Standard normal (Box–Muller, one of the pair).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-300);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Poisson-distributed count with mean `lambda` (Knuth for small means,
    /// a rounded normal for large ones).
    pub(crate) fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let l = (-lambda).exp();
            let mut k = 0u64;
            let mut p = 1.0;
            loop {
                p *= self.f64();
                if p <= l {
                    return k;
                }
                k += 1;
            }
        }
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
    }
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (v * m).round() / m
}

/// Label sets of target `t`, in the order [`TargetGen::step`] fills values.
pub(crate) fn target_labels(t: usize) -> Vec<Labels> {
    let instance = instance(t);
    let mut out = Vec::with_capacity(SERIES_PER_TARGET);
    let mut push = |name: &str, extra: &[(&str, &str)]| {
        let mut pairs: Vec<(&str, &str)> = vec![
            ("__name__", name),
            ("instance", instance.as_str()),
            ("job", "node"),
        ];
        pairs.extend_from_slice(extra);
        out.push(Labels::from_pairs(pairs));
    };
    for cpu in ["0", "1", "2", "3"] {
        for mode in ["idle", "user", "system", "iowait"] {
            push("node_cpu_seconds_total", &[("cpu", cpu), ("mode", mode)]);
        }
    }
    for h in HANDLERS {
        for method in ["GET", "POST"] {
            for code in ["200", "500"] {
                push(
                    "http_requests_total",
                    &[("handler", h), ("method", method), ("code", code)],
                );
            }
        }
    }
    for dir in ["receive", "transmit"] {
        for unit in ["bytes", "packets"] {
            for dev in ["eth0", "eth1"] {
                push(
                    &format!("node_network_{dir}_{unit}_total"),
                    &[("device", dev)],
                );
            }
        }
    }
    // Integer gauges.
    for q in 0..10 {
        push("app_queue_length", &[("queue", &format!("q{q}"))]);
    }
    for name in [
        "go_goroutines",
        "process_open_fds",
        "node_filefd_allocated",
        "node_procs_running",
        "node_procs_blocked",
    ] {
        push(name, &[]);
    }
    for field in [
        "MemFree",
        "Cached",
        "Buffers",
        "Active",
        "Inactive",
        "Dirty",
        "Slab",
        "Mapped",
        "Shmem",
        "AnonPages",
    ] {
        push(&format!("node_memory_{field}_bytes"), &[]);
    }
    for d in 0..5 {
        push(
            "kube_deployment_spec_replicas",
            &[("deployment", &format!("svc-{d}"))],
        );
    }
    // Decimal gauges.
    for name in ["node_load1", "node_load5", "node_load15"] {
        push(name, &[]);
    }
    for s in 0..8 {
        push(
            "node_hwmon_temp_celsius",
            &[("chip", "coretemp"), ("sensor", &format!("temp{s}"))],
        );
    }
    for c in 0..10 {
        push("app_cache_hit_ratio", &[("cache", &format!("c{c}"))]);
    }
    for m in 0..9 {
        push(
            "node_filesystem_avail_ratio",
            &[("mountpoint", &format!("/mnt/disk{m}"))],
        );
    }
    // Histograms.
    for h in HANDLERS {
        for le in LATENCY_LE_STR {
            push(
                "http_request_duration_seconds_bucket",
                &[("handler", h), ("le", le)],
            );
        }
        push("http_request_duration_seconds_sum", &[("handler", h)]);
        push("http_request_duration_seconds_count", &[("handler", h)]);
    }
    for h in HANDLERS {
        for le in SIZE_LE_STR {
            push(
                "http_response_size_bytes_bucket",
                &[("handler", h), ("le", le)],
            );
        }
        push("http_response_size_bytes_sum", &[("handler", h)]);
        push("http_response_size_bytes_count", &[("handler", h)]);
    }
    debug_assert_eq!(out.len(), SERIES_PER_TARGET);
    out
}

fn instance(t: usize) -> String {
    format!("host-{t:04}.dc1.example.net:9100")
}

/// The scrape generator of one target.
pub(crate) struct TargetGen {
    rng: Rng,
    offset_ms: i64,
    step: i64,
    /// Current value of every series, in [`target_labels`] order.
    pub(crate) values: Vec<f64>,
    /// Per-series rate or level, drawn once.
    params: Vec<f64>,
    /// Scratch: per-bucket observation counts of one scrape.
    scratch: [u64; 12],
}

impl TargetGen {
    pub(crate) fn new(seed: u64, t: usize) -> TargetGen {
        let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0x1000_0000_01b3));
        let offset_ms = rng.below(INTERVAL_MS as u64 - 100) as i64;
        let mut values = vec![0.0; SERIES_PER_TARGET];
        let mut params = vec![0.0; SERIES_PER_TARGET];
        let mut i = 0;
        // cpu seconds per second per mode, and a starting uptime.
        let uptime = 1e5 + rng.f64() * 1e6;
        for _cpu in 0..4 {
            for share in [0.7, 0.22, 0.07, 0.01] {
                let r = share * (0.5 + rng.f64());
                params[i] = r;
                values[i] = round_to(uptime * r, 2);
                i += 1;
            }
        }
        for _h in 0..4 {
            for _m in 0..2 {
                for code in 0..2 {
                    // Requests per second; errors are rare.
                    let r = if code == 0 {
                        rng.f64() * 20.0
                    } else {
                        rng.f64() * 0.05
                    };
                    params[i] = r;
                    values[i] = (uptime * r).floor();
                    i += 1;
                }
            }
        }
        for _ in 0..8 {
            let r = 1e3 + rng.f64() * 1e6;
            params[i] = r;
            values[i] = (uptime * r).floor();
            i += 1;
        }
        for k in 0..30 {
            let level = match k {
                0..=9 => rng.below(20) as f64,
                10 => 50.0 + rng.below(200) as f64,
                11 | 12 => 100.0 + rng.below(2000) as f64,
                13 | 14 => rng.below(4) as f64,
                15..=24 => 4096.0 * (1e4 + rng.below(1_000_000) as f64),
                _ => 1.0 + rng.below(5) as f64,
            };
            params[i] = level;
            values[i] = level;
            i += 1;
        }
        for k in 0..30 {
            let level = match k {
                0..=2 => round_to(0.2 + rng.f64() * 3.0, 2),
                3..=10 => round_to(35.0 + rng.f64() * 30.0, 3),
                _ => round_to(0.3 + rng.f64() * 0.69, 3),
            };
            params[i] = level;
            values[i] = level;
            i += 1;
        }
        // Histograms: request rate per handler; counts start at zero.
        for _ in 0..8 {
            let per_hist = if i < 196 - 40 { 14 } else { 10 };
            params[i] = rng.f64() * 15.0;
            i += per_hist;
        }
        debug_assert_eq!(i, SERIES_PER_TARGET);
        TargetGen {
            rng,
            offset_ms,
            step: 0,
            values,
            params,
            scratch: [0; 12],
        }
    }

    /// Advances one scrape: updates [`TargetGen::values`] and returns the
    /// scrape's timestamp (ms).
    pub(crate) fn step(&mut self) -> i64 {
        let rng = &mut self.rng;
        let jitter = if rng.f64() < 0.8 {
            0
        } else {
            1 + rng.below(20) as i64
        };
        let t = T0 + self.offset_ms + self.step * INTERVAL_MS + jitter;
        self.step += 1;
        let secs = INTERVAL_MS as f64 / 1000.0;
        let (v, p) = (&mut self.values, &self.params);
        let mut i = 0;
        for _ in 0..16 {
            let inc = secs * p[i] * (0.7 + 0.6 * rng.f64());
            v[i] = round_to(v[i] + inc, 2);
            i += 1;
        }
        for _ in 0..16 {
            v[i] += rng.poisson(p[i] * secs) as f64;
            i += 1;
        }
        for _ in 0..8 {
            v[i] += (p[i] * secs * (0.5 + rng.f64())).floor();
            i += 1;
        }
        for k in 0..30 {
            v[i] = match k {
                // Queue lengths: a random walk that stays near zero.
                0..=9 => (v[i] + rng.below(5) as f64 - 2.0).max(0.0),
                10..=12 => (v[i] + rng.below(7) as f64 - 3.0).max(1.0),
                13 | 14 => rng.poisson(p[i]) as f64,
                15..=24 => (v[i] + 4096.0 * (rng.below(201) as f64 - 100.0)).max(4096.0),
                // Replicas change once in a while.
                _ => {
                    if rng.below(1000) == 0 {
                        p[i] + rng.below(3) as f64
                    } else {
                        v[i]
                    }
                }
            };
            i += 1;
        }
        for k in 0..30 {
            let (decimals, spread) = match k {
                0..=2 => (2, 0.05),
                3..=10 => (3, 0.4),
                _ => (3, 0.002),
            };
            // Mean-reverting noise around the series' level.
            let x = v[i] + 0.2 * (p[i] - v[i]) + spread * rng.normal();
            v[i] = round_to(x.max(0.0), decimals);
            i += 1;
        }
        for h in 0..8 {
            let latency = h < 4;
            let (les, nb): (&[f64], usize) = if latency {
                (&LATENCY_LE, 12)
            } else {
                (&SIZE_LE, 8)
            };
            let n = rng.poisson(p[i] * secs);
            let counts = &mut self.scratch[..nb];
            counts.fill(0);
            let mut sum = 0.0;
            for _ in 0..n {
                let x = if latency {
                    (-3.5 + 1.2 * rng.normal()).exp()
                } else {
                    (7.0 + 2.0 * rng.normal()).exp().floor()
                };
                sum += x;
                let b = les.iter().position(|&le| x <= le).unwrap_or(nb - 1);
                counts[b] += 1;
            }
            // Buckets are cumulative over `le`.
            let mut cum = 0;
            for (b, c) in counts.iter().enumerate() {
                cum += c;
                v[i + b] += cum as f64;
            }
            v[i + nb] += sum;
            v[i + nb + 1] += n as f64;
            i += nb + 2;
        }
        t
    }
}

/// Which of the workload's four kinds a metric name belongs to.
pub(crate) fn kind_of(metric: &str) -> &'static str {
    if metric.ends_with("_bucket") || metric.ends_with("_sum") || metric.ends_with("_count") {
        "histogram"
    } else if metric.ends_with("_total") {
        "counter"
    } else if metric.starts_with("node_load")
        || metric == "node_hwmon_temp_celsius"
        || metric.ends_with("_ratio")
    {
        "decimal_gauge"
    } else {
        "int_gauge"
    }
}
