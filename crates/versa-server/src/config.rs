//! The model config: read in protobuf text format exactly as TensorFlow
//! Serving reads it (or the same content in YAML), and validated into the
//! [`ServingConfig`] the server applies.

use crate::error::ServingError;
use prost_reflect::DynamicMessage;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use versa_core::{TransitionPolicy, VersionPolicy};
use versa_proto::serving::{
    ModelConfig, ModelConfigList, ModelServerConfig, ModelType, VersaTransitionPolicy,
    file_system_storage_path_source_config::servable_version_policy::PolicyChoice,
    model_server_config,
};

mod mirror;
pub use mirror::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT, MAX_LOGGED_PER_MINUTE, MAX_MAX_IN_FLIGHT,
    MAX_TIMEOUT_MS, MirrorSpec, MirrorTarget, Sampling, mirror_of,
};

/// The only platform versa-server serves.
pub const ONNX_PLATFORM: &str = "onnx";

pub use versa_proto::text_format::{descriptor, parse_text};

/// A config file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid protobuf text format: {reason}")]
    Text { path: PathBuf, reason: String },
    #[error("{path}: invalid YAML config: {reason}")]
    Yaml { path: PathBuf, reason: String },
}

/// Parses a message of type `M` from YAML written like its proto3 JSON form
/// (field names as in the .proto or lowerCamelCase).
pub fn parse_yaml<M: prost::Message + Default>(full_name: &str, text: &str) -> Result<M, String> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let message =
        DynamicMessage::deserialize(descriptor(full_name), value).map_err(|e| e.to_string())?;
    message.transcode_to::<M>().map_err(|e| e.to_string())
}

fn is_yaml(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Reads a file holding message `M`: YAML if it ends in `.yaml`/`.yml`,
/// protobuf text format otherwise.
pub fn read_message<M: prost::Message + Default>(
    full_name: &str,
    path: &Path,
) -> Result<M, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    if is_yaml(path) {
        parse_yaml(full_name, &text)
            .map_err(|reason| ConfigError::Yaml { path: path.to_owned(), reason })
    } else {
        parse_text(full_name, &text)
            .map_err(|reason| ConfigError::Text { path: path.to_owned(), reason })
    }
}

/// Reads a `ModelServerConfig` file.
pub fn read_model_server_config(path: &Path) -> Result<ModelServerConfig, ConfigError> {
    read_message("tensorflow.serving.ModelServerConfig", path)
}

/// One model as the server serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub name: String,
    pub base_path: PathBuf,
    pub platform: String,
    pub policy: VersionPolicy,
    pub labels: BTreeMap<String, i64>,
    /// Label → weight (percent); empty when the model has no split.
    pub traffic: BTreeMap<String, u32>,
    pub transition: TransitionPolicy,
    /// Shadow traffic: which version runs copies of the requests, and how
    /// its answers are judged.
    pub mirror: Option<std::sync::Arc<MirrorSpec>>,
}

/// A validated config: every model the server must serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServingConfig {
    pub models: Vec<ModelEntry>,
}

impl ServingConfig {
    pub fn model(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn names(&self) -> BTreeSet<String> {
        self.models.iter().map(|m| m.name.clone()).collect()
    }

    /// Every model's labels, as the serving map keeps them.
    pub fn labels(&self) -> versa_core::LabelMap {
        self.models
            .iter()
            .filter(|m| !m.labels.is_empty())
            .map(|m| (m.name.clone(), m.labels.clone()))
            .collect()
    }

    /// Labels and traffic splits, as the serving map keeps them.
    pub fn routing(&self) -> versa_core::RoutingTable {
        versa_core::RoutingTable {
            labels: self.labels(),
            splits: self
                .models
                .iter()
                .filter(|m| !m.traffic.is_empty())
                .map(|m| (m.name.clone(), versa_core::TrafficSplit::new(m.traffic.clone())))
                .collect(),
        }
    }
}

/// The config of single-model mode (`--model_name`, `--model_base_path`).
pub fn single_model_config(name: &str, base_path: &str) -> ModelServerConfig {
    ModelServerConfig {
        config: Some(model_server_config::Config::ModelConfigList(ModelConfigList {
            config: vec![ModelConfig {
                name: name.to_owned(),
                base_path: base_path.to_owned(),
                model_platform: ONNX_PLATFORM.to_owned(),
                ..ModelConfig::default()
            }],
        })),
    }
}

/// What a reload asks for.
#[derive(Debug)]
pub enum ConfigRequest<'a> {
    /// No config at all: nothing to do ("Taking no action for empty config.").
    Empty,
    List(&'a ModelConfigList),
}

/// Accepts only the model-config-list kind of config, as upstream.
pub fn config_request(config: &ModelServerConfig) -> Result<ConfigRequest<'_>, ServingError> {
    match &config.config {
        None => Ok(ConfigRequest::Empty),
        Some(model_server_config::Config::ModelConfigList(list)) => Ok(ConfigRequest::List(list)),
        Some(model_server_config::Config::CustomModelConfig(_)) => {
            Err(ServingError::invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported",
            ))
        }
    }
}

#[allow(deprecated)] // model_type is deprecated upstream, but configs still set it
fn platform_of(model: &ModelConfig) -> Result<String, ServingError> {
    let has_type = model.model_type != ModelType::Unspecified as i32;
    match (has_type, model.model_platform.is_empty()) {
        (false, true) => Err(ServingError::invalid_argument(format!(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform, model name is {}",
            model.name
        ))),
        (true, false) => Err(ServingError::invalid_argument(
            "Illegal setting both ModelServerConfig::model_type (deprecated) and ModelServerConfig::model_platform.",
        )),
        (true, true) if model.model_type == ModelType::Tensorflow as i32 => {
            Ok("tensorflow".to_owned())
        }
        (true, true) => Ok("other".to_owned()),
        (false, false) => Ok(model.model_platform.clone()),
    }
}

fn base_path_of(model: &ModelConfig) -> Result<PathBuf, ServingError> {
    let raw = model.base_path.as_str();
    let path = raw.strip_prefix("file://").unwrap_or(raw);
    if path.contains("://") {
        return Err(ServingError::invalid_argument(format!(
            "Model {} has base_path {raw}: versa-server reads local paths only (mount remote storage as a volume)",
            model.name
        )));
    }
    if !Path::new(path).is_absolute() {
        return Err(ServingError::invalid_argument(format!(
            "Expected model {} to have an absolute path or URI; got base_path()={raw}",
            model.name
        )));
    }
    Ok(PathBuf::from(path))
}

fn policy_of(model: &ModelConfig) -> VersionPolicy {
    match model.model_version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()) {
        None => VersionPolicy::Latest(1),
        Some(PolicyChoice::Latest(l)) => VersionPolicy::Latest(l.num_versions),
        Some(PolicyChoice::All(_)) => VersionPolicy::All,
        Some(PolicyChoice::Specific(s)) => VersionPolicy::Specific(s.versions.clone()),
    }
}

/// A traffic split names labels of its own model and its weights sum to 100.
fn check_traffic_split(
    model: &str,
    labels: &BTreeMap<String, i64>,
    traffic: &BTreeMap<String, u32>,
) -> Result<(), ServingError> {
    if traffic.is_empty() {
        return Ok(());
    }
    if labels.is_empty() {
        return Err(ServingError::invalid_argument(format!(
            "Model {model} has a traffic_split but no version_labels: a split divides traffic between labels"
        )));
    }
    if let Some(unknown) = traffic.keys().find(|l| !labels.contains_key(*l)) {
        let known: Vec<&str> = labels.keys().map(String::as_str).collect();
        return Err(ServingError::invalid_argument(format!(
            "Model {model}: traffic_split names label '{unknown}', which is not one of its version_labels {{{}}}",
            known.join(", ")
        )));
    }
    let total: u64 = traffic.values().map(|w| u64::from(*w)).sum();
    if total != 100 {
        return Err(ServingError::invalid_argument(format!(
            "Model {model}: traffic_split weights sum to {total}, they must sum to 100"
        )));
    }
    Ok(())
}

/// Validates a whole model list (TensorFlow Serving's checks, in its words).
/// The first problem rejects the whole list.
pub fn validate(
    list: &ModelConfigList,
    previous: &ServingConfig,
    default_transition: TransitionPolicy,
) -> Result<ServingConfig, ServingError> {
    let mut seen = BTreeSet::new();
    let mut models = Vec::with_capacity(list.config.len());
    for model in &list.config {
        if model.name.is_empty() {
            return Err(ServingError::invalid_argument("Model config has an empty name"));
        }
        if !seen.insert(model.name.as_str()) {
            return Err(ServingError::invalid_argument(format!(
                "Illegal to list model {} multiple times in config list",
                model.name
            )));
        }
        let base_path = base_path_of(model)?;
        let platform = platform_of(model)?;
        if let Some(old) = previous.model(&model.name)
            && old.platform != platform
        {
            return Err(ServingError::invalid_argument(format!(
                "Illegal to change a model's platform. For model {} platform was {} and new platform requested is {}",
                model.name, old.platform, platform
            )));
        }
        if platform == "tensorflow" {
            return Err(ServingError::invalid_argument(format!(
                "Model {} requests unsupported platform tensorflow: versa-server serves ONNX models only (set model_platform: \"onnx\" and export the model to <version>/model.onnx)",
                model.name
            )));
        }
        if platform != ONNX_PLATFORM {
            return Err(ServingError::invalid_argument(format!(
                "Model {} requests unsupported platform {platform}",
                model.name
            )));
        }
        let labels: BTreeMap<String, i64> =
            model.version_labels.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let traffic: BTreeMap<String, u32> =
            model.traffic_split.iter().map(|(k, v)| (k.clone(), *v)).collect();
        check_traffic_split(&model.name, &labels, &traffic)?;
        let transition = match VersaTransitionPolicy::try_from(model.transition_policy) {
            Ok(VersaTransitionPolicy::AvailabilityPreserving) => {
                TransitionPolicy::AvailabilityPreserving
            }
            Ok(VersaTransitionPolicy::ResourcePreserving) => TransitionPolicy::ResourcePreserving,
            _ => default_transition,
        };
        let mirror = mirror_of(&model.name, model.mirror.as_ref(), &labels, transition)?
            .map(std::sync::Arc::new);
        models.push(ModelEntry {
            name: model.name.clone(),
            base_path,
            platform,
            policy: policy_of(model),
            labels,
            traffic,
            transition,
            mirror,
        });
    }
    Ok(ServingConfig { models })
}

#[cfg(test)]
mod tests;
