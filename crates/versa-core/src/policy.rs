//! Version transition policies: given every managed version of one model, what
//! is the next action? Pure, stateless and idempotent, as upstream's
//! `AvailabilityPreservingPolicy` and `ResourcePreservingPolicy`.

/// How a model moves from its serving versions to newly aspired ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TransitionPolicy {
    /// Load the new version before unloading the old one: no gap in service,
    /// but both copies are in memory for a while. TensorFlow Serving's default.
    #[default]
    AvailabilityPreserving,
    /// Unload the old version completely before loading the new one: never
    /// more than the aspired copies in memory, but requests fail in between.
    ResourcePreserving,
}

/// Where a managed version stands, as far as a policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionPhase {
    /// Managed, nothing done yet (`kNew`).
    New,
    /// A load was decided and has not finished (queued or loading).
    Loading,
    /// Serving (`kReady`).
    Ready,
    /// An unload was decided and has not finished.
    Unloading,
    /// Unloaded (`kDisabled`).
    Disabled,
    /// Failed to load (`kError`).
    Error,
}

/// One managed version as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionView {
    pub version: i64,
    pub aspired: bool,
    pub phase: VersionPhase,
}

/// What a policy wants done next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Unloads sort before loads: the manager runs them first.
    Unload(i64),
    Load(i64),
}

impl TransitionPolicy {
    /// The next action for one model, or `None` when nothing should happen now.
    pub fn next_action(self, versions: &[VersionView]) -> Option<Action> {
        match self {
            TransitionPolicy::AvailabilityPreserving => availability_preserving(versions),
            TransitionPolicy::ResourcePreserving => resource_preserving(versions),
        }
    }
}

fn highest_aspired_new(versions: &[VersionView]) -> Option<Action> {
    versions
        .iter()
        .filter(|v| v.aspired && v.phase == VersionPhase::New)
        .map(|v| v.version)
        .max()
        .map(Action::Load)
}

/// Unload the lowest un-aspired serving version once an aspired version serves
/// (or nothing is aspired any more, or several un-aspired versions serve);
/// otherwise load the highest aspired new version.
fn availability_preserving(versions: &[VersionView]) -> Option<Action> {
    let has_aspired = versions.iter().any(|v| v.aspired);
    let has_aspired_serving = versions.iter().any(|v| v.aspired && v.phase == VersionPhase::Ready);
    let unaspired_serving: Vec<i64> = versions
        .iter()
        .filter(|v| !v.aspired && v.phase == VersionPhase::Ready)
        .map(|v| v.version)
        .collect();
    if !unaspired_serving.is_empty()
        && (!has_aspired || has_aspired_serving || unaspired_serving.len() > 1)
    {
        return unaspired_serving.into_iter().min().map(Action::Unload);
    }
    highest_aspired_new(versions)
}

/// Unload every un-aspired serving version first, wait until every un-aspired
/// version is fully gone, and only then load the highest aspired new version.
fn resource_preserving(versions: &[VersionView]) -> Option<Action> {
    if let Some(v) = versions
        .iter()
        .filter(|v| !v.aspired && v.phase == VersionPhase::Ready)
        .map(|v| v.version)
        .min()
    {
        return Some(Action::Unload(v));
    }
    let unaspired_still_going = versions
        .iter()
        .any(|v| !v.aspired && !matches!(v.phase, VersionPhase::Disabled | VersionPhase::Error));
    if unaspired_still_going {
        return None;
    }
    highest_aspired_new(versions)
}

#[cfg(test)]
mod tests {
    use super::TransitionPolicy::{AvailabilityPreserving as Avail, ResourcePreserving as Res};
    use super::VersionPhase::*;
    use super::*;

    /// `(version, aspired, phase)` triples → views.
    fn model(versions: &[(i64, bool, VersionPhase)]) -> Vec<VersionView> {
        versions
            .iter()
            .map(|&(version, aspired, phase)| VersionView { version, aspired, phase })
            .collect()
    }

    #[test]
    fn decision_tables() {
        use Action::*;
        // (what it shows, policy, versions, expected action)
        type Case =
            (&'static str, TransitionPolicy, Vec<(i64, bool, VersionPhase)>, Option<Action>);
        let cases: Vec<Case> = vec![
            // --- AvailabilityPreserving ---
            ("nothing managed", Avail, vec![], None),
            ("first version loads", Avail, vec![(1, true, New)], Some(Load(1))),
            ("steady state", Avail, vec![(1, true, Ready)], None),
            (
                "new version loads before the old unloads",
                Avail,
                vec![(1, false, Ready), (2, true, New)],
                Some(Load(2)),
            ),
            (
                "old keeps serving while the new loads",
                Avail,
                vec![(1, false, Ready), (2, true, Loading)],
                None,
            ),
            (
                "old unloads once the new serves",
                Avail,
                vec![(1, false, Ready), (2, true, Ready)],
                Some(Unload(1)),
            ),
            (
                "a failed new version leaves the old serving",
                Avail,
                vec![(1, false, Ready), (2, true, Error)],
                None,
            ),
            ("model removed: unload", Avail, vec![(1, false, Ready)], Some(Unload(1))),
            (
                "model removed: lowest first",
                Avail,
                vec![(3, false, Ready), (1, false, Ready), (2, false, Ready)],
                Some(Unload(1)),
            ),
            (
                "several un-aspired serving: lowest goes even with no aspired serving",
                Avail,
                vec![(1, false, Ready), (2, false, Ready), (3, true, Loading)],
                Some(Unload(1)),
            ),
            (
                "several new versions: highest first",
                Avail,
                vec![(1, true, New), (3, true, New), (2, true, New)],
                Some(Load(3)),
            ),
            (
                "unload beats load",
                Avail,
                vec![(1, false, Ready), (2, true, Ready), (3, true, New)],
                Some(Unload(1)),
            ),
            ("un-aspired new versions are never loaded", Avail, vec![(5, false, New)], None),
            (
                "unloading version is left alone",
                Avail,
                vec![(1, false, Unloading), (2, true, Ready)],
                None,
            ),
            (
                "rollback by deletion loads the lower version first",
                Avail,
                vec![(2, false, Ready), (1, true, New)],
                Some(Load(1)),
            ),
            // --- ResourcePreserving ---
            ("first version loads", Res, vec![(1, true, New)], Some(Load(1))),
            (
                "old unloads before the new loads",
                Res,
                vec![(1, false, Ready), (2, true, New)],
                Some(Unload(1)),
            ),
            ("waits while the old unloads", Res, vec![(1, false, Unloading), (2, true, New)], None),
            (
                "waits while an un-aspired load finishes",
                Res,
                vec![(1, false, Loading), (2, true, New)],
                None,
            ),
            (
                "loads once the old is gone",
                Res,
                vec![(1, false, Disabled), (2, true, New)],
                Some(Load(2)),
            ),
            (
                "a failed un-aspired version does not block",
                Res,
                vec![(1, false, Error), (2, true, New)],
                Some(Load(2)),
            ),
            ("highest new first", Res, vec![(2, true, New), (4, true, New)], Some(Load(4))),
            ("steady state", Res, vec![(2, true, Ready)], None),
            (
                "unloads lowest un-aspired first",
                Res,
                vec![(3, false, Ready), (2, false, Ready), (4, true, New)],
                Some(Unload(2)),
            ),
        ];
        for (what, policy, versions, expected) in cases {
            assert_eq!(policy.next_action(&model(&versions)), expected, "{policy:?}: {what}");
        }
    }

    #[test]
    fn unloads_sort_before_loads() {
        let mut actions =
            vec![Action::Load(9), Action::Unload(1), Action::Load(2), Action::Unload(7)];
        actions.sort();
        assert_eq!(
            actions,
            vec![Action::Unload(1), Action::Unload(7), Action::Load(2), Action::Load(9)]
        );
    }
}
