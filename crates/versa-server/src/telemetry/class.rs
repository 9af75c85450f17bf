//! Who is at fault for a failed request: the one mapping from a request's
//! status to an error class, shared by the Telemetry snapshot (and so by
//! the operator's `errorRate`).

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

/// The class of a request answered with `code`; `None` for `OK`.
///
/// | Class | Codes | Why |
/// |---|---|---|
/// | [`Server`](ErrorClass::Server) | `INTERNAL`, `UNKNOWN`, `DATA_LOSS` | the server or the model failed (a model run that fails on checked inputs is `INTERNAL`) |
/// | | `UNAVAILABLE`, `ABORTED` | the server could not serve it now (stopping, pool closed, a transition) |
/// | | `DEADLINE_EXCEEDED` | the version was too slow for the caller's deadline: a slow candidate must count against it |
/// | | `RESOURCE_EXHAUSTED` | load shedding: the server was at a bound |
/// | [`Client`](ErrorClass::Client) | `INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `OUT_OF_RANGE` | a malformed request, inputs that do not fit the signature, an unknown signature |
/// | | `NOT_FOUND`, `ALREADY_EXISTS` | a model, version or label that is not served |
/// | | `UNIMPLEMENTED` | an API the server does not offer for this model |
/// | | `PERMISSION_DENIED`, `UNAUTHENTICATED` | the caller's credentials |
/// | | `CANCELLED` | the client went away before the answer |
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
    fn codes_are_found_by_their_label_names() {
        for (value, code) in ALL_CODES.into_iter().enumerate() {
            assert_eq!(code.value() as usize, value, "ALL_CODES is in wire order");
            assert_eq!(code_named(code.name()), Some(code));
        }
        assert_eq!(code_named("NOPE"), None);
        assert_eq!(code_named(""), None);
    }
}
