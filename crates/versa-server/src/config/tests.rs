use super::*;
use versa_core::Code;

const UPSTREAM_EXAMPLE: &str = r#"
model_config_list {
  config {
    name: "fraud"
    base_path: "/models/fraud"
    model_platform: "onnx"
    model_version_policy { specific { versions: 41 versions: 42 } }
    version_labels { key: "stable" value: 41 }
    version_labels { key: "canary" value: 42 }
  }
  config: {
    name: 'ranker',
    base_path: "/models/ranker";
    model_platform: "onnx"
    model_version_policy { latest { num_versions: 2 } }
  }
  config {
    name: "embedder"
    base_path: "/models/embedder"
    model_platform: "onnx"
    model_version_policy { all {} }
  }
}
"#;

fn list(config: &ModelServerConfig) -> &ModelConfigList {
    match config_request(config).expect("list") {
        ConfigRequest::List(l) => l,
        ConfigRequest::Empty => panic!("empty"),
    }
}

fn validated(text: &str) -> Result<ServingConfig, ServingError> {
    let config: ModelServerConfig =
        parse_text("tensorflow.serving.ModelServerConfig", text).expect("parses");
    validate(list(&config), &ServingConfig::default(), TransitionPolicy::AvailabilityPreserving)
}

#[test]
fn upstream_text_format_is_read_as_upstream_reads_it() {
    let config = validated(UPSTREAM_EXAMPLE).expect("valid");
    assert_eq!(config.models.len(), 3);
    let fraud = config.model("fraud").expect("fraud");
    assert_eq!(fraud.policy, VersionPolicy::Specific(vec![41, 42]));
    assert_eq!(fraud.labels, BTreeMap::from([("canary".into(), 42), ("stable".into(), 41)]));
    assert_eq!(config.model("ranker").expect("ranker").policy, VersionPolicy::Latest(2));
    assert_eq!(config.model("embedder").expect("embedder").policy, VersionPolicy::All);
    assert_eq!(
        config.model("embedder").expect("embedder").base_path,
        PathBuf::from("/models/embedder")
    );
}

#[test]
fn yaml_says_the_same() {
    let yaml = r#"
model_config_list:
  config:
    - name: fraud
      base_path: /models/fraud
      model_platform: onnx
      model_version_policy: {specific: {versions: [41, 42]}}
      version_labels: {stable: 41, canary: 42}
    - name: ranker
      basePath: /models/ranker
      modelPlatform: onnx
      model_version_policy: {latest: {num_versions: 2}}
    - name: embedder
      base_path: /models/embedder
      model_platform: onnx
      model_version_policy: {all: {}}
"#;
    let from_yaml: ModelServerConfig =
        parse_yaml("tensorflow.serving.ModelServerConfig", yaml).expect("parses");
    let from_text: ModelServerConfig =
        parse_text("tensorflow.serving.ModelServerConfig", UPSTREAM_EXAMPLE).expect("parses");
    assert_eq!(from_yaml, from_text);
}

#[test]
fn unset_policy_means_latest_one() {
    let config = validated(
        r#"model_config_list { config { name: "m" base_path: "/m" model_platform: "onnx" } }"#,
    )
    .expect("valid");
    assert_eq!(config.models[0].policy, VersionPolicy::Latest(1));
}

#[test]
fn invalid_configs_are_rejected_with_upstream_messages() {
    let cases = [
        (
            r#"model_config_list { config { name: "a" base_path: "/a" model_platform: "onnx" } config { name: "a" base_path: "/b" model_platform: "onnx" } }"#,
            "Illegal to list model a multiple times in config list",
        ),
        (
            r#"model_config_list { config { name: "a" base_path: "relative/a" model_platform: "onnx" } }"#,
            "Expected model a to have an absolute path or URI; got base_path()=relative/a",
        ),
        (
            r#"model_config_list { config { name: "a" base_path: "/a" } }"#,
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform, model name is a",
        ),
        (
            r#"model_config_list { config { name: "a" base_path: "/a" model_platform: "pytorch" } }"#,
            "Model a requests unsupported platform pytorch",
        ),
        (
            r#"model_config_list { config { name: "a" base_path: "/a" model_platform: "onnx" model_type: TENSORFLOW } }"#,
            "Illegal setting both ModelServerConfig::model_type (deprecated) and ModelServerConfig::model_platform.",
        ),
        (
            r#"model_config_list { config { base_path: "/a" model_platform: "onnx" } }"#,
            "Model config has an empty name",
        ),
    ];
    for (text, message) in cases {
        let err = validated(text).expect_err(message);
        assert_eq!(err.message, message);
        assert_eq!(err.code, Code::InvalidArgument);
    }
    let tf = validated(r#"model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } }"#)
        .expect_err("tensorflow");
    assert!(tf.message.starts_with(
        "Model a requests unsupported platform tensorflow: versa-server serves ONNX models only"
    ));
    let s3 = validated(r#"model_config_list { config { name: "a" base_path: "s3://b/a" model_platform: "onnx" } }"#)
        .expect_err("s3");
    assert!(s3.message.contains("local paths only"), "{}", s3.message);
}

#[test]
fn custom_and_empty_configs() {
    let custom = ModelServerConfig {
        config: Some(model_server_config::Config::CustomModelConfig(prost_types::Any::default())),
    };
    let err = config_request(&custom).expect_err("custom");
    assert_eq!(
        err.message,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported"
    );
    assert!(matches!(config_request(&ModelServerConfig::default()), Ok(ConfigRequest::Empty)));
}

#[test]
fn malformed_text_is_a_parse_error() {
    let err = parse_text::<ModelServerConfig>(
        "tensorflow.serving.ModelServerConfig",
        "model_config_list { config { nme: 1 } }",
    )
    .expect_err("bad field");
    assert!(err.contains("nme"), "{err}");
}

#[test]
fn files_are_read_by_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("models.config");
    std::fs::write(&text, UPSTREAM_EXAMPLE).expect("write");
    let yaml = dir.path().join("models.yaml");
    std::fs::write(
        &yaml,
        "model_config_list: {config: [{name: m, base_path: /m, model_platform: onnx}]}",
    )
    .expect("write");
    assert!(read_model_server_config(&text).is_ok());
    assert!(read_model_server_config(&yaml).is_ok());
    let missing = read_model_server_config(&dir.path().join("nope")).expect_err("missing");
    assert!(missing.to_string().starts_with("cannot read"));
}

#[test]
fn traffic_splits_are_read_and_checked() {
    let text = |split: &str| {
        format!(
            r#"model_config_list {{ config {{ name: "m" base_path: "/m" model_platform: "onnx"
                version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} {split} }} }}"#
        )
    };
    let ok = validated(&text(
        r#"traffic_split { key: "stable" value: 90 } traffic_split { key: "canary" value: 10 }"#,
    ))
    .expect("valid split");
    assert_eq!(
        ok.models[0].traffic,
        BTreeMap::from([("canary".into(), 10), ("stable".into(), 90)])
    );
    assert_eq!(ok.routing().splits["m"].weight("canary"), Some(10));
    let cases = [
        (
            r#"traffic_split { key: "stable" value: 90 }"#,
            "Model m: traffic_split weights sum to 90, they must sum to 100",
        ),
        (
            r#"traffic_split { key: "stable" value: 50 } traffic_split { key: "beta" value: 50 }"#,
            "Model m: traffic_split names label 'beta', which is not one of its version_labels {canary, stable}",
        ),
    ];
    for (split, message) in cases {
        assert_eq!(validated(&text(split)).expect_err(message).message, message);
    }
    let unlabelled = validated(
        r#"model_config_list { config { name: "m" base_path: "/m" model_platform: "onnx" traffic_split { key: "a" value: 100 } } }"#,
    )
    .expect_err("no labels");
    assert!(unlabelled.message.starts_with("Model m has a traffic_split but no version_labels"));
    let yaml: ModelServerConfig = parse_yaml(
        "tensorflow.serving.ModelServerConfig",
        "model_config_list: {config: [{name: m, base_path: /m, model_platform: onnx, version_labels: {stable: 1, canary: 2}, traffic_split: {stable: 90, canary: 10}}]}",
    )
    .expect("yaml");
    let from_text: ModelServerConfig = parse_text(
        "tensorflow.serving.ModelServerConfig",
        &text(r#"traffic_split { key: "stable" value: 90 } traffic_split { key: "canary" value: 10 }"#),
    )
    .expect("text");
    assert_eq!(yaml, from_text);
}

#[test]
fn transition_policy_per_model_overrides_the_default() {
    let config = validated(
        r#"model_config_list {
            config { name: "a" base_path: "/a" model_platform: "onnx" transition_policy: RESOURCE_PRESERVING }
            config { name: "b" base_path: "/b" model_platform: "onnx" }
        }"#,
    )
    .expect("valid");
    assert_eq!(config.models[0].transition, TransitionPolicy::ResourcePreserving);
    assert_eq!(config.models[1].transition, TransitionPolicy::AvailabilityPreserving);
}
