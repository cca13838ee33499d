//! How the bench measures memory and disk: a counting global allocator,
//! the process's resident set from `/proc/self/status`, and block sizes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};

use pharos_storage::block::{dir_size, BlockMeta, CHUNKS_DIRNAME, INDEX_FILENAME};

/// Counts live heap bytes of the whole process (all threads).
pub(crate) struct CountingAlloc;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping is
// two relaxed atomic adds and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) };
        LIVE_BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE_BYTES.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        }
        q
    }
}

/// Live heap bytes and live allocations right now.
pub(crate) fn live_heap() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCS.load(Ordering::Relaxed),
    )
}

/// Resident set size of this process in bytes (`VmRSS`).
pub(crate) fn rss_bytes() -> crate::Result<u64> {
    rss_of("/proc/self/status")
}

fn rss_of(status: &str) -> crate::Result<u64> {
    let s = std::fs::read_to_string(status)?;
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("no VmRSS line in {status}")
}

/// Sizes of a block directory, or of every block directory under a parent.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BlockSize {
    pub(crate) blocks: u64,
    pub(crate) total: u64,
    pub(crate) chunks: u64,
    pub(crate) index: u64,
    pub(crate) samples: u64,
    pub(crate) series: u64,
    pub(crate) chunk_count: u64,
}

impl BlockSize {
    pub(crate) fn per_sample(&self, bytes: u64) -> f64 {
        bytes as f64 / self.samples.max(1) as f64
    }

    /// Measures `dir` if it is a block, else every block directly under it.
    /// Sizes are file lengths (`meta.json`, `index`, `chunks/*`,
    /// `tombstones`), the same for a Pharos and a Prometheus block.
    pub(crate) fn of(dir: &Path) -> crate::Result<BlockSize> {
        let mut out = BlockSize::default();
        if dir.join("meta.json").exists() {
            out.add_block(dir)?;
            return Ok(out);
        }
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.join("meta.json").exists() {
                out.add_block(&p)?;
            }
        }
        ensure!(out.blocks > 0, "no block under {}", dir.display());
        Ok(out)
    }

    fn add_block(&mut self, dir: &Path) -> crate::Result<()> {
        let meta = BlockMeta::read(dir)?;
        self.blocks += 1;
        self.total += dir_size(dir)?;
        self.chunks += dir_size(&dir.join(CHUNKS_DIRNAME))?;
        self.index += std::fs::metadata(dir.join(INDEX_FILENAME))?.len();
        self.samples += meta.stats.num_samples;
        self.series += meta.stats.num_series;
        self.chunk_count += meta.stats.num_chunks;
        Ok(())
    }

    pub(crate) fn report(&self, who: &str) {
        result(&format!("{who}_block_total_bytes"), self.total as f64);
        result(&format!("{who}_block_chunks_bytes"), self.chunks as f64);
        result(&format!("{who}_block_index_bytes"), self.index as f64);
        result(&format!("{who}_block_samples"), self.samples as f64);
        result(&format!("{who}_block_series"), self.series as f64);
        result(&format!("{who}_block_chunk_count"), self.chunk_count as f64);
        result(
            &format!("{who}_block_bytes_per_sample"),
            self.per_sample(self.total),
        );
        result(
            &format!("{who}_block_chunk_bytes_per_sample"),
            self.per_sample(self.chunks),
        );
    }
}

/// Prints one machine-readable result line (`RESULT key value`), which the
/// comparison script collects.
pub(crate) fn result(key: &str, value: f64) {
    println!("RESULT {key} {value}");
}
