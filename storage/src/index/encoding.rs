//! Byte-level encoding shared by the block files (index, chunk segments,
//! tombstones): Go-compatible varints (`encoding/binary`), big-endian fixed
//! integers and CRC32 Castagnoli.
//!
//! [`Cursor`] decodes untrusted bytes: every read is bounds-checked and fails
//! with the absolute file offset of the read, so callers can report exactly
//! where a file is corrupt.

/// CRC32 with the Castagnoli polynomial, as every Prometheus block file uses.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zig-zag signed varint, as Go's `binary.PutVarint`.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_be32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_be64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_uvarint_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Why a read from untrusted bytes failed, and where (absolute file offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    pub(crate) offset: u64,
    pub(crate) what: &'static str,
}

/// Bounds-checked reader over a byte slice that starts at absolute file
/// offset `origin`.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    origin: u64,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], origin: u64) -> Cursor<'a> {
        Cursor {
            buf,
            pos: 0,
            origin,
        }
    }

    /// Absolute file offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.origin + self.pos as u64
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError {
            offset: self.offset(),
            what,
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("unexpected end of data"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn be32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn be64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Go's `binary.Uvarint`: at most 10 bytes, rejecting overflow.
    pub(crate) fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        let mut shift = 0u32;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                self.pos = start;
                return Err(self.err("unexpected end of data in varint"));
            };
            self.pos += 1;
            if b < 0x80 {
                if i == 9 && b > 1 {
                    self.pos = start;
                    return Err(self.err("varint overflows 64 bits"));
                }
                return Ok(v | (u64::from(b) << shift));
            }
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
        }
        self.pos = start;
        Err(self.err("varint longer than 10 bytes"))
    }

    pub(crate) fn varint(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A uvarint that must fit in 32 bits (symbol references).
    pub(crate) fn uvarint32(&mut self) -> Result<u32, DecodeError> {
        let at = self.offset();
        let v = self.uvarint()?;
        u32::try_from(v).map_err(|_| DecodeError {
            offset: at,
            what: "varint does not fit in 32 bits",
        })
    }

    /// A uvarint length followed by that many bytes.
    pub(crate) fn uvarint_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| self.err("length does not fit in memory"))?;
        self.bytes(n)
    }

    pub(crate) fn uvarint_str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.offset();
        let b = self.uvarint_bytes()?;
        std::str::from_utf8(b).map_err(|_| DecodeError {
            offset: at,
            what: "string is not valid UTF-8",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(u in any::<u64>(), i in any::<i64>(), s in ".{0,40}") {
            let mut b = Vec::new();
            put_uvarint(&mut b, u);
            put_varint(&mut b, i);
            put_uvarint_str(&mut b, &s);
            put_be32(&mut b, u as u32);
            put_be64(&mut b, u);
            let mut c = Cursor::new(&b, 100);
            prop_assert_eq!(c.uvarint().unwrap(), u);
            prop_assert_eq!(c.varint().unwrap(), i);
            prop_assert_eq!(c.uvarint_str().unwrap(), s.as_str());
            prop_assert_eq!(c.be32().unwrap(), u as u32);
            prop_assert_eq!(c.be64().unwrap(), u);
            prop_assert!(c.is_empty());
        }

        #[test]
        fn truncated_input_fails_with_offset(u in 128u64.., cut in 0usize..9) {
            let mut b = Vec::new();
            put_uvarint(&mut b, u);
            let cut = cut.min(b.len() - 1);
            let mut c = Cursor::new(&b[..cut], 7);
            let e = c.uvarint().unwrap_err();
            prop_assert_eq!(e.offset, 7);
        }
    }

    #[test]
    fn zigzag_matches_go() {
        // Go: binary.PutVarint(-1) == [0x01], PutVarint(1) == [0x02].
        let mut b = Vec::new();
        put_varint(&mut b, -1);
        put_varint(&mut b, 1);
        put_varint(&mut b, -64);
        assert_eq!(b, vec![0x01, 0x02, 0x7f]);
    }

    #[test]
    fn overlong_varint_rejected() {
        let b = [0xffu8; 11];
        assert!(Cursor::new(&b, 0).uvarint().is_err());
        let mut b = vec![0xffu8; 9];
        b.push(0x02);
        assert!(Cursor::new(&b, 0).uvarint().is_err());
    }
}
