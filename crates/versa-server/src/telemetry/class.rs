//! Who is at fault for a failed request: the one mapping from a request's
//! status to an error class, shared by the Telemetry snapshot (and so by
//! the operator's `errorRate`), and the two exceptions that depend on how
//! long the client waited ([`class_by_wait`]).

use std::time::Duration;
use versa_core::Code;

/// Who is at fault for a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    /// The server failed to answer a request it should have answered: its
    /// own or the model's failure (a model-run failure is INTERNAL too), or
    /// it was overloaded, slow or stopping.
    Server,
    /// The model failed, where the server can tell that from its own
    /// failure. It cannot yet from a status alone (both are INTERNAL), so
    /// [`error_class`] never answers this; the class exists so that the
    /// snapshot's shape need not change when it can.
    Model,
    /// The request was wrong, or was abandoned by its client.
    Client,
}

impl ErrorClass {
    /// Every class.
    pub const ALL: [Self; 3] = [Self::Server, Self::Model, Self::Client];

    /// The class's name: the `class` label of
    /// `versa_requests_reclassified_total`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Model => "model",
            Self::Client => "client",
        }
    }

    /// The class named `name`, if any.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.name() == name)
    }
}

/// The class a request that failed with `code` is counted in when it is
/// not [`error_class`]'s, from how long its client waited: `floor` is
/// `--telemetry_min_client_deadline_ms` (zero: never), `client_timeout`
/// the deadline the client set (gRPC `grpc-timeout`; `None` when it set
/// none, or the deadline is the server's own), `waited` how long the
/// request was in the server's hands.
///
/// - `DEADLINE_EXCEEDED` under a client deadline shorter than `floor` is
///   the client's: it asked for the impossible (`grpc-timeout: 1n`), and
///   must not be able to fail a canary that way.
/// - `CANCELLED` after waiting at least `floor` unanswered is the
///   server's, as a missed deadline of that length would be: a version too
///   slow for its callers, who gave up without telling a deadline, must
///   count as failing (it is never timed: latency is of successes only).
///   A client cannot make a fast version look failing this way: only a
///   request still unanswered can be cancelled.
pub fn class_by_wait(
    code: Code,
    waited: Duration,
    client_timeout: Option<Duration>,
    floor: Duration,
) -> Option<ErrorClass> {
    if floor.is_zero() {
        return None;
    }
    match code {
        Code::DeadlineExceeded if client_timeout.is_some_and(|t| t < floor) => {
            Some(ErrorClass::Client)
        }
        Code::Cancelled if waited >= floor => Some(ErrorClass::Server),
        _ => None,
    }
}

/// The class of a request answered with `code`; `None` for `OK`.
///
/// | Class | Codes | Why |
/// |---|---|---|
/// | [`Server`](ErrorClass::Server) | `INTERNAL`, `UNKNOWN`, `DATA_LOSS` | the server or the model failed (a model run that fails on checked inputs is `INTERNAL`) |
/// | | `UNAVAILABLE`, `ABORTED` | the server could not serve it now (stopping, pool closed, a transition) |
/// | | `DEADLINE_EXCEEDED` | the version was too slow for the caller's deadline: a slow candidate must count against it (unless the client's deadline was below the floor: [`class_by_wait`]) |
/// | | `RESOURCE_EXHAUSTED` | load shedding: the server was at a bound |
/// | [`Client`](ErrorClass::Client) | `INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `OUT_OF_RANGE` | a malformed request, inputs that do not fit the signature, an unknown signature |
/// | | `NOT_FOUND`, `ALREADY_EXISTS` | a model, version or label that is not served |
/// | | `UNIMPLEMENTED` | an API the server does not offer for this model |
/// | | `PERMISSION_DENIED`, `UNAUTHENTICATED` | the caller's credentials |
/// | | `CANCELLED` | the client went away before the answer (unless it had waited at least the floor: [`class_by_wait`]) |
pub fn error_class(code: Code) -> Option<ErrorClass> {
    match code {
        Code::Ok => None,
        Code::Internal
        | Code::Unknown
        | Code::DataLoss
        | Code::Unavailable
        | Code::Aborted
        | Code::DeadlineExceeded
        | Code::ResourceExhausted => Some(ErrorClass::Server),
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Cancelled => Some(ErrorClass::Client),
    }
}

/// Every canonical code, in wire order.
pub const ALL_CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// The code whose [`Code::name`] is `name` (the `status` label of the
/// request counters), if any.
pub fn code_named(name: &str) -> Option<Code> {
    ALL_CODES.into_iter().find(|code| code.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brief_s_examples_are_classed_as_decided() {
        use ErrorClass::{Client, Server};
        let table = [
            (Code::Ok, None),
            (Code::Internal, Some(Server)),
            (Code::Unavailable, Some(Server)),
            (Code::DeadlineExceeded, Some(Server)),
            (Code::ResourceExhausted, Some(Server)),
            (Code::Unknown, Some(Server)),
            (Code::DataLoss, Some(Server)),
            (Code::Aborted, Some(Server)),
            (Code::InvalidArgument, Some(Client)),
            (Code::NotFound, Some(Client)),
            (Code::FailedPrecondition, Some(Client)),
            (Code::OutOfRange, Some(Client)),
            (Code::AlreadyExists, Some(Client)),
            (Code::Unimplemented, Some(Client)),
            (Code::PermissionDenied, Some(Client)),
            (Code::Unauthenticated, Some(Client)),
            (Code::Cancelled, Some(Client)),
        ];
        assert_eq!(table.len(), ALL_CODES.len(), "every code is decided here");
        for (code, class) in table {
            assert_eq!(error_class(code), class, "{code}");
        }
    }

    #[test]
    fn only_ok_is_not_an_error() {
        for code in ALL_CODES {
            assert_eq!(error_class(code).is_none(), code == Code::Ok, "{code}");
        }
    }

    #[test]
    fn a_client_deadline_under_the_floor_is_the_client_s_and_a_long_wait_the_server_s() {
        let floor = Duration::from_millis(100);
        let ms = Duration::from_millis;
        let class = |code, waited, timeout| class_by_wait(code, waited, timeout, floor);
        // grpc-timeout: 1n, and anything under the floor: the client's.
        let nano = Some(Duration::from_nanos(1));
        assert_eq!(class(Code::DeadlineExceeded, ms(0), nano), Some(ErrorClass::Client));
        assert_eq!(class(Code::DeadlineExceeded, ms(99), Some(ms(99))), Some(ErrorClass::Client));
        // At the floor or above, or the server's own deadline: as its code says.
        assert_eq!(class(Code::DeadlineExceeded, ms(100), Some(ms(100))), None);
        assert_eq!(class(Code::DeadlineExceeded, ms(5), None), None);
        // A cancel after waiting the floor unanswered: the server's.
        assert_eq!(class(Code::Cancelled, ms(100), None), Some(ErrorClass::Server));
        assert_eq!(class(Code::Cancelled, ms(250), Some(ms(500))), Some(ErrorClass::Server));
        assert_eq!(class(Code::Cancelled, ms(99), None), None, "gave up early: the client's");
        // No other code moves, and a zero floor moves nothing.
        for code in ALL_CODES {
            if !matches!(code, Code::DeadlineExceeded | Code::Cancelled) {
                assert_eq!(class(code, ms(1_000), nano), None, "{code}");
            }
            assert_eq!(class_by_wait(code, ms(1_000), nano, Duration::ZERO), None, "{code}");
        }
    }

    #[test]
    fn classes_are_found_by_their_label_names() {
        for class in ErrorClass::ALL {
            assert_eq!(ErrorClass::named(class.name()), Some(class));
        }
        assert_eq!(ErrorClass::named("nobody"), None);
    }

    #[test]
    fn codes_are_found_by_their_label_names() {
        for (value, code) in ALL_CODES.into_iter().enumerate() {
            assert_eq!(code.value() as usize, value, "ALL_CODES is in wire order");
            assert_eq!(code_named(code.name()), Some(code));
        }
        assert_eq!(code_named("NOPE"), None);
        assert_eq!(code_named(""), None);
    }
}
