//! Which model a command is for, the patch that hands it to the operator
//! (the `serving.versa.dev/rollout-command` annotation) and where it
//! stands. Pure: the effects are in `main.rs`.

use serde_json::{Value, json};
use versa_crd::command::{COMMAND_ANNOTATION, CommandRequest};
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
}

/// The model a command goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) model: String,
}

/// The model named by `--model`, else the only one with a rollout.
pub(crate) fn choose(md: &ModelDeployment, model: Option<&str>) -> Result<Target, TargetError> {
    let name = md.metadata.name.clone().unwrap_or_default();
    let Some(status) = md.status.as_ref() else { return Err(TargetError::NoStatus(name)) };
    let found: Vec<&ModelStatus> = match model {
        Some(model) => {
            let Some(m) = status.models.iter().find(|m| m.name == model) else {
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
            vec![m]
        }
        None => status.models.iter().filter(|m| m.rollout.is_some()).collect(),
    };
    match found.as_slice() {
        [m] => Ok(Target { model: m.name.clone() }),
        [] => Err(TargetError::NoRollouts { name }),
        many => Err(TargetError::Ambiguous {
            name,
            models: many.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// The merge patch that sets the command annotation (it replaces a command
/// not taken yet: the newest wins).
pub(crate) fn annotation_patch(request: &CommandRequest) -> Value {
    json!({"metadata": {"annotations": {COMMAND_ANNOTATION: request.to_string()}}})
}

/// Where a sent command stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Not taken yet: the annotation still holds it.
    Pending,
    /// Taken; `ignored` says why it did nothing, if it did nothing.
    Taken { ignored: Option<String> },
    /// Neither taken nor pending: replaced by another command, or the
    /// rollout is gone.
    Dropped { annotation: Option<String> },
}

/// Where the command `request` stands in `md`.
pub(crate) fn progress(md: &ModelDeployment, request: &CommandRequest) -> Progress {
    let last = md
        .status
        .as_ref()
        .and_then(|s| s.models.iter().find(|m| m.name == request.model))
        .and_then(|m| m.rollout.as_ref())
        .and_then(|r| r.last_command.as_ref());
    if let Some(last) = last.filter(|l| l.id == request.id) {
        return Progress::Taken { ignored: last.ignored.clone() };
    }
    let annotation = md.metadata.annotations.as_ref().and_then(|a| a.get(COMMAND_ANNOTATION));
    if annotation.is_some_and(|a| *a == request.to_string()) {
        return Progress::Pending;
    }
    Progress::Dropped { annotation: annotation.cloned() }
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
        assert_eq!(choose(&md, None), Ok(Target { model: "b".into() }));
        assert_eq!(choose(&md, Some("b")), Ok(Target { model: "b".into() }));
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
        assert_eq!(choose(&two, Some("a")).map(|t| t.model), Ok("a".to_owned()));
        let none = md(&[("a", false)]);
        assert!(matches!(choose(&none, None), Err(TargetError::NoRollouts { .. })));
    }

    #[test]
    fn a_command_is_pending_until_its_id_is_in_status_and_dropped_when_replaced() {
        let mut md = md(&[("b", true)]);
        let request = CommandRequest {
            model: "b".into(),
            command: versa_analysis::canary::Command::Promote,
            id: "1-2".into(),
        };
        let patch = annotation_patch(&request);
        assert_eq!(patch["metadata"]["annotations"][COMMAND_ANNOTATION], "b Promote 1-2");
        assert_eq!(progress(&md, &request), Progress::Dropped { annotation: None });
        md.metadata.annotations =
            Some([(COMMAND_ANNOTATION.to_owned(), request.to_string())].into());
        assert_eq!(progress(&md, &request), Progress::Pending);
        let outcome = versa_crd::CommandOutcome {
            command: request.command,
            id: "1-2".into(),
            taken_at: 5,
            ignored: Some("nothing to resume".into()),
        };
        if let Some(r) = md.status.as_mut().and_then(|s| s.models[0].rollout.as_mut()) {
            r.last_command = Some(outcome);
        }
        assert_eq!(
            progress(&md, &request),
            Progress::Taken { ignored: Some("nothing to resume".into()) }
        );
        let newer = CommandRequest { id: "9-9".into(), ..request.clone() };
        md.metadata.annotations = Some([(COMMAND_ANNOTATION.to_owned(), newer.to_string())].into());
        assert!(matches!(progress(&md, &newer), Progress::Pending));
    }
}
