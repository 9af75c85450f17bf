//! What can go wrong in a pass, and how each failure is counted and
//! reported.

use std::time::Duration;

/// What can go wrong in a pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {}", api_message(.0))]
    Kube(#[from] kube::Error),
    #[error("cannot apply {object}: {}", api_message(.source))]
    Apply { object: String, source: kube::Error },
    #[error("{}", .0.join("; "))]
    Conflict(Vec<String>),
    #[error("cannot create a reload token: {0}")]
    Token(#[from] getrandom::Error),
    #[error("the ModelDeployment has no namespace")]
    NoNamespace,
    #[error("this replica does not hold the lease now: nothing written")]
    NotLeading,
    #[error("the pass did not finish within {0:?}; retried")]
    PassTimeout(Duration),
    /// Not a failure: somebody (a `kubectl versa` command, another writer)
    /// changed the object between this pass's read and its status write.
    #[error(
        "the ModelDeployment changed while the pass ran (its status was not written); passing again"
    )]
    StatusChanged,
}

/// Longest one pass may take; a pass stuck on a call is cut and retried.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(120);

/// The API server's own message where there is one.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The `error` label of the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Apply { .. } => "apply",
            Error::Conflict(_) => "conflict",
            Error::Token(_) => "token",
            Error::NoNamespace => "no_namespace",
            Error::NotLeading => "not_leading",
            Error::PassTimeout(_) => "pass_timeout",
            Error::StatusChanged => "status_changed",
        }
    }

    /// The `Degraded` reason this failure is reported under, or `None`
    /// when it must not be written (a replica that does not lead).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Error::Kube(_) => Some("ApiError"),
            Error::Apply { .. } => Some("ApplyFailed"),
            Error::Conflict(_) => Some("ResourceConflict"),
            Error::Token(_) => Some("TokenError"),
            Error::PassTimeout(_) => Some("ReconcileTimeout"),
            Error::NoNamespace | Error::NotLeading | Error::StatusChanged => None,
        }
    }
}
