//! A prediction request is counted exactly once, even when its handler
//! never finishes: tonic drops a handler when the caller's `grpc-timeout`
//! passes (before the handler's own deadline, which starts a little later),
//! and both servers drop it when the client goes away. Without this, a
//! version too slow for its callers' deadlines would show fewer requests
//! and no errors — and a canary analysis would read "too few requests"
//! instead of "failing".

use crate::serving::{Answered, Serving};
use std::time::Duration;
use tokio::time::Instant;
use versa_core::Code;

/// A request on its way, recorded on [`finish`](Self::finish) or, if it is
/// dropped first, on drop: as `DEADLINE_EXCEEDED` when its deadline has
/// passed (see [`abandoned`]), else as `CANCELLED` (the client went away).
#[derive(Debug)]
pub(crate) struct Recorded<'a> {
    serving: &'a Serving,
    model: String,
    /// Who answered, once known (filled in while the request is served).
    pub(crate) answered: Answered,
    api: &'static str,
    entrypoint: &'static str,
    started: std::time::Instant,
    deadline: Option<Instant>,
    recorded: bool,
}

impl<'a> Recorded<'a> {
    /// A request for `model` through `api` / `entrypoint`, started at `started`.
    pub(crate) fn new(
        serving: &'a Serving,
        model: &str,
        (api, entrypoint): (&'static str, &'static str),
        started: std::time::Instant,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            serving,
            model: model.to_owned(),
            answered: Answered::default(),
            api,
            entrypoint,
            started,
            deadline,
            recorded: false,
        }
    }

    /// Records the request as answered with `code`.
    pub(crate) fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let elapsed: Duration = self.started.elapsed();
        self.serving.record(&self.model, &self.answered, self.api, self.entrypoint, code, elapsed);
    }
}

/// How early before its own deadline a dropped request still counts as
/// past it: tonic's timer for `grpc-timeout` starts when the request
/// arrives, the handler's when it starts (later), and timers fire on
/// millisecond ticks, so tonic drops a handler a little before the
/// handler's deadline.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

/// The code of a request dropped unanswered at `now`: `DEADLINE_EXCEEDED`
/// at (or within [`DEADLINE_SLACK`] of) its deadline, else `CANCELLED`.
fn abandoned(deadline: Option<Instant>, now: Instant) -> Code {
    match deadline {
        Some(deadline) if now + DEADLINE_SLACK >= deadline => Code::DeadlineExceeded,
        _ => Code::Cancelled,
    }
}

impl Drop for Recorded<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            let code = abandoned(self.deadline, Instant::now());
            tracing::debug!(
                model = %self.model,
                version = ?self.answered.version,
                label = ?self.answered.label,
                code = %code,
                "request dropped before its answer"
            );
            self.record(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_request_past_its_deadline_exceeded_it_else_was_cancelled() {
        let now = Instant::now();
        assert_eq!(abandoned(Some(now), now), Code::DeadlineExceeded);
        assert_eq!(abandoned(Some(now), now + Duration::from_millis(1)), Code::DeadlineExceeded);
        let tick_early = now + Duration::from_millis(2);
        assert_eq!(abandoned(Some(tick_early), now), Code::DeadlineExceeded, "tonic fires first");
        assert_eq!(abandoned(Some(now + Duration::from_secs(1)), now), Code::Cancelled);
        assert_eq!(abandoned(None, now), Code::Cancelled);
    }
}
