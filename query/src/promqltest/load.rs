//! Loading script data into real storage (README §4.3, §4.7, §4.8, §5.2).
//!
//! [`TestStorage`] is one file's storage: a fresh storage `Head` with
//! out-of-order ingestion disabled, as upstream runs the corpus; `clear`
//! replaces it. Float samples (staleness markers included) go to the head.
//! Start timestamps (`@st` lines, README §4.7) are stored with their float
//! samples (`Head::append_with_st`). The head stores no native histograms
//! yet, so histogram samples (from `{{…}}` literals and from
//! `load_with_nhcb` conversion) are counted and kept out of storage;
//! [`TestStorage::holds_histograms`] tells the runner a case runs over
//! incomplete data.

use std::collections::BTreeMap;

use pharos_storage::head::{Head, HeadOptions};
use pharos_storage::labels::{Labels, METRIC_NAME};

use super::histogram::{TestHistogram, CUSTOM_BUCKETS_SCHEMA};
use super::script::{LoadCommand, SeriesValue};

/// Why a `load` failed; the runner aborts the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("load at line {line}: series {series} at t={t}: {source}")]
    Append {
        line: usize,
        series: Labels,
        t: i64,
        source: pharos_storage::StorageError,
    },
    #[error("load_with_nhcb at line {line}: series {series} at t={t}: {why}")]
    Nhcb {
        line: usize,
        series: Labels,
        t: i64,
        why: String,
    },
}

/// What one `load` stored and what it had to leave out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadStats {
    pub float_samples: usize,
    /// `{{…}}` samples and NHCB samples not stored (no histogram storage).
    pub skipped_histograms: usize,
    /// Float samples stored with a non-zero `@st` start timestamp.
    pub start_timestamps: usize,
}

/// One script file's storage.
pub struct TestStorage {
    head: Head,
    holds_histograms: bool,
}

impl Default for TestStorage {
    fn default() -> Self {
        Self::new()
    }
}

/// Upstream's test storage uses 24h blocks, so the head accepts samples up
/// to 12h behind its newest one.
const TEST_CHUNK_RANGE_MS: i64 = 24 * 3_600_000;

fn new_head() -> Head {
    Head::new(HeadOptions {
        out_of_order_window_ms: 0,
        chunk_range_ms: TEST_CHUNK_RANGE_MS,
        ..HeadOptions::default()
    })
}

impl TestStorage {
    pub fn new() -> Self {
        TestStorage {
            head: new_head(),
            holds_histograms: false,
        }
    }

    /// The `clear` command: empty storage.
    pub fn clear(&mut self) {
        self.head = new_head();
        self.holds_histograms = false;
    }

    /// What queries read.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Whether histogram samples were loaded since the last clear (stored or
    /// not).
    pub fn holds_histograms(&self) -> bool {
        self.holds_histograms
    }

    /// Runs one `load` command.
    pub fn load(&mut self, cmd: &LoadCommand) -> Result<LoadStats, LoadError> {
        let mut stats = LoadStats::default();
        // Slot-major order keeps appends in global time order. Upstream
        // validates a whole block against the head's bounds as they were
        // before it; appending in time order never trips the head's
        // "half a chunk range behind" bound within one block either.
        let slots = cmd.series.iter().map(|s| s.values.len()).max().unwrap_or(0);
        for i in 0..slots {
            let t = i as i64 * cmd.interval_ms;
            for s in &cmd.series {
                match s.values.get(i) {
                    None | Some(None) => {}
                    Some(Some(SeriesValue::Float(v))) => {
                        // ST = T + offset; a missing one is 0, "unknown".
                        let st = s
                            .start_offsets
                            .as_ref()
                            .and_then(|o| o.get(i).copied().flatten())
                            .map_or(0, |off| t.saturating_add(off));
                        self.head
                            .append_with_st(&s.labels, t, *v, st)
                            .map_err(|source| LoadError::Append {
                                line: s.line,
                                series: s.labels.clone(),
                                t,
                                source,
                            })?;
                        stats.float_samples += 1;
                        if st != 0 {
                            stats.start_timestamps += 1;
                        }
                    }
                    Some(Some(SeriesValue::Histogram(_))) => {
                        self.holds_histograms = true;
                        stats.skipped_histograms += 1;
                    }
                }
            }
        }
        if cmd.with_nhcb {
            let nhcb = nhcb_series(cmd)?;
            for (_, samples) in &nhcb {
                stats.skipped_histograms += samples.len();
            }
            if !nhcb.is_empty() {
                self.holds_histograms = true;
            }
        }
        Ok(stats)
    }
}

/// Whether a `load` block yields histogram samples: a `{{…}}` literal, or
/// (for `load_with_nhcb`) any series the NHCB conversion picks up. Decided
/// from the script alone, so the runner can classify cases before running.
pub fn loads_histograms(cmd: &LoadCommand) -> bool {
    cmd.series.iter().any(|s| s.has_histograms())
        || (cmd.with_nhcb && cmd.series.iter().any(|s| nhcb_role(&s.labels).is_some()))
}

/// How a classic series feeds NHCB conversion.
#[derive(Debug, Clone, PartialEq)]
enum Role {
    Bucket(f64),
    Sum,
    Count,
}

/// The NHCB series a classic series contributes to, and how; `None` if it
/// does not take part (wrong suffix, missing or unparseable `le`).
fn nhcb_role(labels: &Labels) -> Option<(Labels, Role)> {
    let name = labels.metric_name()?;
    let (base, role) = if let Some(b) = name.strip_suffix("_bucket") {
        let le = parse_le(labels.get("le")?)?;
        (b, Role::Bucket(le))
    } else if let Some(b) = name.strip_suffix("_sum") {
        (b, Role::Sum)
    } else if let Some(b) = name.strip_suffix("_count") {
        (b, Role::Count)
    } else {
        return None;
    };
    let mut builder = labels.builder();
    builder.del("le");
    builder.set(METRIC_NAME, base);
    Some((builder.build(), role))
}

/// `le` as Go's `ParseFloat` reads it (`+Inf`, `+inf`, `1e0`, `.2`); NaN is
/// rejected.
fn parse_le(s: &str) -> Option<f64> {
    let v = super::script::parse_go_number(s)
        .filter(|_| !s.starts_with("0x") && !s.starts_with("0X"))?;
    (!v.is_nan()).then_some(v)
}

#[derive(Default)]
struct Group {
    /// Per timestamp: buckets `(le, cumulative count)` in arrival order.
    buckets: BTreeMap<i64, Vec<(f64, f64)>>,
    sums: BTreeMap<i64, f64>,
    counts: BTreeMap<i64, f64>,
}

/// One converted NHCB series: its labels and `(t, histogram)` samples.
pub type NhcbSeries = (Labels, Vec<(i64, TestHistogram)>);

/// Builds the NHCB series of a `load_with_nhcb` block (README §4.8): one
/// custom-bucket histogram per group and timestamp.
pub fn nhcb_series(cmd: &LoadCommand) -> Result<Vec<NhcbSeries>, LoadError> {
    let mut groups: BTreeMap<Labels, Group> = BTreeMap::new();
    for s in &cmd.series {
        let Some((key, role)) = nhcb_role(&s.labels) else {
            continue;
        };
        let g = groups.entry(key).or_default();
        for (i, slot) in s.values.iter().enumerate() {
            let Some(SeriesValue::Float(v)) = slot else {
                continue;
            };
            let t = i as i64 * cmd.interval_ms;
            match role {
                Role::Bucket(le) => g.buckets.entry(t).or_default().push((le, *v)),
                Role::Sum => {
                    g.sums.insert(t, *v);
                }
                Role::Count => {
                    g.counts.insert(t, *v);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (labels, g) in groups {
        let mut times: Vec<i64> = g
            .buckets
            .keys()
            .chain(g.sums.keys())
            .chain(g.counts.keys())
            .copied()
            .collect();
        times.sort_unstable();
        times.dedup();
        let mut samples = Vec::with_capacity(times.len());
        for t in times {
            let fail = |why: String| LoadError::Nhcb {
                line: cmd.line,
                series: labels.clone(),
                t,
                why,
            };
            let mut buckets: Vec<(f64, f64)> = Vec::new();
            for &(le, c) in g.buckets.get(&t).map(Vec::as_slice).unwrap_or(&[]) {
                // Equal boundaries are duplicates; the first one seen stays.
                if !buckets.iter().any(|(b, _)| *b == le) {
                    buckets.push((le, c));
                }
            }
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let count = match g.counts.get(&t) {
                Some(c) => *c,
                None => buckets.last().map_or(0.0, |b| b.1),
            };
            if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
                buckets.push((f64::INFINITY, count));
            }
            let mut prev = 0.0;
            for &(le, c) in &buckets {
                if c < prev || c < 0.0 {
                    return Err(fail(format!(
                        "cumulative count {c} of bucket le={le} is below {prev}"
                    )));
                }
                prev = c;
            }
            if prev != count {
                return Err(fail(format!(
                    "count {count} differs from the +Inf bucket count {prev}"
                )));
            }
            let mut positive = Vec::with_capacity(buckets.len());
            let mut below = 0.0;
            for &(_, c) in &buckets {
                positive.push(c - below);
                below = c;
            }
            samples.push((
                t,
                TestHistogram {
                    schema: CUSTOM_BUCKETS_SCHEMA,
                    sum: g.sums.get(&t).copied().unwrap_or(0.0),
                    count,
                    custom_values: buckets
                        .iter()
                        .map(|b| b.0)
                        .filter(|b| b.is_finite())
                        .collect(),
                    positive,
                    ..TestHistogram::default()
                },
            ));
        }
        out.push((labels, samples));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promqltest::script::{parse_script, Command};
    use pharos_storage::querier::Querier;

    fn load_cmd(src: &str) -> LoadCommand {
        match parse_script(src)
            .unwrap()
            .commands
            .into_iter()
            .next()
            .unwrap()
        {
            Command::Load(l) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn floats_reach_the_head_and_clear_empties_it() {
        let mut st = TestStorage::new();
        let cmd = load_cmd("load 5m\n  a{x=\"1\"} 0+10x2 _ stale\n  b{empty=\"\"} 1\n");
        let stats = st.load(&cmd).unwrap();
        assert_eq!(stats.float_samples, 5);
        assert!(!st.holds_histograms());
        let series = st.head().select(0, i64::MAX, &[], None).unwrap();
        assert_eq!(series.len(), 2);
        // The empty-valued label was dropped.
        assert_eq!(series[1].labels, Labels::from_pairs([("__name__", "b")]));
        st.clear();
        assert!(st.head().select(0, i64::MAX, &[], None).unwrap().is_empty());
    }

    #[test]
    fn start_timestamps_reach_the_head() {
        use pharos_storage::chunk::{SampleIterator, ValueType};
        let mut st = TestStorage::new();
        let cmd = load_cmd("load 1m\n  a@st _ -30s _ -0ms\n  a 1 2 3 4\n");
        assert_eq!(st.load(&cmd).unwrap().start_timestamps, 2);
        let series = st.head().select(0, i64::MAX, &[], None).unwrap();
        let mut it = series[0].iter();
        let mut got = vec![];
        while it.next() == ValueType::Float {
            got.push((it.at_t(), it.at_st()));
        }
        // -0ms gives ST = T; at t=0 that is 0, unknown, like a missing one.
        assert_eq!(
            got,
            vec![(0, 0), (60_000, 30_000), (120_000, 0), (180_000, 180_000)]
        );
    }

    #[test]
    fn out_of_order_reload_fails() {
        let mut st = TestStorage::new();
        st.load(&load_cmd("load 1m\n  a 1 2\n")).unwrap();
        assert!(st.load(&load_cmd("load 1m\n  a 1\n")).is_err());
        // A reload that skips the filled slots appends.
        st.load(&load_cmd("load 1m\n  a _ _ 3\n")).unwrap();
    }

    #[test]
    fn histograms_are_flagged() {
        let mut st = TestStorage::new();
        let cmd = load_cmd("load 1m\n  h {{sum:1 count:1}}x2\n");
        assert!(loads_histograms(&cmd));
        assert_eq!(st.load(&cmd).unwrap().skipped_histograms, 3);
        assert!(st.holds_histograms());
    }

    #[test]
    fn nhcb_conversion() {
        let cmd = load_cmd(concat!(
            "load_with_nhcb 1m\n",
            "  m_bucket{le=\"0.2\", j=\"a\"} 1 2\n",
            "  m_bucket{le=\"1\", j=\"a\"} 3 _\n",
            "  m_bucket{le=\"+Inf\", j=\"a\"} 4 5\n",
            "  m_sum{j=\"a\"} 10 11\n",
            "  m_count{j=\"a\"} 4 5\n",
            "  m_bucket{le=\"bad\", j=\"b\"} 1\n",
            "  other 1\n",
        ));
        assert!(loads_histograms(&cmd));
        let out = nhcb_series(&cmd).unwrap();
        assert_eq!(out.len(), 1);
        let (labels, samples) = &out[0];
        assert_eq!(*labels, Labels::from_pairs([("__name__", "m"), ("j", "a")]));
        let h0 = &samples[0].1;
        assert_eq!(h0.custom_values, vec![0.2, 1.0]);
        assert_eq!(h0.positive, vec![1.0, 2.0, 1.0]);
        assert_eq!((h0.count, h0.sum), (4.0, 10.0));
        let (t1, h1) = &samples[1];
        assert_eq!(*t1, 60_000);
        assert_eq!(h1.custom_values, vec![0.2]);
        assert_eq!(h1.positive, vec![2.0, 3.0]);

        // A decreasing cumulative count fails the load.
        let bad = load_cmd("load_with_nhcb 1m\n  m_bucket{le=\"1\"} 5\n  m_bucket{le=\"2\"} 3\n");
        assert!(nhcb_series(&bad).is_err());
        // Count disagreeing with the +Inf bucket fails too.
        let bad = load_cmd("load_with_nhcb 1m\n  m_bucket{le=\"+Inf\"} 5\n  m_count 4\n");
        assert!(nhcb_series(&bad).is_err());
        // Missing +Inf bucket gets the count.
        let ok = load_cmd("load_with_nhcb 1m\n  m_bucket{le=\"1\"} 3\n  m_count 4\n");
        let out = nhcb_series(&ok).unwrap();
        assert_eq!(out[0].1[0].1.positive, vec![3.0, 1.0]);
        // A lone _count makes an NHCB series without buckets.
        let only = load_cmd("load_with_nhcb 1m\n  x_count 2\n");
        assert!(loads_histograms(&only));
        assert_eq!(nhcb_series(&only).unwrap()[0].1[0].1.count, 2.0);
    }
}
