use super::*;

fn spec_with(server: &str, models: &str) -> ModelDeploymentSpec {
    serde_yaml::from_str(&format!("server: {server}\nmodels: {models}")).expect("parses")
}

fn spec(models: &str) -> ModelDeploymentSpec {
    spec_with("{image: x, modelVolume: {name: m, emptyDir: {}}}", models)
}

fn check(spec: &ModelDeploymentSpec) -> Vec<String> {
    problems("fraud", spec, &SpecPolicy::default())
}

#[test]
fn valid_specs_have_no_problems() {
    let s = spec(
        "[{name: a, basePath: /m/a, versionPolicy: {specific: {versions: [1, 2]}}, labels: {stable: 1, canary: 2}, traffic: {stable: 90, canary: 10}}]",
    );
    assert!(check(&s).is_empty(), "{:?}", check(&s));
}

#[test]
fn each_rule_is_reported() {
    let cases = [
        ("[{name: a, basePath: /m}, {name: a, basePath: /n}]", "model a is listed more than once"),
        ("[{name: a, basePath: relative}]", "model a: basePath must be absolute, got \"relative\""),
        (
            "[{name: a, basePath: /m, labels: {s: 1}, traffic: {s: 90}}]",
            "model a: traffic weights sum to 90, they must sum to 100",
        ),
        (
            "[{name: a, basePath: /m, labels: {s: 1}, traffic: {s: 50, c: 50}}]",
            "model a: traffic names c, which is not one of its labels",
        ),
        (
            "[{name: a, basePath: /m, versionPolicy: {specific: {versions: [1]}}, labels: {c: 2}}]",
            "model a: label c points at version 2, which versionPolicy.specific does not serve",
        ),
        (
            "[{name: a, basePath: /m, versionPolicy: {all: {}, latest: {numVersions: 1}}}]",
            "model a: set only one of versionPolicy.latest, .all, .specific",
        ),
        (
            "[{name: 'a/b', basePath: /m}]",
            "model name \"a/b\" must not contain '/', ':', spaces or control characters",
        ),
        (
            "[{name: a, basePath: /m, labels: {s: -1}}]",
            "model a: label s points at version -1; versions are >= 0",
        ),
    ];
    for (models, problem) in cases {
        let found = check(&spec(models));
        assert!(found.iter().any(|p| p == problem), "{models}: {found:?}");
    }
}

#[test]
fn names_that_do_not_fit_a_label_value_or_a_service_name_are_refused() {
    let s = spec("[{name: a, basePath: /m}]");
    let long = "a".repeat(66);
    let found = problems(&long, &s, &SpecPolicy::default());
    assert!(found[0].contains("metadata.name is 66 characters; at most 63"), "{found:?}");
    assert!(problems(&"a".repeat(63), &s, &SpecPolicy::default()).is_empty());
    for bad in ["fraud.v2", "1fraud", "fraud-", "Fraud"] {
        let found = problems(bad, &s, &SpecPolicy::default());
        assert!(found.iter().any(|p| p.contains("must be a DNS label")), "{bad}: {found:?}");
    }
}

#[test]
fn host_paths_and_secrets_need_the_operator_to_allow_them() {
    let models = "[{name: a, basePath: /m}]";
    let host = spec_with("{image: x, modelVolume: {name: m, hostPath: {path: /}}}", models);
    let found = check(&host);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0]
            .starts_with("server.modelVolume uses hostPath, which this operator does not allow")
    );
    assert!(found[0].contains("--allowed_volume_sources"), "{}", found[0]);
    let mut allowing = SpecPolicy::default();
    allowing.volume_sources.insert("hostPath".into());
    assert!(problems("fraud", &host, &allowing).is_empty());

    for source in ["nfs: {server: 10.0.0.1, path: /}", "csi: {driver: secrets-store.csi.k8s.io}"] {
        let s = spec_with(&format!("{{image: x, modelVolume: {{name: m, {source}}}}}"), models);
        assert_eq!(check(&s).len(), 1, "{source} is off by default");
    }
    let secret = spec_with("{image: x, modelVolume: {name: m, secret: {secretName: db}}}", models);
    assert!(check(&secret)[0].contains("uses secret"), "{:?}", check(&secret));
    let none = spec_with("{image: x, modelVolume: {name: m}}", models);
    assert_eq!(check(&none), ["server.modelVolume needs a volume source"]);

    let env = spec_with(
        "{image: x, modelVolume: {name: m, emptyDir: {}}, env: [{name: PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}, {name: PLAIN, value: v}]}",
        models,
    );
    let found = check(&env);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("server.env PASSWORD reads a Secret"), "{found:?}");
    let policy = SpecPolicy { secret_env: true, ..SpecPolicy::default() };
    assert!(problems("fraud", &env, &policy).is_empty());
}

#[test]
fn operator_owned_flags_are_refused_by_name() {
    let s = spec_with(
        "{image: x, modelVolume: {name: m, emptyDir: {}}, args: ['--port=9000', '--num_load_threads=2', '--model_config_file', '/x', '-rest_api_port=1']}",
        "[{name: a, basePath: /m}]",
    );
    let found = check(&s);
    assert!(
        found.contains(
            &"server.args must not set --port, --model_config_file, --rest_api_port: the operator sets them itself"
                .to_owned()
        ),
        "{found:?}"
    );
    assert!(
        found.contains(
            &"server.args: \"/x\" is not a flag (versa-server takes only --name=value)".to_owned()
        ),
        "{found:?}"
    );
    let expanded = spec_with(
        "{image: x, modelVolume: {name: m, emptyDir: {}}, args: ['--$(F)=0.0.0.0'], env: [{name: F, value: bind_address}]}",
        "[{name: a, basePath: /m}]",
    );
    assert!(
        check(&expanded).iter().any(|p| p.contains("uses $(...) expansion")),
        "{:?}",
        check(&expanded)
    );
    assert_eq!(owned_flag("--portx=1"), None);
    assert_eq!(owned_flag("--model_service_token_file=/t"), Some("model_service_token_file"));
}

#[test]
fn images_can_be_limited_to_prefixes() {
    let s = spec("[{name: a, basePath: /m}]");
    let policy =
        SpecPolicy { image_prefixes: vec!["registry.corp/versa/".into()], ..SpecPolicy::default() };
    let found = problems("fraud", &s, &policy);
    assert!(found[0].starts_with("server.image \"x\" is not allowed here"), "{found:?}");
    let mut ok = s.clone();
    ok.server.image = "registry.corp/versa/versa-server:1".into();
    assert!(problems("fraud", &ok, &policy).is_empty());
    let registry =
        SpecPolicy { image_prefixes: vec![image_prefix("registry.corp")], ..SpecPolicy::default() };
    assert!(problems("fraud", &ok, &registry).is_empty());
    let mut evil = s.clone();
    evil.server.image = "registry.corp.evil.io/versa-server:1".into();
    assert!(!problems("fraud", &evil, &registry).is_empty(), "a look-alike registry");
}

#[test]
fn every_problem_is_reported_at_once() {
    let s = spec_with(
        "{image: '', modelVolume: {name: m, hostPath: {path: /}}, args: ['--port=1']}",
        "[{name: a, basePath: rel}]",
    );
    assert_eq!(problems("Bad.Name", &s, &SpecPolicy::default()).len(), 5);
}

#[test]
fn a_canary_strategy_fits_the_rest_of_the_model() {
    let strategy = "strategy: {canary: {steps: [{setWeight: 10}, {pause: {}}]}}";
    let s = spec(&format!(
        "[{{name: a, basePath: /m, transition: ResourcePreserving, labels: {{stable: 1, canary: 2}}, traffic: {{stable: 90, canary: 10}}, {strategy}}}]"
    ));
    let found = check(&s);
    for expected in [
        "model a: traffic and strategy.canary cannot be used together: the canary sets the weights",
        "model a: labels.canary is the rollout's own (strategy.canary.canaryLabel)",
        "model a: a canary serves both versions at once: transition must be AvailabilityPreserving",
    ] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "missing {expected:?}: {found:?}");
    }
    // A canary is a move of `stable`: without the label there is none.
    let s = spec("[{name: a, basePath: /m, strategy: {canary: {steps: [{setWeight: 10}]}}}]");
    assert_eq!(
        check(&s),
        ["model a: strategy.canary rolls out each move of labels.stable: set labels.stable"]
    );
    let s = spec(
        "[{name: a, basePath: /m, labels: {stable: 1}, strategy: {canary: {steps: [{setWeight: 10}]}}}]",
    );
    assert!(check(&s).is_empty(), "{:?}", check(&s));
    // The strategy's own rules are reported too, by field.
    let s = spec("[{name: a, basePath: /m, strategy: {canary: {steps: [{setWeight: 120}]}}}]");
    let found = check(&s);
    assert!(
        found.iter().any(|p| p == "model a: strategy.canary.steps[0].setWeight: 120 exceeds 100"),
        "{found:?}"
    );
}

#[test]
fn the_automated_canary_example_is_accepted() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gitops/automated-canary.yaml");
    let md: versa_crd::ModelDeployment =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("example")).expect("parses");
    assert_eq!(problems("fraud", &md.spec, &SpecPolicy::default()), Vec::<String>::new());
}

#[test]
fn the_shadow_first_example_is_accepted() {
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gitops/shadow-first-canary.yaml");
    let md: versa_crd::ModelDeployment =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("example")).expect("parses");
    assert_eq!(problems("fraud", &md.spec, &SpecPolicy::default()), Vec::<String>::new());
    let steps =
        &md.spec.models[0].strategy.as_ref().and_then(|s| s.canary.as_ref()).expect("canary").steps;
    assert_eq!(steps[0].set_mirror.as_ref().map(|m| m.percent), Some(100));
}
