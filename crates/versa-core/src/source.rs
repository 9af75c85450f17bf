//! The filesystem source: polls each model's base path for version
//! directories and tells a sink which versions of each model to serve.
//!
//! # Differences from upstream, on purpose
//!
//! * **A missing or unreadable base path never unloads anything and never
//!   holds back other models.** Upstream aborts the whole poll on the first
//!   such error, so one broken model stalls updates of every model. Here the
//!   broken model is skipped for that poll (its serving versions stay as they
//!   are), the error is logged and kept in [`FileSystemSource::errors`], and
//!   every other model is updated as usual.
//! * **`servable_versions_always_present`** is an ordinary option: when a
//!   readable base path holds no versions, the model is skipped instead of
//!   unloaded ("Refusing to unload all versions").
//! * Without that option, an empty (but readable) base path unloads every
//!   version of the model, as upstream: deleting all version directories is a
//!   legitimate way to withdraw a model.

use crate::Code;
use crate::discovery::{AspiredVersion, VersionPolicy, select_versions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Receives the aspired versions of one model at a time. An empty list means
/// "serve no version of this model".
pub trait AspiredVersionsSink: Send + Sync + 'static {
    fn set_aspired_versions(&self, model: &str, versions: Vec<AspiredVersion>);
}

/// A model the source watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServableToMonitor {
    pub name: String,
    pub base_path: PathBuf,
    pub policy: VersionPolicy,
}

/// How often the source polls (`--file_system_poll_wait_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollInterval {
    /// Poll once, when the config is set (upstream: 0).
    Once,
    /// Poll periodically (upstream: positive seconds).
    Every(Duration),
    /// Never poll (upstream: negative; for tests).
    Never,
}

impl PollInterval {
    /// Interprets `--file_system_poll_wait_seconds`.
    pub fn from_seconds(seconds: i64) -> Self {
        match seconds {
            0 => PollInterval::Once,
            s if s < 0 => PollInterval::Never,
            s => PollInterval::Every(Duration::from_secs(s.unsigned_abs())),
        }
    }
}

/// What the source watches and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub servables: Vec<ServableToMonitor>,
    pub poll: PollInterval,
    /// Skip (rather than unload) a model whose base path holds no versions.
    pub servable_versions_always_present: bool,
}

/// Why one model's versions could not be read in one poll.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("Could not find base path {path} for servable {model} with error {reason}")]
    BasePathUnreadable { model: String, path: PathBuf, reason: String },
    #[error("Unable to find a numerical version path for servable {model} at: {path}")]
    NoVersions { model: String, path: PathBuf },
}

impl SourceError {
    pub fn code(&self) -> Code {
        match self {
            SourceError::BasePathUnreadable { .. } => Code::InvalidArgument,
            SourceError::NoVersions { .. } => Code::NotFound,
        }
    }
}

/// Lists the children of a base path (blocking).
pub fn list_children(model: &str, base_path: &Path) -> Result<Vec<String>, SourceError> {
    let unreadable = |e: std::io::Error| SourceError::BasePathUnreadable {
        model: model.to_owned(),
        path: base_path.to_owned(),
        reason: e.to_string(),
    };
    std::fs::read_dir(base_path)
        .map_err(unreadable)?
        .map(|entry| {
            entry.map(|e| e.file_name().to_string_lossy().into_owned()).map_err(unreadable)
        })
        .collect()
}

/// The versions of one model to serve now (blocking). Logs what upstream logs.
pub fn aspired_versions_of(
    servable: &ServableToMonitor,
) -> Result<Vec<AspiredVersion>, SourceError> {
    let children = list_children(&servable.name, &servable.base_path)?;
    let selection = select_versions(&servable.base_path, &children, &servable.policy);
    for version in &selection.duplicates {
        tracing::warn!(model = %servable.name, version, "Duplicate version directories detected");
    }
    if let VersionPolicy::Specific(requested) = &servable.policy {
        if requested.is_empty() {
            tracing::warn!("No specific versions requested for servable {}.", servable.name);
        }
        for version in &selection.missing {
            tracing::warn!(model = %servable.name, version, "requested version not found under the base path");
        }
    }
    Ok(selection.aspired)
}

/// Checks that every model has at least one version on disk (start-up check
/// behind upstream's `fail_if_zero_versions_at_startup` /
/// `servable_versions_always_present`). Blocking.
pub fn check_versions_present(servables: &[ServableToMonitor]) -> Result<(), SourceError> {
    for servable in servables {
        let children = list_children(&servable.name, &servable.base_path)?;
        if select_versions(&servable.base_path, &children, &VersionPolicy::All).aspired.is_empty() {
            return Err(SourceError::NoVersions {
                model: servable.name.clone(),
                path: servable.base_path.clone(),
            });
        }
    }
    Ok(())
}

/// Polls base paths and feeds a sink. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct FileSystemSource {
    shared: Arc<SourceShared>,
}

struct SourceShared {
    sink: Arc<dyn AspiredVersionsSink>,
    state: Mutex<SourceState>,
    /// Serialises polls so two never interleave their emissions.
    poll_lock: tokio::sync::Mutex<()>,
}

struct SourceState {
    config: SourceConfig,
    errors: BTreeMap<String, SourceError>,
}

impl std::fmt::Debug for FileSystemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSystemSource").field("config", &self.state().config).finish()
    }
}

impl FileSystemSource {
    /// A source with no models yet. Call [`update_config`](Self::update_config)
    /// to give it some and [`run`](Self::run) to poll.
    pub fn new(
        sink: Arc<dyn AspiredVersionsSink>,
        poll: PollInterval,
        always_present: bool,
    ) -> Self {
        let config = SourceConfig {
            servables: Vec::new(),
            poll,
            servable_versions_always_present: always_present,
        };
        Self {
            shared: Arc::new(SourceShared {
                sink,
                state: Mutex::new(SourceState { config, errors: BTreeMap::new() }),
                poll_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, SourceState> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The models watched now.
    pub fn servables(&self) -> Vec<ServableToMonitor> {
        self.state().config.servables.clone()
    }

    /// The last poll's error per model (empty when every base path was read).
    pub fn errors(&self) -> BTreeMap<String, SourceError> {
        self.state().errors.clone()
    }

    /// Replaces the watched models and polls at once. Models no longer watched
    /// get an empty aspired list, so all their versions are unloaded.
    pub async fn update_config(&self, servables: Vec<ServableToMonitor>) {
        let removed: Vec<String> = {
            let mut state = self.state();
            let removed = state
                .config
                .servables
                .iter()
                .filter(|old| !servables.iter().any(|new| new.name == old.name))
                .map(|old| old.name.clone())
                .collect();
            let SourceState { config, errors } = &mut *state;
            config.servables = servables;
            errors.retain(|model, _| config.servables.iter().any(|s| &s.name == model));
            removed
        };
        for model in removed {
            tracing::info!(%model, "model removed from config: unloading every version");
            self.shared.sink.set_aspired_versions(&model, Vec::new());
        }
        if self.state().config.poll != PollInterval::Never {
            self.poll_once().await;
        }
    }

    /// Reads every base path once and emits each model's aspired versions. A
    /// model whose base path cannot be read is skipped, never unloaded.
    pub async fn poll_once(&self) {
        let _one_poll_at_a_time = self.shared.poll_lock.lock().await;
        let (servables, always_present) = {
            let state = self.state();
            (state.config.servables.clone(), state.config.servable_versions_always_present)
        };
        let results = tokio::task::spawn_blocking(move || {
            servables
                .into_iter()
                .map(|s| {
                    let aspired = aspired_versions_of(&s);
                    (s, aspired)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();

        for (servable, result) in results {
            // A model removed by a concurrent config update must not be re-emitted.
            let still_watched =
                self.state().config.servables.iter().any(|s| s.name == servable.name);
            if !still_watched {
                continue;
            }
            match result {
                Err(error) => {
                    tracing::error!(
                        model = %servable.name,
                        "FileSystemStoragePathSource encountered a filesystem access error: {error}"
                    );
                    self.state().errors.insert(servable.name.clone(), error);
                }
                Ok(versions) if versions.is_empty() && always_present => {
                    tracing::warn!(
                        "Refusing to unload all versions for Servable: {}",
                        servable.name
                    );
                    self.state().errors.insert(
                        servable.name.clone(),
                        SourceError::NoVersions {
                            model: servable.name.clone(),
                            path: servable.base_path.clone(),
                        },
                    );
                }
                Ok(versions) => {
                    if versions.is_empty() {
                        tracing::warn!(
                            "No versions of servable {} found under base path {}. Did you forget to name your leaf directory as a number (eg. '/1/')?",
                            servable.name,
                            servable.base_path.display()
                        );
                    }
                    self.state().errors.remove(&servable.name);
                    self.shared.sink.set_aspired_versions(&servable.name, versions);
                }
            }
        }
    }

    /// Polls at the configured interval until the source is dropped by every
    /// other owner. With `Once` or `Never` it returns at once (the poll of
    /// `Once` happens in `update_config`).
    pub async fn run(self) {
        let PollInterval::Every(period) = self.state().config.poll else {
            return;
        };
        let weak = Arc::downgrade(&self.shared);
        drop(self);
        loop {
            tokio::time::sleep(period).await;
            let Some(shared) = weak.upgrade() else { return };
            FileSystemSource { shared }.poll_once().await;
        }
    }
}

#[cfg(test)]
mod tests;
