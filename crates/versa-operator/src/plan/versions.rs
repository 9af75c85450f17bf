//! What status says about each version: aggregated over the Ready Pods,
//! and bounded to the versions that still matter.

use super::{PodView, VersionState, VersionSummary, Versions, spec_versions};
use std::collections::BTreeMap;
use versa_crd::ModelSpec;

pub(super) fn summarize(model: &str, ready: &[&PodView]) -> BTreeMap<i64, VersionSummary> {
    let mut out: BTreeMap<i64, VersionSummary> = BTreeMap::new();
    for pod in ready {
        let Some(states) = pod.models.as_ref().and_then(|m| m.get(model)) else { continue };
        for (version, state) in states {
            let s = out.entry(*version).or_default();
            match state {
                VersionState::Available => s.available += 1,
                VersionState::Loading => s.loading += 1,
                VersionState::Failed(e) => {
                    s.failed += 1;
                    s.last_error = Some(format!("{}: {e}", pod.name));
                }
                VersionState::Unloading | VersionState::Ended => {}
            }
        }
    }
    out
}

/// The versions worth showing in status: wanted by the spec (its labels or
/// specific list), or still present on a Pod. A version that ended and is
/// no longer wanted drops out, so status stays bounded; a failure stays
/// while the version is wanted (under `latest`/`all`, where the spec names
/// no versions, while some Pod reports it).
pub(super) fn still_relevant(
    versions: BTreeMap<i64, VersionSummary>,
    model: &ModelSpec,
) -> BTreeMap<i64, VersionSummary> {
    let wanted = |v: i64| {
        model.labels.values().any(|l| *l == v)
            || matches!(spec_versions(model), Versions::Specific(ref s) if s.contains(&v))
    };
    let names_versions = matches!(spec_versions(model), Versions::Specific(_));
    versions
        .into_iter()
        .filter(|(v, s)| {
            s.available > 0 || s.loading > 0 || wanted(*v) || (s.failed > 0 && !names_versions)
        })
        .collect()
}
