//! The serving map: the AVAILABLE versions of every model, version labels, and
//! resolution of a request (version | label | latest) to a handle that keeps
//! its version alive for as long as the request runs.

use crate::labels::{LabelError, LabelMap, LabelRules, check_label_update};
use crate::routing::{TrafficSplit, uniform_draw};
use crate::{Code, ServableId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::oneshot;

/// Which version of a model a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VersionChoice {
    /// The highest-numbered AVAILABLE version.
    Latest,
    /// Exactly this version.
    Specific(i64),
    /// The version a label points at.
    Label(String),
}

/// Why a request could not be given a servable. Messages are TensorFlow Serving's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("ModelSpec has no name specified.")]
    MissingName,
    #[error("ModelSpec has 'version_label' set, but it is not currently allowed by the server.")]
    LabelsNotAllowed,
    #[error("Unrecognized servable version label: {0}")]
    UnknownLabel(String),
    #[error("Model labels does not init yet.{0}")]
    LabelsNotInitialised(String),
    #[error("Servable not found for request: Latest({0})")]
    LatestNotFound(String),
    #[error("Servable not found for request: Specific({0}, {1})")]
    SpecificNotFound(String, i64),
}

impl ResolveError {
    /// The canonical code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            ResolveError::MissingName
            | ResolveError::LabelsNotAllowed
            | ResolveError::UnknownLabel(_) => Code::InvalidArgument,
            ResolveError::LabelsNotInitialised(_) => Code::Unavailable,
            ResolveError::LatestNotFound(_) | ResolveError::SpecificNotFound(..) => Code::NotFound,
        }
    }
}

/// A loaded version in the map. When the last reference goes (the map's own
/// and every request's handle), the servable is handed back to the manager
/// through `on_release` so it is unloaded there, not on a request's thread.
struct LiveVersion<T> {
    id: ServableId,
    servable: Option<T>,
    on_release: Option<oneshot::Sender<T>>,
}

impl<T> Drop for LiveVersion<T> {
    fn drop(&mut self) {
        if let (Some(servable), Some(tx)) = (self.servable.take(), self.on_release.take()) {
            // If the manager is gone the servable is simply dropped here.
            let _ = tx.send(servable);
        }
    }
}

/// A request's hold on a loaded version. While any handle exists the version
/// is not unloaded; it stays usable even after it left the serving map.
pub struct ServableHandle<T> {
    live: Arc<LiveVersion<T>>,
}

impl<T> ServableHandle<T> {
    pub fn id(&self) -> &ServableId {
        &self.live.id
    }

    /// A handle on a servable that is in no serving map (benchmarks, tests,
    /// tools): it is dropped with its last handle.
    pub fn detached(id: ServableId, servable: T) -> Self {
        Self { live: Arc::new(LiveVersion { id, servable: Some(servable), on_release: None }) }
    }

    /// True when both hold the same loaded instance (not merely the same
    /// model and version number: a version reloaded is another instance).
    pub fn same_instance(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.live, &other.live)
    }
}

impl<T> Clone for ServableHandle<T> {
    fn clone(&self) -> Self {
        Self { live: Arc::clone(&self.live) }
    }
}

impl<T> Deref for ServableHandle<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // `servable` is only taken in `Drop`, when no handle exists any more.
        self.live.servable.as_ref().expect("servable present while handles exist")
    }
}

impl<T> fmt::Debug for ServableHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServableHandle").field("id", &self.live.id).finish()
    }
}

/// Resolves to the manager's `oneshot` once every handle on a removed version
/// has been dropped, yielding the servable for unloading.
pub(crate) type ReleaseReceiver<T> = oneshot::Receiver<T>;

/// Model → version → the loaded version.
type VersionTable<T> = HashMap<String, BTreeMap<i64, Arc<LiveVersion<T>>>>;

/// Labels and traffic splits, replaced together so a reload that moves a
/// label and shifts weights takes effect for new requests in one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    pub labels: LabelMap,
    /// Model → split between its labels, for requests naming no version or label.
    pub splits: BTreeMap<String, TrafficSplit>,
}

/// A request resolved through labels and splits.
#[derive(Debug)]
pub struct Routed<T> {
    pub handle: ServableHandle<T>,
    /// The label the request reached its version through, if any.
    pub label: Option<String>,
    /// True when a traffic split chose the label.
    pub by_split: bool,
    /// The label the split chose first when its version was not AVAILABLE and
    /// another label of the split served instead.
    pub fell_back_from: Option<String>,
}

/// The AVAILABLE versions of every model, labels and traffic splits.
pub struct ServingMap<T> {
    versions: RwLock<VersionTable<T>>,
    /// `None` until the first update (upstream: "labels does not init yet").
    routing: RwLock<Option<RoutingTable>>,
    rules: LabelRules,
}

impl<T> fmt::Debug for ServingMap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingMap").field("available", &self.available()).finish()
    }
}

fn read<X>(lock: &RwLock<X>) -> RwLockReadGuard<'_, X> {
    // Every write below is a single insert/remove/replace, so a poisoned lock
    // never holds a half-made update.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<X>(lock: &RwLock<X>) -> RwLockWriteGuard<'_, X> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl<T> ServingMap<T> {
    pub fn new(rules: LabelRules) -> Self {
        Self { versions: RwLock::default(), routing: RwLock::new(None), rules }
    }

    /// Resolves a request to a handle on an AVAILABLE version.
    pub fn resolve(
        &self,
        model: &str,
        choice: &VersionChoice,
    ) -> Result<ServableHandle<T>, ResolveError> {
        if model.is_empty() {
            return Err(ResolveError::MissingName);
        }
        let version = match choice {
            VersionChoice::Latest => None,
            VersionChoice::Specific(v) => Some(*v),
            VersionChoice::Label(label) => Some(self.label_target(model, label)?),
        };
        let versions = read(&self.versions);
        let model_versions = versions.get(model);
        let live = match version {
            None => model_versions
                .and_then(|m| m.values().next_back())
                .ok_or_else(|| ResolveError::LatestNotFound(model.to_owned()))?,
            Some(v) => model_versions
                .and_then(|m| m.get(&v))
                .ok_or_else(|| ResolveError::SpecificNotFound(model.to_owned(), v))?,
        };
        Ok(ServableHandle { live: Arc::clone(live) })
    }

    /// Resolves a request, sending requests that name neither a version nor
    /// a label through the model's traffic split, if it has one. With a
    /// routing key the split's choice is deterministic; without, random by
    /// weight. If the chosen label's version is not AVAILABLE, the split's
    /// other labels are tried (heaviest first).
    pub fn resolve_routed(
        &self,
        model: &str,
        choice: &VersionChoice,
        route_key: Option<&str>,
    ) -> Result<Routed<T>, ResolveError> {
        let label_of_choice = match choice {
            VersionChoice::Label(l) => Some(l.clone()),
            _ => None,
        };
        let plain = |this: &Self| {
            this.resolve(model, choice).map(|handle| Routed {
                handle,
                label: label_of_choice.clone(),
                by_split: false,
                fell_back_from: None,
            })
        };
        if *choice != VersionChoice::Latest || model.is_empty() {
            return plain(self);
        }
        // Candidate (label, version) pairs in order of preference.
        let candidates: Vec<(String, i64)> = {
            let routing = read(&self.routing);
            let Some(table) = routing.as_ref() else { return plain(self) };
            let Some(split) = table.splits.get(model).filter(|s| !s.is_empty()) else {
                return plain(self);
            };
            let labels = table.labels.get(model);
            let order: Vec<&str> = match route_key {
                Some(key) => split.preference_for_key(key),
                None => match split.choose_for_draw(uniform_draw()) {
                    Some(first) => {
                        std::iter::once(first).chain(split.fallbacks_after(first)).collect()
                    }
                    None => return plain(self),
                },
            };
            order
                .into_iter()
                .filter_map(|l| labels.and_then(|m| m.get(l)).map(|v| (l.to_owned(), *v)))
                .collect()
        };
        let Some((first_label, first_version)) = candidates.first().cloned() else {
            return plain(self);
        };
        let versions = read(&self.versions);
        for (label, version) in &candidates {
            if let Some(live) = versions.get(model).and_then(|m| m.get(version)) {
                return Ok(Routed {
                    handle: ServableHandle { live: Arc::clone(live) },
                    label: Some(label.clone()),
                    by_split: true,
                    fell_back_from: (*label != first_label).then(|| first_label.clone()),
                });
            }
        }
        Err(ResolveError::SpecificNotFound(model.to_owned(), first_version))
    }

    /// The version a label points at (whether or not it is loaded).
    pub fn label_target(&self, model: &str, label: &str) -> Result<i64, ResolveError> {
        if !self.rules.allow_labels {
            return Err(ResolveError::LabelsNotAllowed);
        }
        let routing = read(&self.routing);
        let table =
            routing.as_ref().ok_or_else(|| ResolveError::LabelsNotInitialised(label.to_owned()))?;
        table
            .labels
            .get(model)
            .and_then(|l| l.get(label))
            .copied()
            .ok_or_else(|| ResolveError::UnknownLabel(label.to_owned()))
    }

    /// The labels currently in force.
    pub fn labels(&self) -> LabelMap {
        read(&self.routing).as_ref().map(|t| t.labels.clone()).unwrap_or_default()
    }

    /// The labels and traffic splits currently in force.
    pub fn routing(&self) -> RoutingTable {
        read(&self.routing).clone().unwrap_or_default()
    }

    /// Replaces labels and splits together, if the label rules allow every
    /// assignment (see [`check_label_update`]); otherwise nothing changes.
    /// Splits must already be valid (keys are labels of their model).
    pub fn update_routing(
        &self,
        requested: RoutingTable,
        is_available: impl Fn(&str, i64) -> bool,
    ) -> Result<(), LabelError> {
        let mut routing = write(&self.routing);
        let current = routing.as_ref().map(|t| &t.labels);
        check_label_update(current, &requested.labels, self.rules, is_available)?;
        *routing = Some(requested);
        Ok(())
    }

    /// Replaces the labels, keeping the traffic splits.
    pub fn update_labels(
        &self,
        requested: LabelMap,
        is_available: impl Fn(&str, i64) -> bool,
    ) -> Result<(), LabelError> {
        let splits = read(&self.routing).as_ref().map(|t| t.splits.clone()).unwrap_or_default();
        self.update_routing(RoutingTable { labels: requested, splits }, is_available)
    }

    /// The label rules this map enforces.
    pub fn label_rules(&self) -> LabelRules {
        self.rules
    }

    /// AVAILABLE versions of every model, ascending.
    pub fn available(&self) -> BTreeMap<String, Vec<i64>> {
        read(&self.versions)
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(m, v)| (m.clone(), v.keys().copied().collect()))
            .collect()
    }

    /// AVAILABLE versions of one model, ascending.
    pub fn available_versions(&self, model: &str) -> Vec<i64> {
        read(&self.versions).get(model).map(|v| v.keys().copied().collect()).unwrap_or_default()
    }

    /// Makes a loaded version routable. The receiver yields the servable back
    /// once it has been [removed](Self::remove) and every handle is gone.
    pub(crate) fn insert(&self, id: ServableId, servable: T) -> ReleaseReceiver<T> {
        let (tx, rx) = oneshot::channel();
        let live = Arc::new(LiveVersion {
            id: id.clone(),
            servable: Some(servable),
            on_release: Some(tx),
        });
        write(&self.versions).entry(id.name).or_default().insert(id.version, live);
        rx
    }

    /// Stops routing new requests to a version; in-flight handles keep it alive.
    pub(crate) fn remove(&self, id: &ServableId) -> bool {
        let removed = {
            let mut versions = write(&self.versions);
            let Some(model) = versions.get_mut(&id.name) else {
                return false;
            };
            let removed = model.remove(&id.version);
            if model.is_empty() {
                versions.remove(&id.name);
            }
            removed
        };
        // Dropped outside the lock: this may hand the servable to the manager.
        removed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_with(versions: &[i64]) -> (ServingMap<String>, Vec<ReleaseReceiver<String>>) {
        let map = ServingMap::new(LabelRules::default());
        let rx = versions
            .iter()
            .map(|&v| map.insert(ServableId::new("m", v), format!("m@{v}")))
            .collect();
        (map, rx)
    }

    #[test]
    fn latest_is_the_highest_available_version() {
        let (map, _rx) = map_with(&[3, 10, 7]);
        let handle = map.resolve("m", &VersionChoice::Latest).expect("resolves");
        assert_eq!(handle.id().version, 10);
        assert_eq!(&*handle, "m@10");
    }

    #[test]
    fn resolution_errors_match_upstream() {
        let (map, _rx) = map_with(&[1]);
        let cases = vec![
            (
                "",
                VersionChoice::Latest,
                ResolveError::MissingName,
                Code::InvalidArgument,
                "ModelSpec has no name specified.",
            ),
            (
                "x",
                VersionChoice::Latest,
                ResolveError::LatestNotFound("x".into()),
                Code::NotFound,
                "Servable not found for request: Latest(x)",
            ),
            (
                "m",
                VersionChoice::Specific(2),
                ResolveError::SpecificNotFound("m".into(), 2),
                Code::NotFound,
                "Servable not found for request: Specific(m, 2)",
            ),
            (
                "m",
                VersionChoice::Label("stable".into()),
                ResolveError::LabelsNotInitialised("stable".into()),
                Code::Unavailable,
                "Model labels does not init yet.stable",
            ),
        ];
        for (model, choice, error, code, message) in cases {
            let got = map.resolve(model, &choice).expect_err("must fail");
            assert_eq!(got, error);
            assert_eq!(got.code(), code);
            assert_eq!(got.to_string(), message);
        }
    }

    #[test]
    fn labels_resolve_to_their_version() {
        let (map, _rx) = map_with(&[1, 2]);
        let mut labels = LabelMap::new();
        labels.entry("m".into()).or_default().insert("stable".into(), 1);
        labels.entry("m".into()).or_default().insert("gone".into(), 5);
        map.update_labels(labels, |_, _| true).expect("allowed");
        assert_eq!(
            map.resolve("m", &VersionChoice::Label("stable".into())).expect("ok").id().version,
            1
        );
        let unknown =
            map.resolve("m", &VersionChoice::Label("canary".into())).expect_err("unknown");
        assert_eq!(unknown.to_string(), "Unrecognized servable version label: canary");
        assert_eq!(unknown.code(), Code::InvalidArgument);
        // A label kept pointing at a version that is no longer loaded gives NOT_FOUND.
        let gone = map.resolve("m", &VersionChoice::Label("gone".into())).expect_err("not loaded");
        assert_eq!(gone, ResolveError::SpecificNotFound("m".into(), 5));
    }

    #[test]
    fn labels_can_be_disabled() {
        let map: ServingMap<()> =
            ServingMap::new(LabelRules { allow_labels: false, ..LabelRules::default() });
        let err = map.resolve("m", &VersionChoice::Label("stable".into())).expect_err("disabled");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.to_string(),
            "ModelSpec has 'version_label' set, but it is not currently allowed by the server."
        );
    }

    #[test]
    fn refused_label_update_leaves_labels_untouched() {
        let (map, _rx) = map_with(&[1]);
        let mut good = LabelMap::new();
        good.entry("m".into()).or_default().insert("stable".into(), 1);
        map.update_labels(good.clone(), |_, v| v == 1).expect("allowed");
        let mut bad = good.clone();
        bad.entry("m".into()).or_default().insert("canary".into(), 2);
        assert!(map.update_labels(bad, |_, v| v == 1).is_err());
        assert_eq!(map.labels(), good);
    }

    fn canary_routing(stable: u32, canary: u32) -> RoutingTable {
        let mut labels = LabelMap::new();
        labels.entry("m".into()).or_default().insert("stable".into(), 1);
        labels.entry("m".into()).or_default().insert("canary".into(), 2);
        let split =
            TrafficSplit::new([("stable".to_owned(), stable), ("canary".to_owned(), canary)]);
        RoutingTable { labels, splits: [("m".to_owned(), split)].into_iter().collect() }
    }

    #[test]
    fn unversioned_requests_follow_the_split() {
        let (map, _rx) = map_with(&[1, 2, 3]);
        map.update_routing(canary_routing(0, 100), |_, _| true).expect("allowed");
        let routed = map.resolve_routed("m", &VersionChoice::Latest, None).expect("routes");
        assert_eq!(
            (routed.handle.id().version, routed.label.as_deref(), routed.by_split),
            (2, Some("canary"), true)
        );
        // Naming a version or a label bypasses the split.
        let direct = map.resolve_routed("m", &VersionChoice::Specific(3), None).expect("direct");
        assert_eq!((direct.handle.id().version, direct.by_split), (3, false));
        let labelled = map
            .resolve_routed("m", &VersionChoice::Label("stable".into()), Some("k"))
            .expect("label");
        assert_eq!(
            (labelled.handle.id().version, labelled.label.as_deref(), labelled.by_split),
            (1, Some("stable"), false)
        );
        // Keys are sticky.
        map.update_routing(canary_routing(50, 50), |_, _| true).expect("allowed");
        let first =
            map.resolve_routed("m", &VersionChoice::Latest, Some("user-7")).expect("routes").label;
        for _ in 0..100 {
            assert_eq!(
                map.resolve_routed("m", &VersionChoice::Latest, Some("user-7"))
                    .expect("routes")
                    .label,
                first
            );
        }
    }

    #[test]
    fn a_split_label_without_an_available_version_falls_back() {
        let (map, _rx) = map_with(&[1]); // canary's version 2 is not loaded
        map.update_routing(canary_routing(0, 100), |_, _| true).expect("allowed");
        let routed =
            map.resolve_routed("m", &VersionChoice::Latest, Some("k")).expect("falls back");
        assert_eq!(routed.handle.id().version, 1);
        assert_eq!(routed.label.as_deref(), Some("stable"));
        assert_eq!(routed.fell_back_from.as_deref(), Some("canary"));
        assert!(map.remove(&ServableId::new("m", 1)));
        let err =
            map.resolve_routed("m", &VersionChoice::Latest, Some("k")).expect_err("nothing left");
        assert_eq!(err, ResolveError::SpecificNotFound("m".into(), 2));
    }

    #[tokio::test]
    async fn removed_version_is_released_only_after_the_last_handle() {
        let (map, mut rx) = map_with(&[1]);
        let mut release = rx.remove(0);
        let handle = map.resolve("m", &VersionChoice::Specific(1)).expect("resolves");
        assert!(map.remove(&ServableId::new("m", 1)));
        // No new request can reach it...
        assert!(map.resolve("m", &VersionChoice::Latest).is_err());
        // ...but the in-flight one still uses it, and it is not released yet.
        assert_eq!(&*handle, "m@1");
        assert!(release.try_recv().is_err());
        drop(handle);
        assert_eq!(release.await.expect("released"), "m@1");
    }
}
