//! Checks a ModelDeployment spec the way the CRD's CEL rules do, for
//! clusters that do not enforce them (before 1.25, or with CEL off).

use std::collections::BTreeSet;
use versa_crd::ModelDeploymentSpec;

/// Every problem of a spec, in words a user can act on (empty: valid).
pub fn problems(spec: &ModelDeploymentSpec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.replicas < 0 {
        out.push(format!("replicas must be >= 0, got {}", spec.replicas));
    }
    if spec.server.image.is_empty() {
        out.push("server.image must be set".into());
    }
    if !spec.server.model_mount_path.starts_with('/') {
        out.push(format!(
            "server.modelMountPath must be absolute, got {:?}",
            spec.server.model_mount_path
        ));
    }
    let mut names = BTreeSet::new();
    for model in &spec.models {
        let m = &model.name;
        if m.is_empty() {
            out.push("every model needs a name".into());
        } else if !names.insert(m.as_str()) {
            out.push(format!("model {m} is listed more than once"));
        }
        if !model.base_path.starts_with('/') {
            out.push(format!("model {m}: basePath must be absolute, got {:?}", model.base_path));
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(models: &str) -> ModelDeploymentSpec {
        serde_yaml::from_str(&format!(
            "server: {{image: x, modelVolume: {{name: m, emptyDir: {{}}}}}}\nmodels: {models}"
        ))
        .expect("parses")
    }

    #[test]
    fn valid_specs_have_no_problems() {
        let s = spec(
            "[{name: a, basePath: /m/a, versionPolicy: {specific: {versions: [1, 2]}}, labels: {stable: 1, canary: 2}, traffic: {stable: 90, canary: 10}}]",
        );
        assert!(problems(&s).is_empty(), "{:?}", problems(&s));
    }

    #[test]
    fn each_rule_is_reported() {
        let cases = [
            (
                "[{name: a, basePath: /m}, {name: a, basePath: /n}]",
                "model a is listed more than once",
            ),
            (
                "[{name: a, basePath: relative}]",
                "model a: basePath must be absolute, got \"relative\"",
            ),
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
        ];
        for (models, problem) in cases {
            let found = problems(&spec(models));
            assert!(found.iter().any(|p| p == problem), "{models}: {found:?}");
        }
    }
}
