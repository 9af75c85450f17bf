//! Rollout commands (`kubectl versa promote|abort|...`, Argo CD's actions):
//! an annotation on the ModelDeployment, `serving.versa.dev/rollout-command:
//! "<model> <Command> <id>"`. Not the spec (a GitOps sync would revert it)
//! and not status (then whoever steers could also forge the rollout state
//! the operator resumes from): steering needs only the `patch` an editor
//! has. The operator applies a command once — it records the id in
//! `status.models[].rollout.lastCommand` and removes the annotation — and a
//! newer command replaces one not taken yet. `*` for the model means every
//! model whose rollout it applies to.

use std::fmt;
use versa_analysis::canary::Command;

/// The annotation that carries a command.
pub const COMMAND_ANNOTATION: &str = "serving.versa.dev/rollout-command";

/// The model name that targets every model with a rollout.
pub const EVERY_MODEL: &str = "*";

/// Longest model name accepted (a model's name in the spec is shorter).
pub const MAX_MODEL_LEN: usize = 253;

/// Longest id accepted.
pub const MAX_ID_LEN: usize = 64;

/// A parsed command annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// The model, or [`EVERY_MODEL`].
    pub model: String,
    pub command: Command,
    /// Unique per request (a time and a random part): a command is applied
    /// once per id.
    pub id: String,
}

impl CommandRequest {
    /// Whether it is for `model`.
    pub fn targets(&self, model: &str) -> bool {
        self.model == EVERY_MODEL || self.model == model
    }

    /// Parses `"<model> <Command> <id>"`.
    ///
    /// # Errors
    /// Why the value is not a command, naming what is wrong.
    pub fn parse(value: &str) -> Result<Self, String> {
        let parts: Vec<&str> = value.split_whitespace().collect();
        let [model, command, id] = parts.as_slice() else {
            return Err(format!(
                "{COMMAND_ANNOTATION}: {:?} is not \"<model> <Command> <id>\"",
                value.chars().take(80).collect::<String>()
            ));
        };
        let command = match *command {
            "Promote" => Command::Promote,
            "PromoteFull" => Command::PromoteFull,
            "Abort" => Command::Abort,
            "Retry" => Command::Retry,
            "Pause" => Command::Pause,
            "Resume" => Command::Resume,
            other => {
                return Err(format!(
                    "{COMMAND_ANNOTATION}: unknown command {:?} (Promote, PromoteFull, Abort, Retry, Pause, Resume)",
                    other.chars().take(32).collect::<String>()
                ));
            }
        };
        let id_ok = id.len() <= MAX_ID_LEN
            && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !id_ok {
            return Err(format!(
                "{COMMAND_ANNOTATION}: the id must be at most {MAX_ID_LEN} of [A-Za-z0-9-_.:]"
            ));
        }
        let model_ok = *model == EVERY_MODEL
            || (model.len() <= MAX_MODEL_LEN
                && model.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        if !model_ok {
            return Err(format!(
                "{COMMAND_ANNOTATION}: the model must be `*` or a model name (at most {MAX_MODEL_LEN} of [A-Za-z0-9-_.])"
            ));
        }
        Ok(Self { model: (*model).to_owned(), command, id: (*id).to_owned() })
    }
}

impl fmt::Display for CommandRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} {}", self.model, self.command, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_round_trips_through_its_annotation_value() {
        let r = CommandRequest {
            model: "fraud".into(),
            command: Command::PromoteFull,
            id: "1733-9f".into(),
        };
        assert_eq!(r.to_string(), "fraud PromoteFull 1733-9f");
        assert_eq!(CommandRequest::parse(&r.to_string()), Ok(r.clone()));
        assert!(r.targets("fraud") && !r.targets("other"));
        let every = CommandRequest::parse("* Abort 2026-12-03T13:00:00Z").expect("every model");
        assert!(every.targets("fraud") && every.targets("other"));
    }

    #[test]
    fn a_malformed_value_is_refused_with_what_is_wrong() {
        for (value, why) in [
            ("fraud Promote", "is not"),
            ("fraud Promote a b", "is not"),
            ("fraud promote 1", "unknown command"),
            ("fraud Promote id/with/slashes", "the id must be"),
            ("fr\u{1b}[2Jaud Promote 1", "the model must be"),
        ] {
            let err = CommandRequest::parse(value).expect_err(value);
            assert!(err.contains(why), "{value}: {err}");
        }
        let long = format!("fraud Abort {}", "x".repeat(MAX_ID_LEN + 1));
        assert!(CommandRequest::parse(&long).is_err());
    }
}
