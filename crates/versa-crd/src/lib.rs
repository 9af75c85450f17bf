//! `ModelDeployment` (`serving.versa.dev/v1alpha1`): the models a set of
//! serving Pods runs, their versions, labels and canary weights. Doc comments
//! here become `kubectl explain` text; `crdgen` prints the CRD.

// KubeSchema generates a private module around each type, which this lint
// misreads as unreachable `pub` items.
#![allow(unreachable_pub)]

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod command;
pub mod mirror;
pub mod rollout;
pub mod strategy;
pub use mirror::{Mirror, MirrorInForce, MirrorSettings};
pub use rollout::{AnalysisRunStatus, CommandOutcome, RolloutStatus};
pub use strategy::Strategy;

/// API group.
pub const GROUP: &str = "serving.versa.dev";

/// versa-server flags the operator sets on every serving Pod (ports, where
/// the config and the reload token are, what the server binds): refused in
/// `spec.server.args`, where a second value would crash-loop the Pods.
pub const OPERATOR_OWNED_FLAGS: &[&str] = &[
    "port",
    "rest_api_port",
    "model_service_port",
    "model_config_file",
    "model_config_file_poll_wait_seconds",
    "model_service_token_file",
    "model_name",
    "model_base_path",
    "bind_address",
    "grpc_socket_path",
];

/// The CEL rule refusing [`OPERATOR_OWNED_FLAGS`] in `server.args`.
fn owned_flags_rule() -> kube::core::Rule {
    let list: Vec<String> = OPERATOR_OWNED_FLAGS.iter().map(|f| format!("'{f}'")).collect();
    kube::core::Rule::new(format!(
        "self.all(a, !a.contains('$(') && ![{}].exists(f, a == '--' + f || a.startsWith('--' + f + '=') || a == '-' + f || a.startsWith('-' + f + '=')))",
        list.join(", ")
    ))
    .message(kube::core::Message::Message(format!(
        "args must not use $(...) expansion nor set the flags the operator sets: {}",
        OPERATOR_OWNED_FLAGS.iter().map(|f| format!("--{f}")).collect::<Vec<_>>().join(", ")
    )))
}

/// A set of identical serving Pods and the models they serve. Changing
/// versions, labels or traffic weights is done by config reloads of the
/// running Pods, in safe phases; Pods restart only when `server` or
/// `replicas` change.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "serving.versa.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    shortname = "md",
    shortname = "mdep",
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("the name must be a DNS label of at most 63 characters starting with a letter: it names the Service and labels the Pods"),
    status = "ModelDeploymentStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.readySummary"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".status.models[0].name"}"#,
    printcolumn = r#"{"name":"Stable","type":"integer","jsonPath":".status.models[0].labels.stable"}"#,
    printcolumn = r#"{"name":"Canary","type":"integer","jsonPath":".status.models[0].labels.canary"}"#,
    printcolumn = r#"{"name":"Canary%","type":"integer","jsonPath":".status.models[0].traffic.canary"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","jsonPath":".status.models[0].rollout.summary"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// Number of serving Pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// How the serving Pods look. Changing it rolls the Pods (a Deployment update).
    pub server: ServerSpec,

    /// The models every Pod serves. Names must be unique.
    #[x_kube(validation = kube::core::Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("model names must be unique"))]
    pub models: Vec<ModelSpec>,

    /// How changes roll out.
    #[serde(default)]
    pub rollout: RolloutSpec,
}

fn default_replicas() -> i32 {
    1
}

/// The serving Pods' container and the volume holding the model repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Image of versa-server. Its Pods run as UID/GID 65532 (the image's
    /// user, also their fsGroup) under the `restricted` Pod Security
    /// Standard: non-root, no privilege escalation, no capabilities, a
    /// read-only root filesystem, the RuntimeDefault seccomp profile; the
    /// model volume must be readable by that user or group.
    pub image: String,
    /// Image pull policy (Always, IfNotPresent, Never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Compute resources of the serving container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra versa-server flags (e.g. `--num_load_threads=2`). Ports, the
    /// bind address, the model config and the reload token are set by the
    /// operator and refused here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = owned_flags_rule())]
    pub args: Vec<String>,
    /// Extra environment variables. Reading a Secret (`valueFrom.secretKeyRef`)
    /// needs the operator's `--allow_secret_env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// The volume holding the model repository: a Kubernetes volume source
    /// (its `name` is ignored), mounted read-only at `modelMountPath`. The
    /// operator allows persistentVolumeClaim, emptyDir, configMap and
    /// ephemeral unless configured otherwise; hostPath, secret, nfs, csi and
    /// others only when its `--allowed_volume_sources` lists them.
    pub model_volume: Volume,
    /// Where the model volume is mounted in the container; models'
    /// `basePath`s usually start with it.
    #[serde(default = "default_mount_path")]
    pub model_mount_path: String,
}

fn default_mount_path() -> String {
    "/models".to_owned()
}

/// One model: where its versions are, which to serve, labels and weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.traffic) || self.traffic.all(k, has(self.labels) && k in self.labels)").message("every traffic key must be one of the model's labels"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.traffic) || size(self.traffic) == 0 || self.traffic.map(k, self.traffic[k]).sum() == 100").message("traffic weights must sum to 100"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.labels) || !has(self.versionPolicy) || !has(self.versionPolicy.specific) || self.labels.all(l, self.labels[l] in self.versionPolicy.specific.versions)").message("labels must point at versions the version policy serves"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.strategy) || !has(self.strategy.canary) || !has(self.traffic) || size(self.traffic) == 0").message("traffic and strategy.canary cannot be used together: the canary sets the weights"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.mirror) || !has(self.mirror.label) || (has(self.labels) && self.mirror.label in self.labels)").message("mirror.label must be one of the model's labels"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.mirror) || !has(self.transition) || self.transition != 'ResourcePreserving'").message("a mirror needs two versions loaded at once: not with transition ResourcePreserving"))]
pub struct ModelSpec {
    /// Model name, as clients address it (`/v1/models/<name>`).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Absolute path (inside the container) of the directory holding the
    /// numbered version directories.
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/')").message("basePath must be absolute"))]
    pub base_path: String,
    /// Which versions on disk to serve. Default: the latest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_policy: Option<VersionPolicy>,
    /// How Pods move between versions: `AvailabilityPreserving` (load the new
    /// version before unloading the old; no gap) or `ResourcePreserving`
    /// (unload first; never two copies in memory).
    #[serde(default)]
    pub transition: Transition,
    /// Label → version, e.g. `{stable: 41, canary: 42}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, i64>,
    /// Label → percent of the requests that name neither version nor label,
    /// e.g. `{stable: 90, canary: 10}`. Weights sum to 100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traffic: BTreeMap<String, u32>,
    /// How a change of the `stable` label rolls out: with `canary`, by
    /// weighted steps judged by the sidecars' metrics, promoting or
    /// aborting by itself. Absent: labels and traffic apply as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Shadow traffic without a rollout (a dark launch): a share of the
    /// requests is also run on another version and its answers compared
    /// with the ones the clients got (`versa_mirror_*` metrics); the
    /// copies' answers are never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
}

/// Version policy: exactly one of `latest`, `all`, `specific`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("(has(self.latest) ? 1 : 0) + (has(self.all) ? 1 : 0) + (has(self.specific) ? 1 : 0) <= 1").message("set only one of latest, all, specific"))]
pub struct VersionPolicy {
    /// The `numVersions` highest versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<LatestVersions>,
    /// Every version found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<AllVersions>,
    /// Exactly these versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specific: Option<SpecificVersions>,
}

/// The highest versions on disk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatestVersions {
    /// How many (at least 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub num_versions: u32,
}

fn one() -> u32 {
    1
}

/// Every version on disk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
pub struct AllVersions {}

/// A fixed list of versions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpecificVersions {
    /// The versions to serve.
    #[schemars(length(min = 1))]
    pub versions: Vec<i64>,
}

/// How a model moves from its serving versions to new ones.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Transition {
    /// Load the new version before unloading the old one.
    #[default]
    AvailabilityPreserving,
    /// Unload the old version before loading the new one.
    ResourcePreserving,
}

/// How changes roll out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// How long new versions may take to become AVAILABLE on every Ready
    /// Pod before the rollout stops as Degraded.
    #[serde(default = "default_load_timeout")]
    #[schemars(range(min = 1))]
    pub version_load_timeout_seconds: u64,
}

fn default_load_timeout() -> u64 {
    600
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self { version_load_timeout_seconds: default_load_timeout() }
    }
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_summary: Option<String>,
    /// The least advanced model's rollout phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Per model.
    #[serde(default)]
    pub models: Vec<ModelStatus>,
}

/// One model's state across the Pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    pub name: String,
    /// `LoadingVersions`, `MovingLabels`, `ShiftingTraffic`, `UnloadingVersions`, `Ready`, `Stopped`.
    pub phase: String,
    /// When the current phase began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
    /// The spec generation whose rollout `phase` and `phaseSince` describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Labels in force on every Ready Pod.
    #[serde(default)]
    pub labels: BTreeMap<String, i64>,
    /// Traffic weights in force on every Ready Pod.
    #[serde(default)]
    pub traffic: BTreeMap<String, u32>,
    /// The mirror in force on every Ready Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorInForce>,
    /// Versions wanted by the spec or still present on a Pod; versions
    /// that ended and are no longer wanted drop out.
    #[serde(default)]
    pub versions: Vec<VersionStatus>,
    /// Why the rollout stopped, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The automated canary (`strategy.canary`), once `stable` moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// One version aggregated over the Ready Pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    pub version: i64,
    /// Pods where it is AVAILABLE.
    pub available: i32,
    /// Pods where it is START or LOADING.
    pub loading: i32,
    /// Pods where it ended in error.
    pub failed: i32,
    /// The last error seen, with the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The CRD as YAML.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt as _;
    serde_yaml::to_string(&ModelDeployment::crd()).expect("the CRD serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_carries_cel_rules_columns_and_status() {
        let yaml = crd_yaml();
        for expected in [
            "group: serving.versa.dev",
            "kind: ModelDeployment",
            "- md",
            "x-kubernetes-validations",
            "traffic weights must sum to 100",
            "labels must point at versions the version policy serves",
            "model names must be unique",
            "set the flags the operator sets: --port,",
            "size(self.metadata.name) <= 63",
            "status: {}",
            "jsonPath: .status.phase",
        ] {
            assert!(yaml.contains(expected), "missing {expected:?}");
        }
    }

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let md: ModelDeploymentSpec = serde_yaml::from_str(
            r#"
replicas: 3
server:
  image: ghcr.io/versa-dev/versa-server:0.1.0
  modelVolume: {name: models, hostPath: {path: /srv/models}}
models:
- name: fraud
  basePath: /models/fraud
  versionPolicy: {specific: {versions: [41, 42]}}
  transition: AvailabilityPreserving
  labels: {stable: 41, canary: 42}
  traffic: {stable: 90, canary: 10}
rollout:
  versionLoadTimeoutSeconds: 600
"#,
        )
        .expect("parses");
        assert_eq!(md.server.model_mount_path, "/models");
        assert_eq!(md.models[0].traffic["canary"], 10);
        let minimal: ModelDeploymentSpec = serde_yaml::from_str(
            "server: {image: x, modelVolume: {name: m, emptyDir: {}}}\nmodels: [{name: m, basePath: /models/m}]",
        )
        .expect("parses");
        assert_eq!(minimal.replicas, 1);
        assert_eq!(minimal.rollout.version_load_timeout_seconds, 600);
        assert_eq!(minimal.models[0].transition, Transition::AvailabilityPreserving);
    }
}
