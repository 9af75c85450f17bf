//! How the canaries show: each model's `rollout` in status, the conditions
//! (an aborted rollout is `Degraded`, a paused one is not `Progressing`,
//! neither is `Ready` until promoted), Events with the reasons Argo
//! Rollouts users template on, and the rollout metrics.

use crate::canary_pass::CanaryPass;
use crate::controller::Context;
use crate::report;
use crate::rollout;
use crate::status::{DEGRADED, PROGRESSING, READY, set_condition};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use kube::runtime::events::EventType;
use versa_analysis::canary::{Outcome, RolloutEvent};
use versa_crd::command::EVERY_MODEL;
use versa_crd::{ModelDeployment, ModelDeploymentStatus};

/// Puts each model's rollout into `status` (with the weight the Pods now
/// confirm) and lets the least advanced rollout speak in the conditions.
pub fn attach(
    status: &mut ModelDeploymentStatus,
    canaries: &CanaryPass,
    generation: Option<i64>,
    now: Timestamp,
) {
    let mut aborted = Vec::new();
    let mut paused = Vec::new();
    let mut progressing = Vec::new();
    for model in &mut status.models {
        let Some(decided) = canaries.rollouts.get(&model.name) else { continue };
        let mut rollout = decided.status.clone();
        if let Some(r) = rollout.as_mut() {
            r.weight_in_force = rollout::weight_in_force(model, r, &decided.canary_label);
            let line = format!(
                "model {}: v{} → v{}: {}",
                model.name,
                r.baseline,
                r.candidate,
                r.message.as_deref().unwrap_or(&r.summary)
            );
            match r.phase.as_str() {
                "Aborted" => aborted.push(line),
                "Paused" => paused.push(line),
                "Progressing" => progressing.push(line),
                _ => {}
            }
        }
        model.rollout = rollout;
    }
    let c = &mut status.conditions;
    let g = generation;
    if !aborted.is_empty() {
        let message = aborted.join("; ");
        set_condition(c, DEGRADED, true, "RolloutAborted", message.clone(), g, now);
        set_condition(c, PROGRESSING, false, "RolloutAborted", message.clone(), g, now);
        set_condition(c, READY, false, "RolloutAborted", message, g, now);
    } else if !paused.is_empty() && progressing.is_empty() {
        let message = paused.join("; ");
        set_condition(c, PROGRESSING, false, "RolloutPaused", message.clone(), g, now);
        set_condition(c, READY, false, "RolloutPaused", message, g, now);
    } else if !progressing.is_empty() || !paused.is_empty() {
        let message = [progressing, paused].concat().join("; ");
        set_condition(c, PROGRESSING, true, "CanaryProgressing", message.clone(), g, now);
        set_condition(c, READY, false, "RolloutInProgress", message, g, now);
    }
}

/// The Events and metrics of this pass's canary decisions.
pub async fn announce(ctx: &Context, md: &ModelDeployment, canaries: &CanaryPass) {
    let (namespace, name) = (md.namespace().unwrap_or_default(), md.name_any());
    for (model, decided) in &canaries.rollouts {
        let labels = [namespace.as_str(), name.as_str(), model.as_str()];
        if let Some(status) = &decided.status {
            ctx.metrics.rollout_step.with_label_values(&labels).set(i64::from(status.state.step));
            ctx.metrics.rollout_weight.with_label_values(&labels).set(i64::from(status.weight));
        } else {
            // No rollout any more (an instant rollback): no stale gauges.
            let _ = ctx.metrics.rollout_step.remove_label_values(&labels);
            let _ = ctx.metrics.rollout_weight.remove_label_values(&labels);
        }
        if decided.restarted {
            let note = format!(
                "model {model}: the strategy's steps or analysis changed: the rollout starts again from its first step"
            );
            tracing::info!(model = %model, "{note}");
            report::publish(ctx, md, EventType::Normal, "RolloutRestarted", "Rollout", note).await;
        }
        if let crate::canary_serving::Start::Instant = decided.start {
            let note = format!(
                "model {model}: stable moved back to a version still loaded: rolled back at once, no steps"
            );
            report::publish(ctx, md, EventType::Normal, "RolloutRolledBack", "Rollout", note).await;
        }
        let Some(decision) = &decided.decision else { continue };
        if let Outcome::Aborted(reason) = decision.outcome {
            let reason = format!("{reason:?}");
            ctx.metrics
                .rollout_aborts
                .with_label_values(&[labels[0], labels[1], labels[2], &reason])
                .inc();
        }
        let versions = decided
            .status
            .as_ref()
            .map(|s| format!("v{} → v{}", s.baseline, s.candidate))
            .unwrap_or_default();
        for event in &decision.events {
            let (type_, note) = describe(event);
            let note = format!("model {model} ({versions}): {note}");
            tracing::info!(model = %model, reason = event.reason(), "{note}");
            report::publish(ctx, md, type_, event.reason(), "Rollout", note).await;
        }
    }
}

/// Events for a command annotation the rollouts could not take: one that
/// does not parse, or one for a model without a rollout (it is removed all
/// the same, so it is said here).
pub async fn announce_command(ctx: &Context, md: &ModelDeployment, canaries: &CanaryPass) {
    let Some((_, request)) = &canaries.command else { return };
    let note = match request {
        Err(why) => Some(("RolloutCommandInvalid", why.clone())),
        Ok(r) if r.model != EVERY_MODEL => {
            let rolling = canaries.rollouts.get(&r.model).is_some_and(|d| d.status.is_some());
            (!rolling).then(|| {
                let why = format!(
                    "command {:?} ignored: model {} has no rollout (a commit moving its `stable` under strategy.canary starts one)",
                    r.command, r.model
                );
                ("RolloutCommandIgnored", why)
            })
        }
        Ok(r) => {
            let taken = canaries.rollouts.values().any(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.last_command.as_ref())
                    .is_some_and(|l| l.id == r.id)
            });
            (!taken).then(|| {
                let why = format!("command {:?} ignored: no model has a rollout", r.command);
                ("RolloutCommandIgnored", why)
            })
        }
    };
    if let Some((reason, note)) = note {
        tracing::warn!(reason, "{note}");
        report::publish(ctx, md, EventType::Warning, reason, "Rollout", note).await;
    }
}

fn describe(event: &RolloutEvent) -> (EventType, String) {
    use EventType::{Normal, Warning};
    match event {
        RolloutEvent::StepCompleted { step } => (Normal, format!("step {step} completed")),
        RolloutEvent::Paused(reason) => (Normal, format!("paused: {reason:?}")),
        RolloutEvent::Resumed => (Normal, "resumed".into()),
        RolloutEvent::AnalysisRunStarted { kind, run } => {
            (Normal, format!("{kind:?} analysis run {run} started"))
        }
        RolloutEvent::AnalysisRun { kind, phase, message } => (
            Warning,
            format!("{kind:?} analysis {phase:?}: {}", message.as_deref().unwrap_or("no detail")),
        ),
        RolloutEvent::Aborted(reason) => {
            (Warning, format!("aborted ({reason:?}): all traffic back on the baseline"))
        }
        RolloutEvent::Retried => (Normal, "retried from the first step".into()),
        RolloutEvent::Completed => (Normal, "promoted: the candidate is stable".into()),
        RolloutEvent::CommandIgnored { command, why } => {
            (Warning, format!("command {command:?} ignored: {why}"))
        }
    }
}
