//! ULIDs, the ids of blocks: 48-bit millisecond timestamp then 80 random
//! bits, written as 26 characters of Crockford base32. Ids sort by creation
//! time, both as numbers and as strings.

use std::fmt;
use std::io::Read;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A block id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ulid(u128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ULID {input:?}: {why}")]
pub struct UlidError {
    pub input: String,
    pub why: &'static str,
}

impl Ulid {
    /// A new id for the current time.
    pub fn new() -> Ulid {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ulid::from_parts(ms, random_80())
    }

    /// An id from a millisecond timestamp (low 48 bits used) and randomness
    /// (low 80 bits used).
    pub fn from_parts(ms: u64, random: u128) -> Ulid {
        let ts = u128::from(ms & ((1 << 48) - 1));
        Ulid((ts << 80) | (random & ((1u128 << 80) - 1)))
    }

    /// Creation time in Unix milliseconds.
    pub fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }
}

impl Default for Ulid {
    fn default() -> Self {
        Ulid::new()
    }
}

/// 80 random bits from the OS; if that fails (no `/dev/urandom`), a hash of
/// the time, process id and a counter, which still keeps ids of one process
/// distinct.
fn random_80() -> u128 {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b[6..]))
        .is_ok();
    if ok {
        return u128::from_be_bytes(b);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut seed = Vec::with_capacity(32);
    seed.extend_from_slice(&nanos.to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(&seed)
}

impl fmt::Display for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 26];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 5 * (25 - i);
            *c = ALPHABET[((self.0 >> shift) & 0x1f) as usize];
        }
        // The alphabet is ASCII.
        f.write_str(std::str::from_utf8(&out).unwrap_or_default())
    }
}

impl fmt::Debug for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ulid({self})")
    }
}

impl FromStr for Ulid {
    type Err = UlidError;
    fn from_str(s: &str) -> Result<Ulid, UlidError> {
        let err = |why| UlidError {
            input: s.to_string(),
            why,
        };
        if s.len() != 26 {
            return Err(err("must be 26 characters"));
        }
        let mut v: u128 = 0;
        for (i, ch) in s.bytes().enumerate() {
            let d = match ch.to_ascii_uppercase() {
                c @ b'0'..=b'9' => c - b'0',
                b'O' => 0,
                b'I' | b'L' => 1,
                c => match ALPHABET.iter().position(|&a| a == c) {
                    Some(p) => p as u8,
                    None => return Err(err("character outside Crockford base32")),
                },
            };
            if i == 0 && d > 7 {
                return Err(err("value exceeds 128 bits"));
            }
            v = (v << 5) | u128::from(d);
        }
        Ok(Ulid(v))
    }
}

impl serde::Serialize for Ulid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ulid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ulid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encoding() {
        // The ULID spec's example: timestamp 1469918176385 encodes as "01ARYZ6S41".
        let u = Ulid::from_parts(1_469_918_176_385, 0);
        assert!(u.to_string().starts_with("01ARYZ6S41"), "{u}");
        assert_eq!(u.to_string().len(), 26);
        assert_eq!(u.timestamp_ms(), 1_469_918_176_385);
        assert!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<Ulid>().is_err());
        assert!("01ARYZ6S41".parse::<Ulid>().is_err());
        assert!("01ARYZ6S41UUUUUUUUUUUUUUUU".parse::<Ulid>().is_err());
    }

    #[test]
    fn new_ids_differ_and_sort_by_time() {
        let a = Ulid::new();
        let b = Ulid::new();
        assert_ne!(a, b);
        let old = Ulid::from_parts(a.timestamp_ms() - 1, u128::MAX);
        assert!(old < a && old.to_string() < a.to_string());
    }

    proptest! {
        #[test]
        fn round_trips(ms in 0u64..(1 << 48), r in any::<u128>()) {
            let u = Ulid::from_parts(ms, r);
            let s = u.to_string();
            prop_assert_eq!(s.parse::<Ulid>().unwrap(), u);
            prop_assert_eq!(s.to_lowercase().parse::<Ulid>().unwrap(), u);
        }
    }
}
