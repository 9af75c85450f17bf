use super::*;

fn canary(yaml: &str) -> CanaryStrategy {
    serde_yaml::from_str(yaml).expect("strategy.canary YAML")
}

const ERROR_RATE: &str = r#"{name: error-rate, provider: {builtin: {metric: errorRate}}, interval: 30s, count: 4, failureCondition: "result > baseline * 1.5 + 0.01", minSampleCount: 200}"#;

#[test]
fn durations_are_go_style() {
    let d = |s: &str| parse_duration(s);
    assert_eq!(d("30s"), Some(Duration::from_secs(30)));
    assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
    for bad in ["", "10", "s", "1d", "-1s", ".5s", "5.s", "1m30", "9999h"] {
        assert_eq!(d(bad), None, "{bad:?}");
    }
}

#[test]
fn argo_steps_compile_with_each_analysis_steps_metrics() {
    let spec = canary(&format!(
        "steps:\n  - setWeight: 10\n  - pause: {{duration: 1m}}\n  - analysis:\n      metrics:\n        - {}\n  - pause: {{}}\n  - setWeight: 50\n",
        ERROR_RATE
    ));
    let compiled = compile("fraud", &spec).expect("compiles");
    assert_eq!(
        compiled.strategy.steps,
        [
            Step::SetWeight(10),
            Step::Pause(Some(Duration::from_secs(60))),
            Step::Analysis,
            Step::Pause(None),
            Step::SetWeight(50)
        ]
    );
    assert_eq!(compiled.step_metrics.keys().copied().collect::<Vec<_>>(), [2]);
    let metric = &compiled.step_metrics[&2][0];
    assert_eq!(metric.spec.count, Some(4));
    assert_eq!(metric.spec.interval, Some(Duration::from_secs(30)));
    assert_eq!(metric.spec.consecutive_error_limit, 4, "Argo's default");
    assert_eq!(metric.source, Source::Builtin(BuiltinMetric::ErrorRate(ErrorClasses::default())));
    assert_eq!(compiled.canary_label, "canary");
    assert_eq!(compiled.strategy.on_failure, canary::Reaction::Abort);
    assert_eq!(compiled.strategy.on_inconclusive, canary::Reaction::Pause);
    assert_eq!(compiled.unload_delay, Duration::from_secs(300));
    assert!(compiled.background.is_empty() && compiled.strategy.background.is_none());
}

#[test]
fn flagger_step_weights_expand_under_the_background_analysis() {
    let spec = canary(&format!(
        "stepWeights: [5, 25, 50]\ninterval: 1m\nonFailure: Pause\nanalysis:\n  metrics:\n    - {}\n",
        ERROR_RATE
    ));
    let compiled = compile("fraud", &spec).expect("compiles");
    let minute = Some(Duration::from_secs(60));
    assert_eq!(
        compiled.strategy.steps,
        [5, 25, 50]
            .iter()
            .flat_map(|w| [Step::SetWeight(*w), Step::Pause(minute)])
            .collect::<Vec<_>>()
    );
    assert_eq!(compiled.strategy.background, Some(canary::BackgroundAnalysis { starting_step: 0 }));
    assert_eq!(compiled.background.len(), 1);
    assert_eq!(compiled.strategy.on_failure, canary::Reaction::Pause);
}

#[test]
fn every_problem_is_named_with_its_field() {
    let spec = canary(&format!("canaryLabel: stable\nstepWeights: [5]\n{}", text_steps_only()));
    let problems = compile("fraud", &spec).expect_err("invalid");
    let text = problems.join("\n");
    for expected in [
        "model fraud: strategy.canary.stepWeights: set steps or stepWeights, not both",
        "model fraud: strategy.canary.interval: stepWeights needs an interval",
        "strategy.canary.canaryLabel: \"stable\" cannot name the candidate",
        "strategy.canary.analysis: stepWeights are judged by the background analysis",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }

    let spec = canary(&text_steps_only());
    let problems = compile("fraud", &spec).expect_err("invalid").join("\n");
    for expected in [
        "strategy.canary.steps[0].setWeight: 101 exceeds 100",
        "strategy.canary.steps[1].pause.duration: not a duration",
        "strategy.canary.steps[2]: a step is exactly one of setWeight, setMirror, pause, analysis",
        "strategy.canary.steps[3].analysis.metrics[a].successCondition:",
        "strategy.canary.steps[3].analysis.metrics[a]: metric names must be unique",
        "metrics[a].provider.builtin.quantile: 0 is not in (0, 1]",
        "metrics[b]: needs successCondition, failureCondition or thresholdRange",
        "metrics[c].provider.prometheus.address: \"prom:9090\" must be an http(s) URL",
        "metrics[d].thresholdRange:",
        "metrics[d].interval: \"1y\" is not a duration",
        "metrics[e].provider.prometheus: not measured by this version of the operator yet",
    ] {
        assert!(problems.contains(expected), "missing {expected:?} in\n{problems}");
    }
}

#[test]
fn an_analysis_step_must_end_so_its_metrics_need_a_count() {
    let endless = r#"{name: e, provider: {builtin: {metric: errorRate}}, interval: 30s, thresholdRange: {max: 0.1}}"#;
    let spec = canary(&format!("steps: [{{analysis: {{metrics: [{endless}]}}}}]"));
    let problems = compile("fraud", &spec).expect_err("an endless step").join("\n");
    assert!(
        problems.contains(
            "strategy.canary.steps[0].analysis.metrics[e]: an analysis step needs a count"
        ),
        "{problems}"
    );
    // In the background analysis an open-ended metric is the point.
    let spec = canary(&format!("steps: [{{setWeight: 10}}]\nanalysis: {{metrics: [{endless}]}}"));
    assert!(compile("fraud", &spec).is_ok());
}

fn text_steps_only() -> String {
    r#"
steps:
  - setWeight: 101
  - pause: {duration: soon}
  - {setWeight: 10, pause: {}}
  - analysis:
      metrics:
        - {name: a, provider: {builtin: {metric: errorRate}}, successCondition: "result <"}
        - {name: a, provider: {builtin: {metric: latency, quantile: 0}}, thresholdRange: {max: 0.2}}
        - {name: b, provider: {builtin: {metric: errorRate}}}
        - {name: c, provider: {prometheus: {address: "prom:9090", query: "up"}}, thresholdRange: {min: 1}}
        - {name: e, provider: {prometheus: {address: "http://prom:9090", query: "up"}}, thresholdRange: {min: 1}}
        - {name: d, provider: {builtin: {metric: requestCount}}, thresholdRange: {min: 5, max: 1}, interval: 1y}
"#
    .to_owned()
}

const AGREEMENT: &str = r#"{name: agreement, provider: {builtin: {metric: mirrorAgreementRate}}, interval: 30s, count: 2, thresholdRange: {min: 0.99}, minSampleCount: 100}"#;
const RATIO: &str = r#"{name: ratio, provider: {builtin: {metric: mirrorLatencyRatio}}, interval: 30s, count: 2, thresholdRange: {max: 1.5}}"#;

#[test]
fn set_mirror_steps_compile_and_mirror_metrics_need_copies_to_measure() {
    let spec = canary(&format!(
        "steps:\n  - setMirror: {{percent: 20}}\n  - analysis: {{metrics: [{AGREEMENT}, {RATIO}]}}\n  - setMirror: {{percent: 0}}\n  - setWeight: 10\n"
    ));
    let compiled = compile("fraud", &spec).expect("compiles");
    assert_eq!(
        compiled.strategy.steps,
        [Step::SetMirror(20), Step::Analysis, Step::SetMirror(0), Step::SetWeight(10)]
    );
    let sources: Vec<&Source> = compiled.step_metrics[&1].iter().map(|m| &m.source).collect();
    assert_eq!(
        sources,
        [
            &Source::Builtin(BuiltinMetric::MirrorAgreementRate),
            &Source::Builtin(BuiltinMetric::MirrorLatencyRatio { quantile: 0.5 })
        ]
    );
    // The same analysis after the mirror ended, and in the background of a
    // strategy that never mirrors: nothing to measure, ever.
    let late = canary(&format!(
        "steps:\n  - setMirror: {{percent: 20}}\n  - setMirror: {{percent: 0}}\n  - analysis: {{metrics: [{AGREEMENT}]}}\n"
    ));
    let problems = compile("fraud", &late).expect_err("no copies at step 2");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("steps[2].analysis: metric agreement measures shadow copies")),
        "{problems:?}"
    );
    let background =
        canary(&format!("steps: [{{setWeight: 10}}]\nanalysis: {{metrics: [{AGREEMENT}]}}\n"));
    let problems = compile("fraud", &background).expect_err("never mirrors");
    assert!(
        problems.iter().any(|p| p.contains("step 0 has no setMirror above 0 in force")),
        "{problems:?}"
    );
    let both = canary("steps: [{setWeight: 10, setMirror: {percent: 5}}]");
    let problems = compile("fraud", &both).expect_err("two in one step");
    assert!(
        problems.iter().any(|p| p.contains("exactly one of setWeight, setMirror")),
        "{problems:?}"
    );
}
