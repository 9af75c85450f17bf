//! Command-line flags: TensorFlow Serving's names and defaults (`--name=value`;
//! booleans as `--flag`, `--flag=true` or `--flag=false`), plus a few Versa
//! extensions. Flags that only mean something to TensorFlow are accepted with
//! a one-line warning; flags we cannot honour are refused with a clear reason.

use clap::{ArgAction, Parser};

pub mod limits;
pub mod mirror;

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "versa-server",
    version,
    about = "A drop-in tensorflow_model_server for ONNX models",
    // TensorFlow Serving's flags are long-only with underscores.
    disable_help_subcommand = true,
    // A flag given twice takes its last value, as in TensorFlow Serving: the
    // image's entrypoint sets --port/--rest_api_port and a Pod's args may too.
    args_override_self = true
)]
pub struct Flags {
    /// gRPC port (0 disables gRPC).
    #[arg(long = "port", default_value_t = 8500)]
    pub port: u16,
    /// Address the ports bind to.
    #[arg(long = "bind_address", default_value = "0.0.0.0")]
    pub bind_address: std::net::IpAddr,
    /// UNIX socket for gRPC (not supported).
    #[arg(long = "grpc_socket_path", default_value = "")]
    pub grpc_socket_path: String,
    /// REST port (0 disables REST).
    #[arg(long = "rest_api_port", default_value_t = 0)]
    pub rest_api_port: u16,
    /// REST worker threads (informational: requests run on the async runtime).
    #[arg(long = "rest_api_num_threads", default_value_t = 0)]
    pub rest_api_num_threads: usize,
    /// Per-request timeout of REST calls.
    #[arg(long = "rest_api_timeout_in_ms", default_value_t = 30_000)]
    pub rest_api_timeout_in_ms: u64,
    /// Adds CORS headers and answers OPTIONS preflights.
    #[arg(long = "rest_api_enable_cors_support", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub rest_api_enable_cors_support: bool,
    /// Largest REST request body in bytes.
    #[arg(long = "rest_api_max_body_bytes", default_value_t = 256 << 20)]
    pub rest_api_max_body_bytes: usize,
    /// Single-model mode: the model's name (default: `default`).
    #[arg(long = "model_name")]
    pub model_name: Option<String>,
    /// Single-model mode: the model's base path.
    #[arg(long = "model_base_path", default_value = "")]
    pub model_base_path: String,
    /// As TensorFlow Serving's container image does: with neither
    /// --model_base_path nor --model_config_file, serve
    /// `$MODEL_BASE_PATH/$MODEL_NAME` (default `/models/model`) under the name
    /// `$MODEL_NAME` (--model_name still wins). Set by versa-server's image.
    #[arg(long = "model_from_env", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub model_from_env: bool,
    /// Model config file (protobuf text format, or YAML for .yaml/.yml).
    #[arg(long = "model_config_file", default_value = "")]
    pub model_config_file: String,
    /// Re-read the model config file this often (0: read once).
    #[arg(long = "model_config_file_poll_wait_seconds", default_value_t = 0)]
    pub model_config_file_poll_wait_seconds: u64,
    /// Poll base paths for versions this often (0: once; negative: never).
    #[arg(
        long = "file_system_poll_wait_seconds",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub file_system_poll_wait_seconds: i64,
    /// Loads running at once (0: one at a time).
    #[arg(long = "num_load_threads", default_value_t = 0)]
    pub num_load_threads: usize,
    /// Unloads running at once (0: one at a time).
    #[arg(long = "num_unload_threads", default_value_t = 0)]
    pub num_unload_threads: usize,
    /// Retries after a failed load (0: a single attempt).
    #[arg(long = "max_num_load_retries", default_value_t = 5)]
    pub max_num_load_retries: u32,
    /// Wait between load attempts (negative: none).
    #[arg(
        long = "load_retry_interval_micros",
        default_value_t = 60_000_000,
        allow_negative_numbers = true
    )]
    pub load_retry_interval_micros: i64,
    /// Versa: loads and unloads run on their own threads this much nicer
    /// (0..=19) than serving, so preparing a large version does not take
    /// cores away from requests; 0: same priority.
    #[arg(long = "load_thread_niceness", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub load_thread_niceness: i32,
    /// Run each new version once on zeros before it becomes AVAILABLE.
    #[arg(long = "enable_model_warmup", num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_model_warmup: bool,
    /// Runs on zeros per new version during warm-up (0: one, as upstream).
    #[arg(long = "num_request_iterations_for_warmup", default_value_t = 0)]
    pub num_request_iterations_for_warmup: u32,
    /// Request batching: concurrent Predict requests for the same version
    /// are merged into one run (see --batching_parameters_file and
    /// --batching_min_speedup).
    #[arg(long = "enable_batching", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_batching: bool,
    /// Batching parameters file (text BatchingParameters).
    #[arg(long = "batching_parameters_file", default_value = "")]
    pub batching_parameters_file: String,
    /// Labels may name versions that are not AVAILABLE yet (new labels only).
    #[arg(long = "allow_version_labels_for_unavailable_models", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub allow_version_labels_for_unavailable_models: bool,
    /// Monitoring config file (text MonitoringConfig): Prometheus on the REST port.
    #[arg(long = "monitoring_config_file", default_value = "")]
    pub monitoring_config_file: String,
    /// Limit of concurrent gRPC requests per connection.
    #[arg(long = "grpc_max_threads", default_value_t = 4 * cpus())]
    pub grpc_max_threads: usize,
    /// gRPC server arguments `k=v,k=v`: grpc.max_receive_message_length,
    /// grpc.max_send_message_length, grpc.max_concurrent_streams,
    /// grpc.keepalive_time_ms, grpc.keepalive_timeout_ms,
    /// grpc.max_connection_age_ms, grpc.max_connection_age_grace_ms and
    /// grpc.max_metadata_size are honoured; others are warned about.
    #[arg(long = "grpc_channel_arguments", default_value = "")]
    pub grpc_channel_arguments: String,
    /// Registers grpc.health.v1 (always registered by versa-server).
    #[arg(long = "enable_grpc_healthcheck_service", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_grpc_healthcheck_service: bool,
    /// Predict responses use tensor_content instead of typed fields.
    #[arg(long = "enable_serialization_as_tensor_content", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_serialization_as_tensor_content: bool,
    /// Check signature method names (ours are always predict).
    #[arg(long = "enable_signature_method_name_check", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_signature_method_name_check: bool,
    /// TLS config file (not supported: terminate TLS in front of the sidecar).
    #[arg(long = "ssl_config_file", default_value = "")]
    pub ssl_config_file: String,
    /// ALTS credentials (not supported).
    #[arg(long = "use_alts_credentials", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub use_alts_credentials: bool,

    // --- Versa extensions ---
    /// Refuse to unload every version of a model whose base path is found empty.
    #[arg(long = "servable_versions_always_present", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub servable_versions_always_present: bool,
    /// Default transition policy: availability_preserving or resource_preserving.
    #[arg(long = "transition_policy", default_value = "availability_preserving")]
    pub transition_policy: String,
    /// Upper bound of a reload's wait for new models (the client's deadline, if shorter, wins).
    #[arg(long = "reload_timeout_seconds", default_value_t = 600)]
    pub reload_timeout_seconds: u64,
    /// Start serving after this long even if some models are still loading.
    #[arg(long = "initial_load_timeout_seconds", default_value_t = 600)]
    pub initial_load_timeout_seconds: u64,
    /// Inferences running at once (0: one per core).
    #[arg(long = "num_inference_threads", default_value_t = 0)]
    pub num_inference_threads: usize,
    /// Versa: runs expected to take at most this long (from the model's
    /// recent runs, per row) run on the thread that received the request
    /// instead of being handed to an inference thread; 0: always hand over.
    #[arg(long = "inline_inference_max_micros", default_value_t = 300)]
    pub inline_inference_max_micros: u64,
    /// Versa: with --enable_batching, each model version is timed at load on
    /// a batch of min(max_batch_size, 8) rows against one row, and batched
    /// only if the batch runs at least this many times cheaper per row
    /// (batching a model whose cost grows with the batch only adds latency);
    /// 0: batch every batchable model, as upstream.
    #[arg(long = "batching_min_speedup", default_value_t = 1.5)]
    pub batching_min_speedup: f64,
    /// Batch sizes per model version with a concretely-optimised plan.
    #[arg(long = "plan_cache_size", default_value_t = 8)]
    pub plan_cache_size: usize,
    /// Versa: a batch size without a plan of its own runs on the symbolic
    /// plan while its plan is built in the background; each model version
    /// builds at most one such plan this often.
    #[arg(long = "plan_build_interval_ms", default_value_t = 1000)]
    pub plan_build_interval_ms: u64,
    /// File holding a bearer token that every ModelService call (status,
    /// reload) must present as `authorization: Bearer <token>`; empty: open.
    #[arg(long = "model_service_token_file", default_value = "")]
    pub model_service_token_file: String,
    /// Serve ModelService (status, reloads) on this port only, apart from
    /// PredictionService, so a NetworkPolicy can open it to the operator
    /// alone; 0: on `--port` with everything else, as upstream.
    #[arg(long = "model_service_port", default_value_t = 0)]
    pub model_service_port: u16,
    /// Versa: the shortest wait a client may demand and still blame the
    /// server, in versa.v1.Telemetry (the operator's canary `errorRate`):
    /// a DEADLINE_EXCEEDED under a gRPC deadline (`grpc-timeout`) the
    /// client set shorter than this counts as the client's error, not the
    /// server's, so no client can fail a canary with `grpc-timeout: 1n`;
    /// and a request its client cancelled after waiting at least this long
    /// unanswered counts as the server's, as a missed deadline would, so a
    /// version too slow for callers who give up shows as failing. The
    /// requests' status in /metrics is unchanged (see
    /// `versa_requests_reclassified_total`); server-set deadlines
    /// (--rest_api_timeout_in_ms) are always the server's. 0: every
    /// DEADLINE_EXCEEDED is the server's and every CANCELLED the client's.
    #[arg(long = "telemetry_min_client_deadline_ms", default_value_t = 100)]
    pub telemetry_min_client_deadline_ms: u64,
    /// Refuse loads beyond this many bytes of models in total (0: unlimited).
    #[arg(long = "total_model_memory_limit_bytes", default_value_t = 0)]
    pub total_model_memory_limit_bytes: u64,
    #[command(flatten)]
    pub limits: limits::LimitFlags,
    #[command(flatten)]
    pub mirror: mirror::MirrorFlags,

    // --- TensorFlow-only flags: accepted, warned about, ignored ---
    #[arg(long = "flush_filesystem_caches", hide = true)]
    pub flush_filesystem_caches: Option<String>,
    #[arg(long = "enable_per_model_batching_parameters", hide = true)]
    pub enable_per_model_batching_parameters: Option<String>,
    #[arg(long = "platform_config_file", hide = true)]
    pub platform_config_file: Option<String>,
    #[arg(long = "saved_model_tags", hide = true)]
    pub saved_model_tags: Option<String>,
    #[arg(long = "tensorflow_session_parallelism", hide = true)]
    pub tensorflow_session_parallelism: Option<String>,
    #[arg(long = "tensorflow_intra_op_parallelism", hide = true)]
    pub tensorflow_intra_op_parallelism: Option<String>,
    #[arg(long = "tensorflow_inter_op_parallelism", hide = true)]
    pub tensorflow_inter_op_parallelism: Option<String>,
    #[arg(long = "tensorflow_session_config_file", hide = true)]
    pub tensorflow_session_config_file: Option<String>,
    #[arg(long = "per_process_gpu_memory_fraction", hide = true)]
    pub per_process_gpu_memory_fraction: Option<String>,
    #[arg(long = "enable_profiler", hide = true)]
    pub enable_profiler: Option<String>,
    #[arg(long = "remove_unused_fields_from_bundle_metagraph", hide = true)]
    pub remove_unused_fields_from_bundle_metagraph: Option<String>,
    #[arg(long = "prefer_tflite_model", hide = true)]
    pub prefer_tflite_model: Option<String>,
    #[arg(long = "num_tflite_pools", hide = true)]
    pub num_tflite_pools: Option<String>,
    #[arg(long = "num_tflite_interpreters_per_pool", hide = true)]
    pub num_tflite_interpreters_per_pool: Option<String>,
    #[arg(long = "thread_pool_factory_config_file", hide = true)]
    pub thread_pool_factory_config_file: Option<String>,
    #[arg(long = "mixed_precision", hide = true)]
    pub mixed_precision: Option<String>,
    #[arg(long = "skip_initialize_tpu", hide = true)]
    pub skip_initialize_tpu: Option<String>,
    #[arg(long = "xla_cpu_compilation_enabled", hide = true)]
    pub xla_cpu_compilation_enabled: Option<String>,
    #[arg(long = "xla_gpu_compilation_enabled", hide = true)]
    pub xla_gpu_compilation_enabled: Option<String>,
}

/// Flags rejected or warned about after parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FlagError(pub String);

impl Flags {
    /// The model's name in single-model mode.
    pub fn single_model_name(&self) -> &str {
        self.model_name.as_deref().unwrap_or("default")
    }

    /// Applies `--model_from_env`: `var` reads the environment.
    pub fn with_model_from_env(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        if !self.model_from_env
            || !self.model_config_file.is_empty()
            || !self.model_base_path.is_empty()
        {
            return self;
        }
        let set = |name: &str, default: &str| {
            var(name).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
        };
        let name = set("MODEL_NAME", "model");
        let base = set("MODEL_BASE_PATH", "/models");
        self.model_base_path = format!("{}/{name}", base.trim_end_matches('/'));
        if self.model_name.is_none() {
            self.model_name = Some(name);
        }
        self
    }

    /// Checks combinations TensorFlow Serving checks, and ours. Returns the
    /// one-line warnings to log for accepted-but-ignored flags.
    pub fn validate(&self) -> Result<Vec<String>, FlagError> {
        let fail = |m: &str| Err(FlagError(m.to_owned()));
        if self.port == 0 && self.grpc_socket_path.is_empty() && self.rest_api_port == 0 {
            return fail("nothing to serve on: set --port or --rest_api_port");
        }
        if !self.grpc_socket_path.is_empty() {
            return fail(
                "--grpc_socket_path is not supported by versa-server: use --port (gRPC over TCP)",
            );
        }
        if self.rest_api_port != 0 && self.rest_api_port == self.port {
            return fail("--rest_api_port must differ from --port");
        }
        if self.model_service_port != 0
            && (self.model_service_port == self.port
                || self.model_service_port == self.rest_api_port)
        {
            return fail("--model_service_port must differ from --port and --rest_api_port");
        }
        if self.model_config_file.is_empty() && self.model_base_path.is_empty() {
            return fail(
                "set either --model_config_file, or --model_base_path (with --model_name)",
            );
        }
        if !self.batching_parameters_file.is_empty() && !self.enable_batching {
            return fail(
                "server_options.batching_parameters_file is set without setting server_options.enable_batching to true.",
            );
        }
        if !self.ssl_config_file.is_empty() || self.use_alts_credentials {
            return fail(
                "--ssl_config_file/--use_alts_credentials are not supported: terminate TLS in front of versa-server (e.g. a mesh or ingress)",
            );
        }
        if self.tensorflow_session_parallelism.is_some()
            && self.tensorflow_intra_op_parallelism.is_some()
            && self.tensorflow_inter_op_parallelism.is_some()
        {
            return fail(
                "Either configure tensorflow_session_parallelism or (tensorflow_intra_op_parallelism, tensorflow_inter_op_parallelism). Not both.",
            );
        }
        self.transition().map_err(FlagError)?;
        let mut warnings = Vec::new();
        let tf_only: [(&str, &Option<String>); 19] = [
            ("flush_filesystem_caches", &self.flush_filesystem_caches),
            ("enable_per_model_batching_parameters", &self.enable_per_model_batching_parameters),
            ("platform_config_file", &self.platform_config_file),
            ("saved_model_tags", &self.saved_model_tags),
            ("tensorflow_session_parallelism", &self.tensorflow_session_parallelism),
            ("tensorflow_intra_op_parallelism", &self.tensorflow_intra_op_parallelism),
            ("tensorflow_inter_op_parallelism", &self.tensorflow_inter_op_parallelism),
            ("tensorflow_session_config_file", &self.tensorflow_session_config_file),
            ("per_process_gpu_memory_fraction", &self.per_process_gpu_memory_fraction),
            ("enable_profiler", &self.enable_profiler),
            (
                "remove_unused_fields_from_bundle_metagraph",
                &self.remove_unused_fields_from_bundle_metagraph,
            ),
            ("prefer_tflite_model", &self.prefer_tflite_model),
            ("num_tflite_pools", &self.num_tflite_pools),
            ("num_tflite_interpreters_per_pool", &self.num_tflite_interpreters_per_pool),
            ("thread_pool_factory_config_file", &self.thread_pool_factory_config_file),
            ("mixed_precision", &self.mixed_precision),
            ("skip_initialize_tpu", &self.skip_initialize_tpu),
            ("xla_cpu_compilation_enabled", &self.xla_cpu_compilation_enabled),
            ("xla_gpu_compilation_enabled", &self.xla_gpu_compilation_enabled),
        ];
        for (name, value) in tf_only {
            if value.is_some() {
                warnings.push(format!("--{name} only applies to TensorFlow runtimes; ignored"));
            }
        }
        if self.model_service_port != 0 && self.port == 0 {
            // Not an error: ModelService serves on its own port all the same.
            warnings.push(format!(
                "--port=0: PredictionService is off; ModelService still serves on --model_service_port={}",
                self.model_service_port
            ));
        }
        if self.rest_api_num_threads != 0 {
            warnings.push(
                "--rest_api_num_threads: REST requests run on the async runtime; ignored"
                    .to_owned(),
            );
        }
        Ok(warnings)
    }

    /// The default transition policy of models.
    pub fn transition(&self) -> Result<versa_core::TransitionPolicy, String> {
        match self.transition_policy.as_str() {
            "availability_preserving" => Ok(versa_core::TransitionPolicy::AvailabilityPreserving),
            "resource_preserving" => Ok(versa_core::TransitionPolicy::ResourcePreserving),
            other => Err(format!(
                "--transition_policy={other}: expected availability_preserving or resource_preserving"
            )),
        }
    }

    /// Manager options from the flags.
    pub fn manager_options(&self) -> versa_core::ManagerOptions {
        versa_core::ManagerOptions {
            num_load_threads: self.num_load_threads,
            num_unload_threads: self.num_unload_threads,
            max_num_load_retries: self.max_num_load_retries,
            load_retry_interval: std::time::Duration::from_micros(
                self.load_retry_interval_micros.max(0) as u64,
            ),
            total_model_memory_limit_bytes: (self.total_model_memory_limit_bytes > 0)
                .then_some(self.total_model_memory_limit_bytes),
            label_rules: versa_core::LabelRules {
                allow_for_unavailable: self.allow_version_labels_for_unavailable_models,
                ..versa_core::LabelRules::default()
            },
            load_thread_niceness: self.load_thread_niceness,
            ..versa_core::ManagerOptions::default()
        }
    }
}

#[cfg(test)]
mod tests;
