//! The in-memory head: every series seen recently, their open and recent
//! chunks, and an inverted index over their labels (Prometheus's `Head`).
//!
//! Layout, following Prometheus's `head.go` / `head_append.go` /
//! `head_read.go`:
//! - `mod.rs`: [`Head`], options, the striped series registry, truncation,
//!   statistics.
//! - `append.rs`: series creation and the append path.
//! - `read.rs`: the [`Querier`](crate::querier::Querier) implementation and
//!   block-writer reads.
//! - `series.rs`: one series' chunks and its append rules.
//! - `index.rs`: label postings and matcher evaluation.
//! - `chunks_disk.rs`: completed chunks moved to `chunks_head/` files and
//!   read through memory maps (only for a head made with
//!   [`Head::with_chunks_dir`], as `Db` does).
//!
//! # Concurrency
//!
//! Series live in two striped maps: by series hash (for `get_or_create`, with
//! label comparison on hash collisions) and by ref (for `append_ref`). Each
//! series has its own mutex. Locks are always taken in the order
//! hash stripe → ref stripe → series → (released) → index, so appends to
//! different series never contend beyond their stripe's read lock, and a
//! query holds a series lock only to clone its chunk list and copy the open
//! chunk's bytes — never while decoding.
//!
//! # Append rules
//!
//! For a sample `(t, v)` of a series whose newest sample is at `last`:
//! - `t < min_valid_time` (set by [`Head::truncate_before`]): too old.
//! - `t == last`: accepted as a no-op when `v` has the same bits as the
//!   stored value, otherwise "duplicate sample for timestamp".
//! - `t > last` (or the series is new): appended in order. When the
//!   out-of-order window is 0, Prometheus's bound also applies: `t` must be
//!   within half a chunk range of the head's newest sample, else too old.
//! - `t < last`: with a window `w > 0` and `t >= head.max_time() - w`, stored
//!   in the series' out-of-order buffer (merged into reads); otherwise an
//!   out-of-order error.
//!
//! Refs are assigned from 1 upwards and never reused by one `Head`.
//!
//! # Deletes
//!
//! [`Head::delete`] records per-series tombstones, each clamped to the data
//! the series holds at that moment so later appends are never hidden. Reads
//! and [`Head::series_for_range`] skip deleted samples; truncation forgets an
//! interval once no data it could hide is left. The `Db` logs them to the
//! WAL and replays them.

mod append;
mod chunks_disk;
mod index;
mod read;
mod refs;
mod series;
mod st;

#[cfg(test)]
mod chunks_disk_tests;
#[cfg(test)]
mod mem_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::mem;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use self::chunks_disk::ChunkDiskMapper;
pub use self::chunks_disk::{HeadChunksError, DEFAULT_HEAD_CHUNK_FILE_SIZE};
use self::index::MemPostings;
use self::series::MemSeries;
use crate::error::StorageError;
use crate::labels::Labels;

/// Identifies a series in one head (Prometheus's `HeadSeriesRef`). Refs are
/// assigned from 1 upwards; 0 is never a valid ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SeriesRef(pub u64);

impl std::fmt::Display for SeriesRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Two hours, Prometheus's default block and chunk range.
pub const DEFAULT_CHUNK_RANGE_MS: i64 = 2 * 60 * 60 * 1000;

/// Head settings. `Default` gives Prometheus's defaults; in config files
/// every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadOptions {
    /// Chunks are cut at multiples of this (ms), so no chunk spans two
    /// blocks. Default 2h.
    pub chunk_range_ms: i64,
    /// In-order chunks are cut after this many samples. Default 120.
    pub samples_per_chunk: usize,
    /// How far behind the head's newest sample an out-of-order sample may be
    /// (ms); 0 disables out-of-order ingestion. Default 0.
    pub out_of_order_window_ms: i64,
    /// Out-of-order samples are buffered and cut into chunks of this many.
    /// Default 32.
    pub ooo_samples_per_chunk: usize,
    /// Number of lock stripes (rounded up to a power of two). Default 4096.
    pub stripe_size: usize,
}

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions {
            chunk_range_ms: DEFAULT_CHUNK_RANGE_MS,
            samples_per_chunk: 120,
            out_of_order_window_ms: 0,
            ooo_samples_per_chunk: 32,
            stripe_size: 4096,
        }
    }
}

/// Counters and memory use of a head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadStats {
    pub num_series: usize,
    pub num_chunks: usize,
    /// Estimated heap bytes of series (labels, state, chunks).
    pub series_bytes: usize,
    /// Estimated heap bytes of the registry maps and the postings index.
    pub index_bytes: usize,
    /// Bytes of completed chunks held in `chunks_head/` files (read through
    /// maps: page cache, not heap; not in `series_bytes`).
    pub mapped_chunk_bytes: usize,
}

impl HeadStats {
    /// Estimated bytes per series, everything included.
    pub fn bytes_per_series(&self) -> usize {
        (self.series_bytes + self.index_bytes)
            .checked_div(self.num_series)
            .unwrap_or(0)
    }
}

/// Multiplicative hasher for `u64` keys (refs and series hashes), which are
/// already well distributed or sequential; SipHash would dominate lookups.
///
/// The product is folded (high half XORed into the low half): hashbrown
/// picks the bucket from the low bits, and the low bits of a plain product
/// depend only on the key's low bits — which are the same for every key of
/// one stripe (the stripe is `key & mask`), so without the fold all keys of
/// a stripe start probing at one bucket.
#[derive(Default, Clone, Copy)]
pub(crate) struct U64Hasher(u64);

const U64_HASH_K: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn folded_mul(v: u64) -> u64 {
    let p = u128::from(v) * u128::from(U64_HASH_K);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for U64Hasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(U64_HASH_K);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    #[inline]
    fn finish(&self) -> u64 {
        folded_mul(self.0)
    }
}

pub(crate) type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;

/// Series by hash; label sets whose hash collides with another's go to
/// `conflicts`.
#[derive(Default)]
pub(crate) struct HashStripe {
    unique: U64Map<Arc<MemSeries>>,
    conflicts: U64Map<Vec<Arc<MemSeries>>>,
}

impl HashStripe {
    fn get(&self, hash: u64, labels: &Labels) -> Option<&Arc<MemSeries>> {
        if let Some(s) = self.unique.get(&hash) {
            if s.labels == *labels {
                return Some(s);
            }
        }
        self.conflicts
            .get(&hash)
            .and_then(|v| v.iter().find(|s| s.labels == *labels))
    }

    fn insert(&mut self, hash: u64, s: Arc<MemSeries>) {
        match self.unique.get(&hash) {
            None => {
                self.unique.insert(hash, s);
            }
            Some(_) => self.conflicts.entry(hash).or_default().push(s),
        }
    }

    fn remove(&mut self, hash: u64, sref: u64) {
        if self.unique.get(&hash).is_some_and(|s| s.sref == sref) {
            self.unique.remove(&hash);
            // Promote a conflicting series, if any.
            if let Some(v) = self.conflicts.get_mut(&hash) {
                if let Some(s) = v.pop() {
                    self.unique.insert(hash, s);
                }
                if v.is_empty() {
                    self.conflicts.remove(&hash);
                }
            }
        } else if let Some(v) = self.conflicts.get_mut(&hash) {
            v.retain(|s| s.sref != sref);
            if v.is_empty() {
                self.conflicts.remove(&hash);
            }
        }
    }
}

/// Series by ref.
pub(crate) use refs::RefStripe;

/// A stripe padded to its own cache line, so appenders on neighbouring
/// stripes do not bounce one line between cores.
#[repr(align(64))]
pub(crate) struct Padded<T>(pub(crate) T);

/// The in-memory head. Cheap to share (`Arc<Head>`); every method takes
/// `&self`.
pub struct Head {
    opts: HeadOptions,
    mask: usize,
    by_hash: Box<[Padded<RwLock<HashStripe>>]>,
    by_ref: Box<[Padded<RwLock<RefStripe>>]>,
    index: RwLock<MemPostings>,
    /// Last ref handed out.
    last_ref: AtomicU64,
    num_series: AtomicUsize,
    min_time: AtomicI64,
    max_time: AtomicI64,
    min_valid_time: AtomicI64,
    /// Serialises truncations with each other.
    truncate_lock: Mutex<()>,
    /// Start timestamps, beside the series so those without cost nothing.
    st: st::StStore,
    /// Where completed in-order chunks go; `None` keeps them on the heap.
    chunk_disk: Option<ChunkDiskMapper>,
}

impl Default for Head {
    fn default() -> Self {
        Head::new(HeadOptions::default())
    }
}

impl Head {
    pub fn new(opts: HeadOptions) -> Head {
        let mut opts = opts;
        opts.samples_per_chunk = opts
            .samples_per_chunk
            .clamp(1, crate::chunk::MAX_SAMPLES_PER_CHUNK);
        opts.ooo_samples_per_chunk = opts
            .ooo_samples_per_chunk
            .clamp(1, crate::chunk::MAX_SAMPLES_PER_CHUNK);
        opts.out_of_order_window_ms = opts.out_of_order_window_ms.max(0);
        let n = opts.stripe_size.clamp(1, 1 << 20).next_power_of_two();
        opts.stripe_size = n;
        Head {
            mask: n - 1,
            by_hash: (0..n)
                .map(|_| Padded(RwLock::new(HashStripe::default())))
                .collect(),
            by_ref: (0..n)
                .map(|_| Padded(RwLock::new(RefStripe::new(n.trailing_zeros()))))
                .collect(),
            index: RwLock::new(MemPostings::default()),
            last_ref: AtomicU64::new(0),
            num_series: AtomicUsize::new(0),
            min_time: AtomicI64::new(i64::MAX),
            max_time: AtomicI64::new(i64::MIN),
            min_valid_time: AtomicI64::new(i64::MIN),
            truncate_lock: Mutex::new(()),
            st: st::StStore::default(),
            chunk_disk: None,
            opts,
        }
    }

    /// A head that moves each completed in-order chunk out of the heap into
    /// files in `dir` (normally `<data dir>/chunks_head`), read back through
    /// memory maps; see `storage/docs/head_chunks.md`. Whatever `dir` holds
    /// is deleted first: the files are only a memory saving, and WAL replay
    /// rebuilds them.
    pub fn with_chunks_dir(opts: HeadOptions, dir: impl AsRef<Path>) -> Result<Head, StorageError> {
        Head::with_chunks_dir_sized(opts, dir.as_ref(), DEFAULT_HEAD_CHUNK_FILE_SIZE)
    }

    /// As [`Head::with_chunks_dir`], cutting files at `max_file_size` bytes.
    pub fn with_chunks_dir_sized(
        opts: HeadOptions,
        dir: &Path,
        max_file_size: u64,
    ) -> Result<Head, StorageError> {
        let disk = ChunkDiskMapper::open(dir, max_file_size)
            .map_err(|e| StorageError::Internal(e.to_string()))?;
        let mut head = Head::new(opts);
        head.chunk_disk = Some(disk);
        Ok(head)
    }

    /// The directory completed chunks are written to, if any.
    pub fn chunks_dir(&self) -> Option<&Path> {
        self.chunk_disk.as_ref().map(|d| d.dir())
    }

    /// Files in the chunks directory now (0 without one).
    pub fn num_chunk_files(&self) -> usize {
        self.chunk_disk.as_ref().map_or(0, |d| d.num_files())
    }

    pub fn options(&self) -> &HeadOptions {
        &self.opts
    }

    pub fn num_series(&self) -> usize {
        self.num_series.load(Ordering::Relaxed)
    }

    /// Oldest sample timestamp held (`i64::MAX` when empty).
    pub fn min_time(&self) -> i64 {
        self.min_time.load(Ordering::Relaxed)
    }

    /// Newest sample timestamp ever appended (`i64::MIN` when empty).
    pub fn max_time(&self) -> i64 {
        self.max_time.load(Ordering::Relaxed)
    }

    /// Samples older than this are refused (raised by truncation).
    pub fn min_valid_time(&self) -> i64 {
        self.min_valid_time.load(Ordering::Relaxed)
    }

    /// Raises the oldest timestamp the head accepts (e.g. after WAL replay,
    /// to the end of the newest persisted block).
    pub fn set_min_valid_time(&self, t: i64) {
        self.min_valid_time.fetch_max(t, Ordering::Relaxed);
    }

    /// The last ref handed out (0 when none). WAL checkpoints record it.
    pub fn last_series_ref(&self) -> SeriesRef {
        SeriesRef(self.last_ref.load(Ordering::Relaxed))
    }

    /// Labels of a series, if it exists.
    pub fn labels(&self, sref: SeriesRef) -> Option<Labels> {
        self.series_by_ref(sref.0).map(|s| s.labels.clone())
    }

    /// Ref of the series with these labels, if it exists.
    pub fn get_ref(&self, labels: &Labels) -> Option<SeriesRef> {
        let hash = labels.hash();
        let stripe = self.by_hash[hash as usize & self.mask].0.read();
        stripe.get(hash, labels).map(|s| SeriesRef(s.sref))
    }

    /// Newest in-order sample of a series.
    pub fn last_sample(&self, sref: SeriesRef) -> Option<(i64, f64)> {
        self.series_by_ref(sref.0)?.state.lock().last_sample()
    }

    pub(crate) fn series_by_ref(&self, sref: u64) -> Option<Arc<MemSeries>> {
        self.by_ref[sref as usize & self.mask]
            .0
            .read()
            .get(&sref)
            .cloned()
    }

    /// All live series (a snapshot of pointers; no lock held afterwards).
    pub(crate) fn all_series(&self) -> Vec<Arc<MemSeries>> {
        let mut out = Vec::with_capacity(self.num_series());
        for s in self.by_ref.iter() {
            out.extend(s.0.read().values().cloned());
        }
        out
    }

    #[inline]
    fn note_time(&self, t: i64) {
        // Load first: most appends neither extend the head's range nor need
        // to write the shared cache line.
        if t > self.max_time.load(Ordering::Relaxed) {
            self.max_time.fetch_max(t, Ordering::Relaxed);
        }
        if t < self.min_time.load(Ordering::Relaxed) {
            self.min_time.fetch_min(t, Ordering::Relaxed);
        }
    }

    /// Drops every chunk entirely before `t` (all its samples `< t`), and
    /// every series left without data, and refuses samples older than `t`
    /// from now on. Returns the refs of the dropped series, sorted, so the
    /// WAL checkpoint can forget them.
    pub fn truncate_before(&self, t: i64) -> Vec<SeriesRef> {
        let _guard = self.truncate_lock.lock();
        self.set_min_valid_time(t);
        let mut empty = Vec::new();
        let mut new_min = i64::MAX;
        for s in self.all_series() {
            let mut st = s.state.lock();
            if st.truncate_before(t) {
                empty.push(s.clone());
            } else if let Some((lo, _)) = st.time_range() {
                new_min = new_min.min(lo);
            }
        }
        // Remove the empty ones, re-checking under the locks (an append may
        // have arrived meanwhile). Lock order: hash → ref → series.
        let mut removed: Vec<(u64, Labels)> = Vec::with_capacity(empty.len());
        for s in empty {
            let hash = s.labels.hash();
            let mut hs = self.by_hash[hash as usize & self.mask].0.write();
            let mut rs = self.by_ref[s.sref as usize & self.mask].0.write();
            let mut st = s.state.lock();
            if let Some((lo, _)) = st.time_range() {
                new_min = new_min.min(lo);
                continue;
            }
            st.removed = true;
            drop(st);
            rs.remove(&s.sref);
            hs.remove(hash, s.sref);
            self.num_series.fetch_sub(1, Ordering::Relaxed);
            removed.push((s.sref, s.labels.clone()));
        }
        self.index.write().remove(&removed);
        // New appends may have lowered the minimum meanwhile; they also went
        // through `note_time`, so take the smaller of the two.
        let cur = self.min_time.load(Ordering::Relaxed);
        if new_min > cur {
            let _ =
                self.min_time
                    .compare_exchange(cur, new_min, Ordering::Relaxed, Ordering::Relaxed);
        }
        self.truncate_start_timestamps();
        if let Some(d) = &self.chunk_disk {
            // Every chunk ending before `t` is gone from the series above;
            // a failed delete only leaves a file until the next truncation
            // (or restart) removes it.
            if let Err(error) = d.truncate_before(t) {
                tracing::warn!(%error, "deleting truncated head chunk files");
            }
        }
        let mut refs: Vec<SeriesRef> = removed.into_iter().map(|(r, _)| SeriesRef(r)).collect();
        refs.sort_unstable();
        refs
    }

    /// Deletes the samples in `[mint, maxt]` of every series matching
    /// `matchers` (head tombstones: hidden from reads and from blocks cut
    /// later, dropped from memory by truncation). Each interval is clamped to
    /// the data the series holds now, so samples appended afterwards are
    /// never hidden. Returns `(ref, from, to)` for every series affected, in
    /// ref order, for the WAL's Tombstones record.
    pub fn delete(
        &self,
        matchers: &[crate::labels::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<(SeriesRef, i64, i64)> {
        let refs = self.index.read().postings_for_matchers(matchers);
        let mut out = Vec::new();
        for r in refs {
            if let Some(d) = self.delete_ref(SeriesRef(r), mint, maxt) {
                out.push((SeriesRef(r), d.0, d.1));
            }
        }
        out
    }

    /// Deletes the samples in `[mint, maxt]` of one series (WAL replay of a
    /// Tombstones record). Returns the interval recorded, clamped to the
    /// series' data, or `None` when the series does not exist or holds
    /// nothing in the range.
    pub fn delete_ref(&self, sref: SeriesRef, mint: i64, maxt: i64) -> Option<(i64, i64)> {
        let s = self.series_by_ref(sref.0)?;
        let mut st = s.state.lock();
        let (lo, hi) = st.time_range()?;
        let (a, b) = (mint.max(lo), maxt.min(hi));
        if a > b {
            return None;
        }
        st.deleted.push((a, b));
        let merged = crate::block::coalesce(std::mem::take(&mut st.deleted));
        st.deleted = merged;
        Some((a, b))
    }

    /// Series count, chunk count and estimated memory.
    pub fn stats(&self) -> HeadStats {
        let mut st = HeadStats::default();
        let per_series_fixed = mem::size_of::<MemSeries>() + 2 * mem::size_of::<usize>();
        for s in self.all_series() {
            let state = s.state.lock();
            st.num_series += 1;
            st.num_chunks += state.num_chunks();
            st.series_bytes += per_series_fixed
                + s.labels.byte_size()
                + 2 * mem::size_of::<usize>()
                + state.heap_size();
            st.mapped_chunk_bytes += state.mapped_size();
        }
        // Start timestamps: 0 unless some series has them.
        st.series_bytes += self.st.heap_size();
        // Registry maps: an entry (key + Arc) per series in each, plus
        // hashbrown's control bytes and spare capacity.
        let entry = mem::size_of::<(u64, Arc<MemSeries>)>() + 1;
        for s in self.by_hash.iter() {
            let s = s.0.read();
            st.index_bytes += (s.unique.capacity() * 8 / 7) * entry;
            st.index_bytes +=
                s.conflicts.capacity() * (entry + mem::size_of::<Vec<Arc<MemSeries>>>());
        }
        for s in self.by_ref.iter() {
            st.index_bytes += s.0.read().heap_bytes();
        }
        st.index_bytes += self.index.read().heap_size();
        st
    }
}
