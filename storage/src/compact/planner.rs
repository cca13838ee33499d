//! Which blocks to compact next, following Prometheus's leveled planner
//! (`tsdb/compact.go`): overlapping blocks first (vertical compaction), then
//! runs of adjacent blocks that fill an aligned range of the next level
//! (horizontal compaction, never touching the newest block), then single
//! large blocks with many tombstones.

use crate::block::{BlockMeta, Ulid};

/// Two hours, the size of blocks cut from the head.
pub const DEFAULT_BLOCK_DURATION: i64 = 2 * 3600 * 1000;
/// Prometheus's cap on compacted block size when retention does not set a
/// smaller one (31 days).
pub const MAX_BLOCK_DURATION: i64 = 31 * 24 * 3600 * 1000;

/// `steps` ranges starting at `min`, each `step_size` times the previous
/// (Prometheus's `ExponentialBlockRanges`).
pub fn exponential_ranges(min: i64, steps: usize, step_size: i64) -> Vec<i64> {
    let mut out = Vec::with_capacity(steps);
    let mut cur = min;
    for _ in 0..steps {
        out.push(cur);
        match cur.checked_mul(step_size) {
            Some(n) => cur = n,
            None => break,
        }
    }
    out
}

/// The compaction ranges Prometheus uses for a block duration and an
/// optional time retention: 2h, 6h, 18h, 54h, … (×3, 10 levels), dropping
/// every range above `min(31d, retention / 10)`. The first range is always
/// kept.
pub fn block_ranges(min_block: i64, retention_ms: Option<i64>) -> Vec<i64> {
    let mut max = MAX_BLOCK_DURATION;
    if let Some(r) = retention_ms.filter(|&r| r > 0) {
        max = max.min(r / 10);
    }
    let mut ranges = exponential_ranges(min_block, 10, 3);
    if let Some(i) = ranges.iter().position(|&r| r > max) {
        ranges.truncate(i.max(1));
    }
    ranges
}

/// Plans compactions over block metas.
#[derive(Debug, Clone)]
pub struct Planner {
    ranges: Vec<i64>,
}

impl Planner {
    /// `ranges` as from [`block_ranges`]; the first is the head block size.
    pub fn new(ranges: Vec<i64>) -> Planner {
        Planner { ranges }
    }

    pub fn ranges(&self) -> &[i64] {
        &self.ranges
    }

    /// Ids of the blocks to compact together next (empty: nothing to do).
    pub fn plan(&self, metas: &[BlockMeta]) -> Vec<Ulid> {
        let mut ms: Vec<&BlockMeta> = metas.iter().filter(|m| !m.compaction.deletable).collect();
        ms.sort_by_key(|m| (m.min_time, m.max_time, m.ulid));
        let overlapping = select_overlapping(&ms);
        if !overlapping.is_empty() {
            return overlapping;
        }
        // Leave the newest block alone: it was just cut from the head, and
        // keeping it gives a full block duration to back it up as is.
        if ms.is_empty() {
            return Vec::new();
        }
        ms.pop();
        let run = self.select_run(&ms);
        if !run.is_empty() {
            return run;
        }
        // Rewrite big blocks whose tombstones hide much of their data.
        let half = self
            .ranges
            .get(self.ranges.len() / 2)
            .copied()
            .unwrap_or(i64::MAX);
        for m in ms.iter().rev() {
            let s = &m.stats;
            if m.max_time - m.min_time < half {
                if s.num_tombstones > 0 && s.num_tombstones >= s.num_series {
                    return vec![m.ulid];
                }
                break;
            }
            if s.num_tombstones as f64 / (s.num_series + 1) as f64 > 0.05 {
                return vec![m.ulid];
            }
        }
        Vec::new()
    }

    /// The first group of at least two blocks that fills an aligned range of
    /// a higher level, or lies entirely before the newest block.
    fn select_run(&self, ms: &[&BlockMeta]) -> Vec<Ulid> {
        let Some(last) = ms.last() else {
            return Vec::new();
        };
        let high = last.min_time;
        for &range in self.ranges.iter().skip(1) {
            for group in split_by_range(ms, range) {
                if group.iter().any(|m| m.compaction.failed) {
                    continue;
                }
                let (Some(first), Some(last)) = (group.first(), group.last()) else {
                    continue;
                };
                let (mint, maxt) = (first.min_time, last.max_time);
                if (maxt - mint == range || maxt <= high) && group.len() > 1 {
                    return group.iter().map(|m| m.ulid).collect();
                }
            }
        }
        Vec::new()
    }
}

/// The first run of blocks (sorted by min time) whose time ranges overlap.
fn select_overlapping(ms: &[&BlockMeta]) -> Vec<Ulid> {
    let mut out = Vec::new();
    let Some(first) = ms.first() else {
        return out;
    };
    let mut global_max = first.max_time;
    for i in 1..ms.len() {
        let m = ms[i];
        if m.min_time < global_max {
            if out.is_empty() {
                out.push(ms[i - 1].ulid);
            }
            out.push(m.ulid);
        } else if !out.is_empty() {
            break;
        }
        global_max = global_max.max(m.max_time);
    }
    out
}

/// Groups blocks (sorted by min time) by the aligned range of size `tr` that
/// contains them; blocks sticking out of their range are skipped.
fn split_by_range<'a>(ms: &[&'a BlockMeta], tr: i64) -> Vec<Vec<&'a BlockMeta>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ms.len() {
        let t0 = ms[i].min_time.div_euclid(tr) * tr;
        if ms[i].max_time > t0 + tr {
            i += 1;
            continue;
        }
        let mut group = Vec::new();
        while i < ms.len() && ms[i].max_time <= t0 + tr {
            group.push(ms[i]);
            i += 1;
        }
        if !group.is_empty() {
            out.push(group);
        }
    }
    out
}
