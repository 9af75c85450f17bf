//! Talking to one Pod's sidecar over its ModelService: what it serves
//! (`GetModelStatus`) and what it must serve (`HandleReloadConfigRequest`).
//! Every call carries the bearer token and a deadline.

use crate::plan::{PodModels, VersionState};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use versa_proto::serving::model_service_client::ModelServiceClient;
use versa_proto::serving::model_version_status::State;
use versa_proto::serving::{
    GetModelStatusRequest, ModelServerConfig, ModelSpec, ModelVersionStatus, ReloadConfigRequest,
};

/// A sidecar call that failed.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: tonic::transport::Error },
    #[error("{call} on {address}: {status}")]
    Call { call: &'static str, address: String, status: Box<tonic::Status> },
    #[error("reload on {address} refused: {message}")]
    Refused { address: String, message: String },
    #[error("the reload token is not valid metadata")]
    Token,
}

/// How to reach sidecars.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    pub port: u16,
    pub connect_timeout: Duration,
    /// Deadline of each call. A reload that adds a model waits for it only
    /// this long; the config stays in force and loading goes on regardless.
    pub call_timeout: Duration,
}

impl Default for SidecarOptions {
    fn default() -> Self {
        Self {
            port: crate::resources::MODEL_SERVICE_PORT,
            connect_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(3),
        }
    }
}

/// One sidecar.
#[derive(Debug, Clone)]
pub struct Sidecar {
    address: String,
    client: ModelServiceClient<Channel>,
    token: MetadataValue<tonic::metadata::Ascii>,
    timeout: Duration,
}

impl Sidecar {
    pub async fn connect(
        ip: IpAddr,
        token: &str,
        options: &SidecarOptions,
    ) -> Result<Self, SidecarError> {
        let address = format!("http://{}", std::net::SocketAddr::new(ip, options.port));
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|source| SidecarError::Connect { address: address.clone(), source })?
            .connect_timeout(options.connect_timeout)
            .timeout(options.call_timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| SidecarError::Connect { address: address.clone(), source })?;
        let token = format!("Bearer {token}").parse().map_err(|_| SidecarError::Token)?;
        Ok(Self {
            address,
            client: ModelServiceClient::new(channel),
            token,
            timeout: options.call_timeout,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.token.clone());
        request.set_timeout(self.timeout);
        request
    }

    /// Every version of each named model the sidecar tracks. A model it does
    /// not know yet has no versions.
    pub async fn models(&self, names: &[String]) -> Result<PodModels, SidecarError> {
        let mut out = PodModels::new();
        for name in names {
            let request = self.request(GetModelStatusRequest {
                model_spec: Some(ModelSpec { name: name.clone(), ..ModelSpec::default() }),
            });
            let versions = match self.client.clone().get_model_status(request).await {
                Ok(response) => versions(&response.into_inner().model_version_status),
                Err(status) if status.code() == tonic::Code::NotFound => BTreeMap::new(),
                Err(status) => {
                    return Err(SidecarError::Call {
                        call: "GetModelStatus",
                        address: self.address.clone(),
                        status: Box::new(status),
                    });
                }
            };
            out.insert(name.clone(), versions);
        }
        Ok(out)
    }

    /// Sends the whole config. OK means the sidecar has it in force (new
    /// models may still be loading: it answers before the deadline either
    /// way); any error, DEADLINE_EXCEEDED included, means it may not, and
    /// the next pass sends it again (a reload of the same config is a no-op).
    pub async fn reload(&self, config: &ModelServerConfig) -> Result<(), SidecarError> {
        let request = self.request(ReloadConfigRequest {
            config: Some(config.clone()),
            ..ReloadConfigRequest::default()
        });
        match self.client.clone().handle_reload_config_request(request).await {
            Ok(response) => match response.into_inner().status {
                Some(s) if s.error_code != 0 => Err(SidecarError::Refused {
                    address: self.address.clone(),
                    message: s.error_message,
                }),
                _ => Ok(()),
            },
            Err(status) => Err(SidecarError::Call {
                call: "HandleReloadConfigRequest",
                address: self.address.clone(),
                status: Box::new(status),
            }),
        }
    }
}

/// Maps the sidecar's version states onto the planner's.
pub fn versions(statuses: &[ModelVersionStatus]) -> BTreeMap<i64, VersionState> {
    statuses
        .iter()
        .map(|s| {
            let error = s.status.as_ref().filter(|st| st.error_code != 0);
            let state = match (State::try_from(s.state).unwrap_or(State::Unknown), error) {
                (State::Available, _) => VersionState::Available,
                (State::Start | State::Loading | State::Unknown, _) => VersionState::Loading,
                (State::Unloading, _) => VersionState::Unloading,
                (State::End, Some(e)) => VersionState::Failed(e.error_message.clone()),
                (State::End, None) => VersionState::Ended,
            };
            (s.version, state)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use versa_proto::serving::StatusProto;

    #[test]
    fn sidecar_states_map_onto_the_planners() {
        let status = |version, state: State, error: Option<&str>| ModelVersionStatus {
            version,
            state: state as i32,
            status: Some(StatusProto {
                error_code: i32::from(error.is_some()) * 3,
                error_message: error.unwrap_or_default().into(),
            }),
        };
        let got = versions(&[
            status(1, State::Available, None),
            status(2, State::Loading, None),
            status(3, State::Start, None),
            status(4, State::Unloading, None),
            status(5, State::End, None),
            status(6, State::End, Some("not a valid ONNX model")),
        ]);
        assert_eq!(got[&1], VersionState::Available);
        assert_eq!(got[&2], VersionState::Loading);
        assert_eq!(got[&3], VersionState::Loading);
        assert_eq!(got[&4], VersionState::Unloading);
        assert_eq!(got[&5], VersionState::Ended);
        assert_eq!(got[&6], VersionState::Failed("not a valid ONNX model".into()));
    }
}
