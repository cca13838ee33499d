//! Series creation and the append path.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::series::{AppendCtx, Appended, MemSeries, Reject, SeriesState};
use super::{Head, SeriesRef};
use crate::error::StorageError;
use crate::labels::{LabelError, Labels};

impl Head {
    #[inline]
    fn append_ctx(&self, sref: u64) -> AppendCtx<'_> {
        AppendCtx {
            disk: self.chunk_disk.as_ref(),
            sref,
            samples_per_chunk: self.opts.samples_per_chunk,
            ooo_samples_per_chunk: self.opts.ooo_samples_per_chunk,
            chunk_range: self.opts.chunk_range_ms,
            ooo_window: self.opts.out_of_order_window_ms,
            head_max: self.max_time.load(Ordering::Relaxed),
            min_valid: self.min_valid_time.load(Ordering::Relaxed),
        }
    }

    /// The series with these labels, created if new. `created` tells the
    /// caller to log the series to the WAL before its samples.
    pub fn get_or_create(&self, labels: &Labels) -> Result<(SeriesRef, bool), StorageError> {
        let (s, created) = self.get_or_create_series(labels, None)?;
        Ok((SeriesRef(s.sref), created))
    }

    /// WAL replay: recreates a series under the ref it had. When the labels
    /// already exist (under any ref) that series is returned with
    /// `created == false`, and the caller maps the logged ref to it. Later
    /// refs are assigned above `sref`.
    pub fn get_or_create_with_ref(
        &self,
        sref: SeriesRef,
        labels: &Labels,
    ) -> Result<(SeriesRef, bool), StorageError> {
        if sref.0 == 0 {
            return Err(StorageError::Internal(format!(
                "series ref 0 is invalid (series {labels})"
            )));
        }
        let (s, created) = self.get_or_create_series(labels, Some(sref.0))?;
        Ok((SeriesRef(s.sref), created))
    }

    pub(crate) fn get_or_create_series(
        &self,
        labels: &Labels,
        want_ref: Option<u64>,
    ) -> Result<(Arc<MemSeries>, bool), StorageError> {
        if let Some(r) = want_ref {
            // Even when the labels map to an existing series: the logged ref
            // may still appear in the WAL, so it must never be handed out.
            self.last_ref.fetch_max(r, Ordering::Relaxed);
        }
        let hash = labels.hash();
        let hstripe = &self.by_hash[hash as usize & self.mask].0;
        if let Some(s) = hstripe.read().get(hash, labels) {
            return Ok((s.clone(), false));
        }
        if labels.is_empty() {
            return Err(LabelError::Empty.into());
        }
        let mut hs = hstripe.write();
        if let Some(s) = hs.get(hash, labels) {
            return Ok((s.clone(), false));
        }
        let sref = match want_ref {
            Some(r) => r,
            None => self.last_ref.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let series = Arc::new(MemSeries::new(labels.clone(), sref));
        {
            let mut rs = self.by_ref[sref as usize & self.mask].0.write();
            if let Some(other) = rs.get(&sref) {
                return Err(StorageError::Internal(format!(
                    "series ref {sref} is already used by {} (while creating {labels})",
                    other.labels
                )));
            }
            rs.insert(sref, series.clone());
        }
        hs.insert(hash, series.clone());
        // Indexed before the hash stripe is released, so that once anyone can
        // find this series by its labels, queries can find it too.
        self.index.write().add(sref, labels);
        drop(hs);
        self.num_series.fetch_add(1, Ordering::Relaxed);
        Ok((series, true))
    }

    /// Appends a sample to the series with these labels, creating it if new
    /// (but not when the sample is refused).
    pub fn append(&self, labels: &Labels, t: i64, v: f64) -> Result<SeriesRef, StorageError> {
        self.append_full(labels, t, v).map(|(r, _)| r)
    }

    /// As [`Head::append`], also telling whether the series was created.
    pub fn append_full(
        &self,
        labels: &Labels,
        t: i64,
        v: f64,
    ) -> Result<(SeriesRef, bool), StorageError> {
        self.append_full_with_st(labels, t, v, 0)
    }

    /// As [`Head::append`], with the sample's start timestamp `st` (ms; 0 =
    /// unknown, stored as nothing). See `head/st.rs`.
    pub fn append_with_st(
        &self,
        labels: &Labels,
        t: i64,
        v: f64,
        st: i64,
    ) -> Result<SeriesRef, StorageError> {
        self.append_full_with_st(labels, t, v, st).map(|(r, _)| r)
    }

    /// As [`Head::append_full`], with the sample's start timestamp.
    pub fn append_full_with_st(
        &self,
        labels: &Labels,
        t: i64,
        v: f64,
        start_t: i64,
    ) -> Result<(SeriesRef, bool), StorageError> {
        // A truncation may drop the series between lookup and append; then
        // look it up (create it) again.
        for _ in 0..4 {
            let existing = {
                let hash = labels.hash();
                let stripe = self.by_hash[hash as usize & self.mask].0.read();
                stripe.get(hash, labels).cloned()
            };
            let (s, created) = match existing {
                Some(s) => (s, false),
                None => {
                    // Do not create a series for a sample that would be
                    // refused anyway: the caller logs series to the WAL only
                    // when told they were created, i.e. on success.
                    let cx = self.append_ctx(0);
                    if let Err(rej) = SeriesState::check_first(t, &cx) {
                        return Err(rejection(rej, labels, t, v, cx.ooo_window));
                    }
                    self.get_or_create_series(labels, None)?
                }
            };
            let cx = self.append_ctx(s.sref);
            let mut st = s.state.lock();
            if st.removed {
                continue;
            }
            let r = st.append(t, v, &cx);
            if start_t != 0 && matches!(r, Ok(Appended::InOrder | Appended::OutOfOrder)) {
                self.st.record(s.sref, t, start_t);
            }
            drop(st);
            return match r {
                Ok(_) => {
                    self.note_time(t);
                    Ok((SeriesRef(s.sref), created))
                }
                Err(rej) => Err(rejection(rej, &s.labels, t, v, cx.ooo_window)),
            };
        }
        Err(StorageError::Internal(format!(
            "series {labels} kept being removed while appending"
        )))
    }

    /// Appends a sample to a series known by ref (the hot path: one stripe
    /// read lock and the series' mutex, no allocation).
    #[inline]
    pub fn append_ref(&self, sref: SeriesRef, t: i64, v: f64) -> Result<(), StorageError> {
        self.append_ref_with_st(sref, t, v, 0)
    }

    /// As [`Head::append_ref`], with the sample's start timestamp `st` (ms;
    /// 0 = unknown). Series without start timestamps pay one branch.
    #[inline]
    pub fn append_ref_with_st(
        &self,
        sref: SeriesRef,
        t: i64,
        v: f64,
        start_t: i64,
    ) -> Result<(), StorageError> {
        let cx = self.append_ctx(sref.0);
        let stripe = self.by_ref[sref.0 as usize & self.mask].0.read();
        let Some(s) = stripe.get(&sref.0) else {
            return Err(StorageError::UnknownSeriesRef(sref.0));
        };
        let mut st = s.state.lock();
        if st.removed {
            return Err(StorageError::UnknownSeriesRef(sref.0));
        }
        match st.append(t, v, &cx) {
            Ok(a) => {
                if start_t != 0 && a != Appended::Duplicate {
                    self.st.record(sref.0, t, start_t);
                }
                drop(st);
                drop(stripe);
                self.note_time(t);
                Ok(())
            }
            Err(rej) => Err(rejection(rej, &s.labels, t, v, cx.ooo_window)),
        }
    }
}

#[cold]
fn rejection(rej: Reject, labels: &Labels, t: i64, v: f64, window_ms: i64) -> StorageError {
    match rej {
        Reject::TooOld { min_valid } => StorageError::TooOldSample {
            series: labels.clone(),
            timestamp: t,
            min_valid,
        },
        Reject::OutOfOrder { last } => StorageError::OutOfOrderSample {
            series: labels.clone(),
            timestamp: t,
            last,
            window_ms,
        },
        Reject::Duplicate { existing } => StorageError::DuplicateSample {
            series: labels.clone(),
            timestamp: t,
            existing,
            new: v,
        },
    }
}
