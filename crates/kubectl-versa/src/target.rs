//! Which model a command is for, and the JSON patch that hands it to the
//! operator. Pure: the effects are in `main.rs`.

use serde_json::{Value, json};
use versa_analysis::canary::Command;
use versa_crd::{ModelDeployment, ModelStatus};

/// Why a command cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TargetError {
    #[error("{0} has no status yet: the operator has not passed over it")]
    NoStatus(String),
    #[error("{name} has no model {model} (it has: {known})")]
    NoSuchModel { name: String, model: String, known: String },
    #[error(
        "model {0} has no rollout: `strategy.canary` starts one when a commit moves `labels.stable`"
    )]
    NoRollout(String),
    #[error("{name} has rollouts on several models ({models}): name one with --model")]
    Ambiguous { name: String, models: String },
    #[error("{name} has no rollout on any model")]
    NoRollouts { name: String },
    #[error(
        "model {model} already has a command pending ({pending:?}): the operator has not taken it yet"
    )]
    Pending { model: String, pending: Command },
}

/// The model a command goes to: its index in `status.models` and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) index: usize,
    pub(crate) model: String,
}

/// The model named by `--model`, else the only one with a rollout.
pub(crate) fn choose(md: &ModelDeployment, model: Option<&str>) -> Result<Target, TargetError> {
    let name = md.metadata.name.clone().unwrap_or_default();
    let Some(status) = md.status.as_ref() else { return Err(TargetError::NoStatus(name)) };
    let found: Vec<(usize, &ModelStatus)> = match model {
        Some(model) => {
            let hit = status.models.iter().enumerate().find(|(_, m)| m.name == model);
            let Some((index, m)) = hit else {
                let known = status.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>();
                return Err(TargetError::NoSuchModel {
                    name,
                    model: model.to_owned(),
                    known: known.join(", "),
                });
            };
            if m.rollout.is_none() {
                return Err(TargetError::NoRollout(m.name.clone()));
            }
            vec![(index, m)]
        }
        None => status.models.iter().enumerate().filter(|(_, m)| m.rollout.is_some()).collect(),
    };
    match found.as_slice() {
        [(index, m)] => Ok(Target { index: *index, model: m.name.clone() }),
        [] => Err(TargetError::NoRollouts { name }),
        many => Err(TargetError::Ambiguous {
            name,
            models: many.iter().map(|(_, m)| m.name.as_str()).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Refuses to overwrite a command the operator has not taken yet.
pub(crate) fn check_not_pending(md: &ModelDeployment, target: &Target) -> Result<(), TargetError> {
    let pending = md
        .status
        .as_ref()
        .and_then(|s| s.models.get(target.index))
        .and_then(|m| m.rollout.as_ref())
        .and_then(|r| r.command);
    match pending {
        Some(pending) => Err(TargetError::Pending { model: target.model.clone(), pending }),
        None => Ok(()),
    }
}

/// A JSON patch of the status subresource that sets the command, valid
/// only on the object as read: the `test`s fail it if the object changed
/// (another command, the operator's next write) or the model moved in the
/// list.
pub(crate) fn command_patch(resource_version: &str, target: &Target, command: Command) -> Value {
    let at = format!("/status/models/{}", target.index);
    json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "test", "path": format!("{at}/name"), "value": target.model},
        {"op": "add", "path": format!("{at}/rollout/command"), "value": command},
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(models: &[(&str, bool)]) -> ModelDeployment {
        let rollout = json!({"baseline": 1, "candidate": 2, "phase": "Progressing",
            "summary": "", "state": {"step": 0, "stepStartedAt": 0}});
        let models: Vec<Value> = models
            .iter()
            .map(|(name, has)| {
                let mut m = json!({"name": name, "phase": "Ready"});
                if *has {
                    m["rollout"] = rollout.clone();
                }
                m
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "serving.versa.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "resourceVersion": "7"},
            "spec": {"models": [], "server": {"image": "i", "modelVolume": {"name": "m"}}},
            "status": {"models": models},
        }))
        .expect("a ModelDeployment")
    }

    #[test]
    fn the_only_rollout_is_chosen_without_naming_it() {
        let md = md(&[("a", false), ("b", true)]);
        assert_eq!(choose(&md, None), Ok(Target { index: 1, model: "b".into() }));
        assert_eq!(choose(&md, Some("b")), Ok(Target { index: 1, model: "b".into() }));
        assert_eq!(choose(&md, Some("a")), Err(TargetError::NoRollout("a".into())));
        let Err(TargetError::NoSuchModel { known, .. }) = choose(&md, Some("c")) else {
            panic!("an unknown model is refused")
        };
        assert_eq!(known, "a, b");
    }

    #[test]
    fn several_rollouts_need_a_name_and_none_is_an_error() {
        let two = md(&[("a", true), ("b", true)]);
        assert!(matches!(choose(&two, None), Err(TargetError::Ambiguous { .. })));
        assert_eq!(choose(&two, Some("a")).map(|t| t.index), Ok(0));
        let none = md(&[("a", false)]);
        assert!(matches!(choose(&none, None), Err(TargetError::NoRollouts { .. })));
    }

    #[test]
    fn the_patch_is_valid_only_on_the_object_as_read() {
        let target = Target { index: 3, model: "fraud".into() };
        let patch = command_patch("41", &target, Command::PromoteFull);
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
                {"op": "test", "path": "/status/models/3/name", "value": "fraud"},
                {"op": "add", "path": "/status/models/3/rollout/command", "value": "PromoteFull"},
            ])
        );
    }

    #[test]
    fn a_pending_command_is_not_overwritten() {
        let mut md = md(&[("b", true)]);
        let target = choose(&md, None).expect("target");
        assert_eq!(check_not_pending(&md, &target), Ok(()));
        if let Some(r) = md.status.as_mut().and_then(|s| s.models[0].rollout.as_mut()) {
            r.command = Some(Command::Pause);
        }
        assert!(matches!(check_not_pending(&md, &target), Err(TargetError::Pending { .. })));
    }
}
