//! Retention: which whole blocks to delete because they are too old or
//! because the blocks together take too much space, with Prometheus's rules
//! (`BeyondTimeRetention`, `BeyondSizeRetention`): blocks are considered
//! newest first (by max time), and once one is beyond a limit, it and every
//! older block go.

use std::collections::BTreeSet;
use std::path::Path;

use crate::block::{dir_size, BlockError, Ulid};

use super::compactor::{delete_block, list_blocks};

/// Retention limits; `None` disables a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete blocks whose max time is more than this many milliseconds
    /// before the newest data.
    pub max_age_ms: Option<i64>,
    /// Delete the oldest blocks while blocks (plus `extra_bytes`) exceed
    /// this many bytes.
    pub max_bytes: Option<u64>,
}

/// A block as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpan {
    pub ulid: Ulid,
    pub max_time: i64,
    pub bytes: u64,
}

/// Ids of the blocks beyond the policy. `newest_time` is the newest sample
/// time known (e.g. the head's max time); when `None`, the newest block's
/// max time is used, as Prometheus does. `extra_bytes` counts storage that is
/// not in blocks but shares the size budget (WAL, head chunks).
pub fn beyond_retention(
    blocks: &[BlockSpan],
    policy: &RetentionPolicy,
    newest_time: Option<i64>,
    extra_bytes: u64,
) -> BTreeSet<Ulid> {
    let mut sorted: Vec<&BlockSpan> = blocks.iter().collect();
    sorted.sort_by(|a, b| b.max_time.cmp(&a.max_time).then(b.ulid.cmp(&a.ulid)));
    let mut out = BTreeSet::new();
    if let (Some(age), Some(first)) = (policy.max_age_ms.filter(|&a| a > 0), sorted.first()) {
        let newest = newest_time.unwrap_or(first.max_time).max(first.max_time);
        if let Some(i) = sorted
            .iter()
            .position(|b| newest.saturating_sub(b.max_time) > age)
        {
            out.extend(sorted[i..].iter().map(|b| b.ulid));
        }
    }
    if let Some(max) = policy.max_bytes.filter(|&m| m > 0) {
        let mut total = extra_bytes;
        for (i, b) in sorted.iter().enumerate() {
            total = total.saturating_add(b.bytes);
            if total > max {
                out.extend(sorted[i..].iter().map(|b| b.ulid));
                break;
            }
        }
    }
    out
}

/// Applies `policy` to the blocks in `dir`, deleting whole blocks; returns
/// the ids deleted (oldest last).
pub fn apply_retention(
    dir: &Path,
    policy: &RetentionPolicy,
    newest_time: Option<i64>,
    extra_bytes: u64,
) -> Result<Vec<Ulid>, BlockError> {
    let mut spans = Vec::new();
    for m in list_blocks(dir)? {
        spans.push(BlockSpan {
            ulid: m.ulid,
            max_time: m.max_time,
            bytes: dir_size(&dir.join(m.ulid.to_string()))?,
        });
    }
    let doomed = beyond_retention(&spans, policy, newest_time, extra_bytes);
    let mut deleted = Vec::new();
    spans.sort_by_key(|s| std::cmp::Reverse(s.max_time));
    for s in spans.iter().filter(|s| doomed.contains(&s.ulid)) {
        tracing::info!(block = %s.ulid, max_time = s.max_time, bytes = s.bytes, "deleting block beyond retention");
        delete_block(dir, s.ulid)?;
        deleted.push(s.ulid);
    }
    Ok(deleted)
}
