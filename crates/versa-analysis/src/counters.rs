//! Per-Pod cumulative counters, their window deltas, and the merge across Pods.
//!
//! The operator polls every Ready Pod for a [`Snapshot`] and keeps the previous one per
//! Pod. [`delta`] turns (previous, current) into a [`PodWindow`]:
//!
//! * no previous snapshot (new Pod, or the operator just started) → [`PodWindow::Baseline`]:
//!   the snapshot is only the starting point of the next window, never data;
//! * the process start time changed, any counter decreased, a histogram's bucket bounds
//!   changed, or the clock did not advance → [`PodWindow::Reset`]: no data from this Pod
//!   for this window (never negative or huge deltas), and the current snapshot becomes
//!   the new baseline;
//! * otherwise → [`PodWindow::Data`] with the per-(model, version) increase.
//!
//! A series absent from the previous snapshot but present in the current one (a version
//! that was loaded, or first served, during the window, in the same process) counts from
//! zero: the sidecar creates a version's counters at zero, and the unchanged process start
//! time guarantees they were not reset. A series that disappeared contributes nothing.

use std::collections::BTreeMap;

use crate::{Error, Result, Timestamp};

/// One series: a model version as the sidecar labels its metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: i64,
}

impl SeriesKey {
    /// The series of `model` version `version`.
    pub fn new(model: impl Into<String>, version: i64) -> Self {
        Self { model: model.into(), version }
    }
}

/// Who is at fault for a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    /// The server failed (internal error, unavailable, deadline exceeded in the server).
    Server,
    /// The model failed (inference error, NaN output rejected, ...).
    Model,
    /// The client sent a bad request (invalid argument, not found, ...).
    Client,
}

/// Failed requests by [`ErrorClass`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// [`ErrorClass::Server`] errors.
    pub server: u64,
    /// [`ErrorClass::Model`] errors.
    pub model: u64,
    /// [`ErrorClass::Client`] errors.
    pub client: u64,
}

impl ErrorCounts {
    /// The count of one class.
    pub fn get(&self, class: ErrorClass) -> u64 {
        match class {
            ErrorClass::Server => self.server,
            ErrorClass::Model => self.model,
            ErrorClass::Client => self.client,
        }
    }

    fn checked_sub(&self, earlier: &Self) -> Option<Self> {
        Some(Self {
            server: self.server.checked_sub(earlier.server)?,
            model: self.model.checked_sub(earlier.model)?,
            client: self.client.checked_sub(earlier.client)?,
        })
    }

    fn add(&mut self, other: &Self) {
        self.server = self.server.saturating_add(other.server);
        self.model = self.model.saturating_add(other.model);
        self.client = self.client.saturating_add(other.client);
    }
}

/// One finite histogram bucket: `count` observations were `<= le` seconds (cumulative).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Upper bound in seconds, finite.
    pub le: f64,
    /// Cumulative count of observations `<= le`.
    pub count: u64,
}

/// A Prometheus-style latency histogram, cumulative.
///
/// `buckets` are the finite buckets in ascending `le` order; the `+Inf` bucket is
/// implicit and equals `count` (all observations).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Finite buckets, ascending `le`, cumulative counts.
    pub buckets: Vec<Bucket>,
    /// Total observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of all observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    fn same_layout(&self, other: &Self) -> bool {
        self.buckets.len() == other.buckets.len()
            && self.buckets.iter().zip(&other.buckets).all(|(a, b)| a.le == b.le)
    }

    /// `self - earlier`, or `None` when the layout differs or anything decreased.
    fn checked_sub(&self, earlier: &Self) -> Option<Self> {
        // A series created before its first observation has no buckets yet.
        if earlier.buckets.is_empty() && earlier.count == 0 && earlier.sum == 0.0 {
            return Some(self.clone());
        }
        if !self.same_layout(earlier) || self.sum < earlier.sum {
            return None;
        }
        let buckets = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|(now, then)| {
                Some(Bucket { le: now.le, count: now.count.checked_sub(then.count)? })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            buckets,
            count: self.count.checked_sub(earlier.count)?,
            sum: self.sum - earlier.sum,
        })
    }

    /// Adds `other` into `self`; `false` (and `self` unchanged) when the layouts differ.
    /// An empty histogram with no buckets adopts `other`'s layout.
    pub fn add(&mut self, other: &Self) -> bool {
        if self.buckets.is_empty() && self.count == 0 {
            *self = Self { sum: self.sum + other.sum, ..other.clone() };
            return true;
        }
        if other.buckets.is_empty() && other.count == 0 {
            return true;
        }
        if !self.same_layout(other) {
            return false;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.count = mine.count.saturating_add(theirs.count);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        true
    }
}

/// The counters of one series, cumulative in a [`Snapshot`], increases in a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesCounters {
    /// Requests answered (successfully or not).
    pub requests: u64,
    /// Failed requests by class.
    pub errors: ErrorCounts,
    /// Request latency.
    pub latency: Histogram,
    /// The shadow copies this version ran as a mirror, per baseline version.
    pub mirror: Mirrors,
}

impl SeriesCounters {
    fn checked_sub(&self, earlier: &Self) -> Option<Self> {
        Some(Self {
            requests: self.requests.checked_sub(earlier.requests)?,
            errors: self.errors.checked_sub(&earlier.errors)?,
            latency: self.latency.checked_sub(&earlier.latency)?,
            mirror: self.mirror.checked_sub(&earlier.mirror)?,
        })
    }
}

/// The shadow copies one version ran as a mirror, by the version that answered the
/// clients (the baseline they are compared with): a rollout judges its candidate on
/// copies of its baseline's requests only, not of a third version's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mirrors(pub BTreeMap<i64, MirrorCounts>);

impl Mirrors {
    /// The copies of `baseline`'s requests; of every baseline's when `None`.
    pub fn of(&self, baseline: Option<i64>) -> MirrorCounts {
        match baseline {
            Some(b) => self.0.get(&b).cloned().unwrap_or_default(),
            None => {
                let mut all = MirrorCounts::default();
                for counts in self.0.values() {
                    all.add(counts);
                }
                all
            }
        }
    }

    /// Adds the copies of `baseline`'s requests; `false` when the ratio histograms'
    /// layouts differ.
    pub fn add_baseline(&mut self, baseline: i64, counts: &MirrorCounts) -> bool {
        self.0.entry(baseline).or_default().add(counts)
    }

    fn add(&mut self, other: &Self) -> bool {
        other.0.iter().all(|(b, counts)| self.add_baseline(*b, counts))
    }

    /// Per baseline; one new since `earlier` counts from zero, one gone contributes
    /// nothing (as series do).
    fn checked_sub(&self, earlier: &Self) -> Option<Self> {
        let mut out = BTreeMap::new();
        for (b, now) in &self.0 {
            let increase = match earlier.0.get(b) {
                Some(then) => now.checked_sub(then)?,
                None => now.clone(),
            };
            out.insert(*b, increase);
        }
        Some(Self(out))
    }
}

/// What became of the shadow copies one version ran as a mirror (requests another
/// version answered, also run on this one and compared).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MirrorCounts {
    /// Copies whose every output agreed with the client's answer.
    pub agree: u64,
    /// Copies with an output that did not.
    pub disagree: u64,
    /// Copies the mirror failed on, or whose answer could not be compared.
    pub error: u64,
    /// Copies not finished within the mirror's timeout.
    pub timeout: u64,
    /// Copies never run: over the bounds on shadow work.
    pub shed: u64,
    /// Copies never run: the mirror version was not AVAILABLE.
    pub unavailable: u64,
    /// Compared copies whose answer held NaN or an infinity.
    pub non_finite: u64,
    /// The mirror's CPU time over the baseline's on the same input (a histogram of
    /// ratios; `le` is a ratio, not seconds).
    pub latency_ratio: Histogram,
}

impl MirrorCounts {
    /// Copies compared: agreed or not.
    pub fn compared(&self) -> u64 {
        self.agree.saturating_add(self.disagree)
    }

    /// Copies the mirror ran (or was running when its time ran out).
    pub fn run(&self) -> u64 {
        self.compared().saturating_add(self.error).saturating_add(self.timeout)
    }

    fn checked_sub(&self, earlier: &Self) -> Option<Self> {
        Some(Self {
            agree: self.agree.checked_sub(earlier.agree)?,
            disagree: self.disagree.checked_sub(earlier.disagree)?,
            error: self.error.checked_sub(earlier.error)?,
            timeout: self.timeout.checked_sub(earlier.timeout)?,
            shed: self.shed.checked_sub(earlier.shed)?,
            unavailable: self.unavailable.checked_sub(earlier.unavailable)?,
            non_finite: self.non_finite.checked_sub(earlier.non_finite)?,
            latency_ratio: self.latency_ratio.checked_sub(&earlier.latency_ratio)?,
        })
    }

    /// Adds `other` in; `false` when the ratio histograms' layouts differ.
    pub fn add(&mut self, other: &Self) -> bool {
        self.agree = self.agree.saturating_add(other.agree);
        self.disagree = self.disagree.saturating_add(other.disagree);
        self.error = self.error.saturating_add(other.error);
        self.timeout = self.timeout.saturating_add(other.timeout);
        self.shed = self.shed.saturating_add(other.shed);
        self.unavailable = self.unavailable.saturating_add(other.unavailable);
        self.non_finite = self.non_finite.saturating_add(other.non_finite);
        self.latency_ratio.add(&other.latency_ratio)
    }
}

/// One Pod's cumulative counters at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When the sidecar process started; a change means its counters were reset.
    pub process_start: Timestamp,
    /// When the snapshot was taken.
    pub taken_at: Timestamp,
    /// Cumulative counters per series.
    pub series: BTreeMap<SeriesKey, SeriesCounters>,
}

impl Snapshot {
    /// The series of `model` only, at the same times: what a window of one
    /// model's metric keeps (another model's series can neither reset the
    /// Pod's window nor mismatch its buckets, nor take memory).
    pub fn of_model(&self, model: &str) -> Snapshot {
        Snapshot {
            process_start: self.process_start,
            taken_at: self.taken_at,
            series: self
                .series
                .iter()
                .filter(|(k, _)| k.model == model)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Why a Pod contributes no data to a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetReason {
    /// The sidecar's process start time changed (the container restarted).
    ProcessRestarted,
    /// A counter of this series went down, or its bucket bounds changed.
    CounterDecreased(SeriesKey),
    /// The snapshot is not later than the previous one.
    ClockNotAdvancing,
}

/// What one Pod contributes to a window; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub enum PodWindow {
    /// First snapshot of this Pod: only the start of the next window.
    Baseline,
    /// Counters were reset: no data from this Pod this window.
    Reset(ResetReason),
    /// The increase of every series over `[from, to]`.
    Data(WindowTotals),
}

/// The increase of every series over a window, for one Pod or merged over Pods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowTotals {
    /// Number of Pods whose data is in these totals.
    pub pods: usize,
    /// Increase per series.
    pub series: BTreeMap<SeriesKey, SeriesCounters>,
}

/// The window between two snapshots of the same Pod; see the [module docs](self).
pub fn delta(previous: Option<&Snapshot>, current: &Snapshot) -> PodWindow {
    let Some(previous) = previous else {
        return PodWindow::Baseline;
    };
    if previous.process_start != current.process_start {
        return PodWindow::Reset(ResetReason::ProcessRestarted);
    }
    if current.taken_at <= previous.taken_at {
        return PodWindow::Reset(ResetReason::ClockNotAdvancing);
    }
    let mut series = BTreeMap::new();
    for (key, now) in &current.series {
        let increase = match previous.series.get(key) {
            Some(then) => match now.checked_sub(then) {
                Some(increase) => increase,
                None => return PodWindow::Reset(ResetReason::CounterDecreased(key.clone())),
            },
            None => now.clone(),
        };
        series.insert(key.clone(), increase);
    }
    PodWindow::Data(WindowTotals { pods: 1, series })
}

impl WindowTotals {
    /// Sums the windows of several Pods: counts add, bucket counts add bucket by bucket.
    /// [`PodWindow::Baseline`] and [`PodWindow::Reset`] contribute nothing (and are not
    /// counted in [`pods`](Self::pods)).
    ///
    /// # Errors
    /// [`Error::BucketLayoutMismatch`] when two Pods report one series with different
    /// bucket bounds.
    pub fn merge<'a>(windows: impl IntoIterator<Item = &'a PodWindow>) -> Result<Self> {
        let mut merged = Self::default();
        for window in windows {
            let PodWindow::Data(totals) = window else { continue };
            merged.pods += totals.pods;
            for (key, counters) in &totals.series {
                let into = merged.series.entry(key.clone()).or_default();
                into.requests = into.requests.saturating_add(counters.requests);
                into.errors.add(&counters.errors);
                if !(into.latency.add(&counters.latency) && into.mirror.add(&counters.mirror)) {
                    return Err(Error::BucketLayoutMismatch {
                        model: key.model.clone(),
                        version: key.version,
                    });
                }
            }
        }
        Ok(merged)
    }

    /// The totals of one series; zero when no Pod reported it.
    pub fn get(&self, model: &str, version: i64) -> SeriesCounters {
        self.series.get(&SeriesKey::new(model, version)).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
