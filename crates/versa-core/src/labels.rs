//! Version labels: which label → version assignments a reload may make.

use crate::Code;
use std::collections::BTreeMap;

/// Label → version for one model.
pub type ModelLabels = BTreeMap<String, i64>;

/// Model → its labels.
pub type LabelMap = BTreeMap<String, ModelLabels>;

/// What the server allows when labels are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelRules {
    /// Labels may be used at all (upstream option `allow_version_labels`, on by default).
    pub allow_labels: bool,
    /// `--allow_version_labels_for_unavailable_models`: a *new* label, or an
    /// unchanged assignment, may name a version that is not AVAILABLE yet.
    pub allow_for_unavailable: bool,
    /// Any assignment is allowed, whatever the target's state
    /// (upstream option `force_allow_any_version_labels_for_unavailable_models`).
    pub force_allow_any: bool,
}

impl Default for LabelRules {
    fn default() -> Self {
        Self { allow_labels: true, allow_for_unavailable: false, force_allow_any: false }
    }
}

/// A label assignment the server refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("Model version labels are not currently allowed by the server.")]
    LabelsNotAllowed,
    #[error(
        "Request to assign label to version {version} of model {model}, which is not currently available for inference"
    )]
    VersionNotAvailable { model: String, version: i64 },
}

impl LabelError {
    pub fn code(&self) -> Code {
        Code::FailedPrecondition
    }
}

/// Checks a complete new label map against the current one. Every assignment
/// must target an AVAILABLE version, except where the rules relax that; the
/// first refused assignment fails the whole update.
pub fn check_label_update(
    current: Option<&LabelMap>,
    requested: &LabelMap,
    rules: LabelRules,
    is_available: impl Fn(&str, i64) -> bool,
) -> Result<(), LabelError> {
    let any_label = requested.values().any(|labels| !labels.is_empty());
    if any_label && !rules.allow_labels {
        return Err(LabelError::LabelsNotAllowed);
    }
    if rules.force_allow_any {
        return Ok(());
    }
    for (model, labels) in requested {
        for (label, &version) in labels {
            if is_available(model, version) {
                continue;
            }
            let existing = current.and_then(|c| c.get(model)).and_then(|l| l.get(label));
            let new_or_unchanged = existing.is_none_or(|&v| v == version);
            if rules.allow_for_unavailable && new_or_unchanged {
                continue;
            }
            return Err(LabelError::VersionNotAvailable { model: model.clone(), version });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(entries: &[(&str, &str, i64)]) -> LabelMap {
        let mut map = LabelMap::new();
        for (model, label, version) in entries {
            map.entry(model.to_string()).or_default().insert(label.to_string(), *version);
        }
        map
    }

    #[test]
    fn label_rules_table() {
        let available = |_: &str, v: i64| v == 1 || v == 2;
        let strict = LabelRules::default();
        let relaxed = LabelRules { allow_for_unavailable: true, ..strict };
        let forced = LabelRules { force_allow_any: true, ..strict };
        let disabled = LabelRules { allow_labels: false, ..strict };
        let not_available =
            |v| Err(LabelError::VersionNotAvailable { model: "m".into(), version: v });
        let current = labels(&[("m", "stable", 1)]);
        // (what, rules, requested, expected)
        let cases = vec![
            ("label on an available version", strict, labels(&[("m", "stable", 2)]), Ok(())),
            (
                "label on a loading version is refused",
                strict,
                labels(&[("m", "canary", 3)]),
                not_available(3),
            ),
            (
                "flag: a new label may name an unavailable version",
                relaxed,
                labels(&[("m", "canary", 3)]),
                Ok(()),
            ),
            (
                "flag: moving an existing label to an unavailable version is refused",
                relaxed,
                labels(&[("m", "stable", 3)]),
                not_available(3),
            ),
            ("force: anything goes", forced, labels(&[("m", "stable", 9)]), Ok(())),
            (
                "labels disabled",
                disabled,
                labels(&[("m", "stable", 1)]),
                Err(LabelError::LabelsNotAllowed),
            ),
            ("labels disabled but none asked", disabled, LabelMap::new(), Ok(())),
            ("removing every label is fine", strict, LabelMap::new(), Ok(())),
        ];
        for (what, rules, requested, expected) in cases {
            assert_eq!(
                check_label_update(Some(&current), &requested, rules, available),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn unchanged_unavailable_label_is_allowed_only_with_the_flag() {
        let current = labels(&[("m", "stable", 7)]);
        let requested = current.clone();
        let nothing_available = |_: &str, _: i64| false;
        let relaxed = LabelRules { allow_for_unavailable: true, ..LabelRules::default() };
        assert_eq!(
            check_label_update(Some(&current), &requested, relaxed, nothing_available),
            Ok(())
        );
        assert!(
            check_label_update(
                Some(&current),
                &requested,
                LabelRules::default(),
                nothing_available
            )
            .is_err()
        );
    }

    #[test]
    fn messages_match_upstream() {
        let e = LabelError::VersionNotAvailable { model: "fraud".into(), version: 42 };
        assert_eq!(
            e.to_string(),
            "Request to assign label to version 42 of model fraud, which is not currently available for inference"
        );
        assert_eq!(e.code(), Code::FailedPrecondition);
    }
}
