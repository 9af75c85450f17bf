//! The gRPC API of the real binary: Predict, GetModelMetadata,
//! GetModelStatus, HandleReloadConfigRequest, health.

mod common;

use common::{start, version_of};
use std::time::Duration;
use tonic::Code;
use versa_e2e::{Choice, eventually, f32_tensor, spec, versioned_request};
use versa_proto::serving::{
    GetModelMetadataRequest, GetModelStatusRequest, PredictRequest, ReloadConfigRequest,
    SignatureDefMap, model_version_status::State,
};
use versa_proto::tensorflow::error::Code as TfCode;

#[tokio::test]
async fn predict_by_latest_version_and_label() {
    let f = start(&[]);
    let mut client = f.server.prediction_client().await;
    for (choice, expected) in [
        (Choice::Latest, 3.0),
        (Choice::Version(1), 1.0),
        (Choice::Version(2), 2.0),
        (Choice::Label("stable"), 1.0),
        (Choice::Label("canary"), 2.0),
    ] {
        let response = client
            .predict(versioned_request("versioned", choice))
            .await
            .expect("predict")
            .into_inner();
        assert_eq!(version_of(&response), expected, "{choice:?}");
        let answered = response.model_spec.expect("spec");
        assert_eq!(answered.signature_name, "serving_default");
        assert_eq!(
            answered.version_choice,
            Some(versa_proto::serving::model_spec::VersionChoice::Version(expected as i64))
        );
    }
}

#[tokio::test]
async fn predict_errors_are_upstreams() {
    let f = start(&[]);
    let mut client = f.server.prediction_client().await;
    let err = |r: Result<tonic::Response<_>, tonic::Status>| r.expect_err("must fail");

    let s = err(client.predict(versioned_request("nope", Choice::Latest)).await);
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "Servable not found for request: Latest(nope)")
    );
    let s = err(client.predict(versioned_request("versioned", Choice::Version(9))).await);
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "Servable not found for request: Specific(versioned, 9)")
    );
    let s = err(client.predict(versioned_request("versioned", Choice::Label("beta"))).await);
    assert_eq!(
        (s.code(), s.message()),
        (Code::InvalidArgument, "Unrecognized servable version label: beta")
    );

    let mut wrong_signature = versioned_request("versioned", Choice::Latest);
    wrong_signature.model_spec.as_mut().expect("spec").signature_name = "classify".into();
    let s = err(client.predict(wrong_signature).await);
    assert_eq!(
        (s.code(), s.message()),
        (Code::FailedPrecondition, "Serving signature key \"classify\" not found.")
    );

    let mut extra_input = versioned_request("versioned", Choice::Latest);
    extra_input.inputs.insert("z".into(), f32_tensor(&[1], vec![0.0]));
    let s = err(client.predict(extra_input).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().starts_with("input size does not match signature: 2!=1"),
        "{}",
        s.message()
    );

    let mut filter = versioned_request("versioned", Choice::Latest);
    filter.output_filter = vec!["nope".into()];
    let s = err(client.predict(filter).await);
    assert_eq!(
        s.message(),
        "output tensor alias not found in signature: nope Outputs expected to be in the set {y}."
    );

    let mut bad_shape = versioned_request("versioned", Choice::Latest);
    bad_shape.inputs.insert("x".into(), f32_tensor(&[1, 5], vec![0.0; 5]));
    let s = err(client.predict(bad_shape).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("shape [1, 5]"), "{}", s.message());

    let s = err(client.predict(PredictRequest::default()).await);
    assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "Missing ModelSpec"));

    let s = client
        .classify(versa_proto::serving::ClassificationRequest::default())
        .await
        .expect_err("classify");
    assert_eq!(s.code(), Code::Unimplemented);
}

#[tokio::test]
async fn output_filter_and_two_inputs() {
    let f = start(&[]);
    let mut client = f.server.prediction_client().await;
    let request = PredictRequest {
        model_spec: Some(spec("pair", Choice::Latest)),
        inputs: [
            ("a".to_owned(), f32_tensor(&[1, 3], vec![1.0, 2.0, 3.0])),
            ("b".to_owned(), f32_tensor(&[1, 3], vec![4.0, 5.0, 6.0])),
        ]
        .into_iter()
        .collect(),
        output_filter: vec!["product".into()],
        ..PredictRequest::default()
    };
    let response = client.predict(request).await.expect("predict").into_inner();
    assert_eq!(response.outputs.keys().collect::<Vec<_>>(), vec!["product"]);
    assert_eq!(response.outputs["product"].float_val, vec![4.0, 10.0, 18.0]);
}

#[tokio::test]
async fn metadata_and_status() {
    let f = start(&[]);
    let mut predict = f.server.prediction_client().await;
    let metadata = predict
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: Some(spec("pair", Choice::Latest)),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .expect("metadata")
        .into_inner();
    let any = &metadata.metadata["signature_def"];
    assert_eq!(any.type_url, "type.googleapis.com/tensorflow.serving.SignatureDefMap");
    let defs: SignatureDefMap = prost::Message::decode(any.value.as_slice()).expect("decodes");
    let def = &defs.signature_def["serving_default"];
    assert_eq!(def.method_name, "tensorflow/serving/predict");
    let mut inputs: Vec<&String> = def.inputs.keys().collect();
    inputs.sort();
    assert_eq!(inputs, ["a", "b"]);
    let no_field = predict
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: Some(spec("pair", Choice::Latest)),
            metadata_field: vec![],
        })
        .await
        .expect_err("no field");
    assert_eq!(
        no_field.message(),
        "GetModelMetadataRequest must specify at least one metadata_field"
    );

    let mut models = f.server.model_client().await;
    let status = models
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(spec("versioned", Choice::Latest)),
        })
        .await
        .expect("status")
        .into_inner();
    let versions: Vec<(i64, i32)> =
        status.model_version_status.iter().map(|s| (s.version, s.state)).collect();
    let available = State::Available as i32;
    assert_eq!(versions, vec![(3, available), (2, available), (1, available)], "highest first");

    // A label is ignored by GetModelStatus: every version is listed.
    let by_label = models
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(spec("versioned", Choice::Label("stable"))),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(by_label.model_version_status.len(), 3);

    let missing = models
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(spec("versioned", Choice::Version(7))),
        })
        .await
        .expect_err("missing");
    assert_eq!(
        (missing.code(), missing.message()),
        (Code::NotFound, "Could not find version 7 of model versioned")
    );
}

#[tokio::test]
async fn a_corrupt_version_ends_with_its_error_while_others_serve() {
    let f = start(&[]);
    let mut models = f.server.model_client().await;
    let status = models
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(spec("broken", Choice::Latest)),
        })
        .await
        .expect("status")
        .into_inner();
    let v1 = status.model_version_status.iter().find(|s| s.version == 1).expect("v1 tracked");
    assert_eq!(v1.state, State::End as i32);
    let health = v1.status.as_ref().expect("status");
    assert_eq!(health.error_code, TfCode::DataLoss as i32);
    assert!(health.error_message.contains("as an ONNX model"), "{}", health.error_message);
    let v2 = status.model_version_status.iter().find(|s| s.version == 2).expect("v2 tracked");
    assert_eq!(v2.state, State::Available as i32);
    let mut predict = f.server.prediction_client().await;
    let response = predict
        .predict(versioned_request("broken", Choice::Latest))
        .await
        .expect("v2 serves")
        .into_inner();
    assert_eq!(version_of(&response), 2.0);
}

#[tokio::test]
async fn health_service_reports_serving() {
    let f = start(&[]);
    let channel = tonic::transport::Channel::from_shared(f.server.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"] {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            response.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
}

/// A reload request from a text-format config, parsed with the server's own
/// parser (any TF Serving client builds the same message).
fn reload(config: &str) -> ReloadConfigRequest {
    ReloadConfigRequest {
        config: Some(
            versa_server::config::parse_text("tensorflow.serving.ModelServerConfig", config)
                .expect("valid text config"),
        ),
        metric_names: vec!["/tensorflow/cc/saved_model/load_attempt_count".into()],
    }
}

/// One `config { ... }` entry.
fn model(name: &str, base_path: &str, policy: &str, labels: &[(&str, i64)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!(" version_labels {{ key: \"{k}\" value: {v} }}"))
        .collect();
    format!(
        "config {{ name: \"{name}\" base_path: \"{base_path}\" model_platform: \"onnx\" model_version_policy {{ {policy} }}{labels} }}\n"
    )
}

fn list(models: &[String]) -> String {
    format!("model_config_list {{\n{}}}", models.concat())
}

#[tokio::test]
async fn reloads_add_remove_relabel_and_change_versions() {
    let f = start(&[]);
    let root = f.root.path().display().to_string();
    let mut models = f.server.model_client().await;
    let mut predict = f.server.prediction_client().await;

    // Add `ints`, remove `pair` and `broken`, move `stable` to 2, keep versions 2 and 3 only.
    let config = list(&[
        model(
            "versioned",
            &format!("{root}/versioned"),
            "specific { versions: 2 versions: 3 }",
            &[("stable", 2), ("canary", 3)],
        ),
        model("ints", &format!("{root}/ints"), "latest { num_versions: 1 }", &[]),
    ]);
    let response =
        models.handle_reload_config_request(reload(&config)).await.expect("reload").into_inner();
    assert_eq!(response.status.expect("status").error_code, TfCode::Ok as i32);
    let loads = &response.metric[0];
    assert_eq!(loads.name, "/tensorflow/cc/saved_model/load_attempt_count");
    assert_eq!(
        loads.value_increase,
        Some(versa_proto::serving::metric::ValueIncrease::Int64ValueIncrease(1)),
        "one new model loaded"
    );

    // The added model is AVAILABLE when the reload returns.
    let ints = models
        .get_model_status(GetModelStatusRequest { model_spec: Some(spec("ints", Choice::Latest)) })
        .await
        .expect("ints status")
        .into_inner();
    assert_eq!(ints.model_version_status[0].state, State::Available as i32);

    let stable = predict
        .predict(versioned_request("versioned", Choice::Label("stable")))
        .await
        .expect("stable");
    assert_eq!(version_of(&stable.into_inner()), 2.0);

    // Removed models go away but keep their history (END).
    let removed = eventually("pair unloaded", Duration::from_millis(50), || {
        let mut predict = predict.clone();
        async move { predict.predict(versioned_request("pair", Choice::Latest)).await.err() }
    })
    .await;
    assert_eq!(removed.code(), Code::NotFound);
    let pair = models
        .get_model_status(GetModelStatusRequest { model_spec: Some(spec("pair", Choice::Latest)) })
        .await
        .expect("history kept")
        .into_inner();
    assert!(
        pair.model_version_status
            .iter()
            .all(|s| s.state == State::End as i32 || s.state == State::Unloading as i32)
    );

    // Version 1 is unloaded by the policy change.
    eventually("version 1 unloaded", Duration::from_millis(50), || {
        let mut predict = predict.clone();
        async move {
            predict
                .predict(versioned_request("versioned", Choice::Version(1)))
                .await
                .err()
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_reloads_are_rejected_whole() {
    let f = start(&[]);
    let root = f.root.path().display().to_string();
    let mut models = f.server.model_client().await;
    let mut predict = f.server.prediction_client().await;
    let versioned =
        |labels: &[(&str, i64)]| model("versioned", &format!("{root}/versioned"), "all {}", labels);
    let ints = model("ints", &format!("{root}/ints"), "latest { num_versions: 1 }", &[]);
    let cases = [
        // A label on a version that is not loaded.
        (list(&[versioned(&[("stable", 7)]), ints.clone()]), Code::FailedPrecondition),
        // A duplicate model: nothing of the list may apply, not even the new model.
        (list(&[versioned(&[]), ints.clone(), ints.clone()]), Code::InvalidArgument),
        (list(&[model("versioned", "relative/path", "all {}", &[])]), Code::InvalidArgument),
        (
            list(&[model("versioned", &format!("{root}/versioned"), "all {}", &[])
                .replace("onnx", "tensorflow")]),
            Code::InvalidArgument,
        ),
    ];
    for (config, code) in cases {
        let err = models.handle_reload_config_request(reload(&config)).await.expect_err("rejected");
        assert_eq!(err.code(), code, "{config}: {}", err.message());
    }
    // The running config is untouched: same labels, same models, no `ints`.
    let stable = predict
        .predict(versioned_request("versioned", Choice::Label("stable")))
        .await
        .expect("stable");
    assert_eq!(version_of(&stable.into_inner()), 1.0);
    let pair = PredictRequest {
        model_spec: Some(spec("pair", Choice::Latest)),
        inputs: [
            ("a".to_owned(), f32_tensor(&[1, 3], vec![1.0; 3])),
            ("b".to_owned(), f32_tensor(&[1, 3], vec![1.0; 3])),
        ]
        .into_iter()
        .collect(),
        ..PredictRequest::default()
    };
    predict.predict(pair).await.expect("pair still served");
    let ints = models
        .get_model_status(GetModelStatusRequest { model_spec: Some(spec("ints", Choice::Latest)) })
        .await;
    assert_eq!(ints.expect_err("never added").code(), Code::NotFound);
}

#[tokio::test]
async fn a_reload_still_loading_at_the_deadline_answers_in_force_and_loading_in_time() {
    let f = start(&[]);
    let root = f.root.path().display().to_string();
    std::fs::create_dir_all(f.path("empty")).expect("mkdir");
    let mut models = f.server.model_client().await;
    let config = list(&[
        model("versioned", &format!("{root}/versioned"), "all {}", &[]),
        model("empty", &format!("{root}/empty"), "latest { num_versions: 1 }", &[]),
    ]);
    let mut request = tonic::Request::new(reload(&config));
    request.set_timeout(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let response = models.handle_reload_config_request(request).await.expect("in force");
    assert!(started.elapsed() < Duration::from_millis(1500), "answered before the deadline");
    assert_eq!(
        response.metadata().get("x-versa-reload-outcome").map(|v| v.to_str().ok()),
        Some(Some("loading"))
    );
    let status = response.into_inner().status.expect("status");
    assert_eq!(status.error_code, 0);
    assert_eq!(status.error_message, "config in force; still loading: empty");
    // In force: the new model is known (with no version yet).
    let known = models
        .get_model_status(GetModelStatusRequest { model_spec: Some(spec("empty", Choice::Latest)) })
        .await;
    assert_ne!(known.map_err(|e| e.code()).err(), Some(Code::Unavailable));
}

#[tokio::test]
async fn model_service_requires_the_bearer_token_when_configured() {
    let token_dir = tempfile::tempdir().expect("tempdir");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("write");
    let f = start(&[&format!("--model_service_token_file={}", token_file.display())]);
    let mut models = f.server.model_client().await;
    let status = || GetModelStatusRequest { model_spec: Some(spec("versioned", Choice::Latest)) };
    let refused = models.get_model_status(status()).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let root = f.root.path().display().to_string();
    let refused = models
        .handle_reload_config_request(reload(&list(&[model(
            "versioned",
            &format!("{root}/versioned"),
            "all {}",
            &[],
        )])))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(status());
    wrong.metadata_mut().insert("authorization", "Bearer guess".parse().expect("ascii"));
    assert_eq!(
        models.get_model_status(wrong).await.expect_err("wrong token").code(),
        Code::Unauthenticated
    );
    let mut right = tonic::Request::new(status());
    right.metadata_mut().insert("authorization", "Bearer s3cret-token".parse().expect("ascii"));
    models.get_model_status(right).await.expect("with the token");
    // Predictions are not guarded.
    let mut predict = f.server.prediction_client().await;
    predict.predict(versioned_request("versioned", Choice::Latest)).await.expect("predict");
}

#[tokio::test]
async fn model_service_can_live_on_its_own_port() {
    let admin_port = versa_e2e::free_port();
    let f = start(&[&format!("--model_service_port={admin_port}")]);
    let status = || GetModelStatusRequest { model_spec: Some(spec("versioned", Choice::Latest)) };
    // The serving port has predictions but no ModelService.
    let mut models = f.server.model_client().await;
    let err = models.get_model_status(status()).await.expect_err("not on the serving port");
    assert_eq!(err.code(), Code::Unimplemented);
    let mut predict = f.server.prediction_client().await;
    predict.predict(versioned_request("versioned", Choice::Latest)).await.expect("predict");
    // The admin port has it.
    let mut admin = versa_proto::serving::model_service_client::ModelServiceClient::connect(
        format!("http://127.0.0.1:{admin_port}"),
    )
    .await
    .expect("connect");
    let answer = admin.get_model_status(status()).await.expect("status").into_inner();
    assert_eq!(answer.model_version_status[0].version, 3);
}
