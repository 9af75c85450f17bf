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

/// Versa's own gRPC extensions (package `versa.v1`, from this crate's
/// `proto/`), beside TensorFlow Serving's contract and never inside it:
/// [`versa::v1::telemetry_server`] and [`versa::v1::telemetry_client`], the
/// per-version request counters the operator reads on the ModelService port.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod versa {
    /// Version 1 of Versa's extensions.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/versa.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every file compiled (both `proto/` roots), for text-format
/// parsing and gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/versa_descriptor.bin"));

pub use tensorflow::serving;

pub mod codec;

/// Metadata the sidecar and the operator exchange on ModelService reloads.
pub mod headers {
    /// Response header of a reload: `applied` (in force, every new model
    /// settled) or `loading` (in force, some new models still loading).
    pub const RELOAD_OUTCOME: &str = "x-versa-reload-outcome";
    /// Request header of a reload from an operator leader: its epoch. A
    /// server refuses reloads of an epoch lower than the highest it applied.
    pub const LEADER_EPOCH: &str = "x-versa-leader-epoch";
}
pub mod wire_budget;

/// Protobuf text format — the syntax of TensorFlow Serving's config files —
/// for the messages compiled here.
pub mod text_format {
    use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
    use std::sync::LazyLock;

    static DESCRIPTORS: LazyLock<DescriptorPool> = LazyLock::new(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set is valid")
    });

    /// The descriptor of a message compiled into versa-proto, by full name
    /// (`tensorflow.serving.ModelServerConfig`).
    pub fn descriptor(full_name: &str) -> MessageDescriptor {
        DESCRIPTORS.get_message_by_name(full_name).expect("message compiled into versa-proto")
    }

    /// Like [`descriptor`], `None` for a message not compiled here.
    pub fn find_descriptor(full_name: &str) -> Option<MessageDescriptor> {
        DESCRIPTORS.get_message_by_name(full_name)
    }

    /// Parses a message of type `M` from protobuf text format.
    pub fn parse_text<M: prost::Message + Default>(
        full_name: &str,
        text: &str,
    ) -> Result<M, String> {
        let message = DynamicMessage::parse_text_format(descriptor(full_name), text)
            .map_err(|e| e.to_string())?;
        message.transcode_to::<M>().map_err(|e| e.to_string())
    }

    /// Prints a message in protobuf text format, one field per line.
    pub fn to_text<M: prost::Message>(full_name: &str, message: &M) -> String {
        let mut dynamic = DynamicMessage::new(descriptor(full_name));
        dynamic
            .transcode_from(message)
            .expect("a message of the named type transcodes into its own descriptor");
        dynamic.to_text_format_with_options(
            &prost_reflect::text_format::FormatOptions::new().pretty(true),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::serving::{
            ModelConfig, ModelConfigList, ModelServerConfig, model_server_config,
        };

        #[test]
        fn text_round_trips() {
            let config = ModelServerConfig {
                config: Some(model_server_config::Config::ModelConfigList(ModelConfigList {
                    config: vec![ModelConfig {
                        name: "fraud".into(),
                        base_path: "/models/fraud".into(),
                        model_platform: "onnx".into(),
                        version_labels: [("stable".to_owned(), 41)].into_iter().collect(),
                        traffic_split: [("stable".to_owned(), 100)].into_iter().collect(),
                        ..ModelConfig::default()
                    }],
                })),
            };
            let text = to_text("tensorflow.serving.ModelServerConfig", &config);
            assert!(text.contains("name: \"fraud\""), "{text}");
            let back: ModelServerConfig =
                parse_text("tensorflow.serving.ModelServerConfig", &text).expect("parses");
            assert_eq!(back, config);
        }
    }
}
