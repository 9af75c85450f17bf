//! Talking to one Pod's sidecar over its ModelService: what it serves
//! (`GetModelStatus`), what it must serve (`HandleReloadConfigRequest`) and
//! its request counters (`versa.v1.Telemetry/Snapshot`, for canary
//! analysis). Every call carries the bearer token and a deadline.

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
use versa_proto::versa::v1::telemetry_client::TelemetryClient;
use versa_proto::versa::v1::{SnapshotRequest, SnapshotResponse};

/// A sidecar call that failed.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: tonic::transport::Error },
    #[error("{call} on {address}: {status}")]
    Call { call: &'static str, address: String, status: Box<tonic::Status> },
    #[error("reload on {address} refused: {message}")]
    Refused { address: String, message: String },
    #[error("reload on {address} answered OK without saying it applied ({outcome:?})")]
    NotConfirmed { address: String, outcome: String },
    #[error("the reload token is not valid metadata")]
    Token,
    #[error("not sent: this replica no longer leads")]
    NotLeading,
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

pub use versa_proto::headers::RELOAD_OUTCOME as RELOAD_OUTCOME_HEADER;

pub use versa_proto::headers::LEADER_EPOCH as LEADER_EPOCH_HEADER;

/// Largest `Telemetry/Snapshot` answer read from a sidecar (1 MiB: thousands
/// of series); a larger one is an error for that Pod.
pub const TELEMETRY_MAX_BYTES: usize = 1024 * 1024;

/// One sidecar.
#[derive(Debug, Clone)]
pub struct Sidecar {
    address: String,
    client: ModelServiceClient<Channel>,
    telemetry: TelemetryClient<Channel>,
    token: MetadataValue<tonic::metadata::Ascii>,
    timeout: Duration,
    /// The leader epoch reloads carry (fencing a replaced leader).
    epoch: Option<u64>,
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
            client: ModelServiceClient::new(channel.clone()),
            // The serving image is the ModelDeployment author's: its answer is bounded.
            telemetry: TelemetryClient::new(channel).max_decoding_message_size(TELEMETRY_MAX_BYTES),
            token,
            timeout: options.call_timeout,
            epoch: None,
        })
    }

    /// Reloads carry `epoch`: the sidecar refuses them once it has applied
    /// one of a higher epoch.
    #[must_use]
    pub fn with_epoch(mut self, epoch: Option<u64>) -> Self {
        self.epoch = epoch;
        self
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

    /// The sidecar's cumulative request counters
    /// ([`crate::snapshots::to_snapshot`] reads them).
    pub async fn snapshot(&self) -> Result<SnapshotResponse, SidecarError> {
        let request = self.request(SnapshotRequest {});
        match self.telemetry.clone().snapshot(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(SidecarError::Call {
                call: "Telemetry/Snapshot",
                address: self.address.clone(),
                status: Box::new(status),
            }),
        }
    }

    /// Sends the whole config. OK means the sidecar has it in force (new
    /// models may still be loading: it answers before the deadline either
    /// way, and says which in the `x-versa-reload-outcome` header); any
    /// error, DEADLINE_EXCEEDED included, means it may not, and the next
    /// pass sends it again (a reload of the same config is a no-op). An OK
    /// without an outcome header of `applied` or `loading` is not a
    /// confirmation either (the image is the ModelDeployment author's).
    pub async fn reload(&self, config: &ModelServerConfig) -> Result<(), SidecarError> {
        let mut request = self.request(ReloadConfigRequest {
            config: Some(config.clone()),
            ..ReloadConfigRequest::default()
        });
        if let Some(epoch) = self.epoch {
            request.metadata_mut().insert(LEADER_EPOCH_HEADER, MetadataValue::from(epoch));
        }
        match self.client.clone().handle_reload_config_request(request).await {
            Ok(response) => {
                let outcome = response
                    .metadata()
                    .get(RELOAD_OUTCOME_HEADER)
                    .map(|v| v.to_str().unwrap_or("?").to_owned());
                if !matches!(outcome.as_deref(), Some("applied" | "loading")) {
                    return Err(SidecarError::NotConfirmed {
                        address: self.address.clone(),
                        outcome: outcome.unwrap_or_else(|| "no outcome header".into()),
                    });
                }
                match response.into_inner().status {
                    Some(s) if s.error_code != 0 => Err(SidecarError::Refused {
                        address: self.address.clone(),
                        message: s.error_message,
                    }),
                    _ => Ok(()),
                }
            }
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
    use versa_proto::serving::model_service_server::{ModelService, ModelServiceServer};
    use versa_proto::serving::{GetModelStatusResponse, ReloadConfigResponse, StatusProto};
    use versa_proto::versa::v1::SeriesCounters;
    use versa_proto::versa::v1::telemetry_server::{Telemetry, TelemetryServer};

    /// A ModelService that answers reloads after `delay` with `outcome`.
    struct FakeSidecar {
        delay: Duration,
        outcome: Option<&'static str>,
    }

    #[tonic::async_trait]
    impl ModelService for FakeSidecar {
        async fn get_model_status(
            &self,
            _: tonic::Request<GetModelStatusRequest>,
        ) -> Result<tonic::Response<GetModelStatusResponse>, tonic::Status> {
            Err(tonic::Status::not_found("no models"))
        }

        async fn handle_reload_config_request(
            &self,
            _: tonic::Request<ReloadConfigRequest>,
        ) -> Result<tonic::Response<ReloadConfigResponse>, tonic::Status> {
            tokio::time::sleep(self.delay).await;
            let mut response = tonic::Response::new(ReloadConfigResponse::default());
            if let Some(outcome) = self.outcome {
                response
                    .metadata_mut()
                    .insert(RELOAD_OUTCOME_HEADER, outcome.parse().expect("ascii"));
            }
            Ok(response)
        }
    }

    async fn fake(delay: Duration, outcome: Option<&'static str>) -> Sidecar {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ModelServiceServer::new(FakeSidecar { delay, outcome }))
                .serve_with_incoming(incoming),
        );
        let options = SidecarOptions {
            port,
            call_timeout: Duration::from_millis(300),
            ..SidecarOptions::default()
        };
        Sidecar::connect("127.0.0.1".parse().expect("ip"), "t", &options).await.expect("connect")
    }

    /// A Telemetry service that answers every snapshot with `answer`.
    struct FakeTelemetry {
        answer: SnapshotResponse,
    }

    #[tonic::async_trait]
    impl Telemetry for FakeTelemetry {
        async fn snapshot(
            &self,
            _: tonic::Request<SnapshotRequest>,
        ) -> Result<tonic::Response<SnapshotResponse>, tonic::Status> {
            Ok(tonic::Response::new(self.answer.clone()))
        }
    }

    /// A sidecar whose Telemetry answers `answer` of about `bytes` bytes:
    /// one series whose model name is that long.
    async fn fake_telemetry(bytes: usize) -> Sidecar {
        let series =
            SeriesCounters { model: "m".repeat(bytes), split: true, ..SeriesCounters::default() };
        let answer = SnapshotResponse { series: vec![series], ..SnapshotResponse::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TelemetryServer::new(FakeTelemetry { answer }))
                .serve_with_incoming(incoming),
        );
        let options = SidecarOptions { port, ..SidecarOptions::default() };
        Sidecar::connect("127.0.0.1".parse().expect("ip"), "t", &options).await.expect("connect")
    }

    #[tokio::test]
    async fn a_snapshot_answer_over_the_limit_is_an_error_not_read() {
        let small = fake_telemetry(1_000).await.snapshot().await.expect("read");
        assert_eq!(small.series[0].model.len(), 1_000);
        let near = fake_telemetry(TELEMETRY_MAX_BYTES - 64).await.snapshot().await;
        assert!(near.is_ok(), "just under the limit: {:?}", near.map(|_| ()));
        // Under tonic's default limit (4 MiB), over ours.
        match fake_telemetry(2 * TELEMETRY_MAX_BYTES).await.snapshot().await {
            Err(SidecarError::Call { call: "Telemetry/Snapshot", status, .. }) => {
                assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
            }
            other => panic!("a 2 MiB answer was {:?}", other.map(|a| a.series.len())),
        }
    }

    #[tokio::test]
    async fn a_reload_is_confirmed_only_by_an_answer_in_time_that_says_it_applied() {
        let config = ModelServerConfig::default();
        assert!(fake(Duration::ZERO, Some("applied")).await.reload(&config).await.is_ok());
        assert!(fake(Duration::ZERO, Some("loading")).await.reload(&config).await.is_ok());
        let silent = fake(Duration::ZERO, None).await.reload(&config).await;
        assert!(matches!(silent, Err(SidecarError::NotConfirmed { .. })), "{silent:?}");
        let late = fake(Duration::from_secs(2), Some("applied")).await.reload(&config).await;
        match late {
            Err(SidecarError::Call { status, .. }) => {
                assert!(
                    matches!(status.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
                    "{status:?}"
                );
            }
            other => panic!("a reload past its deadline counted as {other:?}"),
        }
        let odd = fake(Duration::ZERO, Some("rejected")).await.reload(&config).await;
        assert!(matches!(odd, Err(SidecarError::NotConfirmed { .. })), "{odd:?}");
    }

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
