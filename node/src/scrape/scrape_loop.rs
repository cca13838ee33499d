//! One target's scrape loop: wait for the target's phase, then every
//! interval fetch, parse, label, relabel and limit the samples, detect
//! series that disappeared (staleness markers), add the report series
//! (`up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling`, `scrape_series_added`) and hand
//! one batch per scrape to the [`WriteSink`].
//!
//! Owns: [`process_body`] (pure: body → batch, testable without a
//! network) and [`run`] (the timed loop). Must not: decide which targets
//! exist (the manager does).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use pharos_storage::chunk::STALE_NAN;
use pharos_storage::head::SeriesRef;
use pharos_storage::labels::{is_valid_label_name, is_valid_metric_name, Labels};
use tokio::sync::watch;

use super::client::Client;
use super::config::JobSettings;
use super::exposition::{Entry, Format, MetricType, Parser};
use super::relabel;
use super::target::Target;
use crate::sink::{MetricMeta, WriteSink};

/// Why the samples of a scrape were refused as a whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    #[error("{0}")]
    Parse(#[from] super::exposition::ParseError),
    #[error("sample limit exceeded (limit {0})")]
    SampleLimit(u64),
    #[error("label_limit exceeded (metric: {metric}, number of labels: {count}, limit: {limit})")]
    LabelLimit {
        metric: String,
        count: usize,
        limit: u64,
    },
    #[error(
        "label_name_length_limit exceeded (metric: {metric}, label name: {name}, limit: {limit})"
    )]
    LabelNameLength {
        metric: String,
        name: String,
        limit: u64,
    },
    #[error("label_value_length_limit exceeded (metric: {metric}, label name: {name}, value: {value:?}, limit: {limit})")]
    LabelValueLength {
        metric: String,
        name: String,
        value: String,
        limit: u64,
    },
    #[error("label name {name:?} is not unique in {metric}")]
    DuplicateLabel { metric: String, name: String },
    #[error("invalid metric name or label names: {0}")]
    InvalidLabels(String),
}

/// Health as `/api/v1/targets` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// What the API shows about a target; updated after every scrape.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub health: Health,
    pub last_error: String,
    pub last_scrape: Option<SystemTime>,
    pub last_duration: Duration,
    /// Metric family → metadata, from the last successful scrape.
    pub metadata: HashMap<String, MetricMeta>,
    /// Exemplars of the last successful scrape (OpenMetrics bodies only),
    /// at most [`MAX_EXEMPLARS_PER_TARGET`].
    pub exemplars: Vec<ScrapedExemplar>,
}

/// Most exemplars a target's status keeps from one scrape.
pub const MAX_EXEMPLARS_PER_TARGET: usize = 1000;

/// An exemplar as scraped, attached to its series.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapedExemplar {
    /// The series (after target labels and relabeling).
    pub series: Labels,
    pub labels: Labels,
    pub value: f64,
    /// Milliseconds; `None` when the exposition gave none.
    pub timestamp_ms: Option<i64>,
}

impl Default for TargetStatus {
    fn default() -> Self {
        TargetStatus {
            health: Health::Unknown,
            last_error: String::new(),
            last_scrape: None,
            last_duration: Duration::ZERO,
            metadata: HashMap::new(),
            exemplars: Vec::new(),
        }
    }
}

/// The samples one scrape produced, before report series.
#[derive(Debug, Default)]
pub struct Batch {
    pub samples: Vec<(Labels, i64, f64)>,
    /// The storage ref of each sample's series as the series cache knows
    /// it (`hints[i]` for `samples[i]`; `None`: not known yet).
    pub hints: Vec<Option<SeriesRef>>,
    /// The series cache slot of each sample (`slots[i]` for `samples[i]`),
    /// valid in the cache's `epoch` it was taken in.
    slots: Vec<usize>,
    epoch: u64,
    /// Tracked series (no explicit timestamp) not tracked by the previous
    /// successful scrape: `scrape_series_added`.
    pub added: usize,
    /// Series of this scrape tracked for staleness.
    pub tracked: usize,
    /// Sample lines in the body.
    pub scraped: usize,
    pub metadata: HashMap<String, MetricMeta>,
    /// Exemplars of the kept samples (bounded).
    pub exemplars: Vec<ScrapedExemplar>,
}

/// Attaches target labels to a scraped series, as Prometheus does: with
/// `honor_labels` a scraped label that is present — even with an empty
/// value, which then removes the label — wins; otherwise the target's wins
/// and each clashing non-empty scraped label is kept as `exported_<name>`
/// (conflicts resolved shortest name first, the prefix repeated until the
/// name is free). Empty values are dropped when the label set is built.
pub fn attach_target_labels(
    scraped: &mut Vec<(String, String)>,
    target: &Labels,
    honor_labels: bool,
) {
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for (name, value) in target.iter() {
        match scraped.iter().position(|(n, _)| n == name) {
            Some(_) if honor_labels => {}
            Some(i) => {
                let old = std::mem::replace(&mut scraped[i].1, value.to_string());
                if !old.is_empty() {
                    conflicts.push((name.to_string(), old));
                }
            }
            None => scraped.push((name.to_string(), value.to_string())),
        }
    }
    conflicts.sort_by_key(|(n, _)| n.len());
    for (name, value) in conflicts {
        let mut exported = format!("exported_{name}");
        while scraped.iter().any(|(n, v)| *n == exported && !v.is_empty()) {
            exported = format!("exported_{exported}");
        }
        match scraped.iter_mut().find(|(n, _)| *n == exported) {
            Some(slot) => slot.1 = value,
            None => scraped.push((exported, value)),
        }
    }
}

fn meta_entry<'m>(m: &'m mut HashMap<String, MetricMeta>, family: &str) -> &'m mut MetricMeta {
    m.entry(family.to_string()).or_insert_with(|| MetricMeta {
        kind: MetricType::Unknown.as_str(),
        help: String::new(),
        unit: String::new(),
    })
}

/// Per-target memo of how each series text of the body was labeled:
/// target labels attached, metric-relabeled and checked — or dropped. A
/// series seen in an earlier scrape skips all of that (most scrapes repeat
/// the previous one's series). It also tracks staleness: a series whose
/// sample had no explicit timestamp is stamped with the scrape number, and
/// the series stamped by the previous successful scrape but not by this one
/// are the ones that disappeared. Valid for one target and job settings;
/// [`SeriesCache::reset`] starts over, carrying the tracked series along.
///
/// Entries live in a slab (`entries`), found by series text through `map`.
/// Targets expose their series in the same order every scrape, so the
/// previous scrape's line order (`order`) is tried first: a line whose text
/// equals the previous scrape's line at the same position skips hashing it
/// and a random probe of the map.
#[derive(Default)]
pub struct SeriesCache {
    /// Series text → slot in `entries`.
    map: HashMap<Arc<str>, usize, xxhash_rust::xxh3::Xxh3Builder>,
    /// A free slot has an empty key (no series text is empty) and no labels.
    entries: Vec<CacheEntry>,
    free: Vec<usize>,
    /// Slot of each sample line of the latest scrape, in body order.
    order: Vec<usize>,
    /// Spare buffer for the next `order`.
    next_order: Vec<usize>,
    /// Bumped whenever slots are freed: a slot number taken before (a
    /// batch's `slots`, `recycled`) is valid only in the epoch it was
    /// taken in.
    epoch: u64,
    /// The scraped samples of the last written batch, given back after its
    /// write ([`LoopState::written`]), with their slots and epoch. The next
    /// scrape overwrites time and value in place where a sample's slot is
    /// the same, so steady scrapes neither clone nor drop labels (each a
    /// cache miss on the label set's reference count).
    recycled: Vec<Sample>,
    recycled_slots: Vec<usize>,
    recycled_hints: Vec<Option<SeriesRef>>,
    recycled_epoch: u64,
    /// Number of the latest `process_body` call.
    scrape: u64,
    /// The scrape whose tracked series are live (None after a failure).
    last_ok: Option<u64>,
    /// A scrape that failed part way: entries it stamped may have been
    /// live before it (`in_prev`).
    failed: Option<u64>,
    /// Series live before a [`SeriesCache::reset`].
    carry: Vec<Labels>,
}

struct CacheEntry {
    /// The series text (shared with the map's key).
    key: Arc<str>,
    /// `None`: dropped by metric relabeling.
    labels: Option<Labels>,
    /// Storage ref of `labels`' series as the sink last returned it (0 =
    /// not known yet); later scrapes hand it back as a hint so the sink can
    /// append by ref instead of looking the series up by its labels (as
    /// Prometheus's scrape cache does).
    sref: u64,
    last_seen: u64,
    /// Scrape that last tracked this series (0 = never).
    tracked_at: u64,
    /// Whether the series was live before the scrape that last tracked it.
    in_prev: bool,
}

impl CacheEntry {
    fn vacant() -> CacheEntry {
        CacheEntry {
            key: Arc::from(""),
            labels: None,
            sref: 0,
            last_seen: 0,
            tracked_at: 0,
            in_prev: false,
        }
    }
}

impl SeriesCache {
    /// Forgets how series were labeled (settings changed) but keeps the
    /// live series, so they still get staleness markers if they vanish.
    pub fn reset(&mut self) {
        let live = self.live();
        self.carry.extend(live);
        self.map.clear();
        self.entries.clear();
        self.free.clear();
        self.order.clear();
        self.recycled.clear();
        self.recycled_slots.clear();
        self.epoch += 1;
        self.last_ok = None;
        self.failed = None;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Series tracked by the last successful scrape (plus carried ones).
    pub fn live(&self) -> Vec<Labels> {
        let mut out = self.carry.clone();
        if let Some(ok) = self.last_ok {
            out.extend(
                self.entries
                    .iter()
                    .filter(|e| e.tracked_at == ok)
                    .filter_map(|e| e.labels.clone()),
            );
        }
        out
    }

    /// Ends a successful scrape: returns the series that disappeared.
    fn finish_ok(&mut self) -> Vec<Labels> {
        let cur = self.scrape;
        let mut gone: Vec<Labels> = match self.last_ok {
            Some(prev) if prev != cur => self
                .entries
                .iter()
                .filter(|e| e.tracked_at == prev)
                .filter_map(|e| e.labels.clone())
                .collect(),
            _ => Vec::new(),
        };
        gone.append(&mut self.carry);
        if !gone.is_empty() {
            // Two series texts can label to one series; it is gone only if
            // no text of this scrape produced it.
            let now: HashSet<&Labels> = self
                .entries
                .iter()
                .filter(|e| e.tracked_at == cur)
                .filter_map(|e| e.labels.as_ref())
                .collect();
            gone.retain(|l| !now.contains(l));
            gone.sort();
            gone.dedup();
        }
        self.last_ok = Some(cur);
        self.failed = None;
        gone
    }

    /// Ends a failed scrape: every live series is gone.
    fn finish_failed(&mut self) -> Vec<Labels> {
        let prev = self.last_ok;
        let failed = self.failed;
        let mut gone: Vec<Labels> = self
            .entries
            .iter()
            .filter(|e| Some(e.tracked_at) == prev || (Some(e.tracked_at) == failed && e.in_prev))
            .filter_map(|e| e.labels.clone())
            .collect();
        gone.append(&mut self.carry);
        gone.sort();
        gone.dedup();
        self.last_ok = None;
        self.failed = None;
        gone
    }

    /// Forgets series missing from the last scrape once they are a
    /// significant part of the cache, so churning series cannot grow it
    /// without bound. Runs after staleness was decided.
    fn trim(&mut self, live: usize) {
        if self.map.len() > 2 * live + 64 {
            let cur = self.scrape;
            let entries = &mut self.entries;
            let free = &mut self.free;
            self.map.retain(|_, slot| {
                let keep = entries[*slot].last_seen == cur;
                if !keep {
                    entries[*slot] = CacheEntry::vacant();
                    free.push(*slot);
                }
                keep
            });
            self.epoch += 1;
        }
    }

    /// The slot of a sample line's series, if known: the previous scrape's
    /// line at this position when the text is the same, else the map's.
    fn lookup(&self, line: usize, series: &str) -> Option<usize> {
        if let Some(&slot) = self.order.get(line) {
            if self.entries.get(slot).is_some_and(|e| &*e.key == series) {
                return Some(slot);
            }
        }
        self.map.get(series).copied()
    }

    /// A new entry for a series text not in the cache.
    fn insert(&mut self, series: &str, labels: Option<Labels>) -> usize {
        let key: Arc<str> = Arc::from(series);
        let entry = CacheEntry {
            key: Arc::clone(&key),
            labels,
            sref: 0,
            last_seen: 0,
            tracked_at: 0,
            in_prev: false,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        self.map.insert(key, slot);
        slot
    }
}

/// Labels one sample as Prometheus does: name and body labels, target
/// labels (see [`attach_target_labels`]), metric relabeling, name and limit
/// checks. `Ok(None)`: dropped by relabeling.
fn label_sample(
    s: &super::exposition::Sample<'_>,
    target_labels: &Labels,
    job: &JobSettings,
    pairs: &mut Vec<(String, String)>,
) -> Result<Option<Labels>, ScrapeError> {
    pairs.clear();
    pairs.push(("__name__".to_string(), s.name.to_string()));
    for (n, v) in &s.labels {
        if pairs.iter().any(|(x, _)| x == n) {
            return Err(ScrapeError::DuplicateLabel {
                metric: s.name.to_string(),
                name: n.to_string(),
            });
        }
        pairs.push((n.to_string(), v.to_string()));
    }
    attach_target_labels(pairs, target_labels, job.honor_labels);
    let mut labels = Labels::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    if !job.metric_relabel_configs.is_empty() {
        match relabel::process(&labels, &job.metric_relabel_configs) {
            Some(l) if !l.is_empty() => labels = l,
            _ => return Ok(None),
        }
    }
    check_labels(&labels, job)?;
    Ok(Some(labels))
}

/// Turns a body into a batch: every sample labeled with the target's labels,
/// metric-relabeled, checked against the job's limits. Any error refuses the
/// whole scrape, as in Prometheus.
pub fn process_body(
    body: &[u8],
    format: Format,
    target_labels: &Labels,
    job: &JobSettings,
    scrape_ts: i64,
    cache: &mut SeriesCache,
) -> Result<Batch, ScrapeError> {
    let mut p = Parser::new(body, format)?;
    let mut batch = Batch::default();
    if cache.recycled_epoch == cache.epoch {
        batch.samples = std::mem::take(&mut cache.recycled);
        batch.slots = std::mem::take(&mut cache.recycled_slots);
    } else {
        cache.recycled.clear();
        cache.recycled_slots.clear();
    }
    batch.hints = std::mem::take(&mut cache.recycled_hints);
    batch.hints.clear();
    batch.epoch = cache.epoch;
    let mut pairs: Vec<(String, String)> = Vec::new();
    cache.scrape += 1;
    let scrape = cache.scrape;
    let mut order = std::mem::take(&mut cache.next_order);
    order.clear();
    let res = fill_batch(
        &mut p,
        target_labels,
        job,
        scrape_ts,
        cache,
        scrape,
        &mut batch,
        &mut pairs,
        &mut order,
    );
    cache.next_order = std::mem::replace(&mut cache.order, order);
    if let Err(e) = res {
        cache.failed = Some(scrape);
        return Err(e);
    }
    Ok(batch)
}

#[allow(clippy::too_many_arguments)]
fn fill_batch(
    p: &mut Parser<'_>,
    target_labels: &Labels,
    job: &JobSettings,
    scrape_ts: i64,
    cache: &mut SeriesCache,
    scrape: u64,
    batch: &mut Batch,
    pairs: &mut Vec<(String, String)>,
    order: &mut Vec<usize>,
) -> Result<(), ScrapeError> {
    let prev = cache.last_ok;
    // Samples emitted so far; `batch.samples[n..]` is what is left of the
    // recycled batch.
    let mut n = 0;
    let res = loop {
        // The cache is asked while the line is parsed, so that a known
        // series text skips label parsing (`labels` then comes back empty).
        let line = batch.scraped;
        let mut asked: Option<Option<usize>> = None;
        let next = p.next_entry_known(&mut |series| {
            let found = cache.lookup(line, series);
            asked = Some(found);
            found.is_some()
        });
        let entry = match next {
            Ok(Some(e)) => e,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.into()),
        };
        let mut s = match entry {
            Entry::Sample(s) => s,
            Entry::Type { family, kind } => {
                meta_entry(&mut batch.metadata, family).kind = kind.as_str();
                continue;
            }
            Entry::Help { family, text } => {
                meta_entry(&mut batch.metadata, family).help = text.into_owned();
                continue;
            }
            Entry::Unit { family, unit } => {
                meta_entry(&mut batch.metadata, family).unit = unit.to_string();
                continue;
            }
        };
        batch.scraped += 1;
        let explicit = if job.honor_timestamps {
            s.timestamp_ms
        } else {
            None
        };
        let known = match asked {
            Some(found) => found,
            None => cache.lookup(line, s.series),
        };
        let slot = match known {
            Some(slot) => slot,
            None => match label_sample(&s, target_labels, job, pairs) {
                Ok(labels) => cache.insert(s.series, labels),
                Err(e) => break Err(e),
            },
        };
        p.recycle(std::mem::take(&mut s.labels));
        order.push(slot);
        let e = &mut cache.entries[slot];
        e.last_seen = scrape;
        let Some(labels) = &e.labels else {
            continue;
        };
        if let Some(ex) = &s.exemplar {
            if batch.exemplars.len() < MAX_EXEMPLARS_PER_TARGET {
                batch.exemplars.push(ScrapedExemplar {
                    series: labels.clone(),
                    labels: Labels::from_pairs(ex.labels.iter().map(|(n, v)| (*n, v.as_ref()))),
                    value: ex.value,
                    timestamp_ms: ex.timestamp_ms,
                });
            }
        }
        if explicit.is_none() && e.tracked_at != scrape {
            e.in_prev = prev.is_some_and(|p| e.tracked_at == p);
            e.tracked_at = scrape;
            batch.tracked += 1;
            if !e.in_prev {
                batch.added += 1;
            }
        }
        let t = explicit.unwrap_or(scrape_ts);
        if batch.slots.get(n) == Some(&slot) {
            let out = &mut batch.samples[n];
            out.1 = t;
            out.2 = s.value;
        } else {
            batch.samples.truncate(n);
            batch.slots.truncate(n);
            batch.samples.push((labels.clone(), t, s.value));
            batch.slots.push(slot);
        }
        batch.hints.push((e.sref != 0).then_some(SeriesRef(e.sref)));
        n += 1;
        if job.sample_limit > 0 && n as u64 > job.sample_limit {
            break Err(ScrapeError::SampleLimit(job.sample_limit));
        }
    };
    batch.samples.truncate(n);
    batch.slots.truncate(n);
    res
}

fn check_labels(labels: &Labels, job: &JobSettings) -> Result<(), ScrapeError> {
    let metric = || labels.metric_name().unwrap_or("").to_string();
    if !labels.metric_name().is_some_and(is_valid_metric_name)
        || labels.iter().any(|(n, _)| !is_valid_label_name(n))
    {
        return Err(ScrapeError::InvalidLabels(labels.to_string()));
    }
    if job.label_limit > 0 {
        let count = labels.len();
        if count as u64 > job.label_limit {
            return Err(ScrapeError::LabelLimit {
                metric: metric(),
                count,
                limit: job.label_limit,
            });
        }
    }
    if job.label_name_length_limit > 0 || job.label_value_length_limit > 0 {
        for (n, v) in labels.iter() {
            if job.label_name_length_limit > 0 && n.len() as u64 > job.label_name_length_limit {
                return Err(ScrapeError::LabelNameLength {
                    metric: metric(),
                    name: n.to_string(),
                    limit: job.label_name_length_limit,
                });
            }
            if job.label_value_length_limit > 0 && v.len() as u64 > job.label_value_length_limit {
                return Err(ScrapeError::LabelValueLength {
                    metric: metric(),
                    name: n.to_string(),
                    value: v.to_string(),
                    limit: job.label_value_length_limit,
                });
            }
        }
    }
    Ok(())
}

/// The five report series of one scrape.
pub fn report_samples(
    target_labels: &Labels,
    ts: i64,
    up: bool,
    duration: Duration,
    scraped: usize,
    post_relabel: usize,
    added: usize,
) -> Vec<(Labels, i64, f64)> {
    let vals = [
        ("up", if up { 1.0 } else { 0.0 }),
        ("scrape_duration_seconds", duration.as_secs_f64()),
        ("scrape_samples_scraped", scraped as f64),
        ("scrape_samples_post_metric_relabeling", post_relabel as f64),
        ("scrape_series_added", added as f64),
    ];
    vals.into_iter()
        .map(|(name, v)| (report_labels(target_labels, name), ts, v))
        .collect()
}

fn report_labels(target_labels: &Labels, name: &str) -> Labels {
    let mut b = target_labels.builder();
    b.set("__name__", name);
    b.build()
}

/// What a loop is told by the manager.
#[derive(Debug, Clone)]
pub enum Control {
    Run(Arc<JobSettings>, Box<Target>),
    /// Stop; with `stale`, mark every series of the target stale first (the
    /// target went away). Without, the series simply stop (shutdown).
    Stop {
        stale: bool,
    },
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A sample as the sink takes it: labels, milliseconds, value.
pub type Sample = (Labels, i64, f64);

/// Mutable state carried from one scrape to the next.
pub struct LoopState {
    pub status: Arc<RwLock<TargetStatus>>,
    /// Labeling memo and staleness tracking.
    pub cache: SeriesCache,
    /// Metadata last sent to the sink, to send only changes.
    sent_meta: HashMap<String, MetricMeta>,
    /// The scraped samples (the leading ones) of the batch
    /// [`LoopState::complete`] last returned: their ref hints, and where
    /// the refs the sink returns go ([`LoopState::written`]).
    pending: Pending,
}

/// See [`LoopState::take_hints`].
#[derive(Default)]
struct Pending {
    hints: Vec<Option<SeriesRef>>,
    slots: Vec<usize>,
    epoch: u64,
}

impl LoopState {
    pub fn new(status: Arc<RwLock<TargetStatus>>) -> LoopState {
        LoopState {
            status,
            cache: SeriesCache::default(),
            sent_meta: HashMap::new(),
            pending: Pending::default(),
        }
    }

    /// The series ref hints of the batch the last [`LoopState::complete`]
    /// returned: `hints[i]` belongs to `batch[i]`; fewer hints than samples
    /// (staleness markers and report series have none). Pass them to
    /// [`write_batch`], then its result to [`LoopState::written`].
    pub fn take_hints(&mut self) -> Vec<Option<SeriesRef>> {
        std::mem::take(&mut self.pending.hints)
    }

    /// After the batch of the last [`LoopState::complete`] was written:
    /// keeps the series refs the sink returned (`refs[i]` for `batch[i]`)
    /// for the next scrape's hints, and takes the batch and `hints` back so
    /// the next scrape can reuse them.
    pub fn written(
        &mut self,
        mut batch: Vec<Sample>,
        mut hints: Vec<Option<SeriesRef>>,
        refs: &[Option<SeriesRef>],
    ) {
        let slots = std::mem::take(&mut self.pending.slots);
        let cache = &mut self.cache;
        if self.pending.epoch != cache.epoch || slots.len() > batch.len() {
            return;
        }
        for (&slot, r) in slots.iter().zip(refs) {
            if let (Some(r), Some(e)) = (r, cache.entries.get_mut(slot)) {
                e.sref = r.0;
            }
        }
        batch.truncate(slots.len());
        hints.clear();
        cache.recycled = batch;
        cache.recycled_slots = slots;
        cache.recycled_hints = hints;
        cache.recycled_epoch = self.pending.epoch;
    }

    /// Folds one scrape outcome into a batch for the sink (samples, report
    /// series, staleness markers) and updates the status. `outcome` is the
    /// result of [`process_body`] on `self.cache`, or a fetch error.
    pub fn complete(
        &mut self,
        target_labels: &Labels,
        ts: i64,
        started: SystemTime,
        duration: Duration,
        outcome: Result<Batch, String>,
    ) -> (Vec<Sample>, Vec<(String, MetricMeta)>) {
        self.pending = Pending::default();
        let (mut out, up, scraped, post, added, err, meta, exemplars, gone) = match outcome {
            Ok(b) => {
                let post = b.samples.len();
                self.pending = Pending {
                    hints: b.hints,
                    slots: b.slots,
                    epoch: b.epoch,
                };
                let gone = self.cache.finish_ok();
                self.cache.trim(b.scraped);
                (
                    b.samples,
                    true,
                    b.scraped,
                    post,
                    b.added,
                    String::new(),
                    Some(b.metadata),
                    b.exemplars,
                    gone,
                )
            }
            Err(e) => {
                let gone = self.cache.finish_failed();
                (Vec::new(), false, 0, 0, 0, e, None, Vec::new(), gone)
            }
        };
        out.extend(gone.into_iter().map(|l| (l, ts, STALE_NAN)));
        out.extend(report_samples(
            target_labels,
            ts,
            up,
            duration,
            scraped,
            post,
            added,
        ));
        let mut meta_changes = Vec::new();
        {
            let mut st = self.status.write();
            st.health = if up { Health::Up } else { Health::Down };
            st.last_error = err;
            st.last_scrape = Some(started);
            st.last_duration = duration;
            st.exemplars = exemplars;
            if let Some(m) = meta {
                for (k, v) in &m {
                    if self.sent_meta.get(k) != Some(v) {
                        meta_changes.push((k.clone(), v.clone()));
                    }
                }
                self.sent_meta = m.clone();
                st.metadata = m;
            }
        }
        (out, meta_changes)
    }

    /// The batch written when the target goes away: every tracked series
    /// and the report series marked stale.
    pub fn end_of_run(&mut self, target_labels: &Labels, ts: i64) -> Vec<(Labels, i64, f64)> {
        let mut live = self.cache.live();
        live.sort();
        live.dedup();
        self.cache.reset();
        self.cache.carry.clear();
        let mut out: Vec<_> = live.into_iter().map(|l| (l, ts, STALE_NAN)).collect();
        if self.status.read().last_scrape.is_some() {
            for (l, _, _) in report_samples(target_labels, ts, false, Duration::ZERO, 0, 0, 0) {
                out.push((l, ts, STALE_NAN));
            }
        }
        out
    }
}

/// Writes one batch, passing the known series refs of its leading
/// samples as hints (see [`LoopState::take_hints`]); returns the refs the
/// sink reports (`refs[i]` for `batch[i]`; empty when the sink reports
/// none), for [`LoopState::written`].
pub fn write_batch(
    sink: &dyn WriteSink,
    batch: &[(Labels, i64, f64)],
    hints: &[Option<SeriesRef>],
) -> Result<Vec<Option<SeriesRef>>, crate::sink::SinkError> {
    if hints.is_empty() {
        return sink.write(batch).map(|_| Vec::new());
    }
    sink.write_hinted(batch, hints).map(|(_, refs)| refs)
}

/// What a write gives back for [`LoopState::written`].
struct Written {
    batch: Vec<Sample>,
    hints: Vec<Option<SeriesRef>>,
    refs: Vec<Option<SeriesRef>>,
}

async fn write(
    sink: &Arc<dyn WriteSink>,
    batch: Vec<(Labels, i64, f64)>,
    meta: Vec<(String, MetricMeta)>,
    hints: Vec<Option<SeriesRef>>,
) -> Result<Written, String> {
    let sink = Arc::clone(sink);
    let res = tokio::task::spawn_blocking(move || {
        if !meta.is_empty() {
            sink.write_metadata(meta);
        }
        write_batch(sink.as_ref(), &batch, &hints).map(|refs| Written { batch, hints, refs })
    })
    .await;
    match res {
        Ok(Ok(w)) => Ok(w),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("append task failed: {e}")),
    }
}

/// Runs a target's loop until told to stop. `seed` spreads targets (see
/// [`Target::offset`]).
pub async fn run(
    mut control: watch::Receiver<Control>,
    sink: Arc<dyn WriteSink>,
    mut state: LoopState,
    seed: u64,
) {
    let (mut job, mut target) = match control.borrow_and_update().clone() {
        Control::Run(j, t) => (j, *t),
        Control::Stop { .. } => return,
    };
    let mut client = Client::new(&job);
    let mut series_labels = target.series_labels();
    let first = target.offset(seed, u64::try_from(now_ms()).unwrap_or(0));
    let mut next = tokio::time::Instant::now() + first;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            changed = control.changed() => {
                if changed.is_err() {
                    return;
                }
                let msg = control.borrow_and_update().clone();
                match msg {
                    Control::Run(j, t) => {
                        let rephase = t.interval != target.interval;
                        if *j != *job {
                            client = Client::new(&j);
                        }
                        job = j;
                        target = *t;
                        state.cache.reset();
                        series_labels = target.series_labels();
                        if rephase {
                            next = tokio::time::Instant::now()
                                + target.offset(seed, u64::try_from(now_ms()).unwrap_or(0));
                        }
                    }
                    Control::Stop { stale } => {
                        if stale {
                            let batch = state.end_of_run(&series_labels, now_ms());
                            if !batch.is_empty() {
                                if let Err(e) = write(&sink, batch, Vec::new(), Vec::new()).await {
                                    tracing::warn!(target = %target.url, error = %e, "writing staleness markers failed");
                                }
                            }
                        }
                        return;
                    }
                }
                continue;
            }
        }
        next += target.interval;
        let started = SystemTime::now();
        let ts = now_ms();
        let t0 = Instant::now();
        let outcome = match &mut client {
            Ok(c) => match c
                .fetch(&target.url, &job, target.timeout, job.body_size_limit)
                .await
            {
                Ok(f) => {
                    let format = Format::from_content_type(f.content_type.as_deref());
                    process_body(&f.body, format, &series_labels, &job, ts, &mut state.cache)
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.clone()),
        };
        let duration = t0.elapsed();
        let (batch, meta) = state.complete(&series_labels, ts, started, duration, outcome);
        let hints = state.take_hints();
        match write(&sink, batch, meta, hints).await {
            Ok(w) => state.written(w.batch, w.hints, &w.refs),
            Err(e) => {
                let mut st = state.status.write();
                st.health = Health::Down;
                st.last_error = format!("appending scraped samples: {e}");
            }
        }
        // A slow scrape must not queue up missed ticks.
        let now = tokio::time::Instant::now();
        while next <= now {
            next += target.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::config::ScrapeFile;
    use pharos_storage::chunk::is_stale_nan;
    use std::path::Path;

    fn job(extra: &str) -> JobSettings {
        let y = format!("scrape_configs:\n  - job_name: j\n{extra}");
        let f = ScrapeFile::parse(&y, Path::new("p.yml")).unwrap();
        f.settings(Path::new("p.yml")).jobs.remove(0)
    }

    /// `process_body` with a fresh cache.
    fn pb(
        body: &[u8],
        format: Format,
        t: &Labels,
        j: &JobSettings,
        ts: i64,
    ) -> Result<Batch, ScrapeError> {
        process_body(body, format, t, j, ts, &mut SeriesCache::default())
    }

    /// Later scrapes reuse the previous batch (time and value overwritten
    /// where the series is the same): whatever the order, drops and resets,
    /// each batch equals what a fresh cache makes of the body.
    #[test]
    fn recycled_batches_match_a_fresh_cache() {
        let j = job("    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: drop_.*\n        action: drop\n");
        let t = target();
        let bodies: [&[u8]; 7] = [
            b"a 1\nb 2\nc 3\n",
            b"a 4\nb 5\nc 6\n",
            b"a 7\ndrop_x 1\nc 8\nb 9\nd 10\n",
            b"a 11\nc 12 5000\nb 13\n",
            b"b 14\n",
            b"a{} 15\na 16\nb 17\nc 18\n",
            b"a 19\nb 20\nc 21\n",
        ];
        let mut s = LoopState::new(Arc::new(RwLock::new(TargetStatus::default())));
        for (i, body) in bodies.iter().enumerate() {
            if i == 6 {
                s.cache.reset();
            }
            let ts = 1000 * (i as i64 + 1);
            let want = pb(body, Format::PromText, &t, &j, ts).unwrap();
            let got = process_body(body, Format::PromText, &t, &j, ts, &mut s.cache).unwrap();
            assert_eq!(got.samples, want.samples, "scrape {i}");
            assert_eq!(got.hints.len(), got.samples.len());
            let (out, _) = s.complete(&t, ts, SystemTime::now(), Duration::ZERO, Ok(got));
            let hints = s.take_hints();
            let refs: Vec<_> = (0..hints.len())
                .map(|k| Some(SeriesRef(k as u64 + 1)))
                .collect();
            s.written(out, hints, &refs);
        }
        // Refs returned by the sink come back as hints.
        let b = process_body(bodies[6], Format::PromText, &t, &j, 9000, &mut s.cache).unwrap();
        assert_eq!(
            b.hints,
            vec![Some(SeriesRef(1)), Some(SeriesRef(2)), Some(SeriesRef(3))]
        );
    }

    #[test]
    fn the_series_cache_gives_the_same_answers() {
        let j = job("    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: drop_.*\n        action: drop\n");
        let body = b"a{x=\"1\"} 1\ndrop_me 2\nb 3 1000\n";
        let mut cache = SeriesCache::default();
        let first = process_body(body, Format::PromText, &target(), &j, 5, &mut cache).unwrap();
        assert_eq!(cache.len(), 3);
        let second = process_body(body, Format::PromText, &target(), &j, 5, &mut cache).unwrap();
        assert_eq!(first.samples, second.samples);
        assert_eq!(first.tracked, second.tracked);
        assert_eq!(second.samples.len(), 2);
        // Series that stop appearing are forgotten once they dominate.
        let mut s = LoopState::new(Arc::new(RwLock::new(TargetStatus::default())));
        for i in 0..200 {
            let line = format!("churn{{i=\"{i}\"}} 1\n");
            let b = process_body(
                line.as_bytes(),
                Format::PromText,
                &target(),
                &j,
                6,
                &mut s.cache,
            );
            s.complete(
                &target(),
                6,
                SystemTime::now(),
                Duration::ZERO,
                b.map_err(|e| e.to_string()),
            );
        }
        let cache = &s.cache;
        assert!(cache.len() < 100, "cache kept {} entries", cache.len());
    }

    fn target() -> Labels {
        Labels::from_pairs([("job", "j"), ("instance", "h:1")])
    }

    #[test]
    fn exported_conflicts_resolve_shortest_first() {
        let t = Labels::from_pairs([("a", "T1"), ("exported_a", "T2")]);
        let mut scraped = vec![
            ("a".to_string(), "s1".to_string()),
            ("exported_a".to_string(), "s2".to_string()),
            ("job".to_string(), String::new()),
        ];
        attach_target_labels(&mut scraped, &t, false);
        let got = Labels::from_pairs(scraped.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        assert_eq!(
            got,
            Labels::from_pairs([
                ("a", "T1"),
                ("exported_a", "T2"),
                ("exported_exported_a", "s1"),
                ("exported_exported_exported_a", "s2"),
            ])
        );
        // An empty scraped value is no conflict.
        let mut scraped = vec![("job".to_string(), String::new())];
        attach_target_labels(&mut scraped, &target(), false);
        assert!(!scraped.iter().any(|(n, _)| n.starts_with("exported_")));
        // With honor_labels, a present but empty scraped label removes the
        // target's (checked against Prometheus 2.42).
        let mut scraped = vec![("job".to_string(), String::new())];
        attach_target_labels(&mut scraped, &target(), true);
        let got = Labels::from_pairs(scraped.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        assert_eq!(got, Labels::from_pairs([("instance", "h:1")]));
    }

    #[test]
    fn target_labels_and_exported_prefix() {
        let body = b"m{job=\"inner\",instance=\"x\",exported_job=\"e\",a=\"1\"} 1\nn 2 5000\n";
        let b = pb(body, Format::PromText, &target(), &job(""), 9000).unwrap();
        assert_eq!(
            b.samples[0].0,
            Labels::from_pairs([
                ("__name__", "m"),
                ("a", "1"),
                ("exported_exported_job", "inner"),
                ("exported_instance", "x"),
                ("exported_job", "e"),
                ("instance", "h:1"),
                ("job", "j"),
            ])
        );
        assert_eq!(b.samples[0].1, 9000);
        // Explicit timestamps are honored and such series are not tracked.
        assert_eq!(b.samples[1].1, 5000);
        assert_eq!(b.tracked, 1);
        let honor = pb(
            body,
            Format::PromText,
            &target(),
            &job("    honor_labels: true\n    honor_timestamps: false\n"),
            9000,
        )
        .unwrap();
        assert_eq!(honor.samples[0].0.get("job"), Some("inner"));
        assert_eq!(honor.samples[0].0.get("instance"), Some("x"));
        assert_eq!(honor.samples[1].1, 9000);
        assert_eq!(honor.tracked, 2);
    }

    #[test]
    fn metric_relabeling_and_limits() {
        let body = b"# TYPE keep_me counter\n# HELP keep_me Help.\nkeep_me{a=\"1\"} 1\ndrop_me 2\n";
        let j = job("    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: drop_.*\n        action: drop\n");
        let b = pb(body, Format::PromText, &target(), &j, 1).unwrap();
        assert_eq!(b.scraped, 2);
        assert_eq!(b.samples.len(), 1);
        assert_eq!(b.metadata["keep_me"].kind, "counter");
        assert_eq!(b.metadata["keep_me"].help, "Help.");
        let limited = |extra: &str| pb(body, Format::PromText, &target(), &job(extra), 1);
        assert_eq!(
            limited("    sample_limit: 1\n").unwrap_err(),
            ScrapeError::SampleLimit(1)
        );
        assert!(limited("    sample_limit: 2\n").is_ok());
        assert!(matches!(
            limited("    label_limit: 3\n"),
            Err(ScrapeError::LabelLimit { count: 4, .. })
        ));
        assert!(matches!(
            limited("    label_name_length_limit: 5\n"),
            Err(ScrapeError::LabelNameLength { .. })
        ));
        assert!(matches!(
            limited("    label_value_length_limit: 4\n"),
            Err(ScrapeError::LabelValueLength { .. })
        ));
        let dup = pb(
            b"m{a=\"1\",a=\"2\"} 1\n",
            Format::PromText,
            &target(),
            &job(""),
            1,
        );
        assert!(matches!(dup, Err(ScrapeError::DuplicateLabel { .. })));
        let bad = job("    metric_relabel_configs:\n      - regex: '(.*)'\n        source_labels: [a]\n        target_label: __name__\n        replacement: '1bad'\n");
        assert!(matches!(
            pb(b"m{a=\"1\"} 1\n", Format::PromText, &target(), &bad, 1),
            Err(ScrapeError::InvalidLabels(_))
        ));
    }

    /// One scrape of `body` through the loop state into `sink`.
    fn scrape_into(s: &mut LoopState, sink: &dyn WriteSink, body: &[u8], ts: i64) {
        let t = target();
        let b = process_body(body, Format::PromText, &t, &job(""), ts, &mut s.cache);
        let (out, _) = s.complete(
            &t,
            ts,
            SystemTime::now(),
            Duration::ZERO,
            b.map_err(|e| e.to_string()),
        );
        let hints = s.take_hints();
        let refs = write_batch(sink, &out, &hints).unwrap();
        s.written(out, hints, &refs);
    }

    fn cached_refs(s: &LoopState) -> Vec<(Labels, u64)> {
        let mut v: Vec<_> = s
            .cache
            .entries
            .iter()
            .filter_map(|e| Some((e.labels.clone()?, e.sref)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn series_refs_are_cached_across_scrapes_and_refreshed_when_stale() {
        use crate::sink::{LocalSink, MetadataStore};
        use pharos_storage::db::Db;
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), Default::default()).unwrap());
        let sink = LocalSink::new(db.clone(), Arc::new(MetadataStore::new(10)));
        let mut s = LoopState::new(Arc::new(RwLock::new(TargetStatus::default())));
        let body = b"a{x=\"1\"} 1\nb 2\n";
        scrape_into(&mut s, &sink, body, 1000);
        let first = cached_refs(&s);
        assert_eq!(first.len(), 2);
        for (l, r) in &first {
            assert_eq!(db.head().get_ref(l), Some(SeriesRef(*r)), "{l}");
        }
        // Later scrapes append by the cached refs, which do not change.
        scrape_into(&mut s, &sink, body, 2000);
        scrape_into(&mut s, &sink, body, 3000);
        assert_eq!(cached_refs(&s), first);
        // A head truncation removes the series (all their data is older):
        // the stale refs fall back to the labels and the new refs are kept.
        let dropped = db.head().truncate_before(3500);
        assert!(dropped.len() >= 2);
        scrape_into(&mut s, &sink, body, 4000);
        let after = cached_refs(&s);
        assert_eq!(after.len(), 2);
        for ((l, old), (l2, new)) in first.iter().zip(&after) {
            assert_eq!(l, l2);
            assert_ne!(old, new, "{l}");
            assert_eq!(db.head().get_ref(l), Some(SeriesRef(*new)), "{l}");
        }
        scrape_into(&mut s, &sink, body, 5000);
        assert_eq!(cached_refs(&s), after);
        let m = pharos_storage::labels::Matcher::new(
            pharos_storage::labels::MatchType::Equal,
            "__name__",
            "a",
        )
        .unwrap();
        let got =
            pharos_storage::querier::Querier::select(db.as_ref(), 0, i64::MAX, &[m], None).unwrap();
        assert_eq!(got.len(), 1);
        let n: usize = got[0].chunks.iter().map(|c| c.chunk.num_samples()).sum();
        assert_eq!(n, 2, "samples at 4000 and 5000 after the truncation");
    }

    #[test]
    fn staleness_and_report_series() {
        let st = Arc::new(RwLock::new(TargetStatus::default()));
        let mut s = LoopState::new(Arc::clone(&st));
        let j = job("");
        let t = target();
        let now = SystemTime::now();
        let b1 = process_body(b"a 1\nb 2\n", Format::PromText, &t, &j, 1000, &mut s.cache).unwrap();
        let (out, _) = s.complete(&t, 1000, now, Duration::from_millis(5), Ok(b1));
        let get = |out: &[(Labels, i64, f64)], name: &str| {
            out.iter()
                .find(|(l, _, _)| l.metric_name() == Some(name))
                .map(|x| x.2)
        };
        assert_eq!(get(&out, "up"), Some(1.0));
        assert_eq!(get(&out, "scrape_samples_scraped"), Some(2.0));
        assert_eq!(get(&out, "scrape_series_added"), Some(2.0));
        assert_eq!(get(&out, "scrape_duration_seconds"), Some(0.005));
        assert_eq!(st.read().health, Health::Up);
        // b disappears: one staleness marker; nothing new added.
        let b2 = process_body(b"a 1\n", Format::PromText, &t, &j, 2000, &mut s.cache).unwrap();
        let (out, _) = s.complete(&t, 2000, now, Duration::ZERO, Ok(b2));
        assert!(get(&out, "b").is_some_and(is_stale_nan));
        assert_eq!(get(&out, "scrape_series_added"), Some(0.0));
        // A failed scrape: up 0 and everything stale.
        let (out, _) = s.complete(
            &t,
            3000,
            now,
            Duration::ZERO,
            Err("connection refused".into()),
        );
        assert_eq!(get(&out, "up"), Some(0.0));
        assert!(get(&out, "a").is_some_and(is_stale_nan));
        assert_eq!(st.read().last_error, "connection refused");
        assert_eq!(st.read().health, Health::Down);
        // Back up, then the target goes away: series and report series stale.
        let b4 = process_body(b"a 1\n", Format::PromText, &t, &j, 4000, &mut s.cache).unwrap();
        s.complete(&t, 4000, now, Duration::ZERO, Ok(b4));
        let end = s.end_of_run(&t, 5000);
        assert_eq!(end.len(), 6);
        assert!(end.iter().all(|(_, ts, v)| *ts == 5000 && is_stale_nan(*v)));
        for (l, _, _) in &end {
            assert_eq!(l.get("job"), Some("j"));
        }
    }

    #[test]
    fn staleness_edge_cases() {
        let j = job("");
        let t = target();
        let now = SystemTime::now();
        let stale_names = |out: &[(Labels, i64, f64)]| {
            let mut v: Vec<String> = out
                .iter()
                .filter(|(_, _, v)| is_stale_nan(*v))
                .map(|(l, _, _)| l.metric_name().unwrap_or("").to_string())
                .collect();
            v.sort();
            v
        };
        let mut s = LoopState::new(Arc::new(RwLock::new(TargetStatus::default())));
        let scrape = |s: &mut LoopState, body: &[u8], ts: i64| {
            let b = process_body(body, Format::PromText, &t, &j, ts, &mut s.cache)
                .map_err(|e| e.to_string());
            s.complete(&t, ts, now, Duration::ZERO, b).0
        };
        scrape(&mut s, b"a 1\nb 2\n", 1);
        // A body failing part way: a and b stale once; c (never written) not.
        let out = scrape(&mut s, b"c 1\na 1\nbad{ 2\n", 2);
        assert_eq!(stale_names(&out), vec!["a", "b"]);
        let out = scrape(&mut s, b"a 1\n", 3);
        assert!(stale_names(&out).is_empty());
        // Two texts of one series: it is not stale while one remains.
        scrape(&mut s, b"a 1\na{} 1\n", 4);
        let out = scrape(&mut s, b"a 1\n", 5);
        assert!(stale_names(&out).is_empty(), "{out:?}");
        // Settings changed: the cache starts over but b still goes stale.
        scrape(&mut s, b"a 1\nb 1\n", 6);
        s.cache.reset();
        let out = scrape(&mut s, b"a 1\n", 7);
        assert_eq!(stale_names(&out), vec!["b"]);
        assert_eq!(
            out.iter()
                .find(|(l, _, _)| l.metric_name() == Some("scrape_series_added"))
                .map(|x| x.2),
            Some(1.0),
            "after a reset every series counts as added"
        );
        // End of run marks what is live and the report series.
        let out = s.end_of_run(&t, 8);
        assert_eq!(
            stale_names(&out),
            vec![
                "a",
                "scrape_duration_seconds",
                "scrape_samples_post_metric_relabeling",
                "scrape_samples_scraped",
                "scrape_series_added",
                "up"
            ]
        );
        assert!(s.end_of_run(&t, 9).len() == 5, "series are marked once");
    }

    #[test]
    fn metadata_changes_are_sent_once() {
        let st = Arc::new(RwLock::new(TargetStatus::default()));
        let mut s = LoopState::new(st);
        let j = job("");
        let t = target();
        let body = b"# TYPE a gauge\na 1\n";
        let b = pb(body, Format::PromText, &t, &j, 1).unwrap();
        let (_, meta) = s.complete(&t, 1, SystemTime::now(), Duration::ZERO, Ok(b));
        assert_eq!(meta.len(), 1);
        let b = pb(body, Format::PromText, &t, &j, 2).unwrap();
        let (_, meta) = s.complete(&t, 2, SystemTime::now(), Duration::ZERO, Ok(b));
        assert!(meta.is_empty());
    }
}
