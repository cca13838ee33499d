//! Bit streams, most significant bit first, exactly as Prometheus's
//! `chunkenc/bstream.go`: the last byte is zero-padded, and byte-aligned writes
//! (`write_byte`) go through the same bit path so unaligned bytes land where
//! Prometheus puts them.

use super::ChunkBytes;

/// Append-only bit writer over a byte vector.
///
/// `free` is the number of still-unused low bits in the last byte (0 means the
/// next bit starts a new byte). The vector may start with a header (the XOR
/// chunk's sample count) that the writer never touches.
#[derive(Clone, Debug, Default)]
pub(crate) struct BitWriter {
    pub(crate) buf: Vec<u8>,
    free: u8,
}

impl BitWriter {
    pub(crate) fn with_header(header: &[u8], capacity: usize) -> BitWriter {
        let mut buf = Vec::with_capacity(capacity.max(header.len()));
        buf.extend_from_slice(header);
        BitWriter { buf, free: 0 }
    }

    /// Reuses `buf`'s allocation for a fresh stream starting with `header`.
    pub(crate) fn from_vec_with_header(mut buf: Vec<u8>, header: &[u8]) -> BitWriter {
        buf.clear();
        buf.extend_from_slice(header);
        BitWriter { buf, free: 0 }
    }

    /// Resumes writing after `bits_used` bits of `bytes` (the remaining bits of
    /// the last byte must be zero).
    pub(crate) fn resume(bytes: &[u8], total_bits: usize, capacity: usize) -> BitWriter {
        let mut buf = Vec::with_capacity(capacity.max(bytes.len()));
        let nbytes = total_bits.div_ceil(8);
        buf.extend_from_slice(&bytes[..nbytes]);
        let free = (nbytes * 8 - total_bits) as u8;
        if free > 0 {
            // Clear anything past the last used bit so later ORs are exact.
            if let Some(last) = buf.last_mut() {
                *last &= !((1u8 << free) - 1);
            }
        }
        BitWriter { buf, free }
    }

    /// Appends a byte, growing the buffer by a quarter (at least 128
    /// bytes) when full rather than doubling it: a head keeps one open
    /// buffer per series, and doubling would leave up to half of each unused.
    #[inline]
    fn push_byte(&mut self, b: u8) {
        if self.buf.len() == self.buf.capacity() {
            self.grow();
        }
        self.buf.push(b);
    }

    #[cold]
    fn grow(&mut self) {
        let step = (self.buf.capacity() / 4).max(128);
        self.buf.reserve_exact(step);
    }

    #[inline]
    pub(crate) fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.push_byte(0);
            self.free = 8;
        }
        self.free -= 1;
        if bit {
            let i = self.buf.len() - 1;
            self.buf[i] |= 1 << self.free;
        }
    }

    /// Writes the low `n` bits of `v` (`n` in 0..=64), most significant first.
    #[inline]
    pub(crate) fn write_bits(&mut self, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        let mut n = n;
        // Left-align the n bits; upper garbage in `v` is shifted out.
        let mut v = v << (64 - n);
        if self.free > 0 {
            let free = u32::from(self.free);
            let i = self.buf.len() - 1;
            self.buf[i] |= ((v >> 56) as u8) >> (8 - free);
            let take = n.min(free);
            self.free -= take as u8;
            if take == n {
                return;
            }
            v <<= take;
            n -= take;
        }
        while n >= 8 {
            self.push_byte((v >> 56) as u8);
            v <<= 8;
            n -= 8;
        }
        if n > 0 {
            self.push_byte((v >> 56) as u8);
            self.free = (8 - n) as u8;
        }
    }

    #[inline]
    pub(crate) fn write_byte(&mut self, b: u8) {
        self.write_bits(u64::from(b), 8);
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Bit reader over shared bytes, prefetching up to 64 bits at a time.
#[derive(Clone, Debug)]
pub(crate) struct BitReader {
    data: ChunkBytes,
    /// Next byte of `data` to load into `buf`.
    pos: usize,
    /// Valid bits, left-aligned.
    buf: u64,
    valid: u32,
}

impl BitReader {
    pub(crate) fn new(data: ChunkBytes, start: usize) -> BitReader {
        BitReader {
            pos: start.min(data.len()),
            data,
            buf: 0,
            valid: 0,
        }
    }

    /// Bits consumed so far, counted from the start of `data`.
    pub(crate) fn bit_position(&self) -> usize {
        self.pos * 8 - self.valid as usize
    }

    pub(crate) fn data(&self) -> &ChunkBytes {
        &self.data
    }

    #[inline]
    fn refill(&mut self) {
        // One deref of the (heap or mapped) bytes per refill, not per byte.
        let data: &[u8] = &self.data;
        if self.valid == 0 {
            if let Some(b) = data.get(self.pos..self.pos + 8) {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.buf = u64::from_be_bytes(a);
                self.valid = 64;
                self.pos += 8;
                return;
            }
        }
        while self.valid <= 56 && self.pos < data.len() {
            self.buf |= u64::from(data[self.pos]) << (56 - self.valid);
            self.valid += 8;
            self.pos += 1;
        }
    }

    #[inline]
    pub(crate) fn read_bit(&mut self) -> Option<bool> {
        if self.valid == 0 {
            self.refill();
            if self.valid == 0 {
                return None;
            }
        }
        let bit = self.buf >> 63 != 0;
        self.buf <<= 1;
        self.valid -= 1;
        Some(bit)
    }

    /// Reads `n` bits (0..=64) as an unsigned integer; `None` at end of data.
    #[inline]
    pub(crate) fn read_bits(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if self.valid < n {
            self.refill();
        }
        if self.valid >= n {
            let r = self.buf >> (64 - n);
            self.buf = if n == 64 { 0 } else { self.buf << n };
            self.valid -= n;
            return Some(r);
        }
        // Only reachable for n > 56 with a partly filled buffer, or at the end.
        let first = self.valid;
        if first == 0 {
            return None;
        }
        let hi = self.buf >> (64 - first);
        self.buf = 0;
        self.valid = 0;
        self.refill();
        let rest = n - first;
        if self.valid < rest {
            return None;
        }
        let lo = self.buf >> (64 - rest);
        self.buf <<= rest;
        self.valid -= rest;
        Some((hi << rest) | lo)
    }

    #[inline]
    pub(crate) fn read_byte(&mut self) -> Option<u8> {
        self.read_bits(8).map(|b| b as u8)
    }

    /// Go's `binary.ReadUvarint` over the bit stream.
    pub(crate) fn read_uvarint(&mut self) -> Option<u64> {
        let mut x: u64 = 0;
        let mut s = 0u32;
        for i in 0..10 {
            let b = self.read_byte()?;
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return None; // overflow
                }
                return Some(x | (u64::from(b) << s));
            }
            x |= u64::from(b & 0x7f) << s;
            s += 7;
        }
        None
    }

    /// Go's `binary.ReadVarint` (zig-zag).
    pub(crate) fn read_varint(&mut self) -> Option<i64> {
        let ux = self.read_uvarint()?;
        let mut x = (ux >> 1) as i64;
        if ux & 1 != 0 {
            x = !x;
        }
        Some(x)
    }
}

/// Go's `binary.PutUvarint`, one byte at a time through the bit writer.
#[inline]
pub(crate) fn write_uvarint(w: &mut BitWriter, mut v: u64) {
    while v >= 0x80 {
        w.write_byte((v as u8) | 0x80);
        v >>= 7;
    }
    w.write_byte(v as u8);
}

/// Go's `binary.PutVarint` (zig-zag).
#[inline]
pub(crate) fn write_varint(w: &mut BitWriter, v: i64) {
    let mut ux = (v as u64) << 1;
    if v < 0 {
        ux = !ux;
    }
    write_uvarint(w, ux);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bits_round_trip(fields in proptest::collection::vec((any::<u64>(), 0u32..=64), 0..200)) {
            let mut w = BitWriter::default();
            for &(v, n) in &fields {
                w.write_bits(v, n);
            }
            let mut r = BitReader::new(w.bytes().into(), 0);
            for &(v, n) in &fields {
                let want = if n == 64 { v } else if n == 0 { 0 } else { v & ((1u64 << n) - 1) };
                prop_assert_eq!(r.read_bits(n), Some(want));
            }
        }

        #[test]
        fn varints_round_trip(xs in proptest::collection::vec(any::<i64>(), 0..50), lead in 0u32..8) {
            let mut w = BitWriter::default();
            w.write_bits(0, lead);
            for &x in &xs {
                write_varint(&mut w, x);
                write_uvarint(&mut w, x as u64);
            }
            let mut r = BitReader::new(w.bytes().into(), 0);
            r.read_bits(lead);
            for &x in &xs {
                prop_assert_eq!(r.read_varint(), Some(x));
                prop_assert_eq!(r.read_uvarint(), Some(x as u64));
            }
        }
    }

    #[test]
    fn resume_continues_exactly() {
        let mut w = BitWriter::default();
        w.write_bits(0b101, 3);
        w.write_bits(0xabcd, 16);
        let mut r = BitWriter::resume(w.bytes(), 19, 16);
        r.write_bits(0b11, 2);
        w.write_bits(0b11, 2);
        assert_eq!(r.bytes(), w.bytes());
    }
}
