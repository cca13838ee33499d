//! Label sets: the identity of a series.
//!
//! [`Labels`] keeps a sorted label set in one allocation, in its *canonical
//! encoding*: for each label in ascending name order, `uvarint(len(name)) name
//! uvarint(len(value)) value`. The canonical bytes are what the WAL writes and
//! what [`Labels::hash`] hashes (`xxh3_64`, seed 0). Both are part of the on-disk
//! and placement contract: changing either moves every series to another shard.
//!
//! Invariants of a `Labels` value: names strictly ascending (no duplicates), no
//! empty values (Prometheus treats an empty value as an absent label).
//! Name *validity* (`[a-zA-Z_][a-zA-Z0-9_]*`) is checked by [`Labels::validate`]
//! on ingestion, not by every constructor, so the query engine can build the
//! label sets PromQL allows (e.g. `label_replace` output checked separately).

mod matcher;

pub use matcher::{MatchType, Matcher};

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Why a label set was rejected on ingestion. Every variant names the series.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("invalid metric name {name:?} in series {series}")]
    InvalidMetricName { name: String, series: String },
    #[error("invalid label name {name:?} in series {series}")]
    InvalidLabelName { name: String, series: String },
    #[error("duplicate label name {name:?} in series {series}")]
    Duplicate { name: String, series: String },
    #[error("labels are not sorted by name (at {name:?}) in series {series}")]
    Unsorted { name: String, series: String },
    #[error("series has no labels")]
    Empty,
    #[error("invalid UTF-8 in label {what} of series {series}")]
    InvalidUtf8 { what: String, series: String },
}

/// A sorted, immutable set of labels. Cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    /// Canonical encoding (see module docs).
    buf: Arc<[u8]>,
}

impl Default for Labels {
    fn default() -> Self {
        Labels::empty()
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a uvarint written by [`put_uvarint`]. The buffer of a `Labels` is
/// always well-formed, so a short read yields 0/end rather than an error.
#[inline]
fn get_uvarint(buf: &[u8], pos: &mut usize) -> usize {
    let mut v: u64 = 0;
    let mut shift = 0;
    while *pos < buf.len() {
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    v as usize
}

fn str_at<'a>(buf: &'a [u8], pos: &mut usize) -> &'a str {
    let n = get_uvarint(buf, pos);
    let s = &buf[*pos..*pos + n];
    *pos += n;
    // SAFETY-free: every buffer is built from &str pieces, so it is UTF-8.
    std::str::from_utf8(s).unwrap_or_default()
}

/// Iterator over `(name, value)` pairs in name order.
#[derive(Clone)]
pub struct Iter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let n = str_at(self.buf, &mut self.pos);
        let v = str_at(self.buf, &mut self.pos);
        Some((n, v))
    }
}

impl Labels {
    /// The empty label set.
    pub fn empty() -> Labels {
        Labels {
            buf: Arc::from(&[][..]),
        }
    }

    /// Builds a label set from pairs in any order. Empty values are dropped;
    /// for a repeated name the last pair wins. Names are not validated.
    pub fn from_pairs<'a, I>(pairs: I) -> Labels
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut v: Vec<(&str, &str)> = pairs.into_iter().collect();
        // Stable sort keeps input order among equal names so "last wins" holds.
        v.sort_by(|a, b| a.0.cmp(b.0));
        let mut out: Vec<(&str, &str)> = Vec::with_capacity(v.len());
        for p in v {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        Labels::from_sorted_unchecked(out.into_iter().filter(|(_, v)| !v.is_empty()))
    }

    /// Builds a label set from pairs that the caller guarantees are strictly
    /// ascending by name with non-empty values.
    pub fn from_sorted_unchecked<'a, I>(pairs: I) -> Labels
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut buf = Vec::with_capacity(64);
        for (n, v) in pairs {
            put_uvarint(&mut buf, n.len() as u64);
            buf.extend_from_slice(n.as_bytes());
            put_uvarint(&mut buf, v.len() as u64);
            buf.extend_from_slice(v.as_bytes());
        }
        Labels { buf: buf.into() }
    }

    /// Ingestion constructor: pairs exactly as a client sent them. Rejects
    /// unsorted or duplicate names and invalid metric or label names, naming the
    /// series. Empty values are dropped, as Prometheus does.
    pub fn from_wire<'a, I>(pairs: I) -> Result<Labels, LabelError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)> + Clone,
    {
        let series = || format_pairs(pairs.clone().into_iter());
        let mut prev: Option<&str> = None;
        let mut any = false;
        for (n, v) in pairs.clone() {
            any = true;
            if let Some(p) = prev {
                match p.cmp(n) {
                    Ordering::Less => {}
                    Ordering::Equal => {
                        return Err(LabelError::Duplicate {
                            name: n.to_string(),
                            series: series(),
                        })
                    }
                    Ordering::Greater => {
                        return Err(LabelError::Unsorted {
                            name: n.to_string(),
                            series: series(),
                        })
                    }
                }
            }
            prev = Some(n);
            if !is_valid_label_name(n) {
                return Err(LabelError::InvalidLabelName {
                    name: n.to_string(),
                    series: series(),
                });
            }
            if n == METRIC_NAME && !is_valid_metric_name(v) {
                return Err(LabelError::InvalidMetricName {
                    name: v.to_string(),
                    series: series(),
                });
            }
        }
        if !any {
            return Err(LabelError::Empty);
        }
        Ok(Labels::from_sorted_unchecked(
            pairs.into_iter().filter(|(_, v)| !v.is_empty()),
        ))
    }

    /// Decodes canonical bytes (as written by [`Labels::as_bytes`]), checking
    /// their structure. Used by the WAL and block readers on untrusted bytes.
    pub fn from_canonical_bytes(b: &[u8]) -> Option<Labels> {
        let mut pos = 0;
        let mut prev: Option<&[u8]> = None;
        while pos < b.len() {
            for i in 0..2 {
                let (n, len) = read_uvarint_checked(&b[pos..])?;
                pos += len;
                let end = pos.checked_add(usize::try_from(n).ok()?)?;
                let s = b.get(pos..end)?;
                std::str::from_utf8(s).ok()?;
                if i == 0 {
                    if prev.is_some_and(|p| p >= s) {
                        return None;
                    }
                    prev = Some(s);
                }
                pos = end;
            }
        }
        Some(Labels { buf: b.into() })
    }

    /// Canonical encoding (see module docs).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The series hash: `xxh3_64` of the canonical encoding.
    pub fn hash(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.buf)
    }

    /// Hash of only the labels whose names are in `names` (sorted or not),
    /// used for placement keys and PromQL grouping: `xxh3_64` of those
    /// pairs' canonical encoding, in label order.
    pub fn hash_for(&self, names: &[&str]) -> u64 {
        // The canonical encoding is the concatenation of the pairs'
        // encodings, so when the chosen pairs are adjacent (instance and
        // job usually are) their bytes are hashed in place, without a copy.
        let buf = &self.buf[..];
        let mut pos = 0;
        let mut span: Option<(usize, usize)> = None;
        let mut copy: Option<Vec<u8>> = None;
        while pos < buf.len() {
            let start = pos;
            let n_len = get_uvarint(buf, &mut pos);
            let name = &buf[pos..pos + n_len];
            pos += n_len;
            let v_len = get_uvarint(buf, &mut pos);
            pos += v_len;
            if !names.iter().any(|n| n.as_bytes() == name) {
                continue;
            }
            match (&mut copy, &mut span) {
                (Some(c), _) => c.extend_from_slice(&buf[start..pos]),
                (None, Some((_, end))) if *end == start => *end = pos,
                (None, Some((s, end))) => {
                    let mut c = Vec::with_capacity(64);
                    c.extend_from_slice(&buf[*s..*end]);
                    c.extend_from_slice(&buf[start..pos]);
                    copy = Some(c);
                }
                (None, None) => span = Some((start, pos)),
            }
        }
        match (copy, span) {
            (Some(c), _) => xxhash_rust::xxh3::xxh3_64(&c),
            (None, Some((s, e))) => xxhash_rust::xxh3::xxh3_64(&buf[s..e]),
            (None, None) => xxhash_rust::xxh3::xxh3_64(&[]),
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter {
            buf: &self.buf,
            pos: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Value of label `name`, or `""` when absent (PromQL's view).
    pub fn get_or_empty(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The metric name, if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// A copy keeping only labels whose names are in `names`.
    pub fn keep(&self, names: &[&str]) -> Labels {
        Labels::from_sorted_unchecked(self.iter().filter(|(n, _)| names.contains(n)))
    }

    /// A copy without the labels whose names are in `names`.
    pub fn drop_names(&self, names: &[&str]) -> Labels {
        Labels::from_sorted_unchecked(self.iter().filter(|(n, _)| !names.contains(n)))
    }

    /// A builder starting from these labels.
    pub fn builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            pairs: self
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Bytes held by this label set (for memory accounting).
    pub fn byte_size(&self) -> usize {
        self.buf.len()
    }

    /// Checks names as ingestion does (see [`Labels::from_wire`]).
    pub fn validate(&self) -> Result<(), LabelError> {
        Labels::from_wire(self.iter()).map(|_| ())
    }
}

fn read_uvarint_checked(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

impl Ord for Labels {
    /// Prometheus's `labels.Compare`: label by label, name then value; a
    /// prefix sorts first.
    fn cmp(&self, other: &Self) -> Ordering {
        let mut a = self.iter();
        let mut b = other.iter();
        loop {
            match (a.next(), b.next()) {
                (None, None) => return Ordering::Equal,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some((an, av)), Some((bn, bv))) => {
                    let c = an.cmp(bn).then_with(|| av.cmp(bv));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
            }
        }
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Writes `s` as Go's `strconv.Quote` does (Prometheus quotes label values this
/// way in `Labels.String()` and in error messages).
pub fn write_go_quoted(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\x07' => out.write_str("\\a")?,
            '\x08' => out.write_str("\\b")?,
            '\x0c' => out.write_str("\\f")?,
            '\x0b' => out.write_str("\\v")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(out, "\\x{:02x}", c as u32)?,
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    write!(out, "\\u{:04x}", c as u32)?
                } else {
                    write!(out, "\\U{:08x}", c as u32)?
                }
            }
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// Go's `strconv.Quote` of a string as a `String`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    let _ = write_go_quoted(&mut out, s);
    out
}

fn format_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in pairs.enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(n);
        s.push('=');
        let _ = write_go_quoted(&mut s, v);
    }
    s.push('}');
    s
}

impl fmt::Display for Labels {
    /// `{__name__="up", job="x"}`, as Prometheus's `Labels.String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_pairs(self.iter()))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Mutable label set for building derived series (relabeling, PromQL).
#[derive(Debug, Clone, Default)]
pub struct LabelsBuilder {
    pairs: Vec<(String, String)>,
}

impl LabelsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`; an empty value deletes the label.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        if value.is_empty() {
            return self.del(name);
        }
        match self.pairs.iter_mut().find(|(n, _)| n == name) {
            Some(p) => p.1 = value.to_string(),
            None => self.pairs.push((name.to_string(), value.to_string())),
        }
        self
    }

    pub fn del(&mut self, name: &str) -> &mut Self {
        self.pairs.retain(|(n, _)| n != name);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Keeps only labels for which `f(name)` is true.
    pub fn retain(&mut self, mut f: impl FnMut(&str) -> bool) -> &mut Self {
        self.pairs.retain(|(n, _)| f(n));
        self
    }

    pub fn build(&self) -> Labels {
        Labels::from_pairs(self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_valid_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn from_pairs_sorts_drops_empty_and_last_wins() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", ""), ("a", "3")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "3"), ("b", "2")]);
        assert_eq!(l.to_string(), r#"{a="3", b="2"}"#);
    }

    #[test]
    fn wire_rejects_unsorted_duplicate_and_bad_names() {
        let e = Labels::from_wire([("__name__", "up"), ("b", "1"), ("a", "2")]).unwrap_err();
        assert!(matches!(e, LabelError::Unsorted { .. }), "{e}");
        assert!(
            e.to_string().contains(r#"{__name__="up", b="1", a="2"}"#),
            "{e}"
        );
        let e = Labels::from_wire([("a", "1"), ("a", "2")]).unwrap_err();
        assert!(matches!(e, LabelError::Duplicate { .. }));
        let e = Labels::from_wire([("__name__", "1up")]).unwrap_err();
        assert!(matches!(e, LabelError::InvalidMetricName { .. }));
        let e = Labels::from_wire([("__name__", "up"), ("a-b", "1")]).unwrap_err();
        assert!(matches!(e, LabelError::InvalidLabelName { .. }));
        assert_eq!(Labels::from_wire([]).unwrap_err(), LabelError::Empty);
        let ok = Labels::from_wire([("__name__", "a:b"), ("job", "x"), ("z", "")]).unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn hash_is_stable() {
        // Pinned: placement and on-disk data depend on this value.
        let l = Labels::from_pairs([("__name__", "up"), ("job", "node")]);
        assert_eq!(l.as_bytes(), b"\x08__name__\x02up\x03job\x04node");
        assert_eq!(
            l.hash(),
            xxhash_rust::xxh3::xxh3_64(b"\x08__name__\x02up\x03job\x04node")
        );
        assert_eq!(
            l.hash_for(&["job"]),
            xxhash_rust::xxh3::xxh3_64(b"\x03job\x04node")
        );
        // Adjacent pairs are hashed in place, others copied together: the
        // same value either way.
        let l = Labels::from_pairs([("a", "1"), ("b", "2"), ("c", "3"), ("d", "")]);
        let want = |b: &[u8]| xxhash_rust::xxh3::xxh3_64(b);
        assert_eq!(l.hash_for(&["a", "b"]), want(b"\x01a\x011\x01b\x012"));
        assert_eq!(l.hash_for(&["c", "a"]), want(b"\x01a\x011\x01c\x013"));
        assert_eq!(
            l.hash_for(&["c", "a", "b"]),
            want(b"\x01a\x011\x01b\x012\x01c\x013")
        );
        assert_eq!(l.hash_for(&["x", "d"]), want(b""));
    }

    #[test]
    fn ordering_matches_prometheus_compare() {
        let a = Labels::from_pairs([("a", "1")]);
        let ab = Labels::from_pairs([("a", "1"), ("b", "1")]);
        let a2 = Labels::from_pairs([("a", "2")]);
        let b = Labels::from_pairs([("b", "0")]);
        assert!(a < ab && ab < a2 && a2 < b);
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c\n\u{7}"), r#""a\"b\\c\n\a""#);
        assert_eq!(go_quote("é"), "\"é\"");
    }

    proptest! {
        #[test]
        fn canonical_round_trip(pairs in proptest::collection::btree_map("[a-z_]{1,8}", ".{1,12}", 0..8)) {
            let l = Labels::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let back = Labels::from_canonical_bytes(l.as_bytes()).unwrap();
            prop_assert_eq!(&back, &l);
            let got: Vec<_> = back.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
            let want: Vec<_> = pairs.into_iter().collect();
            prop_assert_eq!(got, want);
        }
    }
}
