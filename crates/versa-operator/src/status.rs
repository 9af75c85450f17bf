//! The status the operator writes, as pure functions of the plan and what
//! was observed: conditions `Ready`, `Progressing`, `Degraded` with
//! CamelCase reasons and a `lastTransitionTime` that moves only when a
//! condition's status flips; `observedGeneration` on every write.

use crate::plan::{Phase, Plan, PreviousModel, Routing};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use versa_crd::{ModelDeploymentStatus, ModelStatus, VersionStatus};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Sets a condition, keeping its `lastTransitionTime` unless its status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let since = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    });
    let order = |t: &str| [READY, PROGRESSING, DEGRADED].iter().position(|x| *x == t);
    conditions.sort_by_key(|c| order(&c.type_));
}

/// Is condition `type_` True?
pub fn is_true(status: Option<&ModelDeploymentStatus>, type_: &str) -> bool {
    status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// What the previous status says about each model, for the planner, when
/// the spec is now at `generation`.
pub fn previous_models(
    status: Option<&ModelDeploymentStatus>,
    generation: Option<i64>,
) -> BTreeMap<String, PreviousModel> {
    status
        .map(|s| {
            s.models
                .iter()
                .map(|m| {
                    let previous = PreviousModel {
                        phase: Phase::parse(&m.phase),
                        phase_since: m.phase_since.as_ref().map(|t| t.0),
                        in_force: Routing {
                            labels: m.labels.clone(),
                            traffic: m.traffic.clone(),
                            mirror: m.mirror.clone(),
                        },
                        // Timed by the pass that last planned this model,
                        // not by status writes that only report a failure.
                        rollout_changed: m.generation != generation,
                    };
                    (m.name.clone(), previous)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Pods as counted this pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodCounts {
    pub desired: i32,
    pub existing: i32,
    pub ready: i32,
}

/// Status of a spec the operator refuses: no action taken, the models'
/// status left as it was.
pub fn invalid(
    previous: Option<&ModelDeploymentStatus>,
    generation: Option<i64>,
    problems: &[String],
    now: Timestamp,
) -> ModelDeploymentStatus {
    let message = format!("spec refused, nothing changed: {}", problems.join("; "));
    failed(previous, generation, "InvalidSpec", &message, now)
}

/// Status of a pass that failed before it could finish (an object it may
/// not touch, an API error): `Degraded` with the reason and the message;
/// `Progressing` and `Ready` False, since this generation does not move
/// until it is resolved. The models' status (and their phase clocks) stay
/// as the last planning pass left them.
pub fn failed(
    previous: Option<&ModelDeploymentStatus>,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> ModelDeploymentStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let c = &mut status.conditions;
    // This generation is not rolled out: whatever the Pods serve, it is not
    // Ready (a `kubectl wait` or a GitOps health check must not pass).
    set_condition(c, READY, false, reason, message.to_owned(), generation, now);
    set_condition(c, PROGRESSING, false, reason, message.to_owned(), generation, now);
    set_condition(c, DEGRADED, true, reason, message.to_owned(), generation, now);
    status
}

/// Whether condition `type_` differs (status, reason or message) between
/// two statuses: the moment to tell the user again.
pub fn condition_changed(
    before: Option<&ModelDeploymentStatus>,
    after: &ModelDeploymentStatus,
    type_: &str,
) -> bool {
    let key = |s: &ModelDeploymentStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    before.map(key) != Some(key(after))
}

/// Status after a pass: `in_force` is what every Ready Pod confirmed,
/// `pod_errors` the sidecars that could not be reached or refused.
pub fn after_pass(
    previous: Option<&ModelDeploymentStatus>,
    generation: Option<i64>,
    plan: &Plan,
    in_force: &BTreeMap<String, Routing>,
    pods: PodCounts,
    pod_errors: &[String],
    now: Timestamp,
) -> ModelDeploymentStatus {
    let models: Vec<ModelStatus> = plan
        .models
        .iter()
        .map(|m| {
            let routing = in_force.get(&m.name).unwrap_or(&m.in_force);
            ModelStatus {
                name: m.name.clone(),
                phase: m.phase.as_str().to_owned(),
                phase_since: Some(Time(m.phase_since)),
                generation,
                labels: routing.labels.clone(),
                traffic: routing.traffic.clone(),
                mirror: routing.mirror.clone(),
                versions: m
                    .versions
                    .iter()
                    .rev()
                    .map(|(v, s)| VersionStatus {
                        version: *v,
                        available: s.available,
                        loading: s.loading,
                        failed: s.failed,
                        last_error: s.last_error.clone(),
                    })
                    .collect(),
                message: m.stop.as_ref().map(|s| s.message.clone()),
                // The canary pass attaches it (`rollout_report::attach`).
                rollout: None,
            }
        })
        .collect();
    let phase = plan.models.iter().map(|m| m.phase).min().unwrap_or(Phase::Ready);
    let stops: Vec<&crate::plan::ModelPlan> =
        plan.models.iter().filter(|m| m.stop.is_some()).collect();
    let moving: Vec<String> = plan
        .models
        .iter()
        .filter(|m| !matches!(m.phase, Phase::Ready | Phase::Stopped))
        .map(|m| format!("{}: {}", m.name, m.phase.as_str()))
        .collect();
    let pods_short = pods.ready < pods.desired || pods.existing != pods.desired;

    let mut status = ModelDeploymentStatus {
        observed_generation: generation,
        conditions: previous.map(|s| s.conditions.clone()).unwrap_or_default(),
        replicas: pods.existing,
        ready_replicas: pods.ready,
        ready_summary: Some(format!("{}/{}", pods.ready, pods.desired)),
        phase: Some(phase.as_str().to_owned()),
        models,
    };
    let c = &mut status.conditions;
    let g = generation;
    if let Some(first) = stops.first() {
        let stop = first.stop.as_ref().map(|s| (s.reason, s.message.clone())).unwrap_or_default();
        let message = stops
            .iter()
            .filter_map(|m| m.stop.as_ref().map(|s| format!("model {}: {}", m.name, s.message)))
            .collect::<Vec<_>>()
            .join("; ");
        set_condition(c, DEGRADED, true, stop.0, message.clone(), g, now);
        set_condition(c, PROGRESSING, false, "RolloutStopped", message.clone(), g, now);
        set_condition(c, READY, false, "RolloutStopped", message, g, now);
        return status;
    }
    if pod_errors.is_empty() {
        set_condition(
            c,
            DEGRADED,
            false,
            "AsExpected",
            "every wanted version loads and every Pod answers".into(),
            g,
            now,
        );
    } else {
        set_condition(c, DEGRADED, true, "SidecarUnreachable", pod_errors.join("; "), g, now);
    }
    if !moving.is_empty() {
        let reason = moving_reason(plan);
        let message = moving.join(", ");
        set_condition(c, PROGRESSING, true, reason, message.clone(), g, now);
        set_condition(c, READY, false, "RolloutInProgress", message, g, now);
    } else if pods_short {
        let message =
            format!("{} of {} Pods ready ({} exist)", pods.ready, pods.desired, pods.existing);
        set_condition(c, PROGRESSING, true, "PodsStarting", message.clone(), g, now);
        set_condition(c, READY, false, "PodsNotReady", message, g, now);
    } else {
        let message = format!("{} Pods serve every model as specified", pods.ready);
        set_condition(c, PROGRESSING, false, "RolloutComplete", message.clone(), g, now);
        set_condition(c, READY, pod_errors.is_empty(), "AllPodsServing", message, g, now);
    }
    status
}

/// The least advanced model's phase, as a reason.
fn moving_reason(plan: &Plan) -> &'static str {
    plan.models
        .iter()
        .map(|m| m.phase)
        .filter(|p| !matches!(p, Phase::Ready | Phase::Stopped))
        .min()
        .map_or("RolloutInProgress", Phase::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ModelPlan, Stop};
    use versa_proto::serving::ModelServerConfig;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn plan_with(phase: Phase, stop: Option<Stop>) -> Plan {
        Plan {
            models: vec![ModelPlan {
                name: "fraud".into(),
                phase,
                phase_since: t("2026-11-25T10:00:00Z"),
                routing: Routing::default(),
                in_force_if_accepted: Routing::default(),
                in_force: Routing::default(),
                versions: BTreeMap::new(),
                stop,
            }],
            pod_configs: BTreeMap::new(),
            boot_config: ModelServerConfig::default(),
        }
    }

    fn condition<'a>(s: &'a ModelDeploymentStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).expect("condition")
    }

    const PODS: PodCounts = PodCounts { desired: 3, existing: 3, ready: 3 };

    #[test]
    fn transition_time_moves_only_when_a_condition_flips() {
        let first = after_pass(
            None,
            Some(1),
            &plan_with(Phase::LoadingVersions, None),
            &BTreeMap::new(),
            PODS,
            &[],
            t("2026-11-25T10:00:00Z"),
        );
        assert_eq!(condition(&first, PROGRESSING).status, "True");
        assert_eq!(condition(&first, PROGRESSING).reason, "LoadingVersions");
        assert_eq!(condition(&first, READY).status, "False");
        // Still progressing, another phase: reason changes, time does not.
        let second = after_pass(
            Some(&first),
            Some(1),
            &plan_with(Phase::MovingLabels, None),
            &BTreeMap::new(),
            PODS,
            &[],
            t("2026-11-25T10:00:05Z"),
        );
        assert_eq!(condition(&second, PROGRESSING).reason, "MovingLabels");
        assert_eq!(
            condition(&second, PROGRESSING).last_transition_time,
            condition(&first, PROGRESSING).last_transition_time
        );
        // Done: both flip at the new time.
        let done = after_pass(
            Some(&second),
            Some(2),
            &plan_with(Phase::Ready, None),
            &BTreeMap::new(),
            PODS,
            &[],
            t("2026-11-25T10:00:09Z"),
        );
        assert_eq!(condition(&done, READY).status, "True");
        assert_eq!(condition(&done, READY).last_transition_time, Time(t("2026-11-25T10:00:09Z")));
        assert_eq!(
            condition(&done, DEGRADED).last_transition_time,
            Time(t("2026-11-25T10:00:00Z"))
        );
        assert_eq!(done.observed_generation, Some(2));
        assert_eq!(done.ready_summary.as_deref(), Some("3/3"));
        assert_eq!(done.phase.as_deref(), Some("Ready"));
        let order: Vec<&str> = done.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(order, [READY, PROGRESSING, DEGRADED]);
    }

    #[test]
    fn a_stop_is_degraded_with_the_reason_and_the_pod() {
        let stop = Stop {
            reason: "VersionLoadFailed",
            message: "version 42 failed to load on pod p2: bad".into(),
        };
        let s = after_pass(
            None,
            Some(3),
            &plan_with(Phase::Stopped, Some(stop)),
            &BTreeMap::new(),
            PODS,
            &[],
            t("2026-11-25T10:00:00Z"),
        );
        let degraded = condition(&s, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "VersionLoadFailed")
        );
        assert_eq!(degraded.message, "model fraud: version 42 failed to load on pod p2: bad");
        assert_eq!(condition(&s, PROGRESSING).status, "False");
        assert_eq!(
            s.models[0].message.as_deref(),
            Some("version 42 failed to load on pod p2: bad")
        );
        assert_eq!(s.phase.as_deref(), Some("Stopped"));
    }

    #[test]
    fn missing_pods_keep_it_progressing_and_invalid_specs_say_why() {
        let s = after_pass(
            None,
            Some(1),
            &plan_with(Phase::Ready, None),
            &BTreeMap::new(),
            PodCounts { desired: 3, existing: 3, ready: 2 },
            &[],
            t("2026-11-25T10:00:00Z"),
        );
        assert_eq!(condition(&s, PROGRESSING).reason, "PodsStarting");
        assert_eq!(condition(&s, READY).reason, "PodsNotReady");
        let bad = invalid(
            Some(&s),
            Some(2),
            &["traffic weights sum to 90".into()],
            t("2026-11-25T10:01:00Z"),
        );
        assert_eq!(condition(&bad, DEGRADED).reason, "InvalidSpec");
        assert!(condition(&bad, DEGRADED).message.contains("traffic weights sum to 90"));
        assert_eq!(bad.models, s.models, "models' status untouched");
        assert_eq!(bad.observed_generation, Some(2));
        let failed = failed(
            Some(&s),
            Some(1),
            "ResourceConflict",
            "Service x exists",
            t("2026-11-25T10:02:00Z"),
        );
        assert_eq!(condition(&failed, DEGRADED).reason, "ResourceConflict");
        assert_eq!(condition(&failed, READY).status, "False");
        // A failure reported for generation 2 does not move the models'
        // clocks onto it: the next pass still sees a new rollout.
        let failed_2 =
            super::failed(Some(&s), Some(2), "ApplyFailed", "quota", t("2026-11-25T10:03:00Z"));
        assert!(previous_models(Some(&failed_2), Some(2))["fraud"].rollout_changed);
        assert!(condition_changed(Some(&s), &failed, DEGRADED));
        assert!(!condition_changed(Some(&failed), &failed, DEGRADED));
        let prev = previous_models(Some(&s), Some(1));
        assert_eq!(prev["fraud"].phase, Some(Phase::Ready));
        assert!(!prev["fraud"].rollout_changed);
        assert!(previous_models(Some(&s), Some(2))["fraud"].rollout_changed);
    }
}
