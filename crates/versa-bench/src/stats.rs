//! Latency samples and the table rows printed from them.

use std::time::Duration;

/// One finished request: when it started (from the run's start), how long it
/// took, whether it succeeded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) started: Duration,
    pub(crate) latency: Duration,
    pub(crate) ok: bool,
}

/// Latency statistics of a set of requests.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) count: usize,
    pub(crate) failed: usize,
    pub(crate) elapsed: Duration,
    sorted: Vec<Duration>,
}

impl Stats {
    pub(crate) fn new(mut latencies: Vec<Duration>, failed: usize, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        Self { count: latencies.len(), failed, elapsed, sorted: latencies }
    }

    /// Statistics of the samples that started within `[from, to)`.
    pub(crate) fn of_window(samples: &[Sample], from: Duration, to: Duration) -> Self {
        let window: Vec<&Sample> =
            samples.iter().filter(|s| s.started >= from && s.started < to).collect();
        let failed = window.iter().filter(|s| !s.ok).count();
        let latencies = window.iter().filter(|s| s.ok).map(|s| s.latency).collect();
        // An open-ended window ends with its last request.
        let last = window.iter().map(|s| s.started + s.latency).max().unwrap_or(from);
        Self::new(latencies, failed, to.min(last).saturating_sub(from))
    }

    pub(crate) fn pct(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let ix = ((self.sorted.len() as f64 - 1.0) * p).round() as usize;
        self.sorted[ix]
    }

    pub(crate) fn rps(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(crate) const HEADER: &str = "| path | ok | failed | req/s | p50 µs | p90 µs | p99 µs | max µs | p50 vs raw tract |\n|---|---|---|---|---|---|---|---|---|";

/// A table row; the last column compares p50 with the raw model's p50.
pub(crate) fn row(name: &str, s: &Stats, raw_p50: Duration) -> String {
    format!(
        "| {name} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× (+{:.0} µs) |",
        s.count,
        s.failed,
        s.rps(),
        us(s.pct(0.5)),
        us(s.pct(0.9)),
        us(s.pct(0.99)),
        us(s.pct(1.0)),
        us(s.pct(0.5)) / us(raw_p50).max(1e-9),
        us(s.pct(0.5)) - us(raw_p50),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_windows() {
        let ms = Duration::from_millis;
        let samples: Vec<Sample> = (0..100)
            .map(|i| Sample { started: ms(i), latency: ms(i + 1), ok: i % 10 != 0 })
            .collect();
        let all = Stats::of_window(&samples, ms(0), ms(100));
        assert_eq!((all.count, all.failed), (90, 10));
        assert_eq!(all.pct(1.0), ms(100));
        assert_eq!(all.pct(0.0), ms(2));
        let late = Stats::of_window(&samples, ms(50), ms(60));
        assert_eq!((late.count, late.failed), (9, 1));
        assert!((late.rps() - 900.0).abs() < 1e-6);
    }
}
