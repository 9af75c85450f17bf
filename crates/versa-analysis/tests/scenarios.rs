//! The step machine driven through the YAML scenarios of `tests/scenarios/`: a strategy
//! in the CRD's vocabulary, then passes (what the operator observed) each with what the
//! decision must be. A pass with `restart: true` first round-trips the state through
//! JSON, as an operator restart reads it back from status.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use versa_analysis::Timestamp;
use versa_analysis::canary::{
    self, AnalysisKind, BackgroundAnalysis, CanaryStrategy, Command, Observed, Reaction,
    RolloutState, RunInput, Step,
};
use versa_analysis::run::AnalysisPhase;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Scenario {
    strategy: StrategySpec,
    passes: Vec<Pass>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StrategySpec {
    #[serde(default)]
    steps: Vec<StepSpec>,
    step_weights: Option<Vec<u8>>,
    interval: Option<u64>,
    analysis: Option<BackgroundSpec>,
    on_inconclusive: Option<String>,
    on_failure: Option<String>,
    progress_deadline_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StepSpec {
    set_weight: Option<u8>,
    pause: Option<PauseSpec>,
    analysis: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseSpec {
    duration: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BackgroundSpec {
    #[serde(default)]
    starting_step: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Pass {
    at: i64,
    in_force: Option<u8>,
    #[serde(default)]
    spec_paused: bool,
    command: Option<Command>,
    step_analysis: Option<AnalysisPhase>,
    background: Option<AnalysisPhase>,
    #[serde(default)]
    restart: bool,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expect {
    outcome: Option<String>,
    weight: Option<u8>,
    step: Option<u32>,
    events: Option<Vec<String>>,
    measure: Option<Vec<AnalysisKind>>,
    requeue_at: Option<i64>,
}

fn reaction(s: Option<&str>, default: Reaction) -> Reaction {
    match s {
        None => default,
        Some("Pause") => Reaction::Pause,
        Some("Abort") => Reaction::Abort,
        Some(other) => panic!("unknown reaction {other}"),
    }
}

fn strategy(spec: &StrategySpec) -> CanaryStrategy {
    let mut s = match (&spec.step_weights, spec.interval) {
        (Some(weights), Some(interval)) => {
            CanaryStrategy::from_step_weights(weights, Duration::from_secs(interval))
                .expect("valid stepWeights")
        }
        _ => CanaryStrategy::new(
            spec.steps
                .iter()
                .map(|step| match step {
                    StepSpec { set_weight: Some(w), .. } => Step::SetWeight(*w),
                    StepSpec { pause: Some(p), .. } => {
                        Step::Pause(p.duration.map(Duration::from_secs))
                    }
                    StepSpec { analysis: Some(_), .. } => Step::Analysis,
                    _ => panic!("empty step"),
                })
                .collect(),
        ),
    };
    if let Some(bg) = &spec.analysis {
        s.background = Some(BackgroundAnalysis { starting_step: bg.starting_step });
    }
    s.on_inconclusive = reaction(spec.on_inconclusive.as_deref(), Reaction::Pause);
    s.on_failure = reaction(spec.on_failure.as_deref(), Reaction::Abort);
    s.progress_deadline = spec.progress_deadline_seconds.map(Duration::from_secs);
    s.validate().expect("valid strategy");
    s
}

fn run_scenario(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let scenario: Scenario = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
    let strategy = strategy(&scenario.strategy);
    let mut state = RolloutState::start(Timestamp::from_secs(0));
    for (i, pass) in scenario.passes.iter().enumerate() {
        let at = format!("pass {i} (at: {})", pass.at);
        if pass.restart {
            let json = serde_json::to_string(&state).map_err(|e| e.to_string())?;
            state = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        }
        let input = |run: u32, phase: Option<AnalysisPhase>| {
            phase.map(|phase| RunInput::new(run, phase, Some("from the scenario".into())))
        };
        let observed = Observed {
            spec_paused: pass.spec_paused,
            command: pass.command,
            weight_in_force: pass.in_force,
            step_analysis: input(state.step_run, pass.step_analysis),
            background_analysis: input(state.background_run, pass.background),
            ..Observed::at(Timestamp::from_secs(pass.at))
        };
        let d = canary::next(&strategy, &state, &observed);
        let e = &pass.expect;
        let check = |what: &str, ok: bool, got: String| {
            if ok { Ok(()) } else { Err(format!("{at}: {what}: got {got}")) }
        };
        if let Some(outcome) = &e.outcome {
            let got = format!("{:?}", d.outcome);
            check("outcome", &got == outcome, got)?;
        }
        if let Some(w) = e.weight {
            check("weight", d.weight == w, d.weight.to_string())?;
        }
        if let Some(step) = e.step {
            check("step", d.state.step == step, d.state.step.to_string())?;
        }
        if let Some(events) = &e.events {
            let got: Vec<&str> = d.events.iter().map(|e| e.reason()).collect();
            check("events", &got == events, format!("{got:?}"))?;
        }
        if let Some(kinds) = &e.measure {
            let got: Vec<AnalysisKind> = d.analyses.iter().map(|a| a.kind).collect();
            check("measure", &got == kinds, format!("{got:?}"))?;
        }
        if let Some(r) = e.requeue_at {
            let want = Some(Timestamp::from_secs(r));
            check("requeueAt", d.requeue_at == want, format!("{:?}", d.requeue_at))?;
        }
        state = d.state;
    }
    Ok(())
}

#[test]
fn scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/scenarios")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "scenarios missing in {}", dir.display());
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|p| run_scenario(p).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
