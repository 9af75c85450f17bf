//! Deadlines from durations that a client or a flag chose: never an
//! overflow, whatever the duration.

use std::time::Duration;
use tokio::time::Instant;

/// Far enough ahead to mean "no deadline", near enough to add to any instant.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Now plus `timeout`, capped at about a century from now.
pub fn after(timeout: Duration) -> Instant {
    Instant::now() + timeout.min(FOREVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_timeouts_do_not_overflow() {
        let far = after(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(3600 * 24 * 365));
        let near = after(Duration::from_millis(10));
        assert!(near <= Instant::now() + Duration::from_millis(10));
    }
}
