//! The server core: the version manager, the filesystem source and the
//! config in force, and the reload that moves from one config to the next.

use crate::config::{ConfigRequest, ServingConfig, config_request, validate};
use crate::error::ServingError;
use crate::metrics::MetricsLoader;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use versa_core::labels::check_label_update;
use versa_core::{
    AspiredVersionsManager, Code, FileSystemSource, ManagerOptions, PollInterval,
    ServableStateMonitor, ServableToMonitor, ServingMap, TransitionPolicy,
};
use versa_onnx::OnnxModel;
use versa_proto::serving::ModelServerConfig;

/// How the core runs.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    pub manager: ManagerOptions,
    pub poll: PollInterval,
    pub servable_versions_always_present: bool,
    pub default_transition: TransitionPolicy,
    /// Upper bound of a reload's wait for newly added models.
    pub reload_timeout: Duration,
}

pub type Manager = AspiredVersionsManager<MetricsLoader>;

/// Versions, config and reloads. Shared by every API.
pub struct ServerCore {
    manager: Manager,
    source: FileSystemSource,
    config: RwLock<Arc<ServingConfig>>,
    /// Serialises reloads (gRPC calls and config-file polls).
    reload_lock: tokio::sync::Mutex<()>,
    options: CoreOptions,
}

impl std::fmt::Debug for ServerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCore").field("config", &self.config()).finish()
    }
}

impl ServerCore {
    /// A core serving no model yet. Must be created inside a Tokio runtime.
    pub fn new(loader: MetricsLoader, options: CoreOptions) -> Arc<Self> {
        let manager = AspiredVersionsManager::new(
            loader,
            options.manager.clone(),
            ServableStateMonitor::new(),
        );
        let source = FileSystemSource::new(
            Arc::new(manager.clone()),
            options.poll,
            options.servable_versions_always_present,
        );
        tokio::spawn(source.clone().run());
        Arc::new(Self {
            manager,
            source,
            config: RwLock::new(Arc::new(ServingConfig::default())),
            reload_lock: tokio::sync::Mutex::new(()),
            options,
        })
    }

    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    pub fn serving_map(&self) -> &ServingMap<OnnxModel> {
        self.manager.serving_map()
    }

    pub fn monitor(&self) -> &ServableStateMonitor {
        self.manager.monitor()
    }

    pub fn source(&self) -> &FileSystemSource {
        &self.source
    }

    /// The config in force.
    pub fn config(&self) -> Arc<ServingConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Ready when every configured model has an AVAILABLE version.
    pub fn is_ready(&self) -> bool {
        let available = self.serving_map().available();
        self.config().models.iter().all(|m| available.contains_key(&m.name))
    }

    /// Models of the config in force that have no AVAILABLE version.
    pub fn unavailable_models(&self) -> Vec<String> {
        let available = self.serving_map().available();
        self.config()
            .models
            .iter()
            .filter(|m| !available.contains_key(&m.name))
            .map(|m| m.name.clone())
            .collect()
    }

    /// Replaces the config: validated whole first (nothing changes on any
    /// error), then applied, then waits — at most until `deadline`, and never
    /// longer than the reload timeout — for newly added models to settle.
    pub async fn reload(
        &self,
        request: &ModelServerConfig,
        deadline: Option<Instant>,
    ) -> Result<(), ServingError> {
        let _one_reload_at_a_time = self.reload_lock.lock().await;
        let list = match config_request(request)? {
            ConfigRequest::Empty => {
                tracing::info!("Taking no action for empty config.");
                return Ok(());
            }
            ConfigRequest::List(list) => list,
        };
        let previous = self.config();
        let next = validate(list, &previous, self.options.default_transition)?;
        let monitor = self.monitor().clone();
        let is_available = move |model: &str, version: i64| {
            monitor
                .version_state(&versa_core::ServableId::new(model, version))
                .is_some_and(|e| e.state.state == versa_core::ManagerState::Available)
        };
        let current_labels = self.serving_map().labels();
        check_label_update(
            Some(&current_labels),
            &next.labels(),
            self.serving_map().label_rules(),
            &is_available,
        )
        .map_err(|e| ServingError::new(e.code(), e.to_string()))?;

        // Valid: apply.
        for model in &next.models {
            self.manager.set_transition_policy(&model.name, model.transition);
        }
        let servables = next
            .models
            .iter()
            .map(|m| ServableToMonitor {
                name: m.name.clone(),
                base_path: m.base_path.clone(),
                policy: m.policy.clone(),
            })
            .collect();
        let applied_at = std::time::SystemTime::now();
        self.source.update_config(servables).await;
        self.serving_map()
            .update_routing(next.routing(), &is_available)
            .map_err(|e| ServingError::new(e.code(), e.to_string()))?;
        let added: Vec<String> = next.names().difference(&previous.names()).cloned().collect();
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        tracing::info!(models = ?self.config().names(), "config applied");

        if added.is_empty() {
            return Ok(());
        }
        let bound = crate::deadline::after(self.options.reload_timeout);
        let deadline = deadline.map_or(bound, |d| d.min(bound));
        self.wait_for_models(&added, applied_at, deadline).await
    }

    /// Waits until each model has an AVAILABLE version or has only failed
    /// ones; the failed ones are reported as TensorFlow Serving reports them.
    pub async fn wait_for_models(
        &self,
        models: &[String],
        since: std::time::SystemTime,
        deadline: Instant,
    ) -> Result<(), ServingError> {
        let settled = self.monitor().wait_until_models_settled(models, since, deadline).await.map_err(|_| {
            ServingError::new(
                Code::DeadlineExceeded,
                format!(
                    "timed out waiting for model(s) {} to become available; the new config is in force and loading continues",
                    models.join(", ")
                ),
            )
        })?;
        let mut failures = Vec::new();
        for (model, available) in settled {
            if !available.is_empty() {
                continue;
            }
            for (version, event) in self.monitor().model_states(&model).unwrap_or_default() {
                if let Err(e) = &event.state.health {
                    failures.push(format!(
                        "{{name: {model} version: {version}}} due to error: {}",
                        e.message
                    ));
                }
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        Err(ServingError::new(
            Code::Unknown,
            format!(
                "{} model(s) did not become available: {{{}, }}",
                failures.len(),
                failures.join(", ")
            ),
        ))
    }
}
