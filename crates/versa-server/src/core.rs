//! The server core: the version manager, the filesystem source and the
//! config in force, and the reload that moves from one config to the next.

use crate::config::{ConfigRequest, ServingConfig, config_request, validate};
use crate::error::ServingError;
use crate::metrics::MetricsLoader;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use versa_core::{
    AspiredVersionsManager, Code, FileSystemSource, ManagerOptions, PollInterval,
    ServableStateMonitor, ServableToMonitor, ServingMap, TransitionPolicy,
};
use versa_onnx::OnnxModel;
use versa_proto::serving::ModelServerConfig;

/// What a reload that was applied left in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The config is in force and every model it added has settled.
    Applied,
    /// The config is in force; these added models were still loading when
    /// the reload had to answer (loading goes on).
    Loading(Vec<String>),
}

/// What a reload committed: the models it added and when (`None`: an
/// empty config, nothing to do).
type Committed = Option<(Vec<String>, std::time::SystemTime)>;

/// When to answer a caller whose deadline is `deadline`: a tenth of the
/// time left earlier (between 20 ms and 1 s), so the answer arrives in time.
fn answer_by(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    let margin = (left / 10).clamp(Duration::from_millis(20), Duration::from_secs(1));
    deadline.checked_sub(margin).unwrap_or(deadline)
}

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
    /// The highest operator leader epoch a reload carried: reloads from an
    /// older leader (one replaced while it was frozen or cut off, whose
    /// writes were still in flight) are refused.
    leader_epoch: std::sync::atomic::AtomicU64,
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
            leader_epoch: std::sync::atomic::AtomicU64::new(0),
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
    /// error), then applied whole, in a task of its own that a caller who
    /// goes away cannot interrupt; then waits — at most until shortly before
    /// `deadline` (so the answer reaches the caller in time), and never
    /// longer than the reload timeout — for newly added models to settle.
    ///
    /// `Ok` means the config is in force: [`ReloadOutcome::Applied`] with
    /// every new model settled, or [`ReloadOutcome::Loading`] with some still
    /// loading. An error means nothing was applied, except the load
    /// failures of new models (TensorFlow Serving's UNKNOWN error), which
    /// are reported once the config is in force, as upstream.
    pub async fn reload(
        self: &Arc<Self>,
        request: &ModelServerConfig,
        deadline: Option<Instant>,
    ) -> Result<ReloadOutcome, ServingError> {
        self.reload_fenced(request, deadline, None).await
    }

    /// [`ServerCore::reload`] from an operator leader of epoch `epoch`:
    /// refused (FAILED_PRECONDITION, nothing applied) when a reload of a
    /// higher epoch came first. Checked under the reload lock, so reloads
    /// are fenced in the order they are applied.
    pub async fn reload_fenced(
        self: &Arc<Self>,
        request: &ModelServerConfig,
        deadline: Option<Instant>,
        epoch: Option<u64>,
    ) -> Result<ReloadOutcome, ServingError> {
        // One cut-off for the whole reload: the commit must happen before
        // it, and the answer is sent by then.
        let cutoff = deadline.map(answer_by);
        let core = Arc::clone(self);
        let owned = request.clone();
        let (reply, committed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { core.commit(&owned, cutoff, epoch, reply).await });
        let committed = committed.await.map_err(|_| {
            ServingError::new(Code::Internal, "the reload ended without an answer")
        })??;
        let Some((added, applied_at)) = committed else {
            return Ok(ReloadOutcome::Applied);
        };
        if added.is_empty() {
            return Ok(ReloadOutcome::Applied);
        }
        let bound = crate::deadline::after(self.options.reload_timeout);
        let wait_until = cutoff.map_or(bound, |c| c.min(bound));
        match self.wait_for_models(&added, applied_at, wait_until).await {
            Ok(()) => Ok(ReloadOutcome::Applied),
            Err(e) if e.code == Code::DeadlineExceeded => Ok(ReloadOutcome::Loading(added)),
            Err(e) => Err(e),
        }
    }

    /// One reload at a time: validates, commits labels, splits and the
    /// config (the commit point: `reply` is sent right after it, or with
    /// the reason nothing was committed), then has the source follow the
    /// new config before the next reload may start. A caller whose cut-off
    /// comes before the commit point gets an error and nothing is applied.
    async fn commit(
        &self,
        request: &ModelServerConfig,
        cutoff: Option<Instant>,
        epoch: Option<u64>,
        reply: tokio::sync::oneshot::Sender<Result<Committed, ServingError>>,
    ) {
        let lock = self.reload_lock.lock();
        let _one_reload_at_a_time = match cutoff {
            Some(c) => match tokio::time::timeout_at(c, lock).await {
                Ok(guard) => guard,
                Err(_) => {
                    let _ = reply.send(Err(ServingError::new(
                        Code::DeadlineExceeded,
                        "another reload was still in progress at the deadline: nothing was applied",
                    )));
                    return;
                }
            },
            None => lock.await,
        };
        if let Some(epoch) = epoch {
            use std::sync::atomic::Ordering;
            let highest = self.leader_epoch.load(Ordering::Acquire);
            if epoch < highest {
                let _ = reply.send(Err(ServingError::new(
                    Code::FailedPrecondition,
                    format!(
                        "reload from a replaced operator leader (epoch {epoch}; a leader of epoch {highest} has reloaded this server): nothing was applied"
                    ),
                )));
                return;
            }
            self.leader_epoch.store(epoch, Ordering::Release);
        }
        let servables = match self.apply(request, cutoff) {
            Ok(Some((servables, committed))) => {
                let _ = reply.send(Ok(Some(committed)));
                servables
            }
            Ok(None) => {
                let _ = reply.send(Ok(None));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        self.source.update_config(servables).await;
        tracing::info!(models = ?self.config().names(), "config applied");
    }

    /// Validates `request` and, unless the caller's cut-off has come, swaps
    /// in its routing and config — all or nothing, with no await in
    /// between. Returns what the source must then monitor.
    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        request: &ModelServerConfig,
        cutoff: Option<Instant>,
    ) -> Result<Option<(Vec<ServableToMonitor>, (Vec<String>, std::time::SystemTime))>, ServingError>
    {
        let list = match config_request(request)? {
            ConfigRequest::Empty => {
                tracing::info!("Taking no action for empty config.");
                return Ok(None);
            }
            ConfigRequest::List(list) => list,
        };
        let previous = self.config();
        let next = validate(list, &previous, self.options.default_transition)?;
        if cutoff.is_some_and(|c| Instant::now() >= c) {
            return Err(ServingError::new(
                Code::DeadlineExceeded,
                "the deadline came before the new config could be applied: nothing was applied",
            ));
        }
        let monitor = self.monitor().clone();
        let is_available = move |model: &str, version: i64| {
            monitor
                .version_state(&versa_core::ServableId::new(model, version))
                .is_some_and(|e| e.state.state == versa_core::ManagerState::Available)
        };
        // The one step that can still refuse comes first: labels and splits
        // are checked and swapped in together, or not at all. Nothing below
        // can fail.
        self.serving_map()
            .update_routing(next.routing(), &is_available)
            .map_err(|e| ServingError::new(e.code(), e.to_string()))?;
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
        let added: Vec<String> = next.names().difference(&previous.names()).cloned().collect();
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(Some((servables, (added, applied_at))))
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
