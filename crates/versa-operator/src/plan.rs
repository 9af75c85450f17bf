//! The planner: a pure function of (spec, observed Pods, previous status, now)
//! that says which phase each model's rollout is in, what config every
//! sidecar must get, and what the status is.
//!
//! Every change goes through the same phases, whatever it is (a new canary, a
//! promotion, a rollback by reverting the spec):
//!
//! 1. `LoadingVersions` — serve the union of the wanted versions and the
//!    versions the labels in force point at; labels and weights unchanged;
//!    wait until the wanted versions are AVAILABLE on every Ready Pod.
//! 2. `MovingLabels` — set the new labels (keeping any label the weights in
//!    force still route to).
//! 3. `ShiftingTraffic` — set the new weights and mirror.
//! 4. `UnloadingVersions` — serve exactly the wanted versions.
//! 5. `Ready`.
//!
//! A wanted version that fails to load on any Pod, or does not load in time,
//! stops the model in `Stopped` with the old versions serving; fixing the spec
//! resumes. "In force" labels and weights are the ones every Ready Pod has
//! accepted; the operator records them in `status` after each confirmed push.

use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use versa_crd::{ModelDeploymentSpec, ModelSpec, Transition};
use versa_proto::serving::{
    ModelConfig, ModelConfigList, ModelServerConfig, VersaTransitionPolicy,
    file_system_storage_path_source_config::{
        ServableVersionPolicy, servable_version_policy as policy,
    },
    model_server_config,
};

/// A version's state on one Pod, as its sidecar reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionState {
    Loading,
    Available,
    Unloading,
    /// Ended normally (unloaded, or never needed).
    Ended,
    /// Ended in error: the error message.
    Failed(String),
}

/// Model → version → state on one Pod.
pub type PodModels = BTreeMap<String, BTreeMap<i64, VersionState>>;

/// One serving Pod as observed this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// The Pod's Ready condition.
    pub ready: bool,
    /// What its sidecar reported; `None` when it could not be asked.
    pub models: Option<PodModels>,
}

/// What a model's previous status recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreviousModel {
    pub phase: Option<Phase>,
    pub phase_since: Option<Timestamp>,
    pub in_force: Routing,
    /// The spec changed since that status was written (another
    /// generation): the phase clock starts again, so a new rollout is never
    /// timed from an old one's start.
    pub rollout_changed: bool,
}

/// A model's rollout phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Stopped,
    LoadingVersions,
    MovingLabels,
    ShiftingTraffic,
    UnloadingVersions,
    Ready,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stopped => "Stopped",
            Phase::LoadingVersions => "LoadingVersions",
            Phase::MovingLabels => "MovingLabels",
            Phase::ShiftingTraffic => "ShiftingTraffic",
            Phase::UnloadingVersions => "UnloadingVersions",
            Phase::Ready => "Ready",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Phase::Stopped,
            Phase::LoadingVersions,
            Phase::MovingLabels,
            Phase::ShiftingTraffic,
            Phase::UnloadingVersions,
            Phase::Ready,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// Why a model's rollout stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// CamelCase reason for the Degraded condition.
    pub reason: &'static str,
    pub message: String,
}

/// One version aggregated over the Ready Pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionSummary {
    pub available: i32,
    pub loading: i32,
    pub failed: i32,
    pub last_error: Option<String>,
}

/// The plan for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPlan {
    pub name: String,
    pub phase: Phase,
    pub phase_since: Timestamp,
    /// Labels and weights this pass pushes to the Pods.
    pub routing: Routing,
    /// Labels and weights in force, if every Ready Pod accepts this pass's push.
    pub in_force_if_accepted: Routing,
    /// Labels and weights in force before this pass.
    pub in_force: Routing,
    pub versions: BTreeMap<i64, VersionSummary>,
    pub stop: Option<Stop>,
}

/// The whole plan of one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub models: Vec<ModelPlan>,
    /// Config to push to each Pod whose sidecar was observed.
    pub pod_configs: BTreeMap<String, ModelServerConfig>,
    /// Config new Pods boot with (the ConfigMap): this pass's phase config.
    pub boot_config: ModelServerConfig,
}

/// Versions a config serves: an explicit list, or the spec's own policy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Versions {
    Specific(BTreeSet<i64>),
    Latest(u32),
    All,
}

fn spec_versions(model: &ModelSpec) -> Versions {
    match &model.version_policy {
        Some(p) if p.specific.is_some() => {
            Versions::Specific(p.specific.iter().flat_map(|s| s.versions.iter().copied()).collect())
        }
        Some(p) if p.all.is_some() => Versions::All,
        Some(p) => Versions::Latest(p.latest.as_ref().map_or(1, |l| l.num_versions.max(1))),
        None => Versions::Latest(1),
    }
}

/// The sidecar config of one model.
fn model_config(model: &ModelSpec, versions: &Versions, routing: &Routing) -> ModelConfig {
    let choice = match versions {
        Versions::Specific(v) => policy::PolicyChoice::Specific(policy::Specific {
            versions: v.iter().copied().collect(),
        }),
        Versions::Latest(n) => policy::PolicyChoice::Latest(policy::Latest { num_versions: *n }),
        Versions::All => policy::PolicyChoice::All(policy::All {}),
    };
    ModelConfig {
        name: model.name.clone(),
        base_path: model.base_path.clone(),
        model_platform: "onnx".into(),
        model_version_policy: Some(ServableVersionPolicy { policy_choice: Some(choice) }),
        version_labels: routing.labels.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        traffic_split: routing.traffic.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        // A sidecar refuses a mirror on a ResourcePreserving model (and
        // with it the whole config): never sent, whatever is in force.
        mirror: routing
            .mirror
            .as_ref()
            .filter(|_| model.transition != Transition::ResourcePreserving)
            .map(|m| mirror::config(m, model.mirror.as_ref())),
        transition_policy: match model.transition {
            Transition::AvailabilityPreserving => VersaTransitionPolicy::AvailabilityPreserving,
            Transition::ResourcePreserving => VersaTransitionPolicy::ResourcePreserving,
        } as i32,
        ..ModelConfig::default()
    }
}

fn config_list(configs: Vec<ModelConfig>) -> ModelServerConfig {
    ModelServerConfig {
        config: Some(model_server_config::Config::ModelConfigList(ModelConfigList {
            config: configs,
        })),
    }
}

struct ModelDecision {
    phase: Phase,
    versions: Versions,
    routing: Routing,
    stop: Option<Stop>,
}

fn decide(
    model: &ModelSpec,
    previous: &PreviousModel,
    ready: &[&PodView],
    timeout_seconds: u64,
    now: Timestamp,
) -> ModelDecision {
    let wanted = spec_versions(model);
    let in_force = &previous.in_force;
    let target = Routing::of(model);
    let state_on = |pod: &PodView, v: i64| {
        pod.models.as_ref().and_then(|m| m.get(&model.name)).and_then(|m| m.get(&v)).cloned()
    };
    let everywhere = |v: i64| {
        !ready.is_empty() && ready.iter().all(|p| state_on(p, v) == Some(VersionState::Available))
    };

    // Versions that must be AVAILABLE everywhere before labels move.
    let mut required: BTreeSet<i64> = target.labels.values().copied().collect();
    if let Versions::Specific(v) = &wanted {
        required.extend(v.iter().copied());
    }
    // Versions kept while loading: the wanted ones plus what labels in force
    // point at and what the Pods serve now, so nothing goes before the
    // unload phase — except under ResourcePreserving, whose point is never to
    // hold both: there the old versions go first and their labels with them.
    let resource_preserving = model.transition == Transition::ResourcePreserving;
    let serving_now = ready.iter().flat_map(|pod| {
        pod.models
            .as_ref()
            .and_then(|m| m.get(&model.name))
            .into_iter()
            .flatten()
            .filter(|(_, s)| **s == VersionState::Available)
            .map(|(v, _)| *v)
    });
    let loading_versions = match &wanted {
        Versions::Specific(v) if !resource_preserving => Versions::Specific(
            v.iter()
                .copied()
                .chain(in_force.labels.values().copied())
                .chain(required.iter().copied())
                .chain(serving_now)
                .collect(),
        ),
        other => other.clone(),
    };
    let in_force = &match (&wanted, resource_preserving) {
        (Versions::Specific(v), true) => keep_labels_where(in_force, |x| v.contains(&x)),
        _ => in_force.clone(),
    };

    // Only under a specific version list: the loading phase keeps the held
    // label's version loaded there, where a `latest` policy may unload it.
    let holding = &if resource_preserving || !matches!(wanted, Versions::Specific(_)) {
        in_force.clone()
    } else {
        hold_unlabelled(in_force, ready, &model.name, &required)
    };

    // A required version that failed anywhere stops the rollout.
    let failure = ready.iter().find_map(|pod| {
        required.iter().find_map(|v| match state_on(pod, *v) {
            Some(VersionState::Failed(e)) => {
                Some(format!("version {v} failed to load on pod {}: {e}", pod.name))
            }
            _ => None,
        })
    });
    if let Some(message) = failure {
        return ModelDecision {
            phase: Phase::Stopped,
            versions: loading_versions,
            routing: holding.clone(),
            stop: Some(Stop { reason: "VersionLoadFailed", message }),
        };
    }

    let missing: Vec<i64> = required.iter().copied().filter(|v| !everywhere(*v)).collect();
    let waiting_for_pods = ready.is_empty();
    if !missing.is_empty() || (waiting_for_pods && !required.is_empty()) {
        let since = match previous.phase {
            Some(Phase::LoadingVersions) | Some(Phase::Stopped) if !previous.rollout_changed => {
                previous.phase_since.unwrap_or(now)
            }
            _ => now,
        };
        let waited = now.duration_since(since).as_secs().max(0) as u64;
        // A rollout that timed out stays stopped until its versions arrive
        // or the spec changes: it does not start its clock over and flap
        // between LoadingVersions and Stopped.
        let stopped_already = previous.phase == Some(Phase::Stopped) && !previous.rollout_changed;
        if (waited > timeout_seconds || stopped_already) && !waiting_for_pods {
            let pods: Vec<&str> = ready
                .iter()
                .filter(|p| {
                    missing.iter().any(|v| state_on(p, *v) != Some(VersionState::Available))
                })
                .map(|p| p.name.as_str())
                .collect();
            return ModelDecision {
                phase: Phase::Stopped,
                versions: loading_versions,
                routing: holding.clone(),
                stop: Some(Stop {
                    reason: "VersionLoadTimeout",
                    message: format!(
                        "versions {missing:?} not AVAILABLE on pods [{}] after {timeout_seconds}s",
                        pods.join(", ")
                    ),
                }),
            };
        }
        return ModelDecision {
            phase: Phase::LoadingVersions,
            versions: loading_versions,
            routing: holding.clone(),
            stop: None,
        };
    }

    // Labels: the target's, plus any label the weights or the mirror in
    // force still route to.
    let mut labels = target.labels.clone();
    let mirrored = in_force.mirror.iter().flat_map(|m| m.label.iter());
    for label in in_force.traffic.keys().chain(mirrored) {
        if let (false, Some(v)) = (labels.contains_key(label), in_force.labels.get(label)) {
            labels.insert(label.clone(), *v);
        }
    }
    if in_force.labels != labels {
        let routing = repointed(in_force, labels);
        return ModelDecision {
            phase: Phase::MovingLabels,
            versions: loading_versions,
            routing,
            stop: None,
        };
    }
    if in_force != &target {
        return ModelDecision {
            phase: Phase::ShiftingTraffic,
            versions: loading_versions,
            routing: target,
            stop: None,
        };
    }
    let extra = match &wanted {
        Versions::Specific(v) => ready.iter().any(|pod| {
            pod.models.as_ref().and_then(|m| m.get(&model.name)).is_some_and(|states| {
                states
                    .iter()
                    .any(|(version, s)| *s == VersionState::Available && !v.contains(version))
            })
        }),
        _ => false,
    };
    let phase = if extra { Phase::UnloadingVersions } else { Phase::Ready };
    ModelDecision { phase, versions: wanted, routing: target, stop: None }
}

/// Plans one reconcile pass.
pub fn plan(
    spec: &ModelDeploymentSpec,
    pods: &[PodView],
    previous: &BTreeMap<String, PreviousModel>,
    now: Timestamp,
) -> Plan {
    let ready: Vec<&PodView> = pods.iter().filter(|p| p.ready && p.models.is_some()).collect();
    let mut models = Vec::new();
    let mut decided = Vec::new();
    for model in &spec.models {
        let prev = previous.get(&model.name).cloned().unwrap_or_default();
        let decision = decide(model, &prev, &ready, spec.rollout.version_load_timeout_seconds, now);
        let phase_since = match (prev.phase, prev.phase_since) {
            (Some(p), Some(t)) if p == decision.phase && !prev.rollout_changed => t,
            _ => now,
        };
        models.push(ModelPlan {
            name: model.name.clone(),
            phase: decision.phase,
            phase_since,
            in_force_if_accepted: decision.routing.clone(),
            in_force: prev.in_force.clone(),
            routing: decision.routing.clone(),
            versions: still_relevant(summarize(&model.name, &ready), model),
            stop: decision.stop.clone(),
        });
        decided.push((model, decision));
    }
    let boot_config = config_list(
        decided.iter().map(|(m, d)| model_config(m, &d.versions, &d.routing)).collect(),
    );
    let pod_configs = pods
        .iter()
        .filter(|p| p.models.is_some())
        .map(|pod| {
            let configs = decided
                .iter()
                .map(|(m, d)| {
                    let on_pod = pod.models.as_ref().and_then(|ms| ms.get(&m.name));
                    model_config(m, &d.versions, &routing_for_pod(&d.routing, on_pod))
                })
                .collect();
            (pod.name.clone(), config_list(configs))
        })
        .collect();
    Plan { models, pod_configs, boot_config }
}

impl Plan {
    /// True when `pod` gets this pass's labels and weights unfiltered.
    pub fn routing_whole_for(&self, pod: &str) -> bool {
        self.pod_configs.get(pod) == Some(&self.boot_config)
    }
}

mod mirror;
mod routing;
mod versions;
pub use routing::Routing;
use routing::{hold_unlabelled, keep_labels_where, repointed, routing_for_pod};
use versions::{still_relevant, summarize};

#[cfg(test)]
mod tests;
