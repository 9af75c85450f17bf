//! The one error type of request handling: a canonical code and a message,
//! turned into a gRPC status or an HTTP status with TensorFlow Serving's
//! mapping.

use versa_core::Code;

/// What went wrong with a request, as TensorFlow Serving would report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServingError {
    pub code: Code,
    pub message: String,
}

impl ServingError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }

    /// HTTP status of the REST API for this code (TensorFlow Serving's table).
    pub fn http_status(&self) -> u16 {
        http_status(self.code)
    }
}

/// TensorFlow Serving's canonical code → HTTP status table.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown => 500,
        Code::InvalidArgument => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::FailedPrecondition => 400,
        Code::Aborted => 409,
        Code::OutOfRange => 400,
        Code::Unimplemented => 501,
        Code::Internal => 500,
        Code::Unavailable => 503,
        Code::DataLoss => 500,
        Code::Unauthenticated => 401,
    }
}

/// gRPC messages longer than this are cut, as upstream does.
const MAX_GRPC_MESSAGE: usize = 1024;

impl From<ServingError> for tonic::Status {
    fn from(e: ServingError) -> Self {
        let mut message = e.message;
        if message.len() > MAX_GRPC_MESSAGE {
            let mut cut = MAX_GRPC_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...TRUNCATED");
        }
        tonic::Status::new(tonic::Code::from_i32(e.code.value()), message)
    }
}

impl From<versa_core::ServableError> for ServingError {
    fn from(e: versa_core::ServableError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<versa_core::ResolveError> for ServingError {
    fn from(e: versa_core::ResolveError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<versa_onnx::convert::TensorError> for ServingError {
    fn from(e: versa_onnx::convert::TensorError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// The wire form of a core code.
pub fn proto_code(code: Code) -> versa_proto::tensorflow::error::Code {
    versa_proto::tensorflow::error::Code::try_from(code.value())
        .unwrap_or(versa_proto::tensorflow::error::Code::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_mapping_matches_upstream() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::FailedPrecondition, 400),
            (Code::ResourceExhausted, 429),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::Unauthenticated, 401),
            (Code::DataLoss, 500),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code), status, "{code}");
        }
    }

    #[test]
    fn long_grpc_messages_are_truncated() {
        let status: tonic::Status = ServingError::invalid_argument("é".repeat(1000)).into();
        assert!(status.message().ends_with("...TRUNCATED"));
        assert!(status.message().len() <= MAX_GRPC_MESSAGE + "...TRUNCATED".len());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn core_and_wire_codes_agree() {
        for v in 0..=16 {
            let wire = versa_proto::tensorflow::error::Code::try_from(v).expect("wire code");
            let grpc = tonic::Code::from_i32(v);
            assert_eq!(wire as i32, grpc as i32);
        }
    }
}
