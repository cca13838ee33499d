//! The XOR ("Gorilla") float chunk, bit-compatible with Prometheus's
//! `tsdb/chunkenc/xor.go`. See `storage/docs/chunk.md` for the layout.

use std::sync::Arc;

use super::bstream::{write_uvarint, write_varint, BitReader, BitWriter};
use super::{Chunk, ChunkBytes, ChunkError, Encoding, SampleIterator, ValueType};

/// Size of the big-endian sample-count header.
pub const CHUNK_HEADER_SIZE: usize = 2;

/// Prometheus allocates 128 bytes per new chunk; a 120-sample chunk of a
/// typical series is ~100–200 bytes, so this avoids most regrowth.
const CHUNK_ALLOCATION_SIZE: usize = 128;

/// Most samples a chunk can count in its 16-bit header.
pub const MAX_SAMPLES_PER_CHUNK: usize = u16::MAX as usize;

/// Builds one XOR chunk sample by sample. Appending never allocates except
/// when the byte buffer grows (amortised; 128 bytes reserved up front).
#[derive(Clone, Debug)]
pub struct XorAppender {
    w: BitWriter,
    num: u16,
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    /// An empty chunk (header `00 00`).
    pub fn new() -> XorAppender {
        Self::with_capacity(CHUNK_ALLOCATION_SIZE)
    }

    /// An empty chunk whose buffer reserves `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> XorAppender {
        XorAppender {
            w: BitWriter::with_header(&[0, 0], bytes),
            num: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: 0xff,
            trailing: 0,
        }
    }

    /// Empties the chunk, keeping its buffer's allocation (the head reuses
    /// one buffer per series across chunk cuts).
    pub fn reset(&mut self) {
        self.w = BitWriter::from_vec_with_header(std::mem::take(&mut self.w.buf), &[0, 0]);
        self.num = 0;
        self.t = 0;
        self.v = 0;
        self.t_delta = 0;
        self.leading = 0xff;
        self.trailing = 0;
    }

    /// Reopens a finished chunk for appending, as Prometheus's
    /// `XORChunk.Appender()` does: decodes it to recover the encoder state.
    /// Like Prometheus, a chunk reopened after exactly one sample starts with
    /// a (0, 0) value window instead of an unset one: valid, less compact,
    /// and byte-identical to what Prometheus would write.
    pub fn from_chunk(chunk: &Chunk) -> Result<XorAppender, ChunkError> {
        if chunk.encoding() != Encoding::Xor {
            return Err(ChunkError::WrongEncoding {
                want: Encoding::Xor,
                got: chunk.encoding(),
            });
        }
        let mut it = chunk.iter();
        while it.next() != ValueType::None {}
        if let Some(e) = it.err() {
            return Err(e.clone());
        }
        let total_bits = it.br.bit_position();
        let mut a = XorAppender {
            w: BitWriter::resume(chunk.bytes(), total_bits, chunk.bytes().len() + 32),
            num: it.num_total,
            t: it.t,
            v: it.v.to_bits(),
            t_delta: it.t_delta,
            leading: it.leading,
            trailing: it.trailing,
        };
        if it.num_total == 0 {
            a.leading = 0xff;
        }
        Ok(a)
    }

    /// Appends a sample. Timestamps should be increasing (the format itself
    /// accepts any order, and Prometheus never checks); the head enforces order.
    ///
    /// # Panics
    /// On the 65,536th sample: the header cannot count it. Callers cut chunks
    /// long before (the head at 120 samples).
    #[inline]
    pub fn append(&mut self, t: i64, v: f64) {
        assert!(
            (self.num as usize) < MAX_SAMPLES_PER_CHUNK,
            "XOR chunk is full ({MAX_SAMPLES_PER_CHUNK} samples)"
        );
        let vbits = v.to_bits();
        let mut t_delta = 0u64;
        match self.num {
            0 => {
                write_varint(&mut self.w, t);
                self.w.write_bits(vbits, 64);
            }
            1 => {
                t_delta = t.wrapping_sub(self.t) as u64;
                write_uvarint(&mut self.w, t_delta);
                self.write_value(vbits);
            }
            _ => {
                t_delta = t.wrapping_sub(self.t) as u64;
                let dod = t_delta.wrapping_sub(self.t_delta) as i64;
                if dod == 0 {
                    self.w.write_bit(false);
                } else if bit_range(dod, 14) {
                    self.w.write_bits(0b10, 2);
                    self.w.write_bits(dod as u64, 14);
                } else if bit_range(dod, 17) {
                    self.w.write_bits(0b110, 3);
                    self.w.write_bits(dod as u64, 17);
                } else if bit_range(dod, 20) {
                    self.w.write_bits(0b1110, 4);
                    self.w.write_bits(dod as u64, 20);
                } else {
                    self.w.write_bits(0b1111, 4);
                    self.w.write_bits(dod as u64, 64);
                }
                self.write_value(vbits);
            }
        }
        self.t = t;
        self.v = vbits;
        self.t_delta = t_delta;
        self.num += 1;
        self.w.buf[..2].copy_from_slice(&self.num.to_be_bytes());
    }

    /// Prometheus's `xorWrite`.
    #[inline]
    fn write_value(&mut self, vbits: u64) {
        let delta = vbits ^ self.v;
        if delta == 0 {
            self.w.write_bit(false);
            return;
        }
        self.w.write_bit(true);
        // Clamped to 31 so it fits the 5-bit field.
        let new_leading = (delta.leading_zeros() as u8).min(31);
        let new_trailing = delta.trailing_zeros() as u8;
        if self.leading != 0xff && new_leading >= self.leading && new_trailing >= self.trailing {
            self.w.write_bit(false);
            self.w.write_bits(
                delta >> self.trailing,
                64 - u32::from(self.leading) - u32::from(self.trailing),
            );
            return;
        }
        self.leading = new_leading;
        self.trailing = new_trailing;
        self.w.write_bit(true);
        self.w.write_bits(u64::from(new_leading), 5);
        // 64 significant bits is written as 0 (it never means "0 bits").
        let sigbits = 64 - u32::from(new_leading) - u32::from(new_trailing);
        self.w.write_bits(u64::from(sigbits), 6);
        self.w.write_bits(delta >> new_trailing, sigbits);
    }

    pub fn num_samples(&self) -> usize {
        self.num as usize
    }

    /// The chunk bytes so far, header included (what Prometheus's
    /// `Chunk.Bytes()` returns).
    pub fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// Timestamp and value of the last sample appended.
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.num > 0).then(|| (self.t, f64::from_bits(self.v)))
    }

    /// Heap bytes held (buffer capacity), for memory accounting.
    pub fn heap_size(&self) -> usize {
        self.w.buf.capacity()
    }

    /// A finished, immutable copy of the chunk so far (exact-size buffer).
    pub fn to_chunk(&self) -> Chunk {
        Chunk::from_parts(Encoding::Xor, Arc::from(self.w.bytes()))
    }
}

/// Prometheus's `bitRange`: whether `x` fits the `nbits`-bit bucket, whose
/// range is `[-(2^(n-1) - 1), 2^(n-1)]` (asymmetric: the reader maps the
/// bit pattern of `2^(n-1)` to the positive value).
#[inline]
fn bit_range(x: i64, nbits: u32) -> bool {
    -((1i64 << (nbits - 1)) - 1) <= x && x <= 1i64 << (nbits - 1)
}

/// Decodes an XOR chunk. Owns a reference to the chunk bytes, so it outlives
/// the lock or buffer the chunk came from.
#[derive(Clone, Debug)]
pub struct XorIterator {
    br: BitReader,
    num_total: u16,
    num_read: u16,
    t: i64,
    v: f64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
    err: Option<ChunkError>,
}

impl XorIterator {
    pub(crate) fn new(bytes: ChunkBytes) -> XorIterator {
        let (num_total, err) = match bytes.get(..CHUNK_HEADER_SIZE) {
            Some(h) => (u16::from_be_bytes([h[0], h[1]]), None),
            None => (0, Some(ChunkError::TooShort { len: bytes.len() })),
        };
        XorIterator {
            br: BitReader::new(bytes, CHUNK_HEADER_SIZE),
            num_total,
            num_read: 0,
            t: i64::MIN,
            v: 0.0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
            err,
        }
    }

    /// Samples the chunk header says it holds.
    pub fn num_samples(&self) -> usize {
        self.num_total as usize
    }

    fn fail(&mut self) -> ValueType {
        self.err = Some(ChunkError::Truncated {
            sample: self.num_read as usize,
            len: self.br.data().len(),
        });
        ValueType::None
    }

    #[inline]
    fn read_value(&mut self) -> Option<()> {
        if !self.br.read_bit()? {
            return Some(());
        }
        if self.br.read_bit()? {
            self.leading = self.br.read_bits(5)? as u8;
            let mut sigbits = self.br.read_bits(6)? as u8;
            if sigbits == 0 {
                sigbits = 64;
            }
            // A corrupt chunk may claim leading + sigbits > 64.
            self.trailing = 64u8.checked_sub(self.leading + sigbits)?;
        }
        let sigbits = 64 - u32::from(self.leading) - u32::from(self.trailing);
        let bits = self.br.read_bits(sigbits)?;
        let vbits = self.v.to_bits() ^ (bits << self.trailing);
        self.v = f64::from_bits(vbits);
        Some(())
    }

    #[inline]
    fn read_next(&mut self) -> Option<()> {
        match self.num_read {
            0 => {
                self.t = self.br.read_varint()?;
                self.v = f64::from_bits(self.br.read_bits(64)?);
            }
            1 => {
                self.t_delta = self.br.read_uvarint()?;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
            _ => {
                let mut d = 0u8;
                for _ in 0..4 {
                    d <<= 1;
                    if !self.br.read_bit()? {
                        break;
                    }
                    d |= 1;
                }
                let sz = match d {
                    0b0 => 0,
                    0b10 => 14,
                    0b110 => 17,
                    0b1110 => 20,
                    _ => 64, // 0b1111
                };
                let dod = if sz == 0 {
                    0
                } else {
                    let mut bits = self.br.read_bits(sz)?;
                    if sz < 64 && bits > (1 << (sz - 1)) {
                        // Negative: sign-extend from sz bits.
                        bits = bits.wrapping_sub(1 << sz);
                    }
                    bits as i64
                };
                self.t_delta = (self.t_delta as i64).wrapping_add(dod) as u64;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
        }
        Some(())
    }
}

impl SampleIterator for XorIterator {
    #[inline]
    fn next(&mut self) -> ValueType {
        if self.err.is_some() || self.num_read == self.num_total {
            return ValueType::None;
        }
        if self.read_next().is_none() {
            return self.fail();
        }
        self.num_read += 1;
        ValueType::Float
    }

    fn seek(&mut self, t: i64) -> ValueType {
        if self.err.is_some() {
            return ValueType::None;
        }
        while t > self.t || self.num_read == 0 {
            if self.next() == ValueType::None {
                return ValueType::None;
            }
        }
        ValueType::Float
    }

    #[inline]
    fn at(&self) -> (i64, f64) {
        (self.t, self.v)
    }

    #[inline]
    fn at_t(&self) -> i64 {
        self.t
    }

    fn err(&self) -> Option<&ChunkError> {
        self.err.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::STALE_NAN_BITS;
    use proptest::prelude::*;

    fn decode(c: &Chunk) -> Vec<(i64, u64)> {
        let mut it = c.iter();
        let mut out = vec![];
        while it.next() == ValueType::Float {
            let (t, v) = it.at();
            out.push((t, v.to_bits()));
        }
        assert!(it.err().is_none(), "{:?}", it.err());
        out
    }

    /// Bytes derived by hand from Prometheus's `xor.go`:
    ///
    /// ```text
    /// 00 03                    sample count 3, big-endian
    /// d0 0f                    varint(1000): zig-zag 2000 = 0b1111_1010000 -> 0xd0 0x0f
    /// 3f f0 00 00 00 00 00 00  float64 bits of 1.0
    /// e8 07                    uvarint(1000) = 0b111_1101000 -> 0xe8 0x07
    ///                          value 2.0: xor 0x3ff0.. ^ 0x4000.. = 0x7ff0_0000_0000_0000
    ///                            leading 1, trailing 52, 11 significant bits:
    ///                            '1' (changed) '1' (new window) 00001 (leading)
    ///                            001011 (sigbits 11) 11111111111 (0x7ff)
    /// c2 5f ff                   = 11000010 01011111 11111111
    ///                          sample 3: dod = 1000 - 1000 = 0 -> '0'
    ///                            value 3.0: xor 0x4000.. ^ 0x4008.. = 0x0008_0000_0000_0000
    ///                            leading 12 >= 1 but trailing 51 < 52: new window
    ///                            '1' '1' 01100 (12) 000001 (1 bit) 1
    /// 6c 06                      = 0 1 1 01100 000001 1 + pad 0 = 01101100 00000110
    /// ```
    #[test]
    fn bytes_match_prometheus_by_hand() {
        let mut a = XorAppender::new();
        a.append(1000, 1.0);
        a.append(2000, 2.0);
        a.append(3000, 3.0);
        let want: &[u8] = &[
            0x00, 0x03, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0xe8, 0x07, 0xc2, 0x5f, 0xff,
            0x6c, 0x06,
        ];
        assert_eq!(a.bytes(), want);
        let c = Chunk::new(Encoding::Xor, want.into()).unwrap();
        assert_eq!(c.num_samples(), 3);
        assert_eq!(
            decode(&c),
            vec![
                (1000, 1f64.to_bits()),
                (2000, 2f64.to_bits()),
                (3000, 3f64.to_bits())
            ]
        );
    }

    /// Each delta-of-delta bucket at both ends of its range, plus the
    /// reused-window value path, hand-derived:
    ///
    /// samples (0, 0.0), (10, 0.0): `00 02 | 00 | 00*8 | 0a | '0'` -> pad.
    #[test]
    fn small_chunk_bytes_and_empty_chunk() {
        let a = XorAppender::new();
        assert_eq!(a.bytes(), &[0, 0]);
        assert_eq!(decode(&a.to_chunk()), vec![]);
        let mut a = XorAppender::new();
        a.append(0, 0.0);
        a.append(10, 0.0);
        // uvarint(10) = 0x0a, then '0' for an unchanged value, padded: 0x00.
        assert_eq!(a.bytes(), &[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x00]);
        // dod 0 -> '0', value unchanged -> '0': still within the last byte.
        a.append(20, 0.0);
        assert_eq!(a.bytes(), &[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x00]);
    }

    #[test]
    fn dod_bucket_edges_round_trip() {
        let mut ts = vec![0i64, 1000];
        let mut delta = 1000i64;
        for dod in [
            0i64,
            1,
            -1,
            8191,
            -8191,
            8192,
            -8192,
            8193,
            65535,
            65536,
            -65535,
            -65536,
            65537,
            524287,
            524288,
            -524287,
            -524288,
            524289,
            1 << 40,
            -(1 << 40),
        ] {
            delta += dod;
            let next = ts[ts.len() - 1] + delta;
            ts.push(next);
        }
        let mut a = XorAppender::new();
        for &t in &ts {
            a.append(t, t as f64);
        }
        let got: Vec<i64> = decode(&a.to_chunk()).into_iter().map(|s| s.0).collect();
        assert_eq!(got, ts);
    }

    #[test]
    fn reopen_appends_identically() {
        let samples: Vec<(i64, f64)> = (0..50)
            .map(|i| (i * 15_000 + (i % 3), (i as f64).sin()))
            .collect();
        let mut whole = XorAppender::new();
        for &(t, v) in &samples {
            whole.append(t, v);
        }
        for split in [0, 1, 2, 3, 17, 49, 50] {
            let mut a = XorAppender::new();
            for &(t, v) in &samples[..split] {
                a.append(t, v);
            }
            let mut b = XorAppender::from_chunk(&a.to_chunk()).unwrap();
            for &(t, v) in &samples[split..] {
                b.append(t, v);
            }
            // Prometheus's quirk, kept for byte equality with it: reopened
            // after exactly one sample, the appender's window is (0, 0) rather
            // than "unset", so later values use all 64 bits. Same samples.
            if split != 1 {
                assert_eq!(b.bytes(), whole.bytes(), "split at {split}");
            }
            let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
            assert_eq!(decode(&b.to_chunk()), want, "split at {split}");
        }
    }

    #[test]
    fn reset_reuses_buffer() {
        let mut a = XorAppender::new();
        for i in 0..200 {
            a.append(i * 1000, i as f64 * 0.1);
        }
        let cap = a.heap_size();
        a.reset();
        assert_eq!(a.bytes(), &[0, 0]);
        assert_eq!(a.heap_size(), cap);
        a.append(1000, 1.0);
        a.append(2000, 2.0);
        a.append(3000, 3.0);
        assert_eq!(a.bytes()[..4], [0, 3, 0xd0, 0x0f]);
        assert_eq!(a.bytes().len(), 19);
    }

    #[test]
    fn truncated_chunk_reports_error() {
        let mut a = XorAppender::new();
        for i in 0..10 {
            a.append(i * 1000, i as f64 * 1.5);
        }
        let bytes = a.bytes();
        for cut in 2..bytes.len() {
            let c = Chunk::from_parts(Encoding::Xor, bytes[..cut].into());
            let mut it = c.iter();
            let mut n = 0;
            while it.next() == ValueType::Float {
                n += 1;
            }
            assert!(n < 10, "cut {cut}");
            assert!(it.err().is_some(), "cut {cut}");
        }
        assert!(Chunk::new(Encoding::Xor, [0u8].as_slice().into()).is_err());
    }

    #[test]
    fn seek_semantics() {
        let mut a = XorAppender::new();
        for i in 0..10 {
            a.append(i * 10, i as f64);
        }
        let c = a.to_chunk();
        let mut it = c.iter();
        assert_eq!(it.seek(-5), ValueType::Float);
        assert_eq!(it.at_t(), 0);
        assert_eq!(it.seek(35), ValueType::Float);
        assert_eq!(it.at(), (40, 4.0));
        // Never moves backwards.
        assert_eq!(it.seek(0), ValueType::Float);
        assert_eq!(it.at_t(), 40);
        assert_eq!(it.seek(91), ValueType::None);
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::from_bits(STALE_NAN_BITS)),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            (0i64..1000).prop_map(|x| x as f64),
            any::<u64>().prop_map(f64::from_bits),
        ]
    }

    fn gap() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(15_000i64),
            14_990i64..15_010,
            0i64..10,
            0i64..(1 << 20),
            0i64..(1 << 40),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_bit_exact(
            start in prop_oneof![any::<i64>().prop_map(|t| t >> 2), -1_000_000i64..1_000_000],
            gaps in proptest::collection::vec(gap(), 0..300),
            values in proptest::collection::vec(value(), 301),
        ) {
            let mut ts = vec![start];
            for g in gaps {
                let next = ts[ts.len() - 1].saturating_add(g);
                ts.push(next);
            }
            let mut a = XorAppender::new();
            let mut want = vec![];
            for (i, &t) in ts.iter().enumerate() {
                a.append(t, values[i]);
                want.push((t, values[i].to_bits()));
            }
            prop_assert_eq!(a.num_samples(), ts.len());
            let c = a.to_chunk();
            prop_assert_eq!(c.num_samples(), ts.len());
            prop_assert_eq!(decode(&c), want.clone());
            // And again through Chunk::new validation.
            let c2 = Chunk::new(Encoding::Xor, c.bytes().into()).unwrap();
            prop_assert_eq!(decode(&c2), want);
        }
    }
}
