//! A model's mirror as the sidecar config carries it (`ModelConfig.mirror`):
//! the target and share in force from the plan's routing, how copies are
//! sampled, bounded and compared from the spec (or the rollout's
//! `strategy.canary.mirror`). Unset settings stay unset: the sidecar's
//! defaults apply.

use versa_crd::mirror::{MirrorSampling, OutputComparison};
use versa_crd::{Mirror, MirrorInForce};
use versa_proto::serving::{
    VersaClassesComparison, VersaExactComparison, VersaMirror, VersaMirrorSampling,
    VersaOutputComparison, VersaScoresComparison, versa_mirror, versa_output_comparison,
};

/// The sidecar's mirror for `route`, with `spec`'s settings.
pub(super) fn config(route: &MirrorInForce, spec: Option<&Mirror>) -> VersaMirror {
    let target = match (&route.label, route.version) {
        (Some(label), _) => Some(versa_mirror::Target::Label(label.clone())),
        (None, Some(version)) => Some(versa_mirror::Target::Version(version)),
        (None, None) => None,
    };
    let settings = spec.map(|m| m.settings.clone()).unwrap_or_default();
    VersaMirror {
        target,
        percent: u32::from(route.percent.min(100)),
        sampling: match settings.sampling {
            MirrorSampling::RouteKey => VersaMirrorSampling::MirrorSamplingRouteKey,
            MirrorSampling::Random => VersaMirrorSampling::MirrorSamplingRandom,
        } as i32,
        max_in_flight: settings.max_in_flight.unwrap_or(0),
        timeout_ms: settings.timeout_ms.unwrap_or(0),
        outputs: settings.outputs.iter().map(|(alias, c)| (alias.clone(), comparison(c))).collect(),
        log_disagreements_per_minute: settings.log_disagreements_per_minute.unwrap_or(0),
    }
}

fn comparison(c: &OutputComparison) -> VersaOutputComparison {
    use versa_output_comparison::Kind;
    let kind = if let Some(classes) = &c.classes {
        Kind::Classes(VersaClassesComparison { top_k: classes.top_k.unwrap_or(0) })
    } else if let Some(scores) = &c.scores {
        // 0 is the sidecar's "unset": its default tolerance.
        Kind::Scores(VersaScoresComparison {
            abs_tol: scores.abs_tol.unwrap_or(0.0),
            rel_tol: scores.rel_tol.unwrap_or(0.0),
        })
    } else {
        Kind::Exact(VersaExactComparison {})
    };
    VersaOutputComparison { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_and_the_settings_make_the_sidecar_mirror() {
        let spec: Mirror = serde_yaml::from_str(
            "{label: shadow, percent: 30, sampling: Random, timeoutMs: 250, outputs: {probs: {classes: {topK: 3}}, score: {scores: {absTol: 0.01}}, ids: {exact: {}}}}",
        )
        .expect("mirror");
        assert_eq!(spec.settings.timeout_ms, Some(250), "settings are flattened into the mirror");
        let route = MirrorInForce { label: Some("canary".into()), version: None, percent: 10 };
        let m = config(&route, Some(&spec));
        assert_eq!(m.target, Some(versa_mirror::Target::Label("canary".into())), "the route's");
        assert_eq!((m.percent, m.timeout_ms, m.max_in_flight), (10, 250, 0));
        assert_eq!(m.sampling, VersaMirrorSampling::MirrorSamplingRandom as i32);
        let kind = |alias: &str| m.outputs[alias].kind.expect("kind");
        assert_eq!(
            kind("probs"),
            versa_output_comparison::Kind::Classes(VersaClassesComparison { top_k: 3 })
        );
        assert_eq!(
            kind("score"),
            versa_output_comparison::Kind::Scores(VersaScoresComparison {
                abs_tol: 0.01,
                rel_tol: 0.0
            })
        );
        assert!(matches!(kind("ids"), versa_output_comparison::Kind::Exact(_)));
        let by_version = MirrorInForce { label: None, version: Some(7), percent: 100 };
        let plain = config(&by_version, None);
        assert_eq!(plain.target, Some(versa_mirror::Target::Version(7)));
        assert_eq!(plain.sampling, VersaMirrorSampling::MirrorSamplingRouteKey as i32);
    }
}
