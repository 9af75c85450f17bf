//! versa-server: a drop-in `tensorflow_model_server` for ONNX models.
//!
//! Start-up follows linkerd2-proxy's habit: every flag and config file is read
//! and validated before any port is bound; a bad one ends the process with a
//! one-line reason.

pub mod admission;
pub mod batching;
pub mod config;
pub mod core;
pub mod deadline;
pub mod error;
pub mod flags;
pub mod grpc;
mod held_body;
pub mod listener;
pub mod metrics;
pub mod mirror;
mod panics;
mod ports;
mod recorded;
pub mod rest;
pub mod serving;
mod startup;
pub mod telemetry;
pub mod token;

pub use ports::serve;
pub use startup::start_core;

use crate::config::{read_message, read_model_server_config, single_model_config};
use crate::flags::Flags;
use crate::grpc::channel_args::{self, GrpcSettings};
use std::path::PathBuf;
use versa_proto::serving::{ModelServerConfig, MonitoringConfig};

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
    /// Bearer token ModelService calls must carry (`--model_service_token_file`),
    /// as read at start-up (the file is watched for changes while serving).
    pub model_service_token: Option<String>,
    /// The gRPC server's settings (`--grpc_channel_arguments` over our defaults).
    pub grpc: GrpcSettings,
    /// `--enable_batching` with `--batching_parameters_file` (or defaults).
    pub batching: Option<batching::BatchOptions>,
}

/// Reads and validates flags and files. No port is bound yet.
pub fn prepare(flags: Flags) -> anyhow::Result<Startup> {
    for warning in flags.validate()? {
        tracing::warn!("{warning}");
    }
    let config = if flags.model_config_file.is_empty() {
        single_model_config(flags.single_model_name(), &flags.model_base_path)
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
        Some(token::read_token(std::path::Path::new(&flags.model_service_token_file))?)
    };
    let (grpc, grpc_warnings) = channel_args::parse(
        &flags.grpc_channel_arguments,
        GrpcSettings::defaults(flags.limits.max_request_tensor_bytes, flags.grpc_max_threads),
    )
    .map_err(anyhow::Error::msg)?;
    for warning in grpc_warnings {
        tracing::warn!("{warning}");
    }
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
    Ok(Startup { flags, config, monitoring_path, model_service_token, grpc, batching })
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
