//! What a model's sidecars serve while a canary rolls out: the labels and
//! weights that carry the step, and the versions that must stay loaded.
//! Pure: the spec's labels, what the rollout knows (baseline, candidate,
//! weight, outcome), the clock in; the served labels, traffic and kept
//! versions out. The spec is never changed: the candidate's transient label
//! and the weights live in the sidecars' config and in status only.

use std::collections::BTreeMap;
use std::time::Duration;

/// The label every client reaches by default.
pub const STABLE: &str = "stable";

/// Where one model's rollout stands, as status records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutView {
    /// The version `stable` named before the commit (what the candidate is
    /// measured against).
    pub baseline: i64,
    /// The version the spec's `stable` names now.
    pub candidate: i64,
    pub outcome: Outcome,
}

/// The rollout's outcome so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Walking the steps (or paused on one): the candidate takes `weight`
    /// percent of the unlabelled requests, and runs a copy of `mirror`
    /// percent of the baseline's.
    InProgress { weight: u8, mirror: u8 },
    /// Every request on the candidate since `at_ms` (unix ms); the baseline
    /// stays loaded for `unloadDelaySeconds`, for an instant rollback.
    Promoted { at_ms: i64 },
    /// Every request back on the baseline since `at_ms`; the candidate
    /// stays loaded (serving nothing) for `abortUnloadDelaySeconds`.
    Aborted { at_ms: i64 },
}

/// What the sidecars serve for the model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Served {
    pub labels: BTreeMap<String, i64>,
    /// Empty: every unlabelled request goes to `stable`.
    pub traffic: BTreeMap<String, u32>,
    /// Versions to keep loaded beyond those the labels and the version
    /// policy name.
    pub keep_loaded: Vec<i64>,
    /// The rollout's shadow traffic to the candidate (percent), when a
    /// `setMirror` above 0 is in progress.
    pub mirror: Option<u8>,
}

/// How long finished rollouts keep the other version loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delays {
    pub unload: Duration,
    pub abort_unload: Duration,
}

/// The labels, weights and kept versions for `spec_labels` (the spec's,
/// `stable` naming the candidate) under `rollout` at `now_ms`.
pub fn served(
    spec_labels: &BTreeMap<String, i64>,
    canary_label: &str,
    rollout: &RolloutView,
    delays: Delays,
    now_ms: i64,
) -> Served {
    let mut labels = spec_labels.clone();
    let within = |at_ms: i64, delay: Duration| {
        now_ms.saturating_sub(at_ms) < i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
    };
    match rollout.outcome {
        Outcome::InProgress { weight, mirror } => {
            let weight = u32::from(weight.min(100));
            labels.insert(STABLE.to_owned(), rollout.baseline);
            labels.insert(canary_label.to_owned(), rollout.candidate);
            let traffic = [(STABLE.to_owned(), 100 - weight), (canary_label.to_owned(), weight)];
            let mirror = (mirror > 0).then_some(mirror.min(100));
            Served { labels, traffic: traffic.into(), keep_loaded: Vec::new(), mirror }
        }
        Outcome::Promoted { at_ms } => {
            labels.insert(STABLE.to_owned(), rollout.candidate);
            let keep = within(at_ms, delays.unload).then_some(rollout.baseline);
            let keep_loaded = keep.into_iter().collect();
            Served { labels, traffic: all_on_stable(keep), keep_loaded, mirror: None }
        }
        Outcome::Aborted { at_ms } => {
            labels.insert(STABLE.to_owned(), rollout.baseline);
            let keep = within(at_ms, delays.abort_unload).then_some(rollout.candidate);
            // For good: a `latest` or `all` policy keeps the candidate loaded.
            let traffic = all_on_stable(Some(rollout.baseline));
            Served { labels, traffic, keep_loaded: keep.into_iter().collect(), mirror: None }
        }
    }
}

/// While another version stays loaded beside `stable`'s, every unlabelled
/// request is split to `stable` at 100%: without a split, the sidecar sends
/// them to the latest loaded version — the aborted candidate, or a
/// promoted candidate's newer baseline.
fn all_on_stable(kept: Option<i64>) -> BTreeMap<String, u32> {
    kept.map(|_| BTreeMap::from([(STABLE.to_owned(), 100)])).unwrap_or_default()
}

/// The model the planner is given while `rollout` runs: the spec's model
/// with the served labels and weights; the rollout's mirror to the
/// candidate's label (with `settings`) in place of the model's own while a
/// `setMirror` above 0 is in progress; and — when the spec lists specific
/// versions — every version a served label names or the rollout keeps
/// added to them, so the planner's unloading phase never drops the
/// baseline under `stable` or a version kept for a rollback. (`latest` and
/// `all` policies serve what is on disk: the versions must be among them.)
pub fn planned_model(
    spec: &versa_crd::ModelSpec,
    (canary_label, settings): (&str, &versa_crd::MirrorSettings),
    rollout: &RolloutView,
    delays: Delays,
    now_ms: i64,
) -> versa_crd::ModelSpec {
    let served = served(&spec.labels, canary_label, rollout, delays, now_ms);
    let mut model = spec.clone();
    if let Some(specific) = model.version_policy.as_mut().and_then(|p| p.specific.as_mut()) {
        let mut versions: std::collections::BTreeSet<i64> =
            specific.versions.iter().copied().collect();
        versions.extend(served.labels.values().copied());
        versions.extend(served.keep_loaded.iter().copied());
        specific.versions = versions.into_iter().collect();
    }
    model.labels = served.labels;
    model.traffic = served.traffic;
    if let Some(percent) = served.mirror {
        model.mirror = Some(versa_crd::Mirror {
            label: Some(canary_label.to_owned()),
            version: None,
            percent,
            settings: settings.clone(),
        });
    }
    model
}

/// What a change of the spec's `stable` label starts, given the version it
/// named before (`previous`, from status) and the versions kept loaded for
/// a rollback: earlier stable versions still within their rollout's
/// `unloadDelaySeconds` (from status). A version that is merely loaded —
/// by a `latest`/`all` policy, or under another label — is not one of
/// them: moving `stable` to it is a new candidate and runs the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Nothing to roll out: no previous stable (a first deployment), or
    /// `stable` did not move.
    Direct,
    /// The rollout in progress goes on: `stable` still names its candidate.
    Continue,
    /// A rollback to a version kept loaded for it: applied at once, no
    /// steps — the instant rollback.
    Instant,
    /// A new candidate: walk the steps from the first.
    Canary { baseline: i64, candidate: i64 },
}

/// Decides how a move of `stable` from `previous` to `wanted` rolls out.
/// `active` is a rollout in progress: a commit back to its baseline is an
/// instant rollback, a commit to a third version restarts from the same
/// baseline.
pub fn start(
    previous: Option<i64>,
    wanted: i64,
    active: Option<&RolloutView>,
    kept_for_rollback: &[i64],
) -> Start {
    if let Some(r) = active.filter(|r| matches!(r.outcome, Outcome::InProgress { .. })) {
        return if wanted == r.baseline {
            Start::Instant
        } else if wanted == r.candidate {
            Start::Continue
        } else {
            Start::Canary { baseline: r.baseline, candidate: wanted }
        };
    }
    match previous {
        None => Start::Direct,
        Some(p) if p == wanted => Start::Direct,
        Some(_) if kept_for_rollback.contains(&wanted) => Start::Instant,
        Some(p) => Start::Canary { baseline: p, candidate: wanted },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_SETTINGS: versa_crd::MirrorSettings = versa_crd::MirrorSettings {
        sampling: versa_crd::mirror::MirrorSampling::RouteKey,
        max_in_flight: None,
        timeout_ms: None,
        outputs: BTreeMap::new(),
        log_disagreements_per_minute: None,
    };

    const DELAYS: Delays =
        Delays { unload: Duration::from_secs(300), abort_unload: Duration::from_secs(30) };

    fn labels(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    fn view(outcome: Outcome) -> RolloutView {
        RolloutView { baseline: 41, candidate: 42, outcome }
    }

    #[test]
    fn a_step_serves_the_baseline_as_stable_and_the_candidate_under_its_label() {
        let spec = labels(&[("stable", 42), ("shadow", 7)]);
        let s = served(
            &spec,
            "canary",
            &view(Outcome::InProgress { weight: 10, mirror: 0 }),
            DELAYS,
            0,
        );
        assert_eq!(s.labels, labels(&[("stable", 41), ("canary", 42), ("shadow", 7)]));
        let traffic: Vec<(&str, u32)> = s.traffic.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(traffic, [("canary", 10), ("stable", 90)]);
        assert_eq!(traffic.iter().map(|(_, w)| w).sum::<u32>(), 100, "weights sum to 100");
        let over = served(
            &spec,
            "canary",
            &view(Outcome::InProgress { weight: 250, mirror: 0 }),
            DELAYS,
            0,
        );
        assert_eq!(over.traffic["stable"], 0, "a weight over 100 is clamped");
    }

    #[test]
    fn after_promotion_the_baseline_stays_loaded_for_the_unload_delay_only() {
        let spec = labels(&[("stable", 42)]);
        let promoted = view(Outcome::Promoted { at_ms: 1_000 });
        let soon = served(&spec, "canary", &promoted, DELAYS, 1_000 + 299_999);
        assert_eq!(soon.labels, labels(&[("stable", 42)]));
        assert_eq!(soon.traffic, [("stable".to_owned(), 100)].into(), "never the latest loaded");
        assert_eq!(soon.keep_loaded, [41]);
        let later = served(&spec, "canary", &promoted, DELAYS, 301_000);
        assert!(later.keep_loaded.is_empty() && later.traffic.is_empty());
    }

    #[test]
    fn after_an_abort_everything_is_on_the_baseline_and_the_candidate_goes_later() {
        let spec = labels(&[("stable", 42)]);
        let aborted = view(Outcome::Aborted { at_ms: 0 });
        let s = served(&spec, "canary", &aborted, DELAYS, 29_999);
        assert_eq!(s.labels, labels(&[("stable", 41)]), "the spec still names 42: status says why");
        // 42, the latest loaded, would take every unlabelled request
        // without a split.
        assert_eq!(s.traffic, [("stable".to_owned(), 100)].into());
        assert_eq!(s.keep_loaded, [42]);
        let later = served(&spec, "canary", &aborted, DELAYS, 30_000);
        assert!(later.keep_loaded.is_empty());
        assert_eq!(later.traffic.len(), 1, "a latest policy may still load 42");
    }

    #[test]
    fn the_planner_keeps_every_version_a_served_label_or_a_rollback_needs() {
        let spec: versa_crd::ModelSpec = serde_yaml::from_str(
            "{name: fraud, basePath: /m, versionPolicy: {specific: {versions: [42]}}, labels: {stable: 42}}",
        )
        .expect("model");
        let versions = |m: &versa_crd::ModelSpec| {
            m.version_policy.as_ref().and_then(|p| p.specific.as_ref()).map(|s| s.versions.clone())
        };
        let step = planned_model(
            &spec,
            ("canary", &NO_SETTINGS),
            &view(Outcome::InProgress { weight: 10, mirror: 0 }),
            DELAYS,
            0,
        );
        assert_eq!(versions(&step), Some(vec![41, 42]), "the baseline serves stable");
        assert_eq!(step.labels, labels(&[("stable", 41), ("canary", 42)]));
        assert_eq!(step.traffic.values().sum::<u32>(), 100);
        let promoted = view(Outcome::Promoted { at_ms: 0 });
        assert_eq!(
            versions(&planned_model(&spec, ("canary", &NO_SETTINGS), &promoted, DELAYS, 1)),
            Some(vec![41, 42])
        );
        assert_eq!(
            versions(&planned_model(&spec, ("canary", &NO_SETTINGS), &promoted, DELAYS, 300_000)),
            Some(vec![42]),
            "the baseline goes after the unload delay"
        );
        assert_eq!(spec.labels, labels(&[("stable", 42)]), "the spec itself is untouched");
    }

    #[test]
    fn a_set_mirror_step_shadows_the_candidate_under_its_label_and_ends_with_the_rollout() {
        let spec: versa_crd::ModelSpec = serde_yaml::from_str(
            "{name: fraud, basePath: /m, labels: {stable: 42, old: 41}, mirror: {label: old, percent: 5}}",
        )
        .expect("model");
        let settings = versa_crd::MirrorSettings { timeout_ms: Some(99), ..NO_SETTINGS };
        let shadowing = view(Outcome::InProgress { weight: 0, mirror: 40 });
        let m = planned_model(&spec, ("canary", &settings), &shadowing, DELAYS, 0);
        let mirror = m.mirror.expect("the rollout's mirror");
        assert_eq!((mirror.label.as_deref(), mirror.percent), (Some("canary"), 40));
        assert_eq!(mirror.settings.timeout_ms, Some(99));
        assert_eq!(m.labels["canary"], 42, "the candidate runs the copies");
        assert_eq!(m.traffic["canary"], 0, "and answers no client");
        let not_shadowing = view(Outcome::InProgress { weight: 10, mirror: 0 });
        let m = planned_model(&spec, ("canary", &settings), &not_shadowing, DELAYS, 0);
        assert_eq!(m.mirror, spec.mirror, "the model's own mirror otherwise");
        let s = served(&spec.labels, "canary", &view(Outcome::Aborted { at_ms: 0 }), DELAYS, 1);
        assert_eq!(s.mirror, None);
    }

    #[test]
    fn rollbacks_to_loaded_versions_skip_the_steps() {
        assert_eq!(start(None, 42, None, &[]), Start::Direct, "first deployment");
        assert_eq!(start(Some(42), 42, None, &[]), Start::Direct);
        assert_eq!(start(Some(41), 42, None, &[]), Start::Canary { baseline: 41, candidate: 42 });
        // Promoted 42, 41 kept for its unload delay: a commit back is instant.
        assert_eq!(start(Some(42), 41, None, &[41]), Start::Instant);
        // 43 loaded only because a `latest: 2` policy or another label
        // serves it: still a new candidate, never a skipped canary.
        assert_eq!(start(Some(42), 43, None, &[41]), Start::Canary { baseline: 42, candidate: 43 });
        // Mid-rollout: back to the baseline is instant; a third version
        // restarts against the same baseline.
        let active = view(Outcome::InProgress { weight: 25, mirror: 0 });
        assert_eq!(start(Some(41), 41, Some(&active), &[]), Start::Instant);
        assert_eq!(
            start(Some(41), 43, Some(&active), &[]),
            Start::Canary { baseline: 41, candidate: 43 }
        );
        assert_eq!(start(Some(41), 42, Some(&active), &[]), Start::Continue);
    }
}
