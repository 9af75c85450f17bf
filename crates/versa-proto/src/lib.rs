//! TensorFlow Serving's wire contract, generated from `proto/`.
//!
//! Package `tensorflow.serving` is [`tensorflow::serving`], TensorFlow's own
//! `tensorflow` package (tensors, signatures, error codes) is [`tensorflow`].
//! Both gRPC services come with a tonic client and server:
//! [`tensorflow::serving::prediction_service_client`],
//! [`tensorflow::serving::prediction_service_server`],
//! [`tensorflow::serving::model_service_client`] and
//! [`tensorflow::serving::model_service_server`].

/// Generated code; lints of our own do not apply to it.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod tensorflow {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));

    /// TensorFlow's canonical error codes (the gRPC status codes).
    pub mod error {
        include!(concat!(env!("OUT_DIR"), "/tensorflow.error.rs"));
    }

    /// TensorFlow Serving's messages and services.
    pub mod serving {
        include!(concat!(env!("OUT_DIR"), "/tensorflow.serving.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every file under `proto/`, for text-format
/// parsing and gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/versa_descriptor.bin"));

pub use tensorflow::serving;
