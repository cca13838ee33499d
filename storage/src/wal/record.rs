//! WAL record payloads: encoding and decoding of Series, Samples,
//! Tombstones and StSamples records (the bytes inside one frame, see
//! `docs/wal.md`).
//!
//! Owns: the byte layout of each record type. Must not: know about frames,
//! segments or files; allocate per sample when decoding (the [`Decoder`] keeps
//! its buffers between records so replay runs at memory speed).

use crate::labels::Labels;

/// Record type byte of a Series record.
pub(crate) const TYPE_SERIES: u8 = 1;
/// Record type byte of a Samples record.
pub(crate) const TYPE_SAMPLES: u8 = 2;
/// Record type byte of a Tombstones record.
pub(crate) const TYPE_TOMBSTONES: u8 = 3;
/// Record type byte of an StSamples record (float samples with a start
/// timestamp). Pharos-only: Prometheus 2.42 has no such record.
pub(crate) const TYPE_ST_SAMPLES: u8 = 4;

/// A series definition: the WAL-local reference and its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefSeries {
    pub series_ref: u64,
    pub labels: Labels,
}

/// One float sample of the series with reference `series_ref`.
#[derive(Clone, Copy, Debug)]
pub struct RefSample {
    pub series_ref: u64,
    pub t: i64,
    pub v: f64,
}

impl PartialEq for RefSample {
    /// Bitwise on the value: the WAL must round-trip NaN payloads (the stale
    /// marker is a specific NaN), so `NaN == NaN` here when the bits match.
    fn eq(&self, o: &Self) -> bool {
        self.series_ref == o.series_ref && self.t == o.t && self.v.to_bits() == o.v.to_bits()
    }
}

/// A float sample with its start timestamp `st` (ms, non-zero: samples
/// whose start timestamp is unknown go into Samples records).
#[derive(Clone, Copy, Debug)]
pub struct RefStSample {
    pub series_ref: u64,
    pub t: i64,
    pub v: f64,
    pub st: i64,
}

impl PartialEq for RefStSample {
    /// Bitwise on the value, as [`RefSample`].
    fn eq(&self, o: &Self) -> bool {
        self.series_ref == o.series_ref
            && self.t == o.t
            && self.st == o.st
            && self.v.to_bits() == o.v.to_bits()
    }
}

/// Deletion of the samples of `series_ref` in `[mint, maxt]` (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub series_ref: u64,
    pub mint: i64,
    pub maxt: i64,
}

/// A decoded (or to-be-encoded) record, borrowing its entries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Record<'a> {
    Series(&'a [RefSeries]),
    Samples(&'a [RefSample]),
    Tombstones(&'a [Tombstone]),
    StSamples(&'a [RefStSample]),
}

impl Record<'_> {
    /// Number of entries in the record.
    pub fn len(&self) -> usize {
        match self {
            Record::Series(s) => s.len(),
            Record::Samples(s) => s.len(),
            Record::Tombstones(s) => s.len(),
            Record::StSamples(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the record payload (type byte first) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Series(s) => encode_series(out, s),
            Record::Samples(s) => encode_samples(out, s),
            Record::Tombstones(s) => encode_tombstones(out, s),
            Record::StSamples(s) => encode_st_samples(out, s),
        }
    }
}

/// Why a payload that passed its checksum could not be decoded. Only a bug
/// or a writer of a newer version produces these; the reader reports them as
/// corruption at the record's offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record payload")]
    Empty,
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    #[error("entry count {count} cannot fit in {remaining} remaining bytes")]
    BadCount { count: u64, remaining: usize },
    #[error("invalid canonical label bytes for series ref {0}")]
    BadLabels(u64),
    #[error("{0} trailing bytes after the last entry")]
    TrailingBytes(usize),
}

#[inline]
fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Byte cursor with bounds-checked varint reads; errors carry no allocation.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn uvarint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&byte) = self.b.get(self.pos) else {
                return Err(DecodeError::Truncated(what));
            };
            self.pos += 1;
            // A tenth byte may only carry the top bit of a u64.
            if shift == 63 && byte > 1 {
                return Err(DecodeError::Truncated(what));
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline]
    fn varint(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let u = self.uvarint(what)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    #[inline]
    fn u64_le(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let end = self.pos + 8;
        let Some(s) = self.b.get(self.pos..end) else {
            return Err(DecodeError::Truncated(what));
        };
        self.pos = end;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    #[inline]
    fn bytes(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated(what))?;
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated(what))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    /// Reads an entry count and checks that `count` entries of at least
    /// `min_entry` bytes fit, so a bad count cannot trigger a huge reserve.
    fn count(&mut self, min_entry: usize) -> Result<usize, DecodeError> {
        let count = self.uvarint("entry count")?;
        let remaining = self.remaining();
        if count > (remaining / min_entry) as u64 {
            return Err(DecodeError::BadCount { count, remaining });
        }
        Ok(count as usize)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

/// `type=1 | uvarint count | count × (uvarint ref, uvarint len, labels)`.
pub fn encode_series(out: &mut Vec<u8>, series: &[RefSeries]) {
    out.push(TYPE_SERIES);
    put_uvarint(out, series.len() as u64);
    for s in series {
        put_uvarint(out, s.series_ref);
        let b = s.labels.as_bytes();
        put_uvarint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

/// `type=2 | uvarint count | count × (varint Δref, varint Δt, f64 bits LE)`,
/// deltas against the previous entry (the first against 0), wrapping, so any
/// u64 ref and i64 timestamp round-trips.
pub fn encode_samples(out: &mut Vec<u8>, samples: &[RefSample]) {
    out.reserve(2 + samples.len() * 12);
    out.push(TYPE_SAMPLES);
    put_uvarint(out, samples.len() as u64);
    let (mut pr, mut pt) = (0u64, 0i64);
    for s in samples {
        put_varint(out, s.series_ref.wrapping_sub(pr) as i64);
        put_varint(out, s.t.wrapping_sub(pt));
        out.extend_from_slice(&s.v.to_bits().to_le_bytes());
        pr = s.series_ref;
        pt = s.t;
    }
}

/// `type=3 | uvarint count | count × (uvarint ref, varint mint, varint maxt)`.
pub fn encode_tombstones(out: &mut Vec<u8>, tombstones: &[Tombstone]) {
    out.push(TYPE_TOMBSTONES);
    put_uvarint(out, tombstones.len() as u64);
    for t in tombstones {
        put_uvarint(out, t.series_ref);
        put_varint(out, t.mint);
        put_varint(out, t.maxt);
    }
}

/// `type=4 | uvarint count | count × (varint Δref, varint Δt, varint t−st,
/// f64 bits LE)`: a Samples entry plus the distance from the start
/// timestamp to the sample (small for delta samples, one varint for a
/// cumulative counter's age), wrapping so any pair round-trips.
pub fn encode_st_samples(out: &mut Vec<u8>, samples: &[RefStSample]) {
    out.reserve(2 + samples.len() * 16);
    out.push(TYPE_ST_SAMPLES);
    put_uvarint(out, samples.len() as u64);
    let (mut pr, mut pt) = (0u64, 0i64);
    for s in samples {
        put_varint(out, s.series_ref.wrapping_sub(pr) as i64);
        put_varint(out, s.t.wrapping_sub(pt));
        put_varint(out, s.t.wrapping_sub(s.st));
        out.extend_from_slice(&s.v.to_bits().to_le_bytes());
        pr = s.series_ref;
        pt = s.t;
    }
}

/// Decodes payloads into buffers it reuses, so steady-state decoding of
/// Samples records allocates nothing.
#[derive(Default)]
pub struct Decoder {
    series: Vec<RefSeries>,
    samples: Vec<RefSample>,
    tombstones: Vec<Tombstone>,
    st_samples: Vec<RefStSample>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes one payload. The returned record borrows the decoder's
    /// buffers and is valid until the next call.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Record<'_>, DecodeError> {
        let (&ty, body) = payload.split_first().ok_or(DecodeError::Empty)?;
        let mut c = Cursor { b: body, pos: 0 };
        match ty {
            TYPE_SERIES => {
                self.series.clear();
                let n = c.count(2)?;
                self.series.reserve(n);
                for _ in 0..n {
                    let series_ref = c.uvarint("series ref")?;
                    let len = c.uvarint("labels length")?;
                    let b = c.bytes(len, "labels")?;
                    let labels = Labels::from_canonical_bytes(b)
                        .ok_or(DecodeError::BadLabels(series_ref))?;
                    self.series.push(RefSeries { series_ref, labels });
                }
                c.finish()?;
                Ok(Record::Series(&self.series))
            }
            TYPE_SAMPLES => {
                self.samples.clear();
                let n = c.count(10)?;
                self.samples.reserve(n);
                let (mut r, mut t) = (0u64, 0i64);
                for _ in 0..n {
                    r = r.wrapping_add(c.varint("sample ref")? as u64);
                    t = t.wrapping_add(c.varint("sample timestamp")?);
                    let v = f64::from_bits(c.u64_le("sample value")?);
                    self.samples.push(RefSample {
                        series_ref: r,
                        t,
                        v,
                    });
                }
                c.finish()?;
                Ok(Record::Samples(&self.samples))
            }
            TYPE_TOMBSTONES => {
                self.tombstones.clear();
                let n = c.count(3)?;
                self.tombstones.reserve(n);
                for _ in 0..n {
                    let series_ref = c.uvarint("tombstone ref")?;
                    let mint = c.varint("tombstone mint")?;
                    let maxt = c.varint("tombstone maxt")?;
                    self.tombstones.push(Tombstone {
                        series_ref,
                        mint,
                        maxt,
                    });
                }
                c.finish()?;
                Ok(Record::Tombstones(&self.tombstones))
            }
            TYPE_ST_SAMPLES => {
                self.st_samples.clear();
                let n = c.count(11)?;
                self.st_samples.reserve(n);
                let (mut r, mut t) = (0u64, 0i64);
                for _ in 0..n {
                    r = r.wrapping_add(c.varint("sample ref")? as u64);
                    t = t.wrapping_add(c.varint("sample timestamp")?);
                    let st = t.wrapping_sub(c.varint("sample start timestamp")?);
                    let v = f64::from_bits(c.u64_le("sample value")?);
                    self.st_samples.push(RefStSample {
                        series_ref: r,
                        t,
                        v,
                        st,
                    });
                }
                c.finish()?;
                Ok(Record::StSamples(&self.st_samples))
            }
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_labels() -> impl Strategy<Value = Labels> {
        proptest::collection::btree_map("[a-z_]{1,8}", "\\PC{1,12}", 0..6).prop_map(|m| {
            Labels::from_sorted_unchecked(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        })
    }

    fn arb_sample() -> impl Strategy<Value = RefSample> {
        (
            prop_oneof![0u64..100, any::<u64>()],
            prop_oneof![1_600_000_000_000i64..1_700_000_000_000, any::<i64>()],
            prop_oneof![any::<f64>(), Just(f64::from_bits(0x7ff0_0000_0000_0002))],
        )
            .prop_map(|(series_ref, t, v)| RefSample { series_ref, t, v })
    }

    proptest! {
        #[test]
        fn samples_round_trip(samples in proptest::collection::vec(arb_sample(), 0..200)) {
            let mut buf = Vec::new();
            encode_samples(&mut buf, &samples);
            let mut d = Decoder::new();
            prop_assert_eq!(d.decode(&buf).unwrap(), Record::Samples(&samples));
        }

        #[test]
        fn series_round_trip(
            series in proptest::collection::vec((any::<u64>(), arb_labels()), 0..20)
        ) {
            let series: Vec<RefSeries> = series
                .into_iter()
                .map(|(series_ref, labels)| RefSeries { series_ref, labels })
                .collect();
            let mut buf = Vec::new();
            encode_series(&mut buf, &series);
            let mut d = Decoder::new();
            prop_assert_eq!(d.decode(&buf).unwrap(), Record::Series(&series));
        }

        #[test]
        fn tombstones_round_trip(
            ts in proptest::collection::vec((any::<u64>(), any::<i64>(), any::<i64>()), 0..50)
        ) {
            let ts: Vec<Tombstone> = ts
                .into_iter()
                .map(|(series_ref, mint, maxt)| Tombstone { series_ref, mint, maxt })
                .collect();
            let mut buf = Vec::new();
            encode_tombstones(&mut buf, &ts);
            let mut d = Decoder::new();
            prop_assert_eq!(d.decode(&buf).unwrap(), Record::Tombstones(&ts));
        }

        #[test]
        fn st_samples_round_trip(
            samples in proptest::collection::vec((arb_sample(), any::<i64>()), 0..200)
        ) {
            let samples: Vec<RefStSample> = samples
                .into_iter()
                .map(|(s, st)| RefStSample { series_ref: s.series_ref, t: s.t, v: s.v, st })
                .collect();
            let mut buf = Vec::new();
            encode_st_samples(&mut buf, &samples);
            let mut d = Decoder::new();
            prop_assert_eq!(d.decode(&buf).unwrap(), Record::StSamples(&samples));
            for cut in 0..buf.len() {
                prop_assert!(d.decode(&buf[..cut]).is_err());
            }
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut d = Decoder::new();
            let _ = d.decode(&bytes);
        }

        /// Every strict prefix of a valid payload is rejected, never
        /// misread as a shorter valid record.
        #[test]
        fn prefixes_are_rejected(samples in proptest::collection::vec(arb_sample(), 1..20)) {
            let mut buf = Vec::new();
            encode_samples(&mut buf, &samples);
            let mut d = Decoder::new();
            for cut in 0..buf.len() {
                prop_assert!(d.decode(&buf[..cut]).is_err());
            }
        }
    }

    #[test]
    fn unknown_type_is_reported() {
        let mut d = Decoder::new();
        assert_eq!(d.decode(&[9, 0]), Err(DecodeError::UnknownType(9)));
        // A cumulative counter's sample: ref 1, 15 s in, started 1 h before.
        let s = RefStSample {
            series_ref: 1,
            t: 15_000,
            v: 1.0,
            st: 15_000 - 3_600_000,
        };
        let mut buf = Vec::new();
        encode_st_samples(&mut buf, &[s]);
        // type, count, Δref, Δt (3 bytes), t−st (4 bytes), value.
        assert_eq!(buf.len(), 1 + 1 + 1 + 3 + 4 + 8);
        assert_eq!(d.decode(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn huge_count_is_rejected_without_allocating() {
        let mut buf = vec![TYPE_SAMPLES];
        put_uvarint(&mut buf, u64::MAX / 2);
        let mut d = Decoder::new();
        assert!(matches!(d.decode(&buf), Err(DecodeError::BadCount { .. })));
    }
}
