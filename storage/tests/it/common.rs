//! Helpers shared by the integration tests.

use std::time::{SystemTime, UNIX_EPOCH};

/// splitmix64: a tiny deterministic generator, so a failing run can be
/// reproduced from the seed it prints without another dependency.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from `PHAROS_TEST_SEED` when set, else from the clock; the
    /// seed is printed so a failure can be replayed.
    pub(crate) fn from_env(test: &str) -> Rng {
        let seed = std::env::var("PHAROS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(42)
            });
        eprintln!("{test}: PHAROS_TEST_SEED={seed}");
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}
