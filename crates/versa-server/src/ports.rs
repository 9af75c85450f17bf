//! Serving: the request-handling state built from the start-up, and the
//! ports — gRPC (PredictionService, and ModelService with Versa's Telemetry
//! unless they have a port of their own), ModelService + Telemetry alone,
//! REST — each on a listener with a bound on
//! open connections, until the shutdown signal; requests in flight finish.

use crate::Startup;
use crate::admission::{Admission, AdmissionLimits};
use crate::grpc::guard::GuardLayer;
use crate::listener::{ConnectionTimeouts, LimitedListener};
use crate::metrics::Metrics;
use crate::serving::{RequestLimits, Serving};
use crate::telemetry::TelemetryService;
use crate::token::BearerToken;
use crate::{batching, grpc, rest};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use versa_onnx::InferencePool;
use versa_proto::serving::model_service_server::ModelServiceServer;
use versa_proto::serving::prediction_service_server::PredictionServiceServer;
use versa_proto::versa::v1::telemetry_server::TelemetryServer;

/// How often the token file is read again for a rotated token.
const TOKEN_POLL: Duration = Duration::from_secs(1);

/// Binds one of the server's ports, saying which on failure. A port that
/// serves ModelService never drops a connection as idle while a reload may
/// still be waiting for its models (`--reload_timeout_seconds`).
async fn bind(
    addr: SocketAddr,
    what: &'static str,
    startup: &Startup,
    metrics: &Metrics,
) -> anyhow::Result<LimitedListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {what} {addr}"))?;
    let refused = metrics.refused_connections.with_label_values(&[what]);
    let limits = &startup.flags.limits;
    let serves_model_service = what == "ModelService port"
        || (what == "gRPC port" && startup.flags.model_service_port == 0);
    let idle = match limits.connection_idle_timeout_seconds {
        0 => None,
        s if serves_model_service => Some(Duration::from_secs(
            s.max(startup.flags.reload_timeout_seconds.saturating_add(60)),
        )),
        s => Some(Duration::from_secs(s)),
    };
    let timeouts = ConnectionTimeouts { first_byte: read_timeout(startup), idle };
    Ok(LimitedListener::new(listener, limits.max_connections, refused, what)
        .with_timeouts(timeouts))
}

/// ModelService (status, reloads) behind the bearer-token guard.
fn model_service(
    serving: &Serving,
    token: BearerToken,
    settings: &grpc::channel_args::GrpcSettings,
) -> InterceptedService<ModelServiceServer<Serving>, BearerToken> {
    InterceptedService::new(
        ModelServiceServer::new(serving.clone())
            .max_decoding_message_size(settings.max_receive_message_length)
            .max_encoding_message_size(settings.max_send_message_length),
        token,
    )
}

/// Versa's Telemetry (per-version counters for the operator), beside
/// ModelService and behind the same guard.
fn telemetry_service(
    serving: &Serving,
    token: BearerToken,
    settings: &grpc::channel_args::GrpcSettings,
) -> InterceptedService<TelemetryServer<TelemetryService>, BearerToken> {
    InterceptedService::new(
        TelemetryServer::new(TelemetryService::new(Arc::clone(&serving.metrics)))
            .max_decoding_message_size(settings.max_receive_message_length)
            .max_encoding_message_size(settings.max_send_message_length),
        token,
    )
}

/// A gRPC server builder with the settings of `--grpc_channel_arguments`.
fn grpc_builder(
    startup: &Startup,
    serving: &Serving,
) -> tonic::transport::Server<tower_layer::Stack<GuardLayer, tower_layer::Identity>> {
    let s = &startup.grpc;
    let read_timeout = read_timeout(startup);
    let mut builder = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(startup.flags.grpc_max_threads.max(1))
        .max_concurrent_streams(s.max_concurrent_streams)
        .http2_keepalive_interval(s.keepalive_time)
        .http2_keepalive_timeout(s.keepalive_timeout)
        .http2_max_header_list_size(s.max_metadata_size)
        // hyper's guard against floods of streams reset by errors, which
        // tonic turns off unless set.
        .http2_max_local_error_reset_streams(Some(1024));
    if let Some(age) = s.max_connection_age {
        builder = builder.max_connection_age(age);
    }
    if let Some(grace) = s.max_connection_age_grace {
        builder = builder.max_connection_age_grace(grace);
    }
    builder.layer(GuardLayer::new(
        serving.admission.clone(),
        Arc::clone(&serving.metrics),
        read_timeout,
    ))
}

fn read_timeout(startup: &Startup) -> Option<Duration> {
    match startup.flags.limits.request_read_timeout_seconds {
        0 => None,
        s => Some(Duration::from_secs(s)),
    }
}

/// The request-handling state every API shares.
fn serving(
    startup: &Startup,
    core: Arc<crate::core::ServerCore>,
    metrics: Arc<Metrics>,
) -> Serving {
    let flags = &startup.flags;
    let limits = &flags.limits;
    let inline = Duration::from_micros(flags.inline_inference_max_micros);
    let admission = Admission::new(
        AdmissionLimits {
            max_requests: limits.max_concurrent_requests,
            max_bytes: limits.max_inflight_request_bytes,
        },
        &metrics,
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Serving {
        core,
        pool: InferencePool::new(flags.num_inference_threads)
            .with_inline_limit(inline)
            .with_queue_limit(limits.max_queued_inferences, "--max_queued_inferences"),
        mirror: Arc::new(crate::mirror::Mirror::new(
            flags.mirror.mirror_threads,
            flags.mirror.max_mirror_in_flight as usize,
            usize::try_from(flags.mirror.max_mirror_bytes).unwrap_or(usize::MAX),
            metrics.mirror.clone(),
        )),
        metrics: Arc::clone(&metrics),
        admission,
        limits: RequestLimits { max_request_tensor_bytes: limits.max_request_tensor_bytes },
        decode_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
        tensor_content_outputs: flags.enable_serialization_as_tensor_content,
        min_client_deadline: Duration::from_millis(flags.telemetry_min_client_deadline_ms),
        batcher: startup.batching.clone().map(|options| {
            batching::Batcher::new(options, Arc::clone(&metrics))
                .with_inline_limit(inline)
                .with_min_speedup(flags.batching_min_speedup)
        }),
    }
}

/// The ModelService guard: the token file watched for rotation, or open
/// (with a warning when that is reachable from beyond this machine); every
/// refused call is counted.
fn model_service_guard(startup: &Startup, metrics: &Metrics) -> BearerToken {
    let flags = &startup.flags;
    let guard = match &startup.model_service_token {
        Some(token) => BearerToken::watching(
            PathBuf::from(&flags.model_service_token_file),
            token.clone(),
            TOKEN_POLL,
        ),
        None => {
            if !flags.bind_address.is_loopback() {
                tracing::warn!(
                    "ModelService (status and reloads) is open to anyone who can reach {}: set --model_service_token_file",
                    flags.bind_address
                );
            }
            BearerToken::new(None)
        }
    };
    guard.counting(metrics.unauthenticated.clone())
}

/// Serves until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    startup: Startup,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let flags = &startup.flags;
    // Decoding may peak at three times what a field holds (buffers double
    // as they grow): four times the tensor budget lets every request the
    // budget admits through, and nothing much larger.
    let decode_limit = flags.limits.max_request_tensor_bytes.saturating_mul(4);
    versa_proto::codec::set_decode_limit(decode_limit, "4 × --max_request_tensor_bytes");
    let metrics = Arc::new(Metrics::new());
    let core = crate::start_core(&startup, Arc::clone(&metrics)).await?;
    if !flags.model_config_file.is_empty() && flags.model_config_file_poll_wait_seconds > 0 {
        crate::startup::poll_config_file(
            Arc::clone(&core),
            PathBuf::from(&flags.model_config_file),
            Duration::from_secs(flags.model_config_file_poll_wait_seconds),
            startup.config.clone(),
        );
    }
    let serving = serving(&startup, core, Arc::clone(&metrics));
    let guard = model_service_guard(&startup, &metrics);
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
    let settings = &startup.grpc;
    let mut tasks = tokio::task::JoinSet::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in [
        "",
        "tensorflow.serving.ModelService",
        "tensorflow.serving.PredictionService",
        "versa.v1.Telemetry",
        "ModelService",
        "PredictionService",
    ] {
        reporter.set_service_status(service, tonic_health::ServingStatus::Serving).await;
    }
    if flags.port != 0 {
        let addr = SocketAddr::new(flags.bind_address, flags.port);
        let listener = bind(addr, "gRPC port", &startup, &metrics).await?;
        tracing::info!("Running gRPC ModelServer at {}", listener.local_addr()?);
        let router = grpc_builder(&startup, &serving)
            .add_service(health.clone())
            .add_service(
                PredictionServiceServer::new(serving.clone())
                    .max_decoding_message_size(settings.max_receive_message_length)
                    .max_encoding_message_size(settings.max_send_message_length),
            )
            .add_optional_service(
                (flags.model_service_port == 0)
                    .then(|| model_service(&serving, guard.clone(), settings)),
            )
            .add_optional_service(
                (flags.model_service_port == 0)
                    .then(|| telemetry_service(&serving, guard.clone(), settings)),
            );
        let stop = stopped();
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(listener.into_stream(), stop)
                .await
                .context("gRPC server")
        });
    }
    if flags.model_service_port != 0 {
        let addr = SocketAddr::new(flags.bind_address, flags.model_service_port);
        let listener = bind(addr, "ModelService port", &startup, &metrics).await?;
        tracing::info!("Running gRPC ModelService at {}", listener.local_addr()?);
        let admin = grpc_builder(&startup, &serving)
            .add_service(health)
            .add_service(model_service(&serving, guard.clone(), settings))
            .add_service(telemetry_service(&serving, guard, settings));
        let stop = stopped();
        tasks.spawn(async move {
            admin
                .serve_with_incoming_shutdown(listener.into_stream(), stop)
                .await
                .context("gRPC ModelService server")
        });
    }
    if flags.rest_api_port != 0 {
        let addr = SocketAddr::new(flags.bind_address, flags.rest_api_port);
        let listener = bind(addr, "REST port", &startup, &metrics).await?;
        tracing::info!("Exporting HTTP/REST API at:{}", listener.local_addr()?);
        let app = rest::router(
            serving.clone(),
            rest::RestOptions {
                timeout: Duration::from_millis(flags.rest_api_timeout_in_ms),
                cors: flags.rest_api_enable_cors_support,
                monitoring_path: startup.monitoring_path.clone(),
                max_body_bytes: flags.rest_api_max_body_bytes,
                read_timeout: read_timeout(&startup),
            },
        );
        let stop = stopped();
        let header_timeout = read_timeout(&startup);
        tasks.spawn(async move {
            rest::server::serve(listener, app, header_timeout, stop).await;
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("server task")??;
    }
    tracing::info!("stopped");
    Ok(())
}
