//! `versa.v1.Telemetry/Snapshot` on a real server on 127.0.0.1: requests of
//! every class to two versions, read back per version, label, split and
//! class; the bearer token of ModelService guards it; counters are
//! cumulative and the process start stays put.

use clap::Parser as _;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request};
use versa_proto::serving::model_service_client::ModelServiceClient;
use versa_proto::serving::prediction_service_client::PredictionServiceClient;
use versa_proto::serving::{GetModelStatusRequest, ModelSpec, PredictRequest, model_spec};
use versa_proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};
use versa_proto::versa::v1::telemetry_client::TelemetryClient;
use versa_proto::versa::v1::{SeriesCounters, SnapshotRequest, SnapshotResponse};
use versa_server::flags::Flags;

const TOKEN: &str = "telemetry-s3cret";

/// `N` distinct free ports: each is held until all are chosen, so that the
/// system cannot hand out one twice.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> =
        (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("port")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("address").port())
}

struct Server {
    _dir: tempfile::TempDir,
    grpc: u16,
    rest: u16,
    admin: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Model `fraud`, versions 1 (`stable`) and 2 (`canary`), split 50/50
/// between them, ModelService and Telemetry on a port of their own behind
/// a token; 1 MiB of request bytes in flight at most, so a request that
/// broadcasts one value over a large shape is shed (RESOURCE_EXHAUSTED)
/// after its version is chosen. With `slow`, also model `slow` (version 1,
/// a MobileNetV2-sized CNN), 256 MiB in flight, and a floor of
/// [`SLOW_FLOOR`] for client deadlines.
async fn start(slow: bool) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("fraud");
    for v in [1, 2] {
        versa_testmodels::write_version(&base, v, &versa_testmodels::versioned(v)).expect("model");
    }
    let slow_base = dir.path().join("slow");
    let slow_config = if slow {
        versa_testmodels::write_version(&slow_base, 1, &versa_testmodels::mobilenet_v2_like())
            .expect("model");
        format!(
            r#"config {{ name: "slow" base_path: "{}" model_platform: "onnx" }}"#,
            slow_base.display()
        )
    } else {
        String::new()
    };
    let config = dir.path().join("models.config");
    std::fs::write(
        &config,
        format!(
            r#"model_config_list {{
  config {{
    name: "fraud"
    base_path: "{}"
    model_platform: "onnx"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
    traffic_split {{ key: "stable" value: 50 }}
    traffic_split {{ key: "canary" value: 50 }}
  }}
  {slow_config}
}}"#,
            base.display()
        ),
    )
    .expect("config");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let [grpc, rest, admin] = free_ports();
    // The slow model's abandoned runs hold their inputs until they end.
    let in_flight = if slow { 256 << 20 } else { 1 << 20 };
    let floor = if slow { SLOW_FLOOR.as_millis() } else { 100 };
    let flags = Flags::try_parse_from([
        "versa-server".to_owned(),
        "--bind_address=127.0.0.1".to_owned(),
        format!("--port={grpc}"),
        format!("--rest_api_port={rest}"),
        format!("--model_service_port={admin}"),
        format!("--model_service_token_file={}", token.display()),
        format!("--model_config_file={}", config.display()),
        format!("--max_inflight_request_bytes={in_flight}"),
        format!("--telemetry_min_client_deadline_ms={floor}"),
    ])
    .expect("flags");
    let startup = versa_server::prepare(flags).expect("start-up");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(versa_server::serve(startup, async move {
        let _ = stopped.await;
    }));
    let server = Server { _dir: dir, grpc, rest, admin, stop: Some(stop), task };
    server.wait_until_available("fraud", 2).await;
    if slow {
        server.wait_until_available("slow", 1).await;
    }
    server
}

fn authed<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

impl Server {
    async fn channel(port: u16) -> Channel {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("uri")
                .connect()
                .await
            {
                Ok(channel) => return channel,
                Err(e) if tokio::time::Instant::now() > deadline => panic!("connect {port}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn wait_until_available(&self, model: &str, versions: usize) {
        let mut models = ModelServiceClient::new(Self::channel(self.admin).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let spec = ModelSpec { name: model.into(), ..ModelSpec::default() };
            let request = GetModelStatusRequest { model_spec: Some(spec) };
            if let Ok(status) = models.get_model_status(authed(request, Some(TOKEN))).await {
                let status = &status.get_ref().model_version_status;
                if status.len() == versions && status.iter().all(|v| v.state == 30) {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{model} never became AVAILABLE");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn telemetry(&self) -> TelemetryClient<Channel> {
        TelemetryClient::new(Self::channel(self.admin).await)
    }

    async fn snapshot(&self) -> SnapshotResponse {
        let mut client = self.telemetry().await;
        client
            .snapshot(authed(SnapshotRequest {}, Some(TOKEN)))
            .await
            .expect("snapshot")
            .into_inner()
    }

    /// The REST port's `/metrics` text.
    async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = SocketAddr::from(([127, 0, 0, 1], self.rest));
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect REST");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        text
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("server task").expect("server stopped cleanly");
    }
}

/// How a test request is built.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A good request: `x` = zeros [1, 4].
    Good,
    /// An input the signature does not have: INVALID_ARGUMENT.
    WrongInput,
    /// One value broadcast over [100000, 4] f32 (1.6 MB decoded), more than
    /// the 1 MiB in flight: shed, RESOURCE_EXHAUSTED.
    TooBig,
}

fn predict(choice: model_spec::VersionChoice, kind: Kind) -> PredictRequest {
    let dims = |sizes: &[i64]| TensorShapeProto {
        dim: sizes
            .iter()
            .map(|&size| tensor_shape_proto::Dim { size, name: String::new() })
            .collect(),
        unknown_rank: false,
    };
    let (name, shape, values) = match kind {
        Kind::Good => ("x", [1, 4], vec![0.0; 4]),
        Kind::WrongInput => ("z", [1, 4], vec![0.0; 4]),
        Kind::TooBig => ("x", [100_000, 4], vec![0.0]),
    };
    let tensor = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(dims(&shape)),
        float_val: values,
        ..TensorProto::default()
    };
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: "fraud".into(),
            version_choice: Some(choice),
            signature_name: String::new(),
        }),
        inputs: [(name.to_owned(), tensor)].into_iter().collect(),
        ..PredictRequest::default()
    }
}

fn label(l: &str) -> model_spec::VersionChoice {
    model_spec::VersionChoice::VersionLabel(l.to_owned())
}

/// Sends `n` requests of `kind`; each must end with `expected`.
async fn send(
    client: &mut PredictionServiceClient<Channel>,
    choice: model_spec::VersionChoice,
    kind: Kind,
    n: usize,
    expected: Code,
) {
    for _ in 0..n {
        let code = match client.predict(predict(choice.clone(), kind)).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        assert_eq!(code, expected, "{kind:?} to {choice:?}");
    }
}

/// The series of requests to `fraud` that named `version` or `label`.
fn series<'a>(snapshot: &'a SnapshotResponse, version: i64, label: &str) -> &'a SeriesCounters {
    find(snapshot, version, label, false)
}

/// The series of `fraud`'s `version`, reached through `label`, by the split or not.
fn find<'a>(
    snapshot: &'a SnapshotResponse,
    version: i64,
    label: &str,
    split: bool,
) -> &'a SeriesCounters {
    snapshot
        .series
        .iter()
        .find(|s| {
            s.model == "fraud" && s.version == version && s.label == label && s.split == split
        })
        .unwrap_or_else(|| panic!("no series fraud/{version}/{label:?}/{split}: {snapshot:#?}"))
}

/// Requests, errors (server, client) and timed requests of a series.
fn counts(s: &SeriesCounters) -> (u64, u64, u64, u64) {
    let errors = s.errors.unwrap_or_default();
    assert_eq!(errors.model, 0, "no model fault is told apart yet");
    (s.requests, errors.server, errors.client, s.latency.as_ref().map_or(0, |l| l.count))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_count_every_answered_request_by_version_label_and_class() {
    let server = start(false).await;
    let mut predict = PredictionServiceClient::new(Server::channel(server.grpc).await);
    let v1 = model_spec::VersionChoice::Version(1);
    send(&mut predict, label("stable"), Kind::Good, 4, Code::Ok).await;
    send(&mut predict, label("stable"), Kind::WrongInput, 2, Code::InvalidArgument).await;
    send(&mut predict, label("stable"), Kind::TooBig, 1, Code::ResourceExhausted).await;
    send(&mut predict, label("canary"), Kind::Good, 3, Code::Ok).await;
    send(&mut predict, label("canary"), Kind::WrongInput, 1, Code::InvalidArgument).await;
    send(&mut predict, label("canary"), Kind::TooBig, 2, Code::ResourceExhausted).await;
    send(&mut predict, v1, Kind::Good, 2, Code::Ok).await;
    // No version answers these: they belong to no series.
    send(&mut predict, label("nope"), Kind::Good, 3, Code::InvalidArgument).await;

    let first = server.snapshot().await;
    assert!(first.process_start_unix_ms > 0);
    assert!(first.process_start_unix_ms <= first.taken_at_unix_ms);
    assert_eq!(first.series.len(), 3, "{first:#?}");
    // (requests, server errors, client errors, latency count = successes)
    assert_eq!(counts(series(&first, 1, "stable")), (7, 1, 2, 4));
    assert_eq!(counts(series(&first, 2, "canary")), (6, 2, 1, 3));
    assert_eq!(counts(series(&first, 1, "")), (2, 0, 0, 2));
    for s in &first.series {
        let latency = s.latency.as_ref().expect("latency");
        assert_eq!(latency.buckets.len(), 20, "the bounds of versa_request_duration_seconds");
        assert!(latency.buckets.windows(2).all(|w| w[0].le_seconds < w[1].le_seconds));
        assert!(latency.buckets.windows(2).all(|w| w[0].count <= w[1].count), "cumulative");
        assert!(latency.buckets.last().is_some_and(|b| b.count <= latency.count));
        assert!(latency.sum_seconds > 0.0);
    }

    // Cumulative: one more good request to the canary, and nothing else moves.
    send(&mut predict, label("canary"), Kind::Good, 1, Code::Ok).await;
    let second = server.snapshot().await;
    assert_eq!(second.process_start_unix_ms, first.process_start_unix_ms);
    assert!(second.taken_at_unix_ms >= first.taken_at_unix_ms);
    assert_eq!(counts(series(&second, 2, "canary")), (7, 2, 1, 4));
    assert_eq!(series(&second, 1, "stable"), series(&first, 1, "stable"));
    assert_eq!(series(&second, 1, ""), series(&first, 1, ""));

    // The same counters as /metrics: every answered request is there once.
    let text = server.metrics_text().await;
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("versa_requests_total{") && !l.contains("version=\"\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    let answered: u64 = second.series.iter().map(|s| s.requests).sum();
    assert_eq!(total as u64, answered, "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_split_routed_are_counted_apart_from_those_naming_the_canary() {
    let server = start(false).await;
    let mut client = PredictionServiceClient::new(Server::channel(server.grpc).await);
    // A client that names the canary and fails on purpose, of both classes.
    send(&mut client, label("canary"), Kind::TooBig, 3, Code::ResourceExhausted).await;
    send(&mut client, label("canary"), Kind::WrongInput, 2, Code::InvalidArgument).await;
    send(&mut client, model_spec::VersionChoice::Version(2), Kind::Good, 1, Code::Ok).await;
    // Traffic naming neither version nor label: the split's, 50/50.
    let mut routed: std::collections::BTreeMap<String, u64> = Default::default();
    for _ in 0..12 {
        let mut body = predict(model_spec::VersionChoice::Version(0), Kind::Good);
        body.model_spec.as_mut().expect("spec").version_choice = None;
        let answer = client.predict(body).await.expect("served by the split");
        let label = answer.metadata().get("x-versa-model-label").expect("label").to_str();
        *routed.entry(label.expect("ascii").to_owned()).or_default() += 1;
    }
    let snapshot = server.snapshot().await;
    for (label, version) in [("stable", 1), ("canary", 2)] {
        let n = routed.get(label).copied().unwrap_or_default();
        if n > 0 {
            assert_eq!(counts(find(&snapshot, version, label, true)), (n, 0, 0, n), "{label}");
        }
    }
    // The direct requests are series of their own: the split's canary is clean.
    assert_eq!(counts(find(&snapshot, 2, "canary", false)), (5, 3, 2, 0));
    assert_eq!(counts(find(&snapshot, 2, "", false)), (1, 0, 0, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_service_token_guards_it_and_refusals_are_counted() {
    let server = start(false).await;
    let mut client = server.telemetry().await;
    let missing = client.snapshot(authed(SnapshotRequest {}, None)).await.expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = client.snapshot(authed(SnapshotRequest {}, Some("nope"))).await.expect_err("wrong");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let right = client.snapshot(authed(SnapshotRequest {}, Some(TOKEN))).await.expect("token");
    assert!(right.get_ref().series.is_empty(), "no request yet: {:#?}", right.get_ref());
    let text = server.metrics_text().await;
    assert!(text.contains("versa_model_service_unauthenticated_total 2"), "{text}");
    // Only where ModelService is: not on the prediction port.
    let mut elsewhere = TelemetryClient::new(Server::channel(server.grpc).await);
    let refused = elsewhere.snapshot(authed(SnapshotRequest {}, Some(TOKEN))).await;
    assert_eq!(refused.expect_err("not served there").code(), Code::Unimplemented);
    server.stop().await;
}

/// The slow server's `--telemetry_min_client_deadline_ms`.
const SLOW_FLOOR: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_their_deadline_or_abandoned_are_errors_of_their_version_by_the_wait() {
    let server = start(true).await;
    let mut predict = PredictionServiceClient::new(Server::channel(server.grpc).await);
    let image = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: [8, 3, 224, 224]
                .into_iter()
                .map(|size| tensor_shape_proto::Dim { size, name: String::new() })
                .collect(),
            unknown_rank: false,
        }),
        float_val: vec![0.5],
        ..TensorProto::default()
    };
    let body = || PredictRequest {
        model_spec: Some(ModelSpec { name: "slow".into(), ..ModelSpec::default() }),
        inputs: [("image".to_owned(), image.clone())].into_iter().collect(),
        ..PredictRequest::default()
    };
    // Well under the floor (the client's fault) and well over it (the
    // server's), so that a busy server noticing a cancel late does not
    // change the class; both long enough to reach the handler (and be
    // attributed to a version), far shorter than a run of 8 images
    // (seconds, and they queue behind each other's abandoned runs).
    const SHORT: Duration = Duration::from_millis(25);
    const LONG: Duration = Duration::from_millis(300);
    // Uneven counts, so that any other classing gives other totals.
    let (short_deadlines, long_deadlines, short_waits, long_waits) = (2, 1, 1, 3);
    for (patience, n) in [(SHORT, short_deadlines), (LONG, long_deadlines)] {
        for _ in 0..n {
            let mut request = Request::new(body());
            // tonic or the handler gives up first.
            request.set_timeout(patience);
            let status = predict.predict(request).await.expect_err("too slow");
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{status:?}"
            );
        }
    }
    // Clients that give up without telling a deadline: their handlers are
    // dropped (stream reset) and recorded as CANCELLED: the client's doing
    // when it gave up sooner than the floor, the server's when it had
    // waited that long unanswered.
    for (patience, n) in [(SHORT, short_waits), (LONG, long_waits)] {
        for _ in 0..n {
            let given_up = tokio::time::timeout(patience, predict.predict(body())).await;
            assert!(given_up.is_err(), "the client gave up first");
        }
    }
    // Dropped handlers are recorded as they are dropped: wait for all.
    let all = short_deadlines + long_deadlines + short_waits + long_waits;
    let (servers, clients) = (long_deadlines + long_waits, short_deadlines + short_waits);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let snapshot = server.snapshot().await;
        let late = snapshot.series.iter().find(|s| s.model == "slow");
        if let Some(s) = late
            && s.requests == all
        {
            assert_eq!(s.version, 1);
            // (requests, server errors, client errors, timed)
            assert_eq!(counts(s), (all, servers, clients, 0), "{s:#?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all counted: {snapshot:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // /metrics keeps the status the clients saw.
    let text = server.metrics_text().await;
    let status_total = |status: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("versa_requests_total{") && l.contains(r#"model="slow""#))
            .filter(|l| l.contains(&format!(r#"status="{status}""#)))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(status_total("DEADLINE_EXCEEDED") + status_total("CANCELLED"), all, "{text}");
    server.stop().await;
}
