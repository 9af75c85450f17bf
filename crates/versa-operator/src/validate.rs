//! Checks a ModelDeployment before anything is built from it: the rules the
//! CRD's CEL carries (for clusters that do not enforce them: before 1.25, or
//! with CEL off), the names of the objects derived from it, and what the
//! cluster's operator allows a ModelDeployment to put into serving Pods
//! ([`SpecPolicy`]). Pure: a spec in, every problem out.

use std::collections::BTreeSet;
use versa_crd::{ModelDeploymentSpec, OPERATOR_OWNED_FLAGS};

mod mirror;

#[cfg(test)]
mod tests;

/// Volume sources a model volume may use unless the operator is told
/// otherwise: storage a namespace already controls. Left out: `hostPath`
/// (the node's files), `secret` (any Secret of the namespace), `nfs` (any
/// export the node reaches), inline `csi` (drivers such as a secrets store),
/// and every source not listed. A PersistentVolumeClaim may still be backed
/// by NFS or CSI: the cluster's admin decided that when provisioning it.
pub const DEFAULT_VOLUME_SOURCES: &[&str] =
    &["persistentVolumeClaim", "emptyDir", "configMap", "ephemeral"];

/// What serving Pods may be given, as the cluster's operator decides
/// (operator flags, chart values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecPolicy {
    /// Volume source kinds (`persistentVolumeClaim`, `hostPath`, …) allowed
    /// for `spec.server.modelVolume`.
    pub volume_sources: BTreeSet<String>,
    /// Whether `spec.server.env` may read Secrets (`valueFrom.secretKeyRef`).
    pub secret_env: bool,
    /// Image prefixes `spec.server.image` must start with; empty: any image.
    /// A prefix without a `/` means a whole registry (`registry.corp` allows
    /// `registry.corp/…`, not `registry.corp.evil.io/…`).
    pub image_prefixes: Vec<String>,
}

/// Normalises an image prefix flag value: a bare registry gets its `/`.
pub fn image_prefix(prefix: &str) -> String {
    let prefix = prefix.trim();
    if prefix.contains('/') { prefix.to_owned() } else { format!("{prefix}/") }
}

impl Default for SpecPolicy {
    fn default() -> Self {
        Self {
            volume_sources: DEFAULT_VOLUME_SOURCES.iter().map(|s| (*s).to_owned()).collect(),
            secret_env: false,
            image_prefixes: Vec::new(),
        }
    }
}

/// Longest ModelDeployment name: it becomes a label value (63 characters)
/// and the Service's name (a DNS-1035 label, 63 characters).
pub const MAX_NAME_LEN: usize = 63;

/// Every problem of a ModelDeployment named `name`, in words a user can act
/// on (empty: valid).
pub fn problems(name: &str, spec: &ModelDeploymentSpec, policy: &SpecPolicy) -> Vec<String> {
    let mut out = Vec::new();
    name_problems(name, &mut out);
    server_problems(spec, policy, &mut out);
    if spec.replicas < 0 {
        out.push(format!("replicas must be >= 0, got {}", spec.replicas));
    }
    model_problems(spec, &mut out);
    out
}

/// The name is used as a label value (`versa.dev/model-deployment`) and as
/// the Service's name: both must accept it.
fn name_problems(name: &str, out: &mut Vec<String>) {
    if name.len() > MAX_NAME_LEN {
        out.push(format!(
            "metadata.name is {} characters; at most {MAX_NAME_LEN} fit the Pods' label value and the Service name",
            name.len()
        ));
    }
    if !is_dns_1035_label(name) {
        out.push(format!(
            "metadata.name {name:?} must be a DNS label starting with a letter (a-z, 0-9, '-'): it names the Service"
        ));
    }
}

fn is_dns_1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last() != Some(&b'-')
}

fn server_problems(spec: &ModelDeploymentSpec, policy: &SpecPolicy, out: &mut Vec<String>) {
    let server = &spec.server;
    if server.image.trim().is_empty() {
        out.push("server.image must be set".into());
    } else if server.image.chars().any(char::is_whitespace) {
        out.push(format!("server.image {:?} contains whitespace", server.image));
    } else if !policy.image_prefixes.is_empty()
        && !policy.image_prefixes.iter().any(|p| server.image.starts_with(p.as_str()))
    {
        out.push(format!(
            "server.image {:?} is not allowed here: images must start with one of {:?} (operator flag --allowed_image_prefixes)",
            server.image, policy.image_prefixes
        ));
    }
    if let Some(policy) = &server.image_pull_policy
        && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str())
    {
        out.push(format!(
            "server.imagePullPolicy must be Always, IfNotPresent or Never, got {policy:?}"
        ));
    }
    if !server.model_mount_path.starts_with('/') {
        out.push(format!(
            "server.modelMountPath must be absolute, got {:?}",
            server.model_mount_path
        ));
    }
    let sources = volume_sources(&server.model_volume);
    match sources.as_slice() {
        [] => out.push("server.modelVolume needs a volume source".into()),
        [one] if !policy.volume_sources.contains(one) => out.push(format!(
            "server.modelVolume uses {one}, which this operator does not allow (allowed: {}; operator flag --allowed_volume_sources)",
            policy.volume_sources.iter().cloned().collect::<Vec<_>>().join(", ")
        )),
        [_] => {}
        many => out.push(format!(
            "server.modelVolume must have one volume source, has {}",
            many.join(", ")
        )),
    }
    let owned: Vec<&str> = server.args.iter().filter_map(|a| owned_flag(a)).collect();
    if !owned.is_empty() {
        out.push(format!(
            "server.args must not set {}: the operator sets {} itself",
            owned.iter().map(|f| format!("--{f}")).collect::<Vec<_>>().join(", "),
            if owned.len() == 1 { "it" } else { "them" }
        ));
    }
    for arg in &server.args {
        // The kubelet expands `$(VAR)` from the container's environment,
        // which would smuggle an owned flag past the check above.
        if arg.contains("$(") {
            out.push(format!("server.args: {arg:?} uses $(...) expansion, which is not allowed"));
        }
        if !arg.starts_with("--") {
            out.push(format!(
                "server.args: {arg:?} is not a flag (versa-server takes only --name=value)"
            ));
        }
    }
    for env in &server.env {
        let secret = env.value_from.as_ref().is_some_and(|v| v.secret_key_ref.is_some());
        if secret && !policy.secret_env {
            out.push(format!(
                "server.env {} reads a Secret, which this operator does not allow (operator flag --allow_secret_env)",
                env.name
            ));
        }
    }
}

/// The volume source kinds a volume sets (exactly one when valid).
fn volume_sources(volume: &k8s_openapi::api::core::v1::Volume) -> Vec<String> {
    let value = serde_json::to_value(volume).unwrap_or_default();
    value
        .as_object()
        .map(|o| {
            o.iter().filter(|(k, v)| *k != "name" && !v.is_null()).map(|(k, _)| k.clone()).collect()
        })
        .unwrap_or_default()
}

/// The operator-owned flag an argument sets, if any: `--port=1`, `--port`,
/// `-port=1` (one dash: how TF Serving's own flags are often written).
pub fn owned_flag(arg: &str) -> Option<&'static str> {
    let name = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    let name = name.split_once('=').map_or(name, |(n, _)| n);
    OPERATOR_OWNED_FLAGS.iter().copied().find(|f| *f == name)
}

/// Characters a model or label name may not hold: they split REST paths
/// (`/v1/models/<name>/labels/<label>:predict`) or cannot be typed.
fn bad_name_char(c: char) -> bool {
    c == '/' || c == ':' || c.is_whitespace() || c.is_control()
}

fn model_problems(spec: &ModelDeploymentSpec, out: &mut Vec<String>) {
    let mut names = BTreeSet::new();
    for model in &spec.models {
        let m = &model.name;
        if let Some(canary) = model.strategy.as_ref().and_then(|s| s.canary.as_ref()) {
            canary_problems(model, canary, out);
        }
        mirror::problems(model, out);
        if m.is_empty() {
            out.push("every model needs a name".into());
        } else if !names.insert(m.as_str()) {
            out.push(format!("model {m} is listed more than once"));
        }
        if m.chars().any(bad_name_char) {
            out.push(format!(
                "model name {m:?} must not contain '/', ':', spaces or control characters"
            ));
        }
        if !model.base_path.starts_with('/') {
            out.push(format!("model {m}: basePath must be absolute, got {:?}", model.base_path));
        }
        for (label, version) in &model.labels {
            if label.is_empty() || label.chars().any(bad_name_char) {
                out.push(format!(
                    "model {m}: label {label:?} must be non-empty without '/', ':', spaces or control characters"
                ));
            }
            if *version < 0 {
                out.push(format!(
                    "model {m}: label {label} points at version {version}; versions are >= 0"
                ));
            }
        }
        if let Some(policy) = &model.version_policy {
            let set = [policy.latest.is_some(), policy.all.is_some(), policy.specific.is_some()];
            if set.iter().filter(|s| **s).count() > 1 {
                out.push(format!(
                    "model {m}: set only one of versionPolicy.latest, .all, .specific"
                ));
            }
            if let Some(specific) = &policy.specific {
                if specific.versions.is_empty() {
                    out.push(format!("model {m}: versionPolicy.specific.versions is empty"));
                }
                if let Some(v) = specific.versions.iter().find(|v| **v < 0) {
                    out.push(format!(
                        "model {m}: versionPolicy.specific lists version {v}; versions are >= 0"
                    ));
                }
                for (label, version) in &model.labels {
                    if !specific.versions.contains(version) {
                        out.push(format!(
                            "model {m}: label {label} points at version {version}, which versionPolicy.specific does not serve"
                        ));
                    }
                }
            }
            if policy.latest.as_ref().is_some_and(|l| l.num_versions == 0) {
                out.push(format!("model {m}: versionPolicy.latest.numVersions must be >= 1"));
            }
        }
        for label in model.traffic.keys() {
            if !model.labels.contains_key(label) {
                out.push(format!(
                    "model {m}: traffic names {label}, which is not one of its labels"
                ));
            }
        }
        let total: u64 = model.traffic.values().map(|w| u64::from(*w)).sum();
        if !model.traffic.is_empty() && total != 100 {
            out.push(format!("model {m}: traffic weights sum to {total}, they must sum to 100"));
        }
    }
}

/// A model's `strategy.canary`: its own rules ([`crate::strategy::compile`])
/// and how it fits the rest of the model.
fn canary_problems(
    model: &versa_crd::ModelSpec,
    canary: &versa_crd::strategy::CanaryStrategy,
    out: &mut Vec<String>,
) {
    let m = &model.name;
    if !model.traffic.is_empty() {
        out.push(format!(
            "model {m}: traffic and strategy.canary cannot be used together: the canary sets the weights"
        ));
    }
    if model.labels.contains_key(&canary.canary_label) {
        out.push(format!(
            "model {m}: labels.{label} is the rollout's own (strategy.canary.canaryLabel): remove it or choose another canaryLabel",
            label = canary.canary_label
        ));
    }
    if model.transition == versa_crd::Transition::ResourcePreserving {
        out.push(format!(
            "model {m}: a canary serves both versions at once: transition must be AvailabilityPreserving"
        ));
    }
    if let Err(problems) = crate::strategy::compile(m, canary) {
        out.extend(problems);
    }
    if !model.labels.contains_key(crate::canary_serving::STABLE) {
        out.push(format!(
            "model {m}: strategy.canary rolls out each move of labels.stable: set labels.stable"
        ));
    }
}
