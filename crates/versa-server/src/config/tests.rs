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

fn with_mirror(mirror: &str, extra: &str) -> Result<ServingConfig, ServingError> {
    validated(&format!(
        r#"model_config_list {{ config {{ name: "m" base_path: "/m" model_platform: "onnx"
            version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "candidate" value: 2 }}
            {extra} mirror {{ {mirror} }} }} }}"#
    ))
}

#[test]
fn mirrors_are_read_with_defaults_and_overrides() {
    let config = with_mirror(
        r#"label: "candidate" percent: 10 sampling: MIRROR_SAMPLING_RANDOM
           outputs { key: "y" value { scores { abs_tol: 0.5 } } }
           outputs { key: "z" value { classes {} } }"#,
        "",
    )
    .expect("valid mirror");
    let spec = config.models[0].mirror.clone().expect("mirror");
    assert_eq!(spec.target, MirrorTarget::Label("candidate".into()));
    assert_eq!((spec.percent, spec.sampling), (10, Sampling::Random));
    assert_eq!(spec.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
    assert_eq!(
        spec.outputs["y"],
        versa_compare::Kind::Scores { abs_tol: 0.5, rel_tol: versa_compare::DEFAULT_REL_TOL }
    );
    assert_eq!(spec.outputs["z"], versa_compare::Kind::Classes { top_k: 5 });
    let yaml: ModelServerConfig = parse_yaml(
        "tensorflow.serving.ModelServerConfig",
        "model_config_list: {config: [{name: m, base_path: /m, model_platform: onnx, mirror: {version: 2, percent: 100, maxInFlight: 3, timeoutMs: 250}}]}",
    )
    .expect("yaml");
    let from_yaml =
        validate(list(&yaml), &ServingConfig::default(), TransitionPolicy::AvailabilityPreserving)
            .expect("valid");
    let spec = from_yaml.models[0].mirror.clone().expect("mirror");
    assert_eq!(spec.target, MirrorTarget::Version(2));
    assert_eq!((spec.percent, spec.max_in_flight, spec.sampling), (100, 3, Sampling::RouteKey));
    assert_eq!(spec.timeout, std::time::Duration::from_millis(250));
}

#[test]
fn invalid_mirrors_are_refused_naming_what_is_wrong() {
    let cases = [
        (
            r#"label: "beta" percent: 10"#,
            "",
            "Model m: mirror label 'beta' is not one of its version_labels {candidate, stable}",
        ),
        ("percent: 10", "", "Model m: mirror names no target: set label or version"),
        ("version: 0 percent: 10", "", "Model m: mirror version must be positive, got 0"),
        ("version: 2 percent: 101", "", "Model m: mirror percent must be 0 to 100, got 101"),
        (
            "version: 2 percent: 5 max_in_flight: 5000",
            "",
            "Model m: mirror max_in_flight is at most 1024, got 5000",
        ),
        (
            "version: 2 percent: 5 timeout_ms: 60001",
            "",
            "Model m: mirror timeout_ms is at most 60000, got 60001",
        ),
        (
            "version: 2 percent: 5 log_disagreements_per_minute: 601",
            "",
            "Model m: mirror log_disagreements_per_minute is at most 600, got 601",
        ),
        (
            r#"version: 2 outputs { key: "y" value { } }"#,
            "",
            "Model m: mirror output 'y' names no comparison (classes, scores or exact)",
        ),
        (
            r#"version: 2 outputs { key: "y" value { scores { rel_tol: -1 } } }"#,
            "",
            "Model m: mirror output 'y': rel_tol must be a finite number ≥ 0, got -1",
        ),
    ];
    for (mirror, extra, message) in cases {
        assert_eq!(with_mirror(mirror, extra).expect_err(message).message, message);
    }
    let resource = with_mirror("version: 2 percent: 5", "transition_policy: RESOURCE_PRESERVING")
        .expect_err("resource preserving");
    assert!(resource.message.contains("needs two versions loaded at once"), "{}", resource.message);
    assert_eq!(resource.code, Code::InvalidArgument);
}
