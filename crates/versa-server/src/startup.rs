//! From a validated start-up to a serving core: the initial load, labels
//! once their versions are in, and the config file's poll.

use crate::Startup;
use crate::config::read_model_server_config;
use crate::core::{CoreOptions, ReloadOutcome, ServerCore};
use crate::deadline;
use crate::metrics::{Metrics, MetricsLoader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use versa_core::PollInterval;
use versa_onnx::{ModelOptions, OnnxLoader};
use versa_proto::serving::{ModelServerConfig, model_server_config};

/// The same config with every label (and so every traffic split and
/// mirror) removed: they are applied once their versions are loaded.
fn without_labels(config: &ModelServerConfig) -> ModelServerConfig {
    let mut stripped = config.clone();
    if let Some(model_server_config::Config::ModelConfigList(list)) = &mut stripped.config {
        for model in &mut list.config {
            model.version_labels.clear();
            model.traffic_split.clear();
            model.mirror = None;
        }
    }
    stripped
}

/// Builds the core and loads the initial config. Labels are applied after
/// every initial version has loaded (upstream applies them first and fails
/// on its own start-up, issue #1608). Models still loading when the start-up timeout
/// passes keep loading while the server serves; a model whose versions all
/// fail ends start-up with an error, as upstream.
pub async fn start_core(
    startup: &Startup,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<ServerCore>> {
    let flags = &startup.flags;
    let loader = MetricsLoader {
        inner: OnnxLoader {
            model: ModelOptions {
                plan_cache_size: flags.plan_cache_size,
                // Batching chosen per model: time a batch at load.
                batching_probe: match &startup.batching {
                    Some(b) if flags.batching_min_speedup > 0.0 => b.max_batch_size.min(8),
                    _ => 0,
                },
                build_interval: Duration::from_millis(flags.plan_build_interval_ms),
                build_niceness: flags.load_thread_niceness,
                warm_up_runs: usize::try_from(flags.num_request_iterations_for_warmup)
                    .unwrap_or(usize::MAX)
                    .max(1),
            },
            warm_up: flags.enable_model_warmup,
            // The policy that trades availability for memory gets loads
            // that peak lower too.
            low_peak_loads: flags.transition_policy == "resource_preserving",
        },
        metrics: Arc::clone(&metrics),
    };
    let mut manager = flags.manager_options();
    // Upstream loads the initial models with 4 threads per core.
    let steady_load_threads = manager.num_load_threads;
    manager.num_load_threads =
        4 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let core = ServerCore::new(
        loader,
        CoreOptions {
            manager,
            poll: PollInterval::from_seconds(flags.file_system_poll_wait_seconds),
            servable_versions_always_present: flags.servable_versions_always_present,
            default_transition: flags.transition().map_err(anyhow::Error::msg)?,
            reload_timeout: Duration::from_secs(flags.reload_timeout_seconds),
        },
    );
    metrics.follow_states(core.monitor());
    let deadline = deadline::after(Duration::from_secs(flags.initial_load_timeout_seconds));
    let initial = core.reload(&without_labels(&startup.config), Some(deadline)).await;
    match initial {
        Ok(ReloadOutcome::Applied) => {}
        Ok(ReloadOutcome::Loading(models)) => {
            tracing::warn!(
                "serving before every model is loaded: {} still loading",
                models.join(", ")
            );
        }
        Err(e) => anyhow::bail!("Failed to start server. Error: {}", e.message),
    }
    // Ports open once every initially aspired version has settled (upstream
    // opens them as soon as each model has one), so the first requests see
    // the whole initial config, labels included.
    let settled = core
        .manager()
        .wait_for_managed(deadline, |managed| {
            managed.values().flatten().all(|v| {
                !v.aspired
                    || matches!(
                        v.state,
                        versa_core::ManagerState::Available | versa_core::ManagerState::End
                    )
            })
        })
        .await;
    if settled.is_err() {
        tracing::warn!("some versions are still loading at the start-up deadline");
    }
    // No deadline: the labels must be applied even after a slow start (the
    // config file's poll would not apply them again, the config being the same).
    if let Err(e) = core.reload(&startup.config, None).await {
        tracing::warn!("version labels not applied yet: {}", e.message);
    }
    core.manager().set_load_threads(steady_load_threads);
    Ok(core)
}

/// Re-reads the config file every `period` and reloads on change (or after
/// a failed reload). Errors are logged; the running config stays.
pub(crate) fn poll_config_file(
    core: Arc<ServerCore>,
    path: PathBuf,
    period: Duration,
    mut last: ModelServerConfig,
) {
    tokio::spawn(async move {
        let mut failed = false;
        loop {
            tokio::time::sleep(period).await;
            let config = match read_model_server_config(&path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("Failed to read ModelServerConfig file: {e}");
                    continue;
                }
            };
            if config == last && !failed {
                continue;
            }
            match core.reload(&config, None).await {
                Ok(_) => failed = false,
                Err(e) => {
                    failed = true;
                    tracing::error!("PollFilesystemAndReloadConfig failed to ReloadConfig: {e}");
                }
            }
            last = config;
        }
    });
}
