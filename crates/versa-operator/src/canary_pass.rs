//! The automated canaries of one ModelDeployment on one pass: each model
//! with `strategy.canary` is decided ([`rollout::decide`]), its due
//! analysis metrics are measured from the Ready Pods' counters (one
//! snapshot per Pod per pass, shared by every metric), and the model the
//! planner is given replaces the spec's. Models without a strategy pass
//! through unchanged.

use crate::analysis::{self, Action, Window, WindowKey};
use crate::controller::Context;
use crate::fleet::{self, Observed};
use crate::rollout::{self, ModelRollout};
use crate::strategy::{self, CompiledMetric};
use kube::ResourceExt as _;
use std::collections::BTreeMap;
use versa_analysis::Timestamp;
use versa_analysis::canary::{AnalysisKind, AnalysisRequest};
use versa_crd::command::{COMMAND_ANNOTATION, CommandRequest};
use versa_crd::{ModelDeployment, ModelDeploymentSpec, RolloutStatus};

/// The canaries' part of a pass.
#[derive(Debug, Default)]
pub struct CanaryPass {
    /// The spec as the planner must see it.
    pub planned: Option<ModelDeploymentSpec>,
    /// Per model with a canary.
    pub rollouts: BTreeMap<String, ModelRollout>,
    /// When to look again at the latest for the canaries' sake.
    pub wake: Option<Timestamp>,
    /// Measurements recorded this pass (the next pass acts on them at once).
    pub measured: usize,
    /// The command annotation's value as read, and what it says; the
    /// controller removes it once the pass's status is written.
    pub command: Option<(String, Result<CommandRequest, String>)>,
}

/// Decides and measures every canary of `md` at `now`.
pub async fn run(
    ctx: &Context,
    md: &ModelDeployment,
    observed: &[Observed],
    now: Timestamp,
) -> CanaryPass {
    let deployment = md.metadata.uid.as_deref().unwrap_or_default();
    let (namespace, name) = (md.namespace().unwrap_or_default(), md.name_any());
    let (spec, previous) = (&md.spec, md.status.as_ref());
    let command = md
        .annotations()
        .get(COMMAND_ANNOTATION)
        .map(|value| (value.clone(), CommandRequest::parse(value)));
    let mut pass = CanaryPass { command, ..CanaryPass::default() };
    let request = pass.command.as_ref().and_then(|(_, r)| r.as_ref().ok()).cloned();
    let mut planned = spec.clone();
    let mut keep = Vec::new();
    let mut counters = Counters { observed, desired: md.spec.replicas, taken: None };
    for model in &mut planned.models {
        let Some(canary) = model.strategy.as_ref().and_then(|s| s.canary.as_ref()) else {
            continue;
        };
        // Validation compiled it already; a spec it refused never gets here.
        let Ok(compiled) = strategy::compile(&model.name, canary) else { continue };
        let before = previous.and_then(|s| s.models.iter().find(|m| m.name == model.name));
        let mut decided = rollout::decide(model, &compiled, before, request.as_ref(), now);
        if let (Some(status), Some(decision)) = (decided.status.as_mut(), decided.decision.as_ref())
        {
            for request in &decision.analyses {
                let step = usize::try_from(decision.state.step).unwrap_or(usize::MAX);
                let metrics = match request.kind {
                    AnalysisKind::Step => compiled.step_metrics.get(&step),
                    AnalysisKind::Background => Some(&compiled.background),
                };
                let Some(metrics) = metrics else { continue };
                let key = |metric: &CompiledMetric| WindowKey {
                    deployment: deployment.to_owned(),
                    model: model.name.clone(),
                    kind: request.kind,
                    run: request.run,
                    metric: metric.spec.name.clone(),
                };
                for metric in metrics {
                    keep.push(key(metric));
                    let measured = measure_metric(
                        ctx,
                        &mut counters,
                        (key(metric), metric, metrics),
                        [&namespace, &name, &model.name],
                        status,
                        request,
                        now,
                    )
                    .await;
                    pass.wake = earliest(pass.wake, measured.0);
                    pass.measured += usize::from(measured.1);
                }
            }
            pass.wake = earliest(pass.wake, decision.requeue_at);
        }
        *model = decided.planned.clone();
        pass.rollouts.insert(model.name.clone(), decided);
    }
    ctx.windows.retain(deployment, &keep);
    if !pass.rollouts.is_empty() {
        pass.planned = Some(planned);
    }
    pass
}

/// One metric of one run: opens its window, or measures it when due.
/// Returns when to look again and whether a measurement was recorded.
async fn measure_metric(
    ctx: &Context,
    counters: &mut Counters<'_>,
    (key, metric, metrics): (WindowKey, &CompiledMetric, &[CompiledMetric]),
    at: [&str; 3],
    status: &mut RolloutStatus,
    request: &AnalysisRequest,
    now: Timestamp,
) -> (Option<Timestamp>, bool) {
    let (baseline, candidate) = (status.baseline, status.candidate);
    let run = match request.kind {
        AnalysisKind::Step => status.step_analysis.get_or_insert_with(Default::default),
        AnalysisKind::Background => status.background_analysis.get_or_insert_with(Default::default),
    };
    let name = metric.spec.name.clone();
    let window = ctx.windows.get(&key);
    let stored = run.metrics.get(&name).cloned().unwrap_or_default();
    let (action, wake) =
        analysis::action(&metric.spec, &stored, request.started_at, window.as_ref(), now);
    let Some(action) = action else { return (wake, false) };
    let desired = counters.desired;
    let (all_pods, unread) = counters.get(ctx).await;
    let pods: BTreeMap<String, versa_analysis::Snapshot> =
        all_pods.iter().map(|(pod, s)| (pod.clone(), s.of_model(&key.model))).collect();
    let mut recorded = false;
    let mut empty_before = 0;
    if let (Action::Measure, Some(window)) = (action, window.as_ref()) {
        let read = analysis::PodsRead { pods: &pods, unread, desired };
        let mut measurement =
            analysis::measure(metric, window, read, (baseline, candidate), &key.model, now);
        if measurement.is_none() {
            empty_before = window.empty_before + 1;
            tracing::info!(
                model = %key.model, version = candidate, metric = %name, in_a_row = empty_before,
                "no Pod had data over the window (every Pod new or restarted): the next one is measured"
            );
            (measurement, empty_before) = analysis::after_empty_window(empty_before, now);
        }
        if let Some(m) = measurement {
            tracing::info!(
                model = %key.model, version = candidate, metric = %name,
                phase = ?m.phase, value = ?m.value, baseline = ?m.baseline, samples = m.samples,
                "analysis measurement"
            );
            ctx.metrics.analysis_value(at, &name, candidate, m.value);
            ctx.metrics.analysis_value(at, &name, baseline, m.baseline);
            rollout::record(run, metrics, &name, m);
            recorded = true;
        }
    }
    ctx.windows.put(key, Window { started_at: now, pods, empty_before });
    (if recorded { Some(now) } else { wake }, recorded)
}

/// The Ready Pods' counters, read once per pass when a metric first needs them.
struct Counters<'a> {
    observed: &'a [Observed],
    /// Pods the spec asks for: none Ready of several is an Error, of none
    /// (scaled to zero) a quiet window.
    desired: i32,
    taken: Option<(BTreeMap<String, versa_analysis::Snapshot>, Vec<String>)>,
}

impl Counters<'_> {
    async fn get(
        &mut self,
        ctx: &Context,
    ) -> &(BTreeMap<String, versa_analysis::Snapshot>, Vec<String>) {
        if self.taken.is_none() {
            self.taken = Some(fleet::snapshots(ctx, self.observed).await);
        }
        self.taken.get_or_insert_default()
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
