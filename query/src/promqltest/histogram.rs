//! Native-histogram literals of the script format (`{{schema:0 sum:5 …}}`,
//! README §4.6) and the test-side histogram value they denote.
//!
//! [`TestHistogram`] is the runner's neutral histogram: script literals parse
//! into it, and engine results are converted into it before comparison, so
//! the comparator (`compare.rs`) never depends on the engine's own type.
//! Buckets are stored densely from an offset (absolute counts, not deltas), as
//! the literal writes them; zero-count buckets are allowed and ignored by the
//! comparison (it compacts both sides first).

use std::fmt;

/// Schema number of custom-bucket (NHCB) histograms.
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// Counter-reset hint of a histogram sample (Prometheus's four values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterResetHint {
    #[default]
    Unknown,
    Reset,
    NotReset,
    Gauge,
}

impl CounterResetHint {
    pub fn as_str(self) -> &'static str {
        match self {
            CounterResetHint::Unknown => "unknown",
            CounterResetHint::Reset => "reset",
            CounterResetHint::NotReset => "not_reset",
            CounterResetHint::Gauge => "gauge",
        }
    }
}

/// A float histogram as written in a script or converted from an engine result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TestHistogram {
    pub schema: i32,
    pub sum: f64,
    pub count: f64,
    pub zero_count: f64,
    pub zero_threshold: f64,
    /// Bucket index of `positive[0]`.
    pub positive_offset: i32,
    /// Absolute counts of consecutive positive buckets.
    pub positive: Vec<f64>,
    pub negative_offset: i32,
    pub negative: Vec<f64>,
    /// Upper bounds for schema −53 (without `+Inf`).
    pub custom_values: Vec<f64>,
    pub counter_reset_hint: CounterResetHint,
    /// Whether the literal spelled out `counter_reset_hint`; only then is the
    /// hint compared (README §5.7.3).
    pub hint_written: bool,
}

/// Why a `{{…}}` literal was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramLiteralError {
    #[error("histogram literal must start with '{{{{'")]
    MissingOpen,
    #[error("unterminated histogram literal (no '}}}}')")]
    Unterminated,
    #[error("space right after '{{{{' in histogram literal")]
    LeadingSpace,
    #[error("histogram item {0:?} is not key:value")]
    NotKeyValue(String),
    #[error("unknown histogram key {0:?}")]
    UnknownKey(String),
    #[error("histogram key {0:?} given twice")]
    DuplicateKey(String),
    #[error("bad value {value:?} for histogram key {key:?}")]
    BadValue { key: String, value: String },
    #[error("unknown counter_reset_hint {0:?}")]
    BadHint(String),
    #[error("cannot combine histograms with different custom bucket bounds in a series literal")]
    CustomBoundsMismatch,
    #[error(
        "cannot combine a custom-bucket histogram with an exponential one in a series literal"
    )]
    SchemaKindMismatch,
}

impl TestHistogram {
    /// Parses a literal starting at the beginning of `s` (which must start with
    /// `{{`). Returns the histogram and the number of bytes consumed.
    pub fn parse_prefix(s: &str) -> Result<(TestHistogram, usize), HistogramLiteralError> {
        let body_start = 2;
        if !s.starts_with("{{") {
            return Err(HistogramLiteralError::MissingOpen);
        }
        let close = s[body_start..]
            .find("}}")
            .ok_or(HistogramLiteralError::Unterminated)?
            + body_start;
        let body = &s[body_start..close];
        let h = Self::parse_body(body)?;
        Ok((h, close + 2))
    }

    fn parse_body(body: &str) -> Result<TestHistogram, HistogramLiteralError> {
        let mut h = TestHistogram::default();
        // `{{}}` and `{{ }}` are both the empty histogram.
        if body.is_empty() || body == " " {
            return Ok(h);
        }
        if body.starts_with(' ') {
            return Err(HistogramLiteralError::LeadingSpace);
        }
        // One space before `}}` is tolerated.
        let body = body.strip_suffix(' ').unwrap_or(body);
        let mut seen: Vec<String> = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let colon = rest
                .find(':')
                .ok_or_else(|| HistogramLiteralError::NotKeyValue(rest.to_string()))?;
            let key_raw = &rest[..colon];
            if key_raw.is_empty() || key_raw.contains(' ') {
                return Err(HistogramLiteralError::NotKeyValue(rest.to_string()));
            }
            let key = key_raw.to_ascii_lowercase();
            if seen.contains(&key) {
                return Err(HistogramLiteralError::DuplicateKey(key));
            }
            seen.push(key.clone());
            let after = &rest[colon + 1..];
            let (value, next) = if let Some(list) = after.strip_prefix('[') {
                let end = list.find(']').ok_or_else(|| bad(&key, after))?;
                (&after[..end + 2], &list[end + 1..])
            } else {
                let end = after.find(' ').unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            h.set(&key, value)?;
            rest = match next.strip_prefix(' ') {
                Some(r) => r,
                None if next.is_empty() => next,
                None => return Err(HistogramLiteralError::NotKeyValue(next.to_string())),
            };
        }
        Ok(h)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), HistogramLiteralError> {
        match key {
            "schema" => self.schema = parse_int(key, value)?,
            "sum" => self.sum = parse_num(key, value)?,
            "count" => self.count = parse_num(key, value)?,
            "z_bucket" => self.zero_count = parse_num(key, value)?,
            "z_bucket_w" => {
                if value.starts_with(['+', '-']) {
                    return Err(bad(key, value));
                }
                self.zero_threshold = parse_num(key, value)?
            }
            "buckets" => self.positive = parse_list(key, value)?,
            "offset" => self.positive_offset = parse_int(key, value)?,
            "n_buckets" => self.negative = parse_list(key, value)?,
            "n_offset" => self.negative_offset = parse_int(key, value)?,
            "custom_values" => self.custom_values = parse_list(key, value)?,
            "counter_reset_hint" => {
                self.counter_reset_hint = match value {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::Reset,
                    "not_reset" => CounterResetHint::NotReset,
                    "gauge" => CounterResetHint::Gauge,
                    other => return Err(HistogramLiteralError::BadHint(other.to_string())),
                };
                self.hint_written = true;
            }
            other => return Err(HistogramLiteralError::UnknownKey(other.to_string())),
        }
        Ok(())
    }

    pub fn is_custom(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// Non-zero positive buckets as `(absolute index, count)`.
    pub fn compact_positive(&self) -> Vec<(i32, f64)> {
        compact(self.positive_offset, &self.positive)
    }

    /// Non-zero negative buckets as `(absolute index, count)`.
    pub fn compact_negative(&self) -> Vec<(i32, f64)> {
        compact(self.negative_offset, &self.negative)
    }

    /// `self + other` (or `self - other` when `negate`), as the series
    /// notation `{{A}}+{{B}}xN` applies it step by step. Mixed exponential
    /// schemas are reduced to the smaller one and the wider zero bucket wins,
    /// as in Prometheus's float-histogram addition.
    pub fn combine(
        &self,
        other: &TestHistogram,
        negate: bool,
    ) -> Result<TestHistogram, HistogramLiteralError> {
        let sign = if negate { -1.0 } else { 1.0 };
        if self.is_custom() != other.is_custom() {
            return Err(HistogramLiteralError::SchemaKindMismatch);
        }
        if self.is_custom() && self.custom_values != other.custom_values {
            return Err(HistogramLiteralError::CustomBoundsMismatch);
        }
        let schema = self.schema.min(other.schema);
        let a = self.reduce_to(schema);
        let b = other.reduce_to(schema);
        let threshold = a.zero_threshold.max(b.zero_threshold);
        let a = a.widen_zero(threshold);
        let b = b.widen_zero(threshold);
        let mut pos = to_map(a.positive_offset, &a.positive);
        for (i, c) in b.compact_positive() {
            *pos.entry(i).or_insert(0.0) += sign * c;
        }
        let mut neg = to_map(a.negative_offset, &a.negative);
        for (i, c) in b.compact_negative() {
            *neg.entry(i).or_insert(0.0) += sign * c;
        }
        let (positive_offset, positive) = from_map(&pos);
        let (negative_offset, negative) = from_map(&neg);
        let hint = if self.counter_reset_hint == other.counter_reset_hint {
            self.counter_reset_hint
        } else {
            CounterResetHint::Unknown
        };
        Ok(TestHistogram {
            schema,
            sum: a.sum + sign * b.sum,
            count: a.count + sign * b.count,
            zero_count: a.zero_count + sign * b.zero_count,
            zero_threshold: threshold,
            positive_offset,
            positive,
            negative_offset,
            negative,
            custom_values: self.custom_values.clone(),
            counter_reset_hint: hint,
            hint_written: self.hint_written || other.hint_written,
        })
    }

    /// Merges buckets down to `target` schema (no-op for custom buckets or
    /// when already at or below it).
    fn reduce_to(&self, target: i32) -> TestHistogram {
        if self.is_custom() || self.schema <= target {
            return self.clone();
        }
        let delta = (self.schema - target) as u32;
        let merge = |off: i32, b: &[f64]| {
            let mut m = std::collections::BTreeMap::new();
            for (i, c) in compact(off, b) {
                // Bucket i covers (base^(i-1), base^i]; after merging 2^delta
                // buckets the covering index is ((i-1) >> delta) + 1.
                *m.entry(((i - 1) >> delta) + 1).or_insert(0.0) += c;
            }
            from_map(&m)
        };
        let (po, p) = merge(self.positive_offset, &self.positive);
        let (no, n) = merge(self.negative_offset, &self.negative);
        TestHistogram {
            schema: target,
            positive_offset: po,
            positive: p,
            negative_offset: no,
            negative: n,
            ..self.clone()
        }
    }

    /// Moves every bucket lying entirely inside `[-threshold, threshold]` into
    /// the zero bucket.
    fn widen_zero(&self, threshold: f64) -> TestHistogram {
        if self.is_custom() || threshold <= self.zero_threshold {
            return self.clone();
        }
        let mut h = self.clone();
        h.zero_threshold = threshold;
        let base = 2f64.powf(2f64.powi(-self.schema));
        let mut absorb = |off: i32, b: &mut Vec<f64>| {
            for (k, c) in b.iter_mut().enumerate() {
                let idx = off + k as i32;
                let upper = base.powi(idx);
                if upper <= threshold {
                    h.zero_count += *c;
                    *c = 0.0;
                }
            }
        };
        let mut p = h.positive.clone();
        absorb(h.positive_offset, &mut p);
        let mut n = h.negative.clone();
        absorb(h.negative_offset, &mut n);
        h.positive = p;
        h.negative = n;
        h
    }
}

fn bad(key: &str, value: &str) -> HistogramLiteralError {
    HistogramLiteralError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn parse_int(key: &str, value: &str) -> Result<i32, HistogramLiteralError> {
    value.parse::<i32>().map_err(|_| bad(key, value))
}

fn parse_num(key: &str, value: &str) -> Result<f64, HistogramLiteralError> {
    super::script::parse_plain_float(value).ok_or_else(|| bad(key, value))
}

fn parse_list(key: &str, value: &str) -> Result<Vec<f64>, HistogramLiteralError> {
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| bad(key, value))?;
    if inner.starts_with(' ') {
        return Err(bad(key, value));
    }
    // A trailing space before `]` is accepted.
    let inner = inner.strip_suffix(' ').unwrap_or(inner);
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(' ')
        .map(|n| super::script::parse_plain_float(n).ok_or_else(|| bad(key, value)))
        .collect()
}

fn compact(off: i32, b: &[f64]) -> Vec<(i32, f64)> {
    b.iter()
        .enumerate()
        .filter(|(_, c)| **c != 0.0)
        .map(|(k, c)| (off + k as i32, *c))
        .collect()
}

fn to_map(off: i32, b: &[f64]) -> std::collections::BTreeMap<i32, f64> {
    b.iter()
        .enumerate()
        .map(|(k, c)| (off + k as i32, *c))
        .collect()
}

fn from_map(m: &std::collections::BTreeMap<i32, f64>) -> (i32, Vec<f64>) {
    let (Some((&first, _)), Some((&last, _))) = (m.first_key_value(), m.last_key_value()) else {
        return (0, Vec::new());
    };
    let mut v = vec![0.0; (last - first + 1) as usize];
    for (&i, &c) in m {
        v[(i - first) as usize] = c;
    }
    (first, v)
}

impl fmt::Display for TestHistogram {
    /// Prints in the literal syntax, so failure messages can be pasted back
    /// into a script.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        write!(
            f,
            "{{{{schema:{} sum:{} count:{}",
            self.schema, self.sum, self.count
        )?;
        if self.zero_count != 0.0 || self.zero_threshold != 0.0 {
            write!(
                f,
                " z_bucket:{} z_bucket_w:{}",
                self.zero_count, self.zero_threshold
            )?;
        }
        if !self.custom_values.is_empty() {
            write!(f, " custom_values:[{}]", list(&self.custom_values))?;
        }
        if !self.positive.is_empty() {
            write!(
                f,
                " buckets:[{}] offset:{}",
                list(&self.positive),
                self.positive_offset
            )?;
        }
        if !self.negative.is_empty() {
            write!(
                f,
                " n_buckets:[{}] n_offset:{}",
                list(&self.negative),
                self.negative_offset
            )?;
        }
        if self.hint_written || self.counter_reset_hint != CounterResetHint::Unknown {
            write!(
                f,
                " counter_reset_hint:{}",
                self.counter_reset_hint.as_str()
            )?;
        }
        f.write_str("}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> TestHistogram {
        let (h, n) = TestHistogram::parse_prefix(s).unwrap();
        assert_eq!(n, s.len());
        h
    }

    #[test]
    fn parses_all_keys() {
        let h = lit("{{schema:0 sum:5 count:4 z_bucket:1 z_bucket_w:0.001 buckets:[1 2 1] offset:-1 n_buckets:[1] n_offset:0 counter_reset_hint:gauge}}");
        assert_eq!(h.schema, 0);
        assert_eq!(h.sum, 5.0);
        assert_eq!(h.count, 4.0);
        assert_eq!(h.zero_count, 1.0);
        assert_eq!(h.zero_threshold, 0.001);
        assert_eq!(h.positive, vec![1.0, 2.0, 1.0]);
        assert_eq!(h.positive_offset, -1);
        assert_eq!(h.negative, vec![1.0]);
        assert_eq!(h.counter_reset_hint, CounterResetHint::Gauge);
        assert!(h.hint_written);
    }

    #[test]
    fn empty_and_spacing_rules() {
        assert_eq!(lit("{{}}"), TestHistogram::default());
        assert_eq!(lit("{{ }}"), TestHistogram::default());
        assert_eq!(
            lit("{{schema:-53 custom_values:[5] }}").custom_values,
            vec![5.0]
        );
        assert_eq!(lit("{{buckets:[1 2 ]}}").positive, vec![1.0, 2.0]);
        assert!(TestHistogram::parse_prefix("{{ sum:1}}").is_err());
        assert!(TestHistogram::parse_prefix("{{buckets:[ 1]}}").is_err());
        assert!(TestHistogram::parse_prefix("{{sum:1 SUM:2}}").is_err());
        assert!(TestHistogram::parse_prefix("{{sum:1").is_err());
        assert!(TestHistogram::parse_prefix("{{bogus:1}}").is_err());
        // Keys are case-insensitive.
        assert_eq!(lit("{{Sum:3}}").sum, 3.0);
    }

    #[test]
    fn combine_adds_and_subtracts_bucketwise() {
        let a = lit("{{sum:4 count:4 buckets:[1 2 1]}}");
        let b = lit("{{sum:2 count:3 buckets:[1 1 1] offset:1}}");
        let s = a.combine(&b, false).unwrap();
        assert_eq!(s.count, 7.0);
        assert_eq!(
            s.compact_positive(),
            vec![(0, 1.0), (1, 3.0), (2, 2.0), (3, 1.0)]
        );
        let d = s.combine(&b, true).unwrap();
        assert_eq!(d.compact_positive(), a.compact_positive());
    }

    #[test]
    fn combine_reduces_schema() {
        // Schema 1 buckets 1 and 2 both fall into schema 0 bucket 1.
        let a = lit("{{schema:0 count:1 buckets:[1] offset:1}}");
        let b = lit("{{schema:1 count:2 buckets:[1 1] offset:1}}");
        let s = a.combine(&b, false).unwrap();
        assert_eq!(s.schema, 0);
        assert_eq!(s.compact_positive(), vec![(1, 3.0)]);
    }

    #[test]
    fn display_round_trips() {
        let h = lit("{{schema:-53 sum:1 count:1 custom_values:[5 10] buckets:[1] counter_reset_hint:unknown}}");
        assert_eq!(lit(&h.to_string()), h);
    }
}
