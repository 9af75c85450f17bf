//! A model's shadow traffic: its own `mirror` and the settings of its
//! rollout's `setMirror` steps. The sidecar would refuse the same config
//! (and the Pods would keep their old one): said here, before any push.

use versa_crd::mirror::{
    MAX_IN_FLIGHT, MAX_LOGGED_PER_MINUTE, MAX_TIMEOUT_MS, MirrorSettings, OutputComparison,
};
use versa_crd::{ModelSpec, Transition};

/// Every problem of `model`'s mirrors.
pub(super) fn problems(model: &ModelSpec, out: &mut Vec<String>) {
    let m = &model.name;
    let canary = model.strategy.as_ref().and_then(|s| s.canary.as_ref());
    let rollout_mirrors = canary.is_some_and(|c| c.steps.iter().any(|s| s.set_mirror.is_some()));
    if (model.mirror.is_some() || rollout_mirrors)
        && model.transition == Transition::ResourcePreserving
    {
        out.push(format!(
            "model {m}: a mirror needs two versions loaded at once: transition must be AvailabilityPreserving"
        ));
    }
    if let Some(mirror) = &model.mirror {
        let at = format!("model {m}: mirror");
        match (&mirror.label, mirror.version) {
            (Some(_), Some(_)) | (None, None) => {
                out.push(format!("{at}: name exactly one of label, version"));
            }
            (Some(label), None) if !model.labels.contains_key(label) => {
                out.push(format!("{at}.label: {label} is not one of the model's labels"));
            }
            (None, Some(v)) if v < 1 => {
                out.push(format!("{at}.version: {v}; a mirror version is >= 1"));
            }
            (None, Some(v)) => {
                let specific = model.version_policy.as_ref().and_then(|p| p.specific.as_ref());
                if specific.is_some_and(|s| !s.versions.contains(&v)) {
                    out.push(format!(
                        "{at}.version: {v} is not one of versionPolicy.specific.versions: it would never be loaded"
                    ));
                }
            }
            _ => {}
        }
        if model.traffic.is_empty() && !model.labels.contains_key(crate::canary_serving::STABLE) {
            out.push(format!(
                "{at}: needs labels.stable (or a traffic split) to keep unlabelled requests off the mirrored version: without a split a sidecar sends them to its latest version"
            ));
        }
        if let (Some(label), Some(c)) = (&mirror.label, canary)
            && *label == c.canary_label
        {
            out.push(format!(
                "{at}.label: {label} is the rollout's own label (strategy.canary.canaryLabel); its setMirror steps shadow the candidate"
            ));
        }
        if mirror.percent > 100 {
            out.push(format!("{at}.percent: {} exceeds 100", mirror.percent));
        }
        settings_problems(&at, &mirror.settings, out);
    }
    if let Some(settings) = canary.and_then(|c| c.mirror.as_ref()) {
        settings_problems(&format!("model {m}: strategy.canary.mirror"), settings, out);
    }
}

fn settings_problems(at: &str, s: &MirrorSettings, out: &mut Vec<String>) {
    if let Some(n) = s.max_in_flight.filter(|n| !(1..=MAX_IN_FLIGHT).contains(n)) {
        out.push(format!("{at}.maxInFlight: {n} is outside 1..={MAX_IN_FLIGHT}"));
    }
    if let Some(ms) = s.timeout_ms.filter(|ms| !(1..=MAX_TIMEOUT_MS).contains(ms)) {
        out.push(format!("{at}.timeoutMs: {ms} is outside 1..={MAX_TIMEOUT_MS}"));
    }
    if let Some(n) = s.log_disagreements_per_minute.filter(|n| *n > MAX_LOGGED_PER_MINUTE) {
        out.push(format!(
            "{at}.logDisagreementsPerMinute: {n} exceeds the limit of {MAX_LOGGED_PER_MINUTE}"
        ));
    }
    for (alias, c) in &s.outputs {
        comparison_problems(&format!("{at}.outputs.{alias}"), c, out);
    }
}

fn comparison_problems(at: &str, c: &OutputComparison, out: &mut Vec<String>) {
    let kinds = [c.classes.is_some(), c.scores.is_some(), c.exact.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        out.push(format!("{at}: exactly one of classes, scores, exact"));
    }
    if c.classes.as_ref().and_then(|k| k.top_k).is_some_and(|k| k == 0 || k > 1000) {
        out.push(format!("{at}.classes.topK: must be in 1..=1000"));
    }
    if let Some(scores) = &c.scores {
        for (name, tol) in [("absTol", scores.abs_tol), ("relTol", scores.rel_tol)] {
            if let Some(t) = tol.filter(|t| !t.is_finite() || *t < 0.0) {
                out.push(format!("{at}.scores.{name}: {t} is not a finite number >= 0"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(yaml: &str) -> Vec<String> {
        let model: ModelSpec = serde_yaml::from_str(yaml).expect("model");
        let mut out = Vec::new();
        problems(&model, &mut out);
        out
    }

    #[test]
    fn a_valid_mirror_has_no_problems() {
        let ok = "{name: fraud, basePath: /m, labels: {stable: 1, next: 2}, mirror: {label: next, percent: 10, timeoutMs: 500, outputs: {probs: {classes: {topK: 3}}}}}";
        assert_eq!(problems_of(ok), Vec::<String>::new());
        let by_version =
            "{name: fraud, basePath: /m, labels: {stable: 1}, mirror: {version: 2, percent: 100}}";
        assert_eq!(problems_of(by_version), Vec::<String>::new());
    }

    #[test]
    fn every_mirror_problem_is_named_with_its_field() {
        let bad = problems_of(
            "{name: fraud, basePath: /m, transition: ResourcePreserving, labels: {stable: 1}, mirror: {label: shadow, percent: 101, maxInFlight: 0, timeoutMs: 60001, logDisagreementsPerMinute: 601, outputs: {a: {}, b: {classes: {topK: 0}}, c: {scores: {absTol: -1}}}}}",
        );
        for expected in [
            "transition must be AvailabilityPreserving",
            "mirror.label: shadow is not one of the model's labels",
            "mirror.percent: 101 exceeds 100",
            "mirror.maxInFlight: 0 is outside 1..=1024",
            "mirror.timeoutMs: 60001 is outside 1..=60000",
            "mirror.logDisagreementsPerMinute: 601 exceeds the limit of 600",
            "mirror.outputs.a: exactly one of classes, scores, exact",
            "mirror.outputs.b.classes.topK: must be in 1..=1000",
            "mirror.outputs.c.scores.absTol: -1 is not a finite number >= 0",
        ] {
            assert!(bad.iter().any(|p| p.contains(expected)), "missing {expected:?} in {bad:#?}");
        }
        let unloaded = problems_of(
            "{name: fraud, basePath: /m, versionPolicy: {specific: {versions: [1]}}, labels: {stable: 1}, mirror: {version: 3, percent: 1}}",
        );
        assert!(unloaded.iter().any(|p| p.contains("it would never be loaded")), "{unloaded:?}");
        let zero = problems_of(
            "{name: fraud, basePath: /m, labels: {stable: 1}, mirror: {version: 0, percent: 1}}",
        );
        assert!(zero.iter().any(|p| p.contains("a mirror version is >= 1")), "{zero:?}");
        let unpinned = problems_of("{name: fraud, basePath: /m, mirror: {version: 2, percent: 1}}");
        assert!(unpinned.iter().any(|p| p.contains("needs labels.stable")), "{unpinned:?}");
        let both =
            problems_of("{name: fraud, basePath: /m, mirror: {version: 2, label: x, percent: 1}}");
        assert!(both.iter().any(|p| p.contains("exactly one of label, version")), "{both:?}");
        let rollout_rp = problems_of(
            "{name: fraud, basePath: /m, transition: ResourcePreserving, labels: {stable: 1}, strategy: {canary: {steps: [{setMirror: {percent: 5}}], mirror: {timeoutMs: 0}}}}",
        );
        assert!(rollout_rp.iter().any(|p| p.contains("two versions loaded at once")));
        assert!(rollout_rp.iter().any(|p| p.contains("strategy.canary.mirror.timeoutMs: 0")));
        let on_canary = problems_of(
            "{name: fraud, basePath: /m, labels: {stable: 1, canary: 2}, mirror: {label: canary, percent: 5}, strategy: {canary: {steps: [{setWeight: 5}]}}}",
        );
        assert!(on_canary.iter().any(|p| p.contains("the rollout's own label")), "{on_canary:?}");
    }
}
