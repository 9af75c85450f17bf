//! The bearer token that guards ModelService (status, reloads): read from
//! `--model_service_token_file` and read again whenever the file changes
//! (Kubernetes updates a Secret volume in place), so rotating the Secret
//! never locks its legitimate caller out until a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tonic::{Request, Status};

/// A token file that cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read --model_service_token_file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--model_service_token_file {path} is empty")]
    Empty { path: PathBuf },
}

/// The token in `path`, without surrounding white space.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| TokenError::Read { path: path.to_owned(), source })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty { path: path.to_owned() });
    }
    Ok(token.to_owned())
}

/// Guards ModelService (and Versa's Telemetry beside it): with a token
/// configured, every call must carry `authorization: Bearer <token>`, else
/// UNAUTHENTICATED (counted, with [`counting`](Self::counting)).
#[derive(Debug, Clone)]
pub struct BearerToken {
    expected: Option<Arc<RwLock<Arc<str>>>>,
    refused: Option<prometheus::IntCounter>,
}

impl BearerToken {
    /// A fixed token (`None`: ModelService is open).
    pub fn new(token: Option<String>) -> Self {
        Self { expected: token.map(|t| Arc::new(RwLock::new(t.into()))), refused: None }
    }

    /// Counts every refused call in `refused`.
    pub fn counting(mut self, refused: prometheus::IntCounter) -> Self {
        self.refused = Some(refused);
        self
    }

    /// The token `initial` read from `path`, read again every `period`; a
    /// changed token replaces it at once. An unreadable or empty file keeps
    /// the token in force (a Secret update never leaves the file missing;
    /// a deleted Secret keeps its last content) and is logged.
    pub fn watching(path: PathBuf, initial: String, period: Duration) -> Self {
        let guard = Self::new(Some(initial));
        if let Some(expected) = &guard.expected {
            let current = Arc::downgrade(expected);
            tokio::spawn(async move {
                let mut complained = false;
                loop {
                    tokio::time::sleep(period).await;
                    let Some(current) = current.upgrade() else { return };
                    let path2 = path.clone();
                    let read = tokio::task::spawn_blocking(move || read_token(&path2)).await;
                    match read {
                        Ok(Ok(token)) => {
                            complained = false;
                            let mut held = current.write().unwrap_or_else(PoisonError::into_inner);
                            if **held != *token {
                                *held = token.into();
                                tracing::info!(path = %path.display(), "ModelService token changed: the new one is in force");
                            }
                        }
                        Ok(Err(e)) if !complained => {
                            complained = true;
                            tracing::warn!("{e}; the token in force stays");
                        }
                        _ => {}
                    }
                }
            });
        }
        guard
    }

    pub fn is_open(&self) -> bool {
        self.expected.is_none()
    }
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else { return Ok(request) };
        let expected = Arc::clone(&expected.read().unwrap_or_else(PoisonError::into_inner));
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if same_secret(presented.as_bytes(), expected.as_bytes()) {
            Ok(request)
        } else {
            if let Some(refused) = &self.refused {
                refused.inc();
            }
            Err(Status::unauthenticated(
                "ModelService requires a valid bearer token (authorization: Bearer <token>)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor as _;

    fn with_token(token: &str) -> Request<()> {
        let mut request = Request::new(());
        let value = format!("Bearer {token}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
        request
    }

    #[test]
    fn bearer_token_guard() {
        use tonic::service::Interceptor as _;
        let mut open = BearerToken::new(None);
        assert!(open.call(Request::new(())).is_ok());
        let mut guarded = BearerToken::new(Some("s3cret".into()));
        assert_eq!(
            guarded.call(Request::new(())).expect_err("no token").code(),
            tonic::Code::Unauthenticated
        );
        let mut wrong = Request::new(());
        wrong.metadata_mut().insert("authorization", "Bearer nope".parse().expect("ascii"));
        assert!(guarded.call(wrong).is_err());
        let mut right = Request::new(());
        right.metadata_mut().insert("authorization", "Bearer s3cret".parse().expect("ascii"));
        assert!(guarded.call(right).is_ok());
    }

    #[test]
    fn refused_calls_are_counted() {
        let refused = prometheus::IntCounter::new("refused", "refused").expect("counter");
        let mut guard = BearerToken::new(Some("s3cret".into())).counting(refused.clone());
        assert!(guard.call(Request::new(())).is_err());
        assert!(guard.call(with_token("nope")).is_err());
        assert!(guard.call(with_token("s3cret")).is_ok());
        assert_eq!(refused.get(), 2);
    }

    #[tokio::test]
    async fn a_rotated_token_file_takes_over_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").expect("write");
        let mut guard = BearerToken::watching(
            path.clone(),
            read_token(&path).expect("read"),
            Duration::from_millis(10),
        );
        assert!(guard.call(with_token("first")).is_ok());
        std::fs::write(&path, "second").expect("rotate");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while guard.call(with_token("second")).is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the rotated token never took over");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(guard.call(with_token("first")).is_err(), "the old token is no longer valid");
        std::fs::write(&path, "  \n").expect("empty");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(guard.call(with_token("second")).is_ok(), "an empty file keeps the token in force");
    }

    #[test]
    fn empty_and_missing_files_are_refused_at_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        assert!(matches!(read_token(&empty), Err(TokenError::Empty { .. })));
        assert!(matches!(read_token(&dir.path().join("none")), Err(TokenError::Read { .. })));
    }
}
