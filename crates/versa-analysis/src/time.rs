//! Wall-clock instants as plain data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An instant in milliseconds since the Unix epoch.
///
/// Every function in this crate takes `now` as an argument instead of reading a clock,
/// so decisions are reproducible and testable. Serialized as a plain integer; the CRD
/// may present it as RFC 3339.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// The instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this instant is; zero if it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let ms = self.0.saturating_sub(earlier.0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_since_saturate_instead_of_wrapping() {
        let t = Timestamp::from_secs(10);
        assert_eq!(t.saturating_add(Duration::from_millis(1500)), Timestamp(11_500));
        assert_eq!(
            Timestamp(i64::MAX - 1).saturating_add(Duration::from_secs(5)),
            Timestamp(i64::MAX)
        );
        assert_eq!(t.since(Timestamp::from_secs(4)), Duration::from_secs(6));
        // going backwards is zero, not a huge wrapped duration
        assert_eq!(Timestamp::from_secs(4).since(t), Duration::ZERO);
    }
}
