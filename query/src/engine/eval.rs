//! The evaluator core: steps, selectors, subqueries, `offset`/`@`, duration
//! expressions, and assembling the final result.
//!
//! Every node evaluates for all steps of the current range at once
//! (`start..=end` by `interval`; `interval == 0` means one instant step).
//! Subqueries evaluate their inner expression over a nested range and then
//! restore the outer one.

use std::cell::{Cell, RefCell};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use pharos_storage::chunk::{is_stale_nan, SampleIterator, ValueType as SampleType};
use pharos_storage::labels::{Labels, METRIC_NAME};
use pharos_storage::querier::SelectHints;
use pharos_storage::series::Series;

use super::annotations::Annotations;
use super::error::QueryError;
use super::value::{QueryResult, QueryStats, Sample, SeriesResult, Value};
use super::EngineOptions;
use crate::parser::ast::{
    AtModifier, Duration, DurationExpr, DurationOp, Expr, MatrixSelector, SubqueryExpr, UnaryOp,
    ValueType, VectorSelector,
};
use crate::queryable::Queryable;

/// Where timeouts and cancellations are reported, as Prometheus words it.
const EVAL_PHASE: &str = "expression evaluation";

/// Work units between two deadline checks (see [`Evaluator::tick`]).
const CHECK_EVERY: usize = 4096;

/// Labels Prometheus removes together with the metric name.
pub(crate) const NAME_LIKE: [&str; 3] = [METRIC_NAME, "__type__", "__unit__"];

/// One series of an intermediate result. For instant vectors `points` are at
/// step timestamps; for range data they are raw sample times.
#[derive(Debug, Clone)]
pub(crate) struct RSeries {
    pub labels: Labels,
    /// `__name__` is to be removed at the end of evaluation.
    pub drop_name: bool,
    pub points: Vec<(i64, f64)>,
}

/// An intermediate value.
#[derive(Debug)]
pub(crate) enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    String(String),
    Vector(Vec<RSeries>),
    /// A range vector (only as a query result: instant queries of `x[5m]`).
    Matrix(Vec<RSeries>),
}

impl Val {
    fn points(&self) -> usize {
        match self {
            Val::Scalar(v) => v.len(),
            Val::String(_) => 0,
            Val::Vector(s) | Val::Matrix(s) => s.iter().map(|s| s.points.len()).sum(),
        }
    }
}

/// A series and its `(step, sample time, value)` points.
pub(crate) type SelectedSeries = (Labels, Vec<(usize, i64, f64)>);

/// Where a range function's samples come from.
#[derive(Debug)]
pub(crate) enum RangeSource {
    /// Already evaluated (subqueries).
    Decoded(Vec<RSeries>),
    /// Selected but not decoded yet: each series is decoded on its own when
    /// visited, so memory holds one series' samples at a time.
    Stored {
        series: Vec<Series>,
        mint: i64,
        maxt: i64,
    },
}

/// Input of a range function: series of raw samples plus, per step, the
/// window end; each window is `(end - range, end]`.
#[derive(Debug)]
pub(crate) struct RangeData {
    pub source: RangeSource,
    pub range: i64,
    /// Window end for each step of the current range.
    pub refs: Vec<i64>,
    /// Position of the selector or subquery (for annotations).
    pub pos: crate::parser::ast::PosRange,
    pub anchored: bool,
    pub smoothed: bool,
}

impl RangeData {
    /// Labels of every series, without decoding anything.
    pub(crate) fn labels(&self) -> Vec<&Labels> {
        match &self.source {
            RangeSource::Decoded(v) => v.iter().map(|s| &s.labels).collect(),
            RangeSource::Stored { series, .. } => series.iter().map(|s| &s.labels).collect(),
        }
    }

    /// Visits every series with its samples (staleness markers removed),
    /// as `(labels, drop_name, samples)`. A decoding failure is recorded on
    /// the evaluator and reported when the current node finishes.
    pub(crate) fn for_each(
        &self,
        ev: &Evaluator<'_>,
        mut f: impl FnMut(&Labels, bool, &[(i64, f64)]),
    ) {
        match &self.source {
            RangeSource::Decoded(v) => {
                for s in v {
                    if !ev.tick_or_defer(1) {
                        return;
                    }
                    f(&s.labels, s.drop_name, &s.points);
                }
            }
            RangeSource::Stored { series, mint, maxt } => {
                let mut buf = Vec::new();
                for s in series {
                    if let Err(e) = ev.decode(s, *mint, *maxt, &mut buf) {
                        ev.defer_error(e);
                        return;
                    }
                    buf.retain(|p| !is_stale_nan(p.1));
                    if !buf.is_empty() {
                        f(&s.labels, false, &buf);
                    }
                }
            }
        }
    }
}

impl RangeData {
    /// As [`RangeData::for_each`], also passing each sample's start
    /// timestamp (ms, 0 = unknown) parallel to the samples, or `None` when
    /// the series has none: subquery results and series without start
    /// timestamps. Only raw selector data carries them.
    pub(crate) fn for_each_st(
        &self,
        ev: &Evaluator<'_>,
        mut f: impl FnMut(&Labels, bool, &[(i64, f64)], Option<&[i64]>),
    ) {
        match &self.source {
            RangeSource::Decoded(v) => {
                for s in v {
                    if !ev.tick_or_defer(1) {
                        return;
                    }
                    f(&s.labels, s.drop_name, &s.points, None);
                }
            }
            RangeSource::Stored { series, mint, maxt } => {
                let mut buf = Vec::new();
                let mut sts = Vec::new();
                for s in series {
                    if let Err(e) = ev.decode(s, *mint, *maxt, &mut buf) {
                        ev.defer_error(e);
                        return;
                    }
                    buf.retain(|p| !is_stale_nan(p.1));
                    if buf.is_empty() {
                        continue;
                    }
                    let with_st = s
                        .start_timestamps
                        .as_deref()
                        .is_some_and(|pairs| align_start_timestamps(pairs, &buf, &mut sts));
                    f(&s.labels, false, &buf, with_st.then_some(&sts[..]));
                }
            }
        }
    }
}

/// Fills `out` with the start timestamp of each sample of `pts` (both sorted
/// by time; `pairs` holds only non-zero ones). Whether any is non-zero.
fn align_start_timestamps(pairs: &[(i64, i64)], pts: &[(i64, f64)], out: &mut Vec<i64>) -> bool {
    out.clear();
    let mut j = 0;
    let mut any = false;
    for &(t, _) in pts {
        while j < pairs.len() && pairs[j].0 < t {
            j += 1;
        }
        let st = match pairs.get(j) {
            Some(&(pt, st)) if pt == t => st,
            _ => 0,
        };
        any |= st != 0;
        out.push(st);
    }
    any
}

/// Sliding window over one series' samples: yields, for each step whose
/// window is non-empty, `(step index, window)`. Window ends must not decrease.
pub(crate) struct Windows<'a> {
    pts: &'a [(i64, f64)],
    refs: &'a [i64],
    range: i64,
    step: usize,
    lo: usize,
    hi: usize,
    /// Counts steps and window samples against the query deadline.
    ev: Option<&'a Evaluator<'a>>,
}

impl<'a> Windows<'a> {
    pub(crate) fn new(pts: &'a [(i64, f64)], refs: &'a [i64], range: i64) -> Self {
        Windows {
            pts,
            refs,
            range,
            step: 0,
            lo: 0,
            hi: 0,
            ev: None,
        }
    }

    /// As [`Windows::new`], counting every step and the samples of each
    /// window against the query's deadline and cancel flag (once the query
    /// must stop, the error is deferred on `ev` and iteration ends early),
    /// and counting each window's samples as queryable samples read.
    pub(crate) fn checked(
        ev: &'a Evaluator<'a>,
        pts: &'a [(i64, f64)],
        refs: &'a [i64],
        range: i64,
    ) -> Self {
        Windows {
            ev: Some(ev),
            ..Windows::new(pts, refs, range)
        }
    }
}

impl<'a> Iterator for Windows<'a> {
    /// `(step, window, index of the window's first sample)`.
    type Item = (usize, &'a [(i64, f64)], usize);
    fn next(&mut self) -> Option<Self::Item> {
        while self.step < self.refs.len() {
            // The previous window's length stands in for the work the caller
            // did on it.
            if let Some(ev) = self.ev {
                if !ev.tick_or_defer(1 + (self.hi - self.lo)) {
                    self.step = self.refs.len();
                    return None;
                }
            }
            let i = self.step;
            self.step += 1;
            let end = self.refs[i];
            let start = end.saturating_sub(self.range);
            while self.hi < self.pts.len() && self.pts[self.hi].0 <= end {
                self.hi += 1;
            }
            while self.lo < self.hi && self.pts[self.lo].0 <= start {
                self.lo += 1;
            }
            if self.lo < self.hi {
                if let Some(ev) = self.ev {
                    ev.count_queryable(i, self.hi - self.lo);
                }
                return Some((i, &self.pts[self.lo..self.hi], self.lo));
            }
        }
        None
    }
}

pub(crate) struct Evaluator<'a> {
    q: &'a dyn Queryable,
    pub opts: &'a EngineOptions,
    /// Outer query range, for `@ start()`/`@ end()` and `step()`/`range()`.
    pub qstart: i64,
    pub qend: i64,
    pub qstep: i64,
    /// Current evaluation range (changes inside subqueries).
    pub start: i64,
    pub end: i64,
    pub interval: i64,
    pub annos: Annotations,
    stats: QueryStats,
    live: usize,
    deadline: Option<Instant>,
    /// Work units counted by [`Evaluator::tick`] since the last check.
    work: Cell<usize>,
    /// Subqueries being evaluated around the current node: queryable
    /// samples are counted as Prometheus does only at depth 0 (and at depth
    /// 1 for a subquery that is the whole query).
    sub_depth: usize,
    queryable: Cell<u64>,
    /// Queryable samples read at depth 1, for a top-level subquery.
    sub_queryable: Cell<u64>,
    /// Queryable samples per step of the query; empty unless enabled.
    per_step: Vec<Cell<u64>>,
    /// Samples decoded lazily (through `&self`).
    decoded: Cell<usize>,
    /// First error raised where no `Result` can be returned (lazy decoding).
    deferred: RefCell<Option<QueryError>>,
    /// Set by the caller to abandon the query.
    pub(crate) cancel: Option<&'a AtomicBool>,
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(
        q: &'a dyn Queryable,
        opts: &'a EngineOptions,
        start: i64,
        end: i64,
        step: i64,
        started: Instant,
    ) -> Self {
        Evaluator {
            q,
            opts,
            qstart: start,
            qend: end,
            qstep: step,
            start,
            end,
            interval: step,
            annos: Annotations::new(),
            stats: QueryStats::default(),
            live: 0,
            deadline: started.checked_add(opts.timeout),
            work: Cell::new(0),
            sub_depth: 0,
            queryable: Cell::new(0),
            sub_queryable: Cell::new(0),
            per_step: Vec::new(),
            decoded: Cell::new(0),
            deferred: RefCell::new(None),
            cancel: None,
        }
    }

    /// Number of steps in the current range.
    pub(crate) fn nsteps(&self) -> usize {
        if self.interval == 0 {
            1
        } else if self.end < self.start {
            0
        } else {
            ((self.end - self.start) / self.interval) as usize + 1
        }
    }

    /// Timestamp of step `i`.
    #[inline]
    pub(crate) fn ts(&self, i: usize) -> i64 {
        self.start + self.interval * i as i64
    }

    /// Step index of a step timestamp.
    #[inline]
    pub(crate) fn step_of(&self, t: i64) -> usize {
        if self.interval == 0 {
            0
        } else {
            ((t - self.start) / self.interval) as usize
        }
    }

    /// Fails once the query is canceled or past its deadline, with
    /// Prometheus's texts ("query timed out in expression evaluation").
    pub(crate) fn check_timeout(&self) -> Result<(), QueryError> {
        if self
            .cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(QueryError::Canceled { phase: EVAL_PHASE });
        }
        match self.deadline {
            Some(d) if Instant::now() > d => Err(QueryError::Timeout { phase: EVAL_PHASE }),
            _ => Ok(()),
        }
    }

    /// Also count queryable samples per step of the query.
    pub(crate) fn enable_per_step_stats(&mut self) {
        self.per_step = (0..self.nsteps()).map(|_| Cell::new(0)).collect();
    }

    /// Counts `n` queryable samples read at step `step` of the current
    /// range (see [`QueryStats::total_queryable_samples`]).
    #[inline]
    pub(crate) fn count_queryable(&self, step: usize, n: usize) {
        match self.sub_depth {
            0 => {
                self.queryable.set(self.queryable.get() + n as u64);
                if let Some(c) = self.per_step.get(step) {
                    c.set(c.get() + n as u64);
                }
            }
            1 => self.sub_queryable.set(self.sub_queryable.get() + n as u64),
            _ => {}
        }
    }

    /// Counts `units` of work (steps, series, samples) and checks the
    /// deadline and cancel flag once every [`CHECK_EVERY`] units. Long loops
    /// call it so that one heavy node (a subquery with millions of steps, a
    /// selector over many series) stops soon after the deadline instead of
    /// running to completion; the clock is read rarely enough to cost
    /// nothing measurable.
    #[inline]
    pub(crate) fn tick(&self, units: usize) -> Result<(), QueryError> {
        let w = self.work.get().saturating_add(units);
        if w < CHECK_EVERY {
            self.work.set(w);
            return Ok(());
        }
        self.work.set(0);
        let res = self.check_timeout();
        if res.is_err() {
            // Stay tripped: every later tick checks again and fails too.
            self.work.set(CHECK_EVERY);
        }
        res
    }

    /// As [`Evaluator::tick`] for loops that cannot return an error (the
    /// callbacks of [`RangeData::for_each`]): the error is deferred, to be
    /// reported when the node finishes, and `false` tells the loop to stop
    /// (and keeps telling it: a tripped check stays tripped).
    #[inline]
    pub(crate) fn tick_or_defer(&self, units: usize) -> bool {
        match self.tick(units) {
            Ok(()) => true,
            Err(e) => {
                self.defer_error(e);
                false
            }
        }
    }

    fn account(&mut self, n: usize) -> Result<(), QueryError> {
        self.live = self.live.saturating_add(n);
        self.stats.peak_samples = self.stats.peak_samples.max(self.live);
        if self.live > self.opts.max_samples {
            return Err(QueryError::TooManySamples {
                phase: "query execution",
            });
        }
        Ok(())
    }

    /// Static checks the parser leaves to the engine (feature gates).
    pub(crate) fn check_expr(&self, e: &Expr) -> Result<(), QueryError> {
        crate::functions::check_expr(e, self.opts.experimental_functions)
    }

    pub(crate) fn eval_top(&mut self, e: &Expr) -> Result<Val, QueryError> {
        self.eval(e)
    }

    pub(crate) fn eval(&mut self, e: &Expr) -> Result<Val, QueryError> {
        self.check_timeout()?;
        let before = self.live;
        let v = self.eval_inner(e)?;
        if let Some(err) = self.deferred.borrow_mut().take() {
            return Err(err);
        }
        // Children's values are consumed by now; only the result stays live.
        self.live = before;
        self.account(v.points())?;
        Ok(v)
    }

    fn eval_inner(&mut self, e: &Expr) -> Result<Val, QueryError> {
        match e {
            Expr::Number(n) => Ok(Val::Scalar(vec![n.value; self.nsteps()])),
            Expr::String(s) => Ok(Val::String(s.value.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => {
                let v = self.eval(&u.expr)?;
                if u.op == UnaryOp::Pos {
                    return Ok(v);
                }
                Ok(match v {
                    Val::Scalar(mut s) => {
                        s.iter_mut().for_each(|x| *x = -*x);
                        Val::Scalar(s)
                    }
                    Val::Vector(mut ss) => {
                        for s in &mut ss {
                            s.drop_name = true;
                            s.points.iter_mut().for_each(|p| p.1 = -p.1);
                        }
                        Val::Vector(ss)
                    }
                    other => other,
                })
            }
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.eval_vector_selector(vs, false)?)),
            Expr::MatrixSelector(ms) => {
                let rd = self.eval_matrix_selector(ms, None)?;
                let m = instant_windows(self, rd);
                let n = m.iter().map(|s| s.points.len()).sum();
                self.count_queryable(0, n);
                Ok(Val::Matrix(m))
            }
            Expr::Subquery(sq) => {
                // Only a whole query can be a bare subquery; Prometheus
                // counts what its inner expression read, at every step.
                self.sub_queryable.set(0);
                let rd = self.eval_subquery(sq)?;
                let inner = self.sub_queryable.get() as usize;
                for step in 0..self.nsteps() {
                    self.count_queryable(step, inner);
                }
                Ok(Val::Matrix(instant_windows(self, rd)))
            }
            Expr::Binary(b) => super::binary::eval_binary(self, b),
            Expr::Aggregate(a) => super::aggregate::eval_aggregate(self, a),
            Expr::Call(c) => crate::functions::eval_call(self, c),
        }
    }

    // ---- durations, offset and @ ----

    pub(crate) fn resolve_duration(&self, d: &Duration) -> Result<i64, QueryError> {
        match d {
            Duration::Literal(ms) => Ok(*ms),
            Duration::Expr(e) => {
                let secs = self.duration_expr(e)?;
                if !secs.is_finite() {
                    return Err(QueryError::exec(format!(
                        "duration expression evaluates to a non-finite value: {secs}"
                    )));
                }
                Ok((secs * 1000.0).round() as i64)
            }
        }
    }

    /// Evaluates a duration expression in seconds, as Prometheus does.
    fn duration_expr(&self, e: &DurationExpr) -> Result<f64, QueryError> {
        Ok(match e {
            DurationExpr::Number(n) => *n,
            DurationExpr::Duration(ms) => *ms as f64 / 1000.0,
            DurationExpr::Step => self.qstep as f64 / 1000.0,
            DurationExpr::Range => (self.qend - self.qstart) as f64 / 1000.0,
            DurationExpr::MinOf(a, b) => self.duration_expr(a)?.min(self.duration_expr(b)?),
            DurationExpr::MaxOf(a, b) => self.duration_expr(a)?.max(self.duration_expr(b)?),
            DurationExpr::Neg(a) => -self.duration_expr(a)?,
            DurationExpr::Paren(a) => self.duration_expr(a)?,
            DurationExpr::Binary { op, lhs, rhs } => {
                let a = self.duration_expr(lhs)?;
                let b = self.duration_expr(rhs)?;
                match op {
                    DurationOp::Add => a + b,
                    DurationOp::Sub => a - b,
                    DurationOp::Mul => a * b,
                    DurationOp::Div => {
                        if b == 0.0 {
                            return Err(QueryError::exec("division by zero"));
                        }
                        a / b
                    }
                    DurationOp::Mod => {
                        if b == 0.0 {
                            return Err(QueryError::exec("modulo by zero"));
                        }
                        a % b
                    }
                    DurationOp::Pow => a.powf(b),
                }
            }
        })
    }

    fn resolve_at(&self, at: Option<AtModifier>) -> Option<i64> {
        at.map(|a| match a {
            AtModifier::Timestamp(t) => t,
            AtModifier::Start => self.qstart,
            AtModifier::End => self.qend,
        })
    }

    /// Window ends for each step: `(@ or step time) - offset`.
    fn refs(&self, at: Option<i64>, offset: i64) -> Vec<i64> {
        (0..self.nsteps())
            .map(|i| at.unwrap_or_else(|| self.ts(i)).saturating_sub(offset))
            .collect()
    }

    // ---- selectors ----

    /// Selects the series of `vs` with data in `[mint, maxt]`.
    fn select(
        &mut self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
        range: i64,
        func: Option<&str>,
    ) -> Result<Vec<Series>, QueryError> {
        self.check_timeout()?;
        let hints = SelectHints {
            start: mint,
            end: maxt,
            step: self.interval,
            range,
            func: func.map(str::to_string),
            grouping: Vec::new(),
            by: false,
        };
        let t0 = Instant::now();
        let (series, warnings) =
            self.q
                .select_with_warnings(mint, maxt, &vs.matchers, Some(&hints))?;
        for w in warnings {
            self.annos.warn(w, vs.pos);
        }
        self.stats.select_time += t0.elapsed();
        self.stats.series_selected += series.len();
        Ok(series)
    }

    /// Decodes one series' samples in `[mint, maxt]` into `buf` (reused).
    // The loops below match every sample kind on purpose (see inside), so
    // `while let … Float` would defeat the exhaustiveness check.
    #[allow(clippy::while_let_loop)]
    pub(crate) fn decode(
        &self,
        s: &Series,
        mint: i64,
        maxt: i64,
        buf: &mut Vec<(i64, f64)>,
    ) -> Result<(), QueryError> {
        self.check_timeout()?;
        buf.clear();
        let simple =
            s.deleted.is_empty() && s.chunks.windows(2).all(|w| w[0].max_time < w[1].min_time);
        if simple {
            // Ordered, disjoint chunks and no tombstones (the common case):
            // decode chunk by chunk without the general merging iterator.
            for c in s.chunks.iter().filter(|c| c.overlaps(mint, maxt)) {
                let mut it = c.chunk.iter();
                let mut vt = if c.min_time < mint {
                    it.seek(mint)
                } else {
                    it.next()
                };
                // Exhaustive on purpose: a histogram sample kind added to
                // storage must be handled here, not end the series early.
                loop {
                    match vt {
                        SampleType::Float => {
                            let (t, v) = it.at();
                            if t > maxt {
                                break;
                            }
                            buf.push((t, v));
                        }
                        SampleType::None => break,
                    }
                    vt = it.next();
                }
                if let Some(e) = it.err() {
                    return Err(QueryError::Storage(format!(
                        "reading series {}: {e}",
                        s.labels
                    )));
                }
            }
        } else {
            let mut it = s.iter_range(mint, maxt);
            loop {
                match it.next() {
                    SampleType::Float => buf.push(it.at()),
                    SampleType::None => break,
                }
            }
            if let Some(e) = it.err() {
                return Err(QueryError::Storage(format!(
                    "reading series {}: {e}",
                    s.labels
                )));
            }
        }
        self.decoded.set(self.decoded.get() + buf.len());
        if self.live.saturating_add(buf.len()) > self.opts.max_samples {
            return Err(QueryError::TooManySamples {
                phase: "query execution",
            });
        }
        Ok(())
    }

    pub(crate) fn defer_error(&self, e: QueryError) {
        let mut d = self.deferred.borrow_mut();
        if d.is_none() {
            *d = Some(e);
        }
    }

    /// An instant selector at every step. With `sample_time`, the value is
    /// the selected sample's timestamp in seconds (for `timestamp()`).
    pub(crate) fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        sample_time: bool,
    ) -> Result<Vec<RSeries>, QueryError> {
        let offset = match &vs.offset {
            Some(d) => self.resolve_duration(d)?,
            None => 0,
        };
        let at = self.resolve_at(vs.at);
        let refs = self.refs(at, offset);
        if vs.smoothed {
            return self.smoothed_selector(vs, &refs);
        }
        let sel = self.select_at(vs, &refs)?;
        Ok(sel
            .into_iter()
            .map(|(labels, pts)| RSeries {
                labels,
                drop_name: false,
                points: pts
                    .into_iter()
                    .map(|(i, st, v)| {
                        (self.ts(i), if sample_time { st as f64 / 1000.0 } else { v })
                    })
                    .collect(),
            })
            .collect())
    }

    /// A `smoothed` instant selector: the value linearly interpolated
    /// between the samples around each reference time (the last sample
    /// when none follows within the lookback).
    fn smoothed_selector(
        &mut self,
        vs: &VectorSelector,
        refs: &[i64],
    ) -> Result<Vec<RSeries>, QueryError> {
        let (Some(&first), Some(&last)) = (refs.first(), refs.last()) else {
            return Ok(Vec::new());
        };
        let lookback = self.opts.lookback_delta_ms;
        let (mint, maxt) = (
            first.saturating_sub(lookback).saturating_add(1),
            last.saturating_add(lookback),
        );
        let series = self.select(vs, mint, maxt, 0, None)?;
        let mut out = Vec::with_capacity(series.len());
        let mut samples = Vec::new();
        for s in &series {
            self.decode(s, mint, maxt, &mut samples)?;
            let labels = s.labels.clone();
            samples.retain(|p| !is_stale_nan(p.1));
            let mut pts = Vec::new();
            for (i, &r) in refs.iter().enumerate() {
                self.tick(1)?;
                let idx = samples.partition_point(|s| s.0 <= r);
                if idx == 0 {
                    continue;
                }
                let (bt, bv) = samples[idx - 1];
                if bt <= r - lookback {
                    continue;
                }
                let v = match samples.get(idx) {
                    Some(&(at, av)) if bt != r && at - r < lookback => {
                        bv + (av - bv) * ((r - bt) as f64 / (at - bt) as f64)
                    }
                    _ => bv,
                };
                self.count_queryable(i, 1);
                pts.push((self.ts(i), v));
            }
            if !pts.is_empty() {
                out.push(RSeries {
                    labels,
                    drop_name: false,
                    points: pts,
                });
            }
        }
        Ok(out)
    }

    /// For each series of `vs`, the latest non-stale sample within the
    /// lookback of each reference time: `(step, sample time, value)`.
    /// Reference times must not decrease.
    pub(crate) fn select_at(
        &mut self,
        vs: &VectorSelector,
        refs: &[i64],
    ) -> Result<Vec<SelectedSeries>, QueryError> {
        let (Some(&first), Some(&last)) = (refs.first(), refs.last()) else {
            return Ok(Vec::new());
        };
        let lookback = self.opts.lookback_delta_ms;
        let (mint, maxt) = (first.saturating_sub(lookback).saturating_add(1), last);
        let series = self.select(vs, mint, maxt, 0, None)?;
        let mut out = Vec::with_capacity(series.len());
        let mut samples = Vec::new();
        for s in &series {
            self.decode(s, mint, maxt, &mut samples)?;
            let labels = s.labels.clone();
            let mut pts = Vec::new();
            let mut hint = 0usize;
            for (i, &r) in refs.iter().enumerate() {
                self.tick(1)?;
                let idx = hint + samples[hint..].partition_point(|s| s.0 <= r);
                hint = idx;
                if idx == 0 {
                    continue;
                }
                let (st, sv) = samples[idx - 1];
                if st > r - lookback && !is_stale_nan(sv) {
                    self.count_queryable(i, 1);
                    pts.push((i, st, sv));
                }
            }
            if !pts.is_empty() {
                out.push((labels, pts));
            }
        }
        Ok(out)
    }

    /// For `start_timestamp()`: for each series of `vs`, the start timestamp
    /// (ms, 0 = unknown) of the sample [`Evaluator::select_at`] would pick at
    /// each reference time, as `(step, start timestamp)`.
    pub(crate) fn select_start_timestamps_at(
        &mut self,
        vs: &VectorSelector,
        refs: &[i64],
    ) -> Result<Vec<(Labels, Vec<(usize, i64)>)>, QueryError> {
        let (Some(&first), Some(&last)) = (refs.first(), refs.last()) else {
            return Ok(Vec::new());
        };
        let lookback = self.opts.lookback_delta_ms;
        let (mint, maxt) = (first.saturating_sub(lookback).saturating_add(1), last);
        let series = self.select(vs, mint, maxt, 0, None)?;
        let mut out = Vec::with_capacity(series.len());
        let mut samples = Vec::new();
        for s in &series {
            self.decode(s, mint, maxt, &mut samples)?;
            let mut pts = Vec::new();
            for (i, &r) in refs.iter().enumerate() {
                self.tick(1)?;
                let idx = samples.partition_point(|s| s.0 <= r);
                if idx == 0 {
                    continue;
                }
                let (t, v) = samples[idx - 1];
                if t > r - lookback && !is_stale_nan(v) {
                    self.count_queryable(i, 1);
                    pts.push((i, s.start_timestamp_at(t)));
                }
            }
            if !pts.is_empty() {
                out.push((s.labels.clone(), pts));
            }
        }
        Ok(out)
    }

    /// `start_timestamp(vs)`: the selected sample's start timestamp in
    /// seconds at every step (0 when unknown).
    pub(crate) fn eval_start_timestamp(
        &mut self,
        vs: &VectorSelector,
    ) -> Result<Vec<RSeries>, QueryError> {
        let offset = match &vs.offset {
            Some(d) => self.resolve_duration(d)?,
            None => 0,
        };
        let at = self.resolve_at(vs.at);
        let refs = self.refs(at, offset);
        let sel = self.select_start_timestamps_at(vs, &refs)?;
        Ok(sel
            .into_iter()
            .map(|(labels, pts)| RSeries {
                labels,
                drop_name: true,
                points: pts
                    .into_iter()
                    .map(|(i, st)| (self.ts(i), st as f64 / 1000.0))
                    .collect(),
            })
            .collect())
    }

    /// Reference time of each step as seen by the first selector under `e`
    /// (its `@` and `offset`, and those of enclosing subqueries).
    pub(crate) fn ref_times_of(&self, e: &Expr) -> Result<Vec<i64>, QueryError> {
        let mut refs: Vec<i64> = (0..self.nsteps()).map(|i| self.ts(i)).collect();
        let mut cur = e;
        loop {
            let (at, offset, next): (Option<AtModifier>, Option<&Duration>, Option<&Expr>) =
                match cur {
                    Expr::VectorSelector(vs) => (vs.at, vs.offset.as_ref(), None),
                    Expr::MatrixSelector(ms) => (ms.vs.at, ms.vs.offset.as_ref(), None),
                    Expr::Subquery(sq) => (sq.at, sq.offset.as_ref(), Some(&*sq.expr)),
                    Expr::Paren(p) => (None, None, Some(&*p.expr)),
                    Expr::Unary(u) => (None, None, Some(&*u.expr)),
                    Expr::Aggregate(a) => (None, None, Some(&*a.expr)),
                    Expr::Binary(b) => (None, None, Some(&*b.lhs)),
                    Expr::Call(c) => (
                        None,
                        None,
                        c.args.iter().find(|a| {
                            matches!(expr_type(a), ValueType::Vector | ValueType::Matrix)
                        }),
                    ),
                    _ => (None, None, None),
                };
            if let Some(t) = self.resolve_at(at) {
                refs.iter_mut().for_each(|r| *r = t);
            }
            if let Some(d) = offset {
                let o = self.resolve_duration(d)?;
                refs.iter_mut().for_each(|r| *r -= o);
            }
            match next {
                Some(n) => cur = n,
                None => return Ok(refs),
            }
        }
    }

    pub(crate) fn eval_matrix_selector(
        &mut self,
        ms: &MatrixSelector,
        func: Option<&str>,
    ) -> Result<RangeData, QueryError> {
        let vs = &ms.vs;
        let range = self.resolve_duration(&ms.range)?;
        let offset = match &vs.offset {
            Some(d) => self.resolve_duration(d)?,
            None => 0,
        };
        let at = self.resolve_at(vs.at);
        let refs = self.refs(at, offset);
        let mut source = RangeSource::Decoded(Vec::new());
        if let (Some(&first), Some(&last)) = (refs.first(), refs.last()) {
            // Anchored/smoothed windows need the sample before the window
            // (and smoothed the one after it) too.
            let extra_before = if vs.anchored || vs.smoothed {
                self.opts.lookback_delta_ms
            } else {
                0
            };
            let extra_after = if vs.smoothed {
                self.opts.lookback_delta_ms
            } else {
                0
            };
            let mint = first
                .saturating_sub(range)
                .saturating_sub(extra_before)
                .saturating_add(1);
            let maxt = last.saturating_add(extra_after);
            let series = self.select(vs, mint, maxt, range, func)?;
            source = RangeSource::Stored { series, mint, maxt };
        }
        Ok(RangeData {
            source,
            range,
            refs,
            pos: vs.pos,
            anchored: vs.anchored,
            smoothed: vs.smoothed,
        })
    }

    pub(crate) fn eval_subquery(&mut self, sq: &SubqueryExpr) -> Result<RangeData, QueryError> {
        let range = self.resolve_duration(&sq.range)?;
        let step = match &sq.step {
            Some(d) => self.resolve_duration(d)?,
            None => self.opts.default_subquery_step_ms,
        };
        if step <= 0 {
            return Err(QueryError::exec(format!(
                "zero or negative step in subquery: {step}ms"
            )));
        }
        let offset = match &sq.offset {
            Some(d) => self.resolve_duration(d)?,
            None => 0,
        };
        let at = self.resolve_at(sq.at);
        let refs = self.refs(at, offset);
        let mut series = Vec::new();
        if let (Some(&first), Some(&last)) = (refs.first(), refs.last()) {
            // First multiple of the step strictly after the earliest window start.
            let lo = first.saturating_sub(range);
            let inner_start = lo
                .div_euclid(step)
                .saturating_mul(step)
                .saturating_add(step);
            // Every inner step costs memory even before any sample is read.
            let inner_steps = last.saturating_sub(inner_start) / step + 1;
            if inner_steps > self.opts.max_samples as i64 {
                return Err(QueryError::TooManySamples {
                    phase: "query execution",
                });
            }
            let saved = (self.start, self.end, self.interval);
            self.start = inner_start;
            self.end = last;
            self.interval = step;
            self.sub_depth += 1;
            let res = self.eval(&sq.expr);
            self.sub_depth -= 1;
            let n = self.nsteps();
            let start = self.start;
            (self.start, self.end, self.interval) = saved;
            match res? {
                Val::Vector(ss) => series = ss,
                Val::Scalar(vals) => {
                    let points = vals
                        .into_iter()
                        .enumerate()
                        .take(n)
                        .map(|(i, v)| (start + step * i as i64, v))
                        .collect();
                    series.push(RSeries {
                        labels: Labels::empty(),
                        drop_name: false,
                        points,
                    });
                }
                _ => {
                    return Err(QueryError::bad(
                        "subquery is only allowed on instant vector or scalar expressions",
                    ))
                }
            }
        }
        Ok(RangeData {
            source: RangeSource::Decoded(series),
            range,
            refs,
            pos: sq.pos,
            anchored: false,
            smoothed: false,
        })
    }

    // ---- results ----

    pub(crate) fn finish_instant(&mut self, v: Val, ts: i64) -> Result<Value, QueryError> {
        Ok(match v {
            Val::Scalar(s) => Value::Scalar {
                t: ts,
                v: s.first().copied().unwrap_or(f64::NAN),
            },
            Val::String(s) => Value::String { t: ts, v: s },
            Val::Vector(ss) => {
                let mut out = Vec::with_capacity(ss.len());
                for s in ss {
                    let labels = if s.drop_name {
                        s.labels.drop_names(&NAME_LIKE)
                    } else {
                        s.labels
                    };
                    for (_, v) in s.points {
                        out.push(Sample {
                            labels: labels.clone(),
                            t: ts,
                            v,
                        });
                    }
                }
                let mut seen = std::collections::HashSet::with_capacity(out.len());
                for s in &out {
                    if !seen.insert(&s.labels) {
                        return Err(QueryError::exec(
                            "vector cannot contain metrics with the same labelset",
                        ));
                    }
                }
                Value::Vector(out)
            }
            Val::Matrix(ss) => Value::Matrix(finish_matrix(ss)?),
        })
    }

    pub(crate) fn finish_range(&mut self, v: Val) -> Result<Value, QueryError> {
        Ok(match v {
            Val::Scalar(s) => Value::Matrix(vec![SeriesResult {
                labels: Labels::empty(),
                points: s
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (self.ts(i), v))
                    .collect(),
            }]),
            Val::Vector(ss) | Val::Matrix(ss) => Value::Matrix(finish_matrix(ss)?),
            Val::String(_) => {
                return Err(QueryError::bad(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector",
                ))
            }
        })
    }

    pub(crate) fn into_result(
        mut self,
        value: Value,
        started: Instant,
        prepared: Instant,
    ) -> QueryResult {
        self.stats.samples_loaded += self.decoded.get();
        self.stats.total_queryable_samples = self.queryable.get();
        self.stats.queryable_samples_per_step = self
            .per_step
            .iter()
            .enumerate()
            .map(|(i, c)| (self.ts(i), c.get()))
            .collect();
        self.stats.prepare_time = prepared.duration_since(started);
        self.stats.eval_time = prepared.elapsed();
        QueryResult {
            value,
            annotations: self.annos,
            stats: self.stats,
        }
    }
}

/// The single window of an instant evaluation, as a matrix.
fn instant_windows(ev: &Evaluator<'_>, rd: RangeData) -> Vec<RSeries> {
    let mut out = Vec::new();
    rd.for_each(ev, |labels, drop_name, pts| {
        if let Some((_, w, _)) = Windows::new(pts, &rd.refs, rd.range).next() {
            out.push(RSeries {
                labels: labels.clone(),
                drop_name,
                points: w.to_vec(),
            });
        }
    });
    out
}

/// Drops flagged names, merges series whose label sets became equal (an
/// error if they have a point at the same time), and sorts by labels.
fn finish_matrix(ss: Vec<RSeries>) -> Result<Vec<SeriesResult>, QueryError> {
    let mut out: Vec<SeriesResult> = ss
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .map(|s| SeriesResult {
            labels: if s.drop_name {
                s.labels.drop_names(&NAME_LIKE)
            } else {
                s.labels
            },
            points: s.points,
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut merged: Vec<SeriesResult> = Vec::with_capacity(out.len());
    for s in out {
        match merged.last_mut() {
            Some(last) if last.labels == s.labels => {
                let mut pts = std::mem::take(&mut last.points);
                pts.extend(s.points);
                pts.sort_by_key(|p| p.0);
                if pts.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(QueryError::exec(
                        "vector cannot contain metrics with the same labelset",
                    ));
                }
                last.points = pts;
            }
            _ => merged.push(s),
        }
    }
    Ok(merged)
}

/// Static type of an expression.
pub(crate) fn expr_type(e: &Expr) -> ValueType {
    match e {
        Expr::Number(_) => ValueType::Scalar,
        Expr::String(_) => ValueType::String,
        Expr::VectorSelector(_) => ValueType::Vector,
        Expr::MatrixSelector(_) | Expr::Subquery(_) => ValueType::Matrix,
        Expr::Paren(p) => expr_type(&p.expr),
        Expr::Unary(u) => expr_type(&u.expr),
        Expr::Binary(b) => {
            if expr_type(&b.lhs) == ValueType::Scalar && expr_type(&b.rhs) == ValueType::Scalar {
                ValueType::Scalar
            } else {
                ValueType::Vector
            }
        }
        Expr::Aggregate(_) => ValueType::Vector,
        Expr::Call(c) => crate::functions::return_type(&c.func),
    }
}

/// Strips parentheses.
pub(crate) fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}
