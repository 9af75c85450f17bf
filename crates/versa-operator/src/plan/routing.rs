//! A model's routing — labels, weights, mirror — as the planner moves it:
//! the target a spec asks for, what each Pod can take, what a label move
//! pushes, and how unlabelled requests are held while versions load.

use super::{PodView, VersionState};
use crate::canary_serving::STABLE;
use std::collections::{BTreeMap, BTreeSet};
use versa_crd::{MirrorInForce, ModelSpec};

/// Labels, weights and mirror of one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    pub labels: BTreeMap<String, i64>,
    pub traffic: BTreeMap<String, u32>,
    /// Shadow traffic: which label or version runs the copies, what share.
    pub mirror: Option<MirrorInForce>,
}

impl Routing {
    /// The spec's (or the rollout's planned) labels, weights and mirror.
    ///
    /// A model with a canary strategy or a mirror is led by `stable`: with
    /// no split of its own, every unlabelled request goes to `stable` by a
    /// split of 100. Without one a sidecar sends them to its latest AVAILABLE
    /// version — a dark launch's mirrored version, or a rolled-back
    /// candidate still loaded.
    pub fn of(model: &ModelSpec) -> Self {
        let mirror = model.mirror.as_ref().map(|m| MirrorInForce {
            label: m.label.clone(),
            version: m.version,
            percent: m.percent,
        });
        let led_by_stable =
            mirror.is_some() || model.strategy.as_ref().is_some_and(|s| s.canary.is_some());
        let mut traffic = model.traffic.clone();
        if traffic.is_empty() && led_by_stable && model.labels.contains_key(STABLE) {
            traffic = BTreeMap::from([(STABLE.to_owned(), 100)]);
        }
        Self { labels: model.labels.clone(), traffic, mirror }
    }
}

/// Keeps only labels whose version is AVAILABLE on the Pod.
pub(super) fn routing_for_pod(
    routing: &Routing,
    on_pod: Option<&BTreeMap<i64, VersionState>>,
) -> Routing {
    keep_labels_where(routing, |v| on_pod.and_then(|m| m.get(&v)) == Some(&VersionState::Available))
}

/// Keeps only labels whose version passes `keep`; the weights go whole if
/// any of their labels went (a split must stay whole), and a mirror goes
/// with its label (a sidecar refuses a mirror naming no label of the model).
pub(super) fn keep_labels_where(routing: &Routing, keep: impl Fn(i64) -> bool) -> Routing {
    let labels: BTreeMap<String, i64> =
        routing.labels.iter().filter(|(_, v)| keep(**v)).map(|(k, v)| (k.clone(), *v)).collect();
    let traffic = if routing.traffic.keys().all(|l| labels.contains_key(l)) {
        routing.traffic.clone()
    } else {
        BTreeMap::new()
    };
    let mirror =
        routing.mirror.clone().filter(|m| m.label.as_ref().is_none_or(|l| labels.contains_key(l)));
    Routing { labels, traffic, mirror }
}

/// The MovingLabels push: `labels` with the weights and mirror in force,
/// except that a label moving to a version no label in force names takes
/// no weight yet — its weight goes to `stable`, if `stable` keeps its
/// version — and a mirror whose label moves goes: a new version (a
/// rollout restarted to a third candidate) must not inherit the old
/// candidate's share before its own first step.
pub(super) fn repointed(in_force: &Routing, labels: BTreeMap<String, i64>) -> Routing {
    let known = |v: i64| in_force.labels.values().any(|l| *l == v);
    let moved = |l: &str| labels.get(l) != in_force.labels.get(l);
    let mut traffic = in_force.traffic.clone();
    if !moved(STABLE) && labels.contains_key(STABLE) {
        let to_new: Vec<String> = traffic
            .keys()
            .filter(|l| l.as_str() != STABLE && moved(l))
            .filter(|l| labels.get(l.as_str()).is_some_and(|v| !known(*v)))
            .cloned()
            .collect();
        for label in to_new {
            let w = traffic.insert(label, 0).unwrap_or(0);
            *traffic.entry(STABLE.to_owned()).or_insert(0) += w;
        }
    }
    let mirror = in_force.mirror.clone().filter(|m| m.label.as_deref().is_none_or(|l| !moved(l)));
    Routing { labels, traffic, mirror }
}

/// The routing in force, holding unlabelled requests where they are while
/// versions load: a sidecar without a split sends them to its latest
/// AVAILABLE version, which a version being loaded becomes on each Pod as
/// it loads — before any label moves, Pod by Pod, and (for a canary's
/// candidate) before its first step. When no split is in force and a
/// required version no label names yet is above the highest labelled one
/// (AVAILABLE on every Ready Pod), a split of 100 to that label (`stable`
/// when it is one of them) keeps them there; once in force it stays until
/// the ShiftingTraffic phase sets the spec's.
pub(super) fn hold_unlabelled(
    in_force: &Routing,
    ready: &[&PodView],
    model: &str,
    required: &BTreeSet<i64>,
) -> Routing {
    let mut routing = in_force.clone();
    if !in_force.traffic.is_empty() || ready.is_empty() {
        return routing;
    }
    // The highest version a label in force names, AVAILABLE on every Ready
    // Pod, and a newly required version above it that would take over.
    let available = |pod: &PodView, v: i64| {
        pod.models.as_ref().and_then(|m| m.get(model)).and_then(|m| m.get(&v))
            == Some(&VersionState::Available)
    };
    let Some(current) = in_force.labels.values().copied().max() else { return routing };
    let labelled = |v: i64| in_force.labels.values().any(|l| *l == v);
    let newer = required.iter().any(|v| *v > current && !labelled(*v));
    // A version above it already AVAILABLE on every Pod takes the
    // unlabelled requests now: holding would move them back.
    let serving_above =
        ready.first().and_then(|p| p.models.as_ref()?.get(model)).is_some_and(|versions| {
            versions.keys().any(|v| *v > current && ready.iter().all(|pod| available(pod, *v)))
        });
    if !newer || serving_above || !ready.iter().all(|pod| available(pod, current)) {
        return routing;
    }
    let mut naming = in_force.labels.iter().filter(|(_, v)| **v == current).map(|(l, _)| l);
    let label = match naming.clone().find(|l| l.as_str() == STABLE) {
        Some(stable) => Some(stable),
        None => naming.next(),
    };
    if let Some(label) = label {
        routing.traffic = BTreeMap::from([(label.clone(), 100)]);
    }
    routing
}
