//! The generated contract matches TensorFlow Serving's on the wire: message
//! and field names, field numbers, enum values and service paths.

use prost::Message;
use prost_types::{FileDescriptorSet, field_descriptor_proto::Type};
use versa_proto::tensorflow::{self, serving};

fn descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(versa_proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

/// Finds `package.Message[.Nested]` in the descriptor set.
fn message<'a>(set: &'a FileDescriptorSet, full_name: &str) -> &'a prost_types::DescriptorProto {
    for file in &set.file {
        let package = file.package();
        for top in &file.message_type {
            let mut stack = vec![(format!("{package}.{}", top.name()), top)];
            while let Some((name, msg)) = stack.pop() {
                if name == full_name {
                    return msg;
                }
                for nested in &msg.nested_type {
                    stack.push((format!("{name}.{}", nested.name()), nested));
                }
            }
        }
    }
    panic!("message {full_name} not in the descriptor set")
}

#[test]
fn field_numbers_match_tensorflow_serving() {
    let set = descriptors();
    // (message, field, number) straight from the compatibility spec.
    let expected: &[(&str, &str, i32)] = &[
        ("tensorflow.serving.ModelSpec", "name", 1),
        ("tensorflow.serving.ModelSpec", "version", 2),
        ("tensorflow.serving.ModelSpec", "signature_name", 3),
        ("tensorflow.serving.ModelSpec", "version_label", 4),
        ("tensorflow.serving.PredictRequest", "model_spec", 1),
        ("tensorflow.serving.PredictRequest", "inputs", 2),
        ("tensorflow.serving.PredictRequest", "output_filter", 3),
        ("tensorflow.serving.PredictRequest", "predict_streamed_options", 5),
        ("tensorflow.serving.PredictRequest", "client_id", 6),
        ("tensorflow.serving.PredictRequest", "request_options", 7),
        ("tensorflow.serving.PredictRequest.RequestOptions", "max_cache_length", 6),
        ("tensorflow.serving.PredictRequest.RequestOptions", "return_all_stoptokens", 9),
        ("tensorflow.serving.PredictResponse", "outputs", 1),
        ("tensorflow.serving.PredictResponse", "model_spec", 2),
        ("tensorflow.serving.ClassificationResponse", "result", 1),
        ("tensorflow.serving.ClassificationResponse", "model_spec", 2),
        ("tensorflow.serving.RegressionResponse", "result", 1),
        ("tensorflow.serving.RegressionResponse", "model_spec", 2),
        ("tensorflow.serving.InferenceResult", "classification_result", 2),
        ("tensorflow.serving.InferenceResult", "regression_result", 3),
        ("tensorflow.serving.Input", "example_list_with_context", 2),
        ("tensorflow.serving.GetModelMetadataRequest", "metadata_field", 2),
        ("tensorflow.serving.GetModelMetadataResponse", "metadata", 2),
        ("tensorflow.serving.SignatureDefMap", "signature_def", 1),
        ("tensorflow.serving.ModelVersionStatus", "version", 1),
        ("tensorflow.serving.ModelVersionStatus", "state", 2),
        ("tensorflow.serving.ModelVersionStatus", "status", 3),
        ("tensorflow.serving.GetModelStatusResponse", "model_version_status", 1),
        ("tensorflow.serving.StatusProto", "error_code", 1),
        ("tensorflow.serving.StatusProto", "error_message", 2),
        ("tensorflow.serving.ReloadConfigRequest", "config", 1),
        ("tensorflow.serving.ReloadConfigRequest", "metric_names", 2),
        ("tensorflow.serving.ReloadConfigResponse", "status", 1),
        ("tensorflow.serving.ReloadConfigResponse", "metric", 2),
        ("tensorflow.serving.Metric", "int64_value_increase", 2),
        ("tensorflow.serving.ModelServerConfig", "model_config_list", 1),
        ("tensorflow.serving.ModelServerConfig", "custom_model_config", 2),
        ("tensorflow.serving.ModelConfig", "name", 1),
        ("tensorflow.serving.ModelConfig", "base_path", 2),
        ("tensorflow.serving.ModelConfig", "model_type", 3),
        ("tensorflow.serving.ModelConfig", "model_platform", 4),
        ("tensorflow.serving.ModelConfig", "logging_config", 6),
        ("tensorflow.serving.ModelConfig", "model_version_policy", 7),
        ("tensorflow.serving.ModelConfig", "version_labels", 8),
        (
            "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy",
            "latest",
            100,
        ),
        ("tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy", "all", 101),
        (
            "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy",
            "specific",
            102,
        ),
        (
            "tensorflow.serving.FileSystemStoragePathSourceConfig",
            "servable_versions_always_present",
            6,
        ),
        (
            "tensorflow.serving.FileSystemStoragePathSourceConfig",
            "file_system_poll_wait_seconds",
            3,
        ),
        (
            "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableToMonitor",
            "servable_version_policy",
            4,
        ),
        ("tensorflow.serving.MonitoringConfig", "prometheus_config", 1),
        ("tensorflow.serving.PrometheusConfig", "path", 2),
        ("tensorflow.serving.BatchingParameters", "max_batch_size", 1),
        ("tensorflow.serving.BatchingParameters", "batch_timeout_micros", 2),
        ("tensorflow.serving.BatchingParameters", "max_enqueued_batches", 3),
        ("tensorflow.serving.BatchingParameters", "num_batch_threads", 4),
        ("tensorflow.serving.BatchingParameters", "thread_pool_name", 5),
        ("tensorflow.serving.BatchingParameters", "allowed_batch_sizes", 6),
        ("tensorflow.serving.BatchingParameters", "pad_variable_length_inputs", 7),
        ("tensorflow.serving.BatchingParameters", "enable_large_batch_splitting", 8),
        ("tensorflow.serving.BatchingParameters", "max_execution_batch_size", 9),
        ("tensorflow.TensorProto", "dtype", 1),
        ("tensorflow.TensorProto", "tensor_shape", 2),
        ("tensorflow.TensorProto", "version_number", 3),
        ("tensorflow.TensorProto", "tensor_content", 4),
        ("tensorflow.TensorProto", "float_val", 5),
        ("tensorflow.TensorProto", "double_val", 6),
        ("tensorflow.TensorProto", "int_val", 7),
        ("tensorflow.TensorProto", "string_val", 8),
        ("tensorflow.TensorProto", "scomplex_val", 9),
        ("tensorflow.TensorProto", "int64_val", 10),
        ("tensorflow.TensorProto", "bool_val", 11),
        ("tensorflow.TensorProto", "dcomplex_val", 12),
        ("tensorflow.TensorProto", "half_val", 13),
        ("tensorflow.TensorProto", "resource_handle_val", 14),
        ("tensorflow.TensorProto", "variant_val", 15),
        ("tensorflow.TensorProto", "uint32_val", 16),
        ("tensorflow.TensorProto", "uint64_val", 17),
        ("tensorflow.TensorProto", "float8_val", 18),
        ("tensorflow.TensorShapeProto", "dim", 2),
        ("tensorflow.TensorShapeProto", "unknown_rank", 3),
        ("tensorflow.TensorShapeProto.Dim", "size", 1),
        ("tensorflow.TensorShapeProto.Dim", "name", 2),
        ("tensorflow.TensorInfo", "name", 1),
        ("tensorflow.TensorInfo", "dtype", 2),
        ("tensorflow.TensorInfo", "tensor_shape", 3),
        ("tensorflow.TensorInfo", "coo_sparse", 4),
        ("tensorflow.TensorInfo", "composite_tensor", 5),
        ("tensorflow.SignatureDef", "inputs", 1),
        ("tensorflow.SignatureDef", "outputs", 2),
        ("tensorflow.SignatureDef", "method_name", 3),
        ("tensorflow.SignatureDef", "defaults", 4),
    ];
    for (msg, field, number) in expected {
        let found = message(&set, msg)
            .field
            .iter()
            .find(|f| f.name() == *field)
            .unwrap_or_else(|| panic!("{msg}.{field} missing"));
        assert_eq!(found.number(), *number, "{msg}.{field}");
    }
}

#[test]
fn json_names_match_the_rest_api() {
    let set = descriptors();
    let json = |msg: &str, field: &str| {
        message(&set, msg)
            .field
            .iter()
            .find(|f| f.name() == field)
            .map(|f| f.json_name().to_owned())
    };
    assert_eq!(json("tensorflow.serving.StatusProto", "error_code").as_deref(), Some("error_code"));
    assert_eq!(
        json("tensorflow.serving.StatusProto", "error_message").as_deref(),
        Some("error_message")
    );
    assert_eq!(
        json("tensorflow.serving.GetModelStatusResponse", "model_version_status").as_deref(),
        Some("model_version_status")
    );
}

#[test]
fn version_labels_is_a_string_to_int64_map() {
    let set = descriptors();
    let config = message(&set, "tensorflow.serving.ModelConfig");
    let entry =
        config.nested_type.iter().find(|n| n.name() == "VersionLabelsEntry").expect("map entry");
    assert_eq!(entry.field[0].r#type(), Type::String);
    assert_eq!(entry.field[1].r#type(), Type::Int64);
}

#[test]
fn enum_values_match() {
    use serving::model_version_status::State;
    assert_eq!(
        [
            State::Unknown,
            State::Start,
            State::Loading,
            State::Available,
            State::Unloading,
            State::End
        ]
        .map(|s| s as i32),
        [0, 10, 20, 30, 40, 50]
    );
    use tensorflow::DataType as D;
    let dtypes = [
        (D::DtFloat, 1),
        (D::DtDouble, 2),
        (D::DtInt32, 3),
        (D::DtUint8, 4),
        (D::DtInt16, 5),
        (D::DtInt8, 6),
        (D::DtString, 7),
        (D::DtInt64, 9),
        (D::DtBool, 10),
        (D::DtBfloat16, 14),
        (D::DtUint16, 17),
        (D::DtHalf, 19),
        (D::DtUint32, 22),
        (D::DtUint64, 23),
    ];
    for (dtype, value) in dtypes {
        assert_eq!(dtype as i32, value, "{dtype:?}");
    }
    use tensorflow::error::Code;
    assert_eq!(Code::NotFound as i32, 5);
    assert_eq!(Code::FailedPrecondition as i32, 9);
    assert_eq!(Code::Unavailable as i32, 14);
    assert_eq!(Code::Unauthenticated as i32, 16);
}

#[test]
fn predict_response_encodes_model_spec_as_field_two() {
    let response = serving::PredictResponse {
        model_spec: Some(serving::ModelSpec {
            name: "m".into(),
            version_choice: Some(serving::model_spec::VersionChoice::Version(7)),
            signature_name: "serving_default".into(),
        }),
        outputs: Default::default(),
    };
    let bytes = response.encode_to_vec();
    assert_eq!(bytes[0], (2 << 3) | 2, "field 2, length-delimited");
    let back = serving::PredictResponse::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(back, response);
}

#[test]
fn services_have_upstream_paths() {
    assert_eq!(
        serving::prediction_service_server::SERVICE_NAME,
        "tensorflow.serving.PredictionService"
    );
    assert_eq!(serving::model_service_server::SERVICE_NAME, "tensorflow.serving.ModelService");
}

#[test]
fn versa_extensions_live_in_their_own_package() {
    use versa_proto::versa::v1;
    assert_eq!(v1::telemetry_server::SERVICE_NAME, "versa.v1.Telemetry");
    let set = descriptors();
    let file = set
        .file
        .iter()
        .find(|f| f.name() == "versa/v1/telemetry.proto")
        .expect("telemetry.proto compiled");
    assert_eq!(file.package(), "versa.v1");
    let response = message(&set, "versa.v1.SnapshotResponse");
    let fields: Vec<(&str, i32)> = response.field.iter().map(|f| (f.name(), f.number())).collect();
    assert_eq!(
        fields,
        [("process_start_unix_ms", 1), ("taken_at_unix_ms", 2), ("series", 3), ("mirrors", 4)],
        "the operator reads these numbers: never renumber"
    );
    let mirror = message(&set, "versa.v1.MirrorCounters");
    let fields: Vec<(&str, i32)> = mirror.field.iter().map(|f| (f.name(), f.number())).collect();
    assert_eq!(
        fields,
        [
            ("model", 1),
            ("version", 2),
            ("baseline_version", 3),
            ("agree", 4),
            ("disagree", 5),
            ("error", 6),
            ("timeout", 7),
            ("shed", 8),
            ("unavailable", 9),
            ("non_finite", 10),
            ("latency_ratio", 11)
        ]
    );
    let series = message(&set, "versa.v1.SeriesCounters");
    let fields: Vec<(&str, i32)> = series.field.iter().map(|f| (f.name(), f.number())).collect();
    assert_eq!(
        fields,
        [
            ("model", 1),
            ("version", 2),
            ("label", 3),
            ("requests", 4),
            ("errors", 5),
            ("latency", 6),
            ("split", 7)
        ]
    );
    // Versa's fields of ModelConfig sit far above upstream's numbers.
    let config = message(&set, "tensorflow.serving.ModelConfig");
    let ours: Vec<(&str, i32)> =
        config.field.iter().filter(|f| f.number() > 1000).map(|f| (f.name(), f.number())).collect();
    assert_eq!(ours, [("traffic_split", 1001), ("transition_policy", 1002), ("mirror", 1003)]);
    // Nothing of ours inside TensorFlow Serving's packages.
    for file in &set.file {
        if file.package().starts_with("tensorflow") {
            assert!(!file.name().starts_with("versa/"), "{}", file.name());
        }
    }
}
