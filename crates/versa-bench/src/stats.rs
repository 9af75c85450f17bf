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

    /// The `p`-quantile (`p` in 0..=1).
    pub(crate) fn pct(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let ix = ((self.sorted.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
        self.sorted[ix.min(self.sorted.len() - 1)]
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
    fn percentiles_and_rate() {
        let ms = Duration::from_millis;
        let stats = Stats::new((1..=100).rev().map(ms).collect(), 3, Duration::from_secs(2));
        assert_eq!((stats.count, stats.failed), (100, 3));
        assert_eq!(stats.pct(0.0), ms(1));
        assert_eq!(stats.pct(0.5), ms(51));
        assert_eq!(stats.pct(0.99), ms(99));
        assert_eq!(stats.pct(1.0), ms(100));
        assert!((stats.rps() - 50.0).abs() < 1e-9);
        assert_eq!(Stats::new(vec![], 0, Duration::ZERO).pct(0.5), Duration::ZERO);
    }
}
