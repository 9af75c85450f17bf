//! One model's automated canary on one pass, as pure functions: from the
//! spec's `stable` label, the previous status and the clock to the rollout
//! status to write, the step machine's decision, and the model the planner
//! is given (the baseline as `stable`, the candidate under the canary
//! label, the step's weights). The spec is never changed.
//!
//! Measuring is the one effect in between ([`crate::analysis`]): the
//! decision names the analysis runs to measure; their new measurements are
//! [`record`]ed into the status, and their verdicts decide the next pass.

use crate::canary_serving::{self, Delays, RolloutView, STABLE, Start};
use crate::strategy::{CompiledCanary, CompiledMetric};
use versa_analysis::canary::{
    self, AnalysisKind, Decision, Observed, Outcome, RolloutEvent, RolloutState, RunInput,
};
use versa_analysis::run::assess_run;
use versa_analysis::{Measurement, MetricStatus, Timestamp};
use versa_crd::command::{CommandRequest, EVERY_MODEL};
use versa_crd::{AnalysisRunStatus, CommandOutcome, ModelSpec, ModelStatus, RolloutStatus};

#[cfg(test)]
mod tests;

/// What one pass decides for one model with `strategy.canary`.
#[derive(Debug, Clone)]
pub struct ModelRollout {
    /// The model as the planner must see it.
    pub planned: ModelSpec,
    /// How the pass began: a new rollout, the one in progress, an instant
    /// rollback, or nothing to roll out.
    pub start: Start,
    /// The rollout status to write; `None`: no rollout.
    pub status: Option<RolloutStatus>,
    /// The step machine's decision, while a rollout exists.
    pub decision: Option<Decision>,
    /// The label the candidate is served under while the rollout runs.
    pub canary_label: String,
    /// A commit changed the steps or analysis of the rollout in progress:
    /// it started again from its first step on this pass.
    pub restarted: bool,
}

/// Decides one pass of `spec`'s canary from `previous` (this model's status
/// after the last pass) and the command annotation's `request`, at `now`.
pub fn decide(
    spec: &ModelSpec,
    canary: &CompiledCanary,
    previous: Option<&ModelStatus>,
    request: Option<&CommandRequest>,
    now: Timestamp,
) -> ModelRollout {
    let direct = |start| ModelRollout {
        planned: spec.clone(),
        start,
        status: None,
        decision: None,
        canary_label: canary.canary_label.clone(),
        restarted: false,
    };
    let Some(&wanted) = spec.labels.get(STABLE) else {
        return direct(Start::Direct);
    };
    let delays = Delays { unload: canary.unload_delay, abort_unload: canary.abort_unload_delay };
    let last = previous.and_then(|m| m.rollout.as_ref());
    let in_force_stable = previous.and_then(|m| m.labels.get(STABLE).copied());
    let start = begin(last, in_force_stable, wanted, delays, now);
    let fingerprint = strategy_fingerprint(spec);
    let mut restarted = false;
    let mut status = match (start, last) {
        (Start::Continue, Some(last)) => {
            let mut status = last.clone();
            restarted = restart_if_changed(&mut status, &fingerprint, now);
            status
        }
        (Start::Canary { baseline, candidate }, last) => {
            // The last command's id carries over: a command taken by the
            // previous rollout is not applied again to this one.
            let mut status = fresh(baseline, candidate, now);
            status.last_command = last.and_then(|l| l.last_command.clone());
            status
        }
        _ => return direct(start),
    };
    let pending = request.filter(|r| {
        r.targets(&spec.name) && status.last_command.as_ref().is_none_or(|c| c.id != r.id)
    });
    status.strategy_hash = Some(fingerprint);
    // A new rollout is at weight 0 until its first push: nothing in force.
    let weight_in_force = match start {
        Start::Continue => previous.and_then(|m| weight_in_force(m, &status, &canary.canary_label)),
        _ => None,
    };
    let mirror_in_force = match start {
        Start::Continue => previous.and_then(|m| mirror_in_force(m, &status, &canary.canary_label)),
        _ => None,
    };
    let step = usize::try_from(status.state.step).unwrap_or(usize::MAX);
    let observed = Observed {
        now,
        spec_paused: canary.paused,
        command: pending.map(|r| r.command),
        weight_in_force,
        mirror_in_force,
        step_analysis: canary.step_metrics.get(&step).and_then(|metrics| {
            run_input(status.step_analysis.as_ref(), status.state.step_run, metrics)
        }),
        background_analysis: run_input(
            status.background_analysis.as_ref(),
            status.state.background_run,
            &canary.background,
        ),
    };
    let mut decision = canary::next(&canary.strategy, &status.state, &observed);
    status.state = decision.state.clone();
    if let Some(r) = pending {
        let ignored = decision.events.iter().find_map(|e| match e {
            RolloutEvent::CommandIgnored { why, .. } => Some((*why).to_owned()),
            _ => None,
        });
        // A command for every model says nothing where it does not apply.
        if r.model == EVERY_MODEL {
            decision.events.retain(|e| !matches!(e, RolloutEvent::CommandIgnored { .. }));
        }
        status.last_command = Some(CommandOutcome {
            command: r.command,
            id: r.id.clone(),
            taken_at: now.as_millis(),
            ignored,
        });
    }
    status.weight = decision.weight;
    status.step_count = u32::try_from(canary.strategy.steps.len()).unwrap_or(u32::MAX);
    status.weight_in_force = weight_in_force;
    status.mirror = decision.mirror;
    status.mirror_in_force = mirror_in_force;
    for request in &decision.analyses {
        let run = match request.kind {
            AnalysisKind::Step => &mut status.step_analysis,
            AnalysisKind::Background => &mut status.background_analysis,
        };
        if run.as_ref().is_none_or(|r| r.run != request.run) {
            *run = Some(AnalysisRunStatus {
                run: request.run,
                phase: "Pending".into(),
                ..AnalysisRunStatus::default()
            });
        }
    }
    describe(&mut status, &decision, canary);
    let view = RolloutView {
        baseline: status.baseline,
        candidate: status.candidate,
        outcome: serving_outcome(&decision, &status.state),
    };
    let planned = canary_serving::planned_model(
        spec,
        (&canary.canary_label, &canary.mirror),
        &view,
        delays,
        now.as_millis(),
    );
    ModelRollout {
        planned,
        start,
        status: Some(status),
        decision: Some(decision),
        canary_label: canary.canary_label.clone(),
        restarted,
    }
}

/// A fingerprint of what a step index and an analysis run mean: the steps
/// (or step weights and interval) and the analysis. `paused`, the reactions
/// and the delays may change mid-rollout without a restart.
pub fn strategy_fingerprint(spec: &ModelSpec) -> String {
    let canary = spec.strategy.as_ref().and_then(|s| s.canary.as_ref());
    let shape = canary.map(|c| {
        serde_json::json!({
            "steps": c.steps, "stepWeights": c.step_weights,
            "interval": c.interval, "analysis": c.analysis,
        })
    });
    // FNV-1a, 64 bits: stable across builds and platforms.
    let bytes = serde_json::to_vec(&shape).unwrap_or_default();
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{FINGERPRINT_VERSION}-{hash:016x}")
}

/// The fingerprint's scheme: bumped whenever what it hashes (or how it is
/// serialized) changes, so an operator upgrade adopts the new fingerprints
/// instead of restarting every rollout in progress.
const FINGERPRINT_VERSION: &str = "v1";

/// Restarts a rollout in progress from its first step (new analysis run
/// generations) when its steps or analysis changed; a promoted or aborted
/// one stays as it is, and a status from before fingerprints adopts this
/// one. Whether it restarted.
fn restart_if_changed(status: &mut RolloutStatus, fingerprint: &str, now: Timestamp) -> bool {
    // Only a fingerprint of the same scheme can tell a change.
    let same_scheme = |h: &str| h.split('-').next() == fingerprint.split('-').next();
    let changed =
        status.strategy_hash.as_deref().is_some_and(|h| same_scheme(h) && h != fingerprint);
    let live = status.state.completed_at.is_none() && status.state.abort.is_none();
    if !(changed && live) {
        return false;
    }
    let (step_run, background_run) = (status.state.step_run, status.state.background_run);
    // A person's pause holds across the restart: they paused to look.
    let user_pause =
        status.state.pause.take().filter(|p| p.reason == canary::PauseReason::UserPaused);
    status.state = RolloutState {
        step_run: step_run.wrapping_add(1),
        background_run: background_run.wrapping_add(1),
        pause: user_pause,
        ..RolloutState::start(now)
    };
    status.step_analysis = None;
    status.background_analysis = None;
    true
}

/// How a move of `stable` to `wanted` begins, given the last rollout and
/// the `stable` in force: the rollout's own candidate continues it; an
/// earlier stable kept loaded for a rollback is instant; anything else is
/// a canary from the version serving `stable` now.
pub fn begin(
    last: Option<&RolloutStatus>,
    in_force_stable: Option<i64>,
    wanted: i64,
    delays: Delays,
    now: Timestamp,
) -> Start {
    let Some(r) = last else {
        return canary_serving::start(in_force_stable, wanted, None, &[]);
    };
    if wanted == r.candidate {
        return Start::Continue;
    }
    let view = RolloutView {
        baseline: r.baseline,
        candidate: r.candidate,
        outcome: stored_outcome(&r.state, r.weight, r.mirror),
    };
    match view.outcome {
        canary_serving::Outcome::InProgress { .. } => {
            canary_serving::start(Some(r.baseline), wanted, Some(&view), &[])
        }
        canary_serving::Outcome::Aborted { .. } => {
            canary_serving::start(Some(r.baseline), wanted, None, &[])
        }
        canary_serving::Outcome::Promoted { .. } => {
            // The baseline is kept loaded for `unloadDelaySeconds` after
            // the promotion: moving back to it then is instant.
            let kept = canary_serving::served(
                &std::collections::BTreeMap::new(),
                "",
                &view,
                delays,
                now.as_millis(),
            )
            .keep_loaded;
            canary_serving::start(Some(r.candidate), wanted, None, &kept)
        }
    }
}

/// A rollout from `baseline` to `candidate` at its first step.
fn fresh(baseline: i64, candidate: i64, now: Timestamp) -> RolloutStatus {
    RolloutStatus {
        baseline,
        candidate,
        phase: "Progressing".into(),
        message: None,
        step_count: 0,
        weight: 0,
        weight_in_force: None,
        mirror: 0,
        mirror_in_force: None,
        summary: String::new(),
        state: RolloutState::start(now),
        strategy_hash: None,
        last_command: None,
        step_analysis: None,
        background_analysis: None,
    }
}

/// The candidate's weight every Ready Pod confirmed (the model's status
/// reports only what all of them confirmed): its share under the canary
/// label while `stable` names the baseline; 0 before the canary label is
/// served; 100 once `stable` names the candidate.
pub fn weight_in_force(model: &ModelStatus, rollout: &RolloutStatus, label: &str) -> Option<u8> {
    let stable = model.labels.get(STABLE).copied()?;
    if stable == rollout.candidate && !model.labels.contains_key(label) {
        return Some(100);
    }
    if stable != rollout.baseline {
        return None;
    }
    if model.labels.get(label).is_some_and(|v| *v != rollout.candidate) {
        return None;
    }
    let weight = model.traffic.get(label).copied().unwrap_or(0);
    Some(u8::try_from(weight.min(100)).unwrap_or(100))
}

/// The rollout's mirror percent every Ready Pod confirmed: its share while
/// the mirror in force names the canary label and that label the
/// candidate; 0 when no mirror names the canary label (none, or the
/// model's own to another label or a version); `None` when the canary
/// label names another version.
pub fn mirror_in_force(model: &ModelStatus, rollout: &RolloutStatus, label: &str) -> Option<u8> {
    let Some(m) = model.mirror.as_ref().filter(|m| m.label.as_deref() == Some(label)) else {
        return Some(0);
    };
    (model.labels.get(label) == Some(&rollout.candidate)).then_some(m.percent.min(100))
}

/// The run's phase from its stored statuses, if they belong to generation `run`.
fn run_input(
    stored: Option<&AnalysisRunStatus>,
    run: u32,
    metrics: &[CompiledMetric],
) -> Option<RunInput> {
    let stored = stored.filter(|s| s.run == run)?;
    Some(RunInput { run, state: run_state(stored, metrics) })
}

fn run_state(stored: &AnalysisRunStatus, metrics: &[CompiledMetric]) -> versa_analysis::RunState {
    let empty = MetricStatus::default();
    assess_run(
        metrics.iter().map(|m| (&m.spec, stored.metrics.get(&m.spec.name).unwrap_or(&empty))),
    )
}

/// Records `measurement` of `metric` into `run`, and the run's phase after it.
pub fn record(run: &mut AnalysisRunStatus, metrics: &[CompiledMetric], name: &str, m: Measurement) {
    let Some(metric) = metrics.iter().find(|c| c.spec.name == name) else { return };
    run.metrics.entry(name.to_owned()).or_default().record(&metric.spec, m);
    let state = run_state(run, metrics);
    run.phase = format!("{:?}", state.phase);
    run.message = state.message;
}

/// The served outcome of this pass's decision.
fn serving_outcome(decision: &Decision, state: &RolloutState) -> canary_serving::Outcome {
    match decision.outcome {
        Outcome::Progressing | Outcome::Paused(_) => {
            canary_serving::Outcome::InProgress { weight: decision.weight, mirror: decision.mirror }
        }
        Outcome::Promoted => canary_serving::Outcome::Promoted {
            at_ms: state.completed_at.map_or(0, Timestamp::as_millis),
        },
        Outcome::Aborted(_) | Outcome::Degraded(_) => canary_serving::Outcome::Aborted {
            at_ms: state.abort.as_ref().map_or(0, |a| a.at.as_millis()),
        },
    }
}

/// The served outcome of a stored state (between passes).
fn stored_outcome(state: &RolloutState, weight: u8, mirror: u8) -> canary_serving::Outcome {
    if let Some(at) = state.completed_at {
        canary_serving::Outcome::Promoted { at_ms: at.as_millis() }
    } else if let Some(abort) = &state.abort {
        canary_serving::Outcome::Aborted { at_ms: abort.at.as_millis() }
    } else {
        canary_serving::Outcome::InProgress { weight, mirror }
    }
}

/// `phase`, `message` and the `kubectl get` summary.
fn describe(status: &mut RolloutStatus, decision: &Decision, canary: &CompiledCanary) {
    let steps = canary.strategy.steps.len();
    let step = usize::try_from(status.state.step).unwrap_or(usize::MAX).min(steps);
    let (phase, message) = match decision.outcome {
        Outcome::Progressing => ("Progressing", waiting_for(status, decision, canary)),
        Outcome::Paused(reason) => {
            let why = status.state.pause.as_ref().and_then(|p| p.message.clone());
            ("Paused", Some(why.map_or(format!("{reason:?}"), |m| format!("{reason:?}: {m}"))))
        }
        Outcome::Promoted => ("Promoted", None),
        Outcome::Aborted(reason) | Outcome::Degraded(reason) => {
            let why = status.state.abort.as_ref().and_then(|a| a.message.clone());
            ("Aborted", Some(why.map_or(format!("{reason:?}"), |m| format!("{reason:?}: {m}"))))
        }
    };
    status.phase = phase.to_owned();
    status.message = message;
    let analysis = [&status.step_analysis, &status.background_analysis]
        .into_iter()
        .flatten()
        .map(|r| r.phase.as_str())
        .max_by_key(|p| phase_rank(p))
        .map(|p| format!(" analysis {p}"))
        .unwrap_or_default();
    status.summary = match decision.outcome {
        Outcome::Progressing | Outcome::Paused(_) => {
            let mirror = match decision.mirror {
                0 => String::new(),
                m => format!(" mirror {m}%"),
            };
            format!("{phase} {step}/{steps} {}%{mirror}{analysis}", decision.weight)
        }
        _ => format!("{phase} v{}→v{}", status.baseline, status.candidate),
    };
}

fn phase_rank(phase: &str) -> u8 {
    match phase {
        "Failed" => 5,
        "Error" => 4,
        "Inconclusive" => 3,
        "Running" => 2,
        "Pending" => 1,
        _ => 0,
    }
}

/// What a progressing rollout waits for.
fn waiting_for(
    status: &RolloutStatus,
    decision: &Decision,
    canary: &CompiledCanary,
) -> Option<String> {
    let step = usize::try_from(status.state.step).ok()?;
    let kind = canary.strategy.steps.get(step)?;
    if status.state.step_ready_at.is_none() {
        let mirror = if canary.strategy.mirrors() {
            format!(" and mirror {}%", decision.mirror)
        } else {
            String::new()
        };
        return Some(format!(
            "step {step}: waiting for weight {}%{mirror} on every Ready Pod",
            decision.weight
        ));
    }
    Some(match kind {
        canary::Step::Pause(Some(d)) => format!("step {step}: pause of {}s", d.as_secs()),
        canary::Step::Analysis => format!("step {step}: analysis"),
        canary::Step::Pause(None) => format!("step {step}: paused until promoted"),
        canary::Step::SetWeight(w) => format!("step {step}: weight {w}%"),
        canary::Step::SetMirror(m) => format!("step {step}: mirror {m}%"),
    })
}
