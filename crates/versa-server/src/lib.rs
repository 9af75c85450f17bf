//! versa-server: a drop-in `tensorflow_model_server` for ONNX models.
//!
//! Start-up follows linkerd2-proxy's habit: every flag and config file is read
//! and validated before any port is bound; a bad one ends the process with a
//! one-line reason.

pub mod batching;
pub mod config;
pub mod core;
pub mod error;
pub mod flags;
pub mod grpc;
pub mod metrics;
pub mod rest;
pub mod serving;

use crate::config::{read_message, read_model_server_config, single_model_config};
use crate::core::{CoreOptions, ServerCore};
use crate::flags::Flags;
use crate::metrics::{Metrics, MetricsLoader};
use crate::serving::Serving;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use versa_core::{Code, PollInterval};
use versa_onnx::{InferencePool, ModelOptions, OnnxLoader};
use versa_proto::serving::{
    ModelServerConfig, MonitoringConfig, model_server_config,
    model_service_server::ModelServiceServer, prediction_service_server::PredictionServiceServer,
};

/// Request header / gRPC metadata that makes a traffic split's choice sticky.
pub const ROUTE_KEY_HEADER: &str = "x-versa-route-key";
/// Response header / gRPC metadata: the version that answered.
pub const VERSION_HEADER: &str = "x-versa-model-version";
/// Response header / gRPC metadata: the label that led to that version.
pub const LABEL_HEADER: &str = "x-versa-model-label";

/// Everything read from flags and files before serving.
#[derive(Debug)]
pub struct Startup {
    pub flags: Flags,
    pub config: ModelServerConfig,
    pub monitoring_path: Option<String>,
    /// Bearer token ModelService calls must carry (`--model_service_token_file`).
    pub model_service_token: Option<String>,
    /// `--enable_batching` with `--batching_parameters_file` (or defaults).
    pub batching: Option<batching::BatchOptions>,
}

/// Reads and validates flags and files. No port is bound yet.
pub fn prepare(flags: Flags) -> anyhow::Result<Startup> {
    for warning in flags.validate()? {
        tracing::warn!("{warning}");
    }
    let config = if flags.model_config_file.is_empty() {
        single_model_config(&flags.model_name, &flags.model_base_path)
    } else {
        read_model_server_config(&PathBuf::from(&flags.model_config_file))?
    };
    // Validate now (a dry run against an empty server) so that a bad config
    // fails before any port is bound.
    if let config::ConfigRequest::List(list) = config::config_request(&config)? {
        config::validate(
            list,
            &config::ServingConfig::default(),
            flags.transition().map_err(anyhow::Error::msg)?,
        )?;
    }
    let monitoring_path = if flags.monitoring_config_file.is_empty() {
        None
    } else {
        let monitoring: MonitoringConfig = read_message(
            "tensorflow.serving.MonitoringConfig",
            &PathBuf::from(&flags.monitoring_config_file),
        )?;
        monitoring.prometheus_config.filter(|p| p.enable).map(|p| {
            if p.path.is_empty() { "/monitoring/prometheus/metrics".to_owned() } else { p.path }
        })
    };
    let model_service_token = if flags.model_service_token_file.is_empty() {
        None
    } else {
        let path = PathBuf::from(&flags.model_service_token_file);
        let token = std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read --model_service_token_file {}", path.display())
        })?;
        let token = token.trim().to_owned();
        anyhow::ensure!(
            !token.is_empty(),
            "--model_service_token_file {} is empty",
            path.display()
        );
        Some(token)
    };
    let batching = if !flags.enable_batching {
        None
    } else if flags.batching_parameters_file.is_empty() {
        Some(batching::BatchOptions::default())
    } else {
        let path = PathBuf::from(&flags.batching_parameters_file);
        let parameters: versa_proto::serving::BatchingParameters =
            read_message("tensorflow.serving.BatchingParameters", &path)?;
        let options = batching::BatchOptions::from_parameters(&parameters)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Some(options)
    };
    Ok(Startup { flags, config, monitoring_path, model_service_token, batching })
}

/// The same config with every label (and so every traffic split) removed:
/// they are applied once their versions are loaded.
fn without_labels(config: &ModelServerConfig) -> ModelServerConfig {
    let mut stripped = config.clone();
    if let Some(model_server_config::Config::ModelConfigList(list)) = &mut stripped.config {
        for model in &mut list.config {
            model.version_labels.clear();
            model.traffic_split.clear();
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
    let deadline = Instant::now() + Duration::from_secs(flags.initial_load_timeout_seconds);
    let initial = core.reload(&without_labels(&startup.config), Some(deadline)).await;
    match initial {
        Ok(()) => {}
        Err(e) if e.code == Code::DeadlineExceeded => {
            tracing::warn!("serving before every model is loaded: {}", e.message);
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
    if let Err(e) = core.reload(&startup.config, Some(deadline)).await {
        tracing::warn!("version labels not applied yet: {}", e.message);
    }
    core.manager().set_load_threads(steady_load_threads);
    Ok(core)
}

/// Re-reads the config file every `period` and reloads on change (or after
/// a failed reload). Errors are logged; the running config stays.
fn poll_config_file(
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
                Ok(()) => failed = false,
                Err(e) => {
                    failed = true;
                    tracing::error!("PollFilesystemAndReloadConfig failed to ReloadConfig: {e}");
                }
            }
            last = config;
        }
    });
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Binds one of the server's ports, saying which on failure.
async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot bind {what} {addr}"))
}

/// ModelService (status, reloads) behind the bearer-token guard.
fn model_service(
    serving: &Serving,
    token: Option<String>,
) -> tonic::service::interceptor::InterceptedService<ModelServiceServer<Serving>, grpc::BearerToken>
{
    tonic::service::interceptor::InterceptedService::new(
        ModelServiceServer::new(serving.clone())
            .max_decoding_message_size(i32::MAX as usize)
            .max_encoding_message_size(i32::MAX as usize),
        grpc::BearerToken::new(token),
    )
}

/// Serves until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    startup: Startup,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let core = start_core(&startup, Arc::clone(&metrics)).await?;
    let flags = &startup.flags;
    if !flags.model_config_file.is_empty() && flags.model_config_file_poll_wait_seconds > 0 {
        poll_config_file(
            Arc::clone(&core),
            PathBuf::from(&flags.model_config_file),
            Duration::from_secs(flags.model_config_file_poll_wait_seconds),
            startup.config.clone(),
        );
    }
    let serving = Serving {
        core,
        pool: InferencePool::new(flags.num_inference_threads)
            .with_inline_limit(Duration::from_micros(flags.inline_inference_max_micros)),
        metrics,
        tensor_content_outputs: flags.enable_serialization_as_tensor_content,
        batcher: startup.batching.clone().map(|options| {
            batching::Batcher::new(options)
                .with_inline_limit(Duration::from_micros(flags.inline_inference_max_micros))
                .with_min_speedup(flags.batching_min_speedup)
        }),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    if flags.port != 0 {
        let addr = SocketAddr::new(flags.bind_address, flags.port);
        let listener = bind(addr, "gRPC port").await?;
        tracing::info!("Running gRPC ModelServer at {}", listener.local_addr()?);
        let (reporter, health) = tonic_health::server::health_reporter();
        for service in [
            "",
            "tensorflow.serving.ModelService",
            "tensorflow.serving.PredictionService",
            "ModelService",
            "PredictionService",
        ] {
            reporter.set_service_status(service, tonic_health::ServingStatus::Serving).await;
        }
        let router = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(flags.grpc_max_threads.max(1))
            .add_service(health.clone())
            .add_service(
                PredictionServiceServer::new(serving.clone())
                    .max_decoding_message_size(i32::MAX as usize)
                    .max_encoding_message_size(i32::MAX as usize),
            )
            .add_optional_service(
                (flags.model_service_port == 0)
                    .then(|| model_service(&serving, startup.model_service_token.clone())),
            );
        if flags.model_service_port != 0 {
            let addr = SocketAddr::new(flags.bind_address, flags.model_service_port);
            let listener = bind(addr, "ModelService port").await?;
            tracing::info!("Running gRPC ModelService at {}", listener.local_addr()?);
            let admin = tonic::transport::Server::builder()
                .add_service(health)
                .add_service(model_service(&serving, startup.model_service_token.clone()));
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let stop = stopped();
            tasks.spawn(async move {
                admin
                    .serve_with_incoming_shutdown(incoming, stop)
                    .await
                    .context("gRPC ModelService server")
            });
        }
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let stop = stopped();
        tasks.spawn(async move {
            router.serve_with_incoming_shutdown(incoming, stop).await.context("gRPC server")
        });
    }
    if flags.rest_api_port != 0 {
        let addr = SocketAddr::new(flags.bind_address, flags.rest_api_port);
        let listener = bind(addr, "REST port").await?;
        tracing::info!("Exporting HTTP/REST API at:{}", listener.local_addr()?);
        let app = rest::router(
            serving.clone(),
            rest::RestOptions {
                timeout: Duration::from_millis(flags.rest_api_timeout_in_ms),
                cors: flags.rest_api_enable_cors_support,
                monitoring_path: startup.monitoring_path.clone(),
                max_body_bytes: flags.rest_api_max_body_bytes,
            },
        );
        let stop = stopped();
        tasks.spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(stop).await.context("REST server")
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("server task")??;
    }
    tracing::info!("stopped");
    Ok(())
}
