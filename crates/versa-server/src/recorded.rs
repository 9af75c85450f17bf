//! A prediction request is counted exactly once, even when its handler
//! never finishes: tonic drops a handler when the caller's `grpc-timeout`
//! passes (before the handler's own deadline, which starts a little later),
//! and both servers drop it when the client goes away. Without this, a
//! version too slow for its callers' deadlines would show fewer requests
//! and no errors — and a canary analysis would read "too few requests"
//! instead of "failing". A handler that panics is dropped as the panic
//! unwinds it, and recorded as `INTERNAL`, the server's failure (the panic
//! guards answer it so), never as a client's `CANCELLED`.

use crate::serving::Answered;
use crate::telemetry::{ErrorClass, class_by_wait};
use std::time::Duration;
use tokio::time::Instant;
use versa_core::Code;

/// A request as it is recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished<'r> {
    pub(crate) model: &'r str,
    pub(crate) answered: &'r Answered,
    pub(crate) api: &'static str,
    pub(crate) entrypoint: &'static str,
    pub(crate) code: Code,
    pub(crate) elapsed: Duration,
    /// The error class Telemetry counts it in when it is not its code's
    /// ([`class_by_wait`]).
    pub(crate) reclassified: Option<ErrorClass>,
}

/// Where requests are recorded: [`crate::serving::Serving`] (its metrics),
/// or a test's tally.
pub(crate) trait Sink: std::fmt::Debug + Sync {
    /// Counts one finished request.
    fn record_finished(&self, request: &Finished<'_>);
    /// `--telemetry_min_client_deadline_ms` (zero: off).
    fn min_client_deadline(&self) -> Duration;
}

/// A request on its way, recorded on [`finish`](Self::finish) or, if it is
/// dropped first, on drop: as `INTERNAL` when its handler panicked, as
/// `DEADLINE_EXCEEDED` when its deadline has passed (see [`abandoned`]),
/// else as `CANCELLED` (the client went away). Whether a failure is the
/// client's or the server's also depends on how long the client waited
/// ([`class_by_wait`]).
#[derive(Debug)]
pub(crate) struct Recorded<'a> {
    sink: &'a dyn Sink,
    model: String,
    /// Who answered, once known (filled in while the request is served).
    pub(crate) answered: Answered,
    api: &'static str,
    entrypoint: &'static str,
    started: std::time::Instant,
    deadline: Option<Instant>,
    /// The deadline the client set (gRPC `grpc-timeout`), as a duration.
    client_timeout: Option<Duration>,
    recorded: bool,
}

impl<'a> Recorded<'a> {
    /// A request for `model` through `api` / `entrypoint`, started at
    /// `started`, to be answered by `deadline` (the client's or the
    /// server's: see [`with_client_timeout`](Self::with_client_timeout)).
    pub(crate) fn new(
        sink: &'a dyn Sink,
        model: &str,
        (api, entrypoint): (&'static str, &'static str),
        started: std::time::Instant,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            sink,
            model: model.to_owned(),
            answered: Answered::default(),
            api,
            entrypoint,
            started,
            deadline,
            client_timeout: None,
            recorded: false,
        }
    }

    /// The deadline was set by the client, `timeout` after the request
    /// arrived: one under `--telemetry_min_client_deadline_ms` is the
    /// client's doing when it is exceeded.
    pub(crate) fn with_client_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.client_timeout = timeout;
        self
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
        let floor = self.sink.min_client_deadline();
        self.sink.record_finished(&Finished {
            model: &self.model,
            answered: &self.answered,
            api: self.api,
            entrypoint: self.entrypoint,
            code,
            elapsed,
            reclassified: class_by_wait(code, elapsed, self.client_timeout, floor),
        });
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

/// The code of a request dropped unanswered at `now`: `INTERNAL` while
/// its thread `panicking` (the handler panicked, and is dropped as the
/// panic unwinds it: the server's failure, answered INTERNAL by the panic
/// guards), else as [`abandoned`] says.
fn dropped(panicking: bool, deadline: Option<Instant>, now: Instant) -> Code {
    if panicking { Code::Internal } else { abandoned(deadline, now) }
}

impl Drop for Recorded<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            let code = dropped(std::thread::panicking(), self.deadline, Instant::now());
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
    use futures::FutureExt as _;

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

    /// Records what it is given.
    #[derive(Debug, Default)]
    struct Tally {
        floor: Duration,
        recorded: std::sync::Mutex<Vec<(Code, Option<ErrorClass>)>>,
    }

    impl Sink for Tally {
        fn record_finished(&self, request: &Finished<'_>) {
            let mut recorded =
                self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            recorded.push((request.code, request.reclassified));
        }

        fn min_client_deadline(&self) -> Duration {
            self.floor
        }
    }

    impl Tally {
        fn taken(&self) -> Vec<(Code, Option<ErrorClass>)> {
            std::mem::take(&mut *self.recorded.lock().expect("not poisoned"))
        }
    }

    fn request(sink: &Tally, deadline: Option<Instant>) -> Recorded<'_> {
        Recorded::new(sink, "m", ("Predict", "GRPC"), std::time::Instant::now(), deadline)
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_recorded_as_internal_not_cancelled() {
        let tally = Tally::default();
        // As the gRPC and REST panic guards run a handler.
        let handler = async {
            let _recorded = request(&tally, None);
            tokio::task::yield_now().await;
            panic!("handler bug");
        };
        let caught = std::panic::AssertUnwindSafe(handler).catch_unwind().await;
        assert!(caught.is_err());
        assert_eq!(tally.taken(), [(Code::Internal, None)]);
        // Dropped without a panic, it was the client's leaving.
        drop(request(&tally, None));
        assert_eq!(tally.taken(), [(Code::Cancelled, None)]);
    }

    #[test]
    fn how_long_the_client_waited_decides_whose_fault_it_was() {
        let tally = Tally { floor: Duration::from_millis(30), ..Tally::default() };
        // grpc-timeout: 1n, past at once: DEADLINE_EXCEEDED, the client's.
        let tiny = Duration::from_nanos(1);
        drop(request(&tally, Some(crate::deadline::after(tiny))).with_client_timeout(Some(tiny)));
        assert_eq!(tally.taken(), [(Code::DeadlineExceeded, Some(ErrorClass::Client))]);
        // The same deadline set by the server: the server's.
        drop(request(&tally, Some(crate::deadline::after(tiny))));
        assert_eq!(tally.taken(), [(Code::DeadlineExceeded, None)]);
        // Given up at once: the client's; after the floor unanswered: the server's.
        drop(request(&tally, None));
        let waited = request(&tally, None);
        std::thread::sleep(Duration::from_millis(40));
        drop(waited);
        assert_eq!(
            tally.taken(),
            [(Code::Cancelled, None), (Code::Cancelled, Some(ErrorClass::Server))]
        );
        // Answered: as answered.
        request(&tally, None).finish(Code::Ok);
        assert_eq!(tally.taken(), [(Code::Ok, None)]);
    }
}
