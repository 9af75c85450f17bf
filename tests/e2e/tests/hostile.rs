//! Hostile input against the real binary: requests of a few bytes that
//! would expand to gigabytes, bodies that would blow up in the parser,
//! paths and headers that used to panic, invented names that would mint
//! metric series. Each gets a clear error naming its limit; the server's
//! peak memory (VmHWM) stays within a bound and it serves on afterwards.

mod common;

use common::{Fixture, start, version_of};
use std::time::Duration;
use tonic::Code;
use versa_e2e::{Choice, f32_tensor, metric_sum, metrics_text, raw_http, spec, versioned_request};
use versa_proto::serving::PredictRequest;
use versa_proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};

const MIB: u64 = 1024;

/// Peak memory (KiB) the server may gain from one hostile class.
const GROWTH_BOUND_KIB: u64 = 160 * MIB;

fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| tensor_shape_proto::Dim { size, name: String::new() })
            .collect(),
        unknown_rank: false,
    })
}

fn request(model: &str, input: &str, tensor: TensorProto) -> PredictRequest {
    PredictRequest {
        model_spec: Some(spec(model, Choice::Latest)),
        inputs: [(input.to_owned(), tensor)].into(),
        ..PredictRequest::default()
    }
}

async fn still_serves(f: &common::Fixture) {
    let mut client = f.server.prediction_client().await;
    let answer = client.predict(versioned_request("versioned", Choice::Version(2))).await;
    assert_eq!(version_of(&answer.expect("still serving").into_inner()), 2.0);
}

/// The standard models and `strings` (input `text`, one string per row).
fn start_with_strings() -> Fixture {
    let root = tempfile::tempdir().expect("tempdir");
    versa_testmodels::write_example_repository(root.path()).expect("models");
    let config = root.path().join("models.config");
    let text = common::standard_config(root.path()).replacen(
        "model_config_list {",
        &format!(
            "model_config_list {{\n  config {{ name: \"strings\" base_path: \"{}/strings\" model_platform: \"onnx\" }}",
            root.path().display()
        ),
        1,
    );
    std::fs::write(&config, text).expect("config");
    let server = versa_e2e::ServerProcess::start(&[
        format!("--model_config_file={}", config.display()),
        "--max_num_load_retries=0".to_owned(),
    ]);
    Fixture { root, server }
}

#[tokio::test]
async fn tiny_requests_that_would_expand_to_gigabytes_are_refused_before_allocating() {
    let f = start_with_strings();
    let before = f.server.status_kib("VmHWM");
    let mut client = f.server.prediction_client().await;
    // 40 bytes of tensor: [2^26, 4] floats from one value would be 1 GiB.
    let floats = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: shape(&[67_108_864, 4]),
        float_val: vec![1.0],
        ..TensorProto::default()
    };
    let err = client.predict(request("versioned", "x", floats)).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "input 'x' would take 1073741824 bytes of memory, more than the 67108864 bytes a request's inputs may take together (--max_request_tensor_bytes)"
    );
    // One string broadcast to 2^28 elements: 2^28 separate strings.
    let strings = TensorProto {
        dtype: DataType::DtString as i32,
        tensor_shape: shape(&[268_435_456]),
        string_val: vec![b"boom".to_vec()],
        ..TensorProto::default()
    };
    let mut client = f.server.prediction_client().await;
    let err = client.predict(request("strings", "text", strings)).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("--max_request_tensor_bytes"), "{}", err.message());
    let grown = f.server.status_kib("VmHWM") - before;
    assert!(grown < 32 * MIB, "peak memory grew by {grown} KiB");
    still_serves(&f).await;
}

#[tokio::test]
async fn grpc_messages_that_decode_to_far_more_than_they_weigh_are_refused() {
    let f = start_with_strings();
    let before = f.server.status_kib("VmHWM");
    let mut client = f.server.prediction_client().await;
    // 300 000 map entries of a few bytes: each a whole TensorProto decoded.
    let flood = PredictRequest {
        model_spec: Some(spec("versioned", Choice::Latest)),
        inputs: (0..300_000).map(|i| (format!("k{i}"), TensorProto::default())).collect(),
        ..PredictRequest::default()
    };
    let err = client.predict(flood).await.expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("4 × --max_request_tensor_bytes"), "{}", err.message());
    // 4 million empty strings: 8 MB on the wire, a 24-byte Vec each.
    let empties = TensorProto {
        dtype: DataType::DtString as i32,
        tensor_shape: shape(&[4_000_000]),
        string_val: vec![Vec::new(); 4_000_000],
        ..TensorProto::default()
    };
    let err = client.predict(request("strings", "text", empties)).await.expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    // Larger than the receive limit (the tensor budget plus 1 MiB).
    let big = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: shape(&[70 << 18, 4]),
        tensor_content: vec![0; 70 << 20],
        ..TensorProto::default()
    };
    let mut client = f.server.prediction_client().await.max_encoding_message_size(usize::MAX);
    let err = client.predict(request("versioned", "x", big)).await.expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("grpc.max_receive_message_length"), "{}", err.message());
    let grown = f.server.status_kib("VmHWM") - before;
    assert!(grown < GROWTH_BOUND_KIB, "peak memory grew by {grown} KiB");
    still_serves(&f).await;
}

#[tokio::test]
async fn rest_bodies_are_bounded_before_and_while_parsing() {
    let f = start(&[]);
    let before = f.server.status_kib("VmHWM");
    // A model that does not exist: 404 before a byte of the (declared 50 MB) body.
    let started = std::time::Instant::now();
    let answer = raw_http(
        f.server.rest_port,
        b"POST /v1/models/nosuchmodel:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nConnection: close\r\n\r\n{\"instances\":",
        Duration::from_secs(10),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered without waiting for the body");
    // Ten million empty objects: the tree would be 16× the body and more.
    let flood = format!("{{\"instances\": [{}]}}", vec!["{}"; 10_000_000].join(","));
    let http = reqwest::Client::new();
    let response = http
        .post(f.server.rest_url("/v1/models/versioned:predict"))
        .body(flood)
        .send()
        .await
        .expect("REST");
    assert_eq!(response.status(), 400);
    let text = response.text().await.expect("body");
    assert!(text.contains("bytes of memory to parse (--max_request_tensor_bytes)"), "{text}");
    // Valid JSON whose tensor passes the budget.
    let rows = vec!["[0,0,0,0]"; 5_000_000].join(",");
    let response = http
        .post(f.server.rest_url("/v1/models/versioned:predict"))
        .body(format!("{{\"inputs\": [{rows}]}}"))
        .send()
        .await
        .expect("REST");
    assert_eq!(response.status(), 400);
    let text = response.text().await.expect("body");
    assert!(text.contains("--max_request_tensor_bytes"), "{text}");
    let grown = f.server.status_kib("VmHWM") - before;
    assert!(grown < GROWTH_BOUND_KIB, "peak memory grew by {grown} KiB");
    still_serves(&f).await;
}

#[tokio::test]
async fn raw_bytes_in_paths_and_absurd_deadlines_are_errors_not_panics() {
    let f = start(&[]);
    for path in
        [&b"/v1/models\xc3\xa9/x:predict"[..], b"/v1/models/m/versions\xc3\xa9", b"/v1/\xff\xfe"]
    {
        let mut request = b"POST ".to_vec();
        request.extend_from_slice(path);
        request.extend_from_slice(
            b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        );
        let answer = raw_http(f.server.rest_port, &request, Duration::from_secs(10)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 4"), "{:?}: {answer}", String::from_utf8_lossy(path));
    }
    // The longest grpc-timeout the spec allows (8 digits, in hours), and ones beyond it.
    let mut client = f.server.prediction_client().await;
    for timeout in ["99999999H", "18446744073709551615H", "0n"] {
        let mut request = tonic::Request::new(versioned_request("versioned", Choice::Version(1)));
        request.metadata_mut().insert("grpc-timeout", timeout.parse().expect("ascii"));
        match client.predict(request).await {
            Ok(answer) => assert_eq!(version_of(&answer.into_inner()), 1.0, "{timeout}"),
            Err(e) => assert!(
                matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled | Code::Internal),
                "{timeout}: {e:?}"
            ),
        }
    }
    let metrics = metrics_text(&f.server).await;
    assert_eq!(metric_sum(&metrics, "versa_handler_panics_total"), 0.0, "no handler panicked");
    still_serves(&f).await;
}

#[tokio::test]
async fn names_clients_invent_share_one_metric_series() {
    let f = start(&[]);
    let http = reqwest::Client::new();
    let mut client = f.server.prediction_client().await;
    for i in 0..150 {
        let name = format!("invented{i}");
        let _ = http
            .post(f.server.rest_url(&format!("/v1/models/{name}/labels/l{i}:classify")))
            .body("{}")
            .send()
            .await
            .expect("REST");
        let _ = http
            .post(f.server.rest_url(&format!("/v1/models/{name}:predict")))
            .body("{\"instances\": [[0, 0, 0, 0]]}")
            .send()
            .await
            .expect("REST");
        let _ = client.predict(versioned_request(&name, Choice::Label(&format!("l{i}")))).await;
    }
    let metrics = metrics_text(&f.server).await;
    assert!(!metrics.contains("invented"), "a series for an invented model name");
    assert!(!metrics.contains("label=\"l1"), "a series for an invented label");
    let unknown =
        metric_sum(&metrics, ":tensorflow:serving:request_count{model_name=\"__unknown__\"");
    assert_eq!(unknown, 450.0, "every request to an invented name is counted once");
}

#[tokio::test]
async fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").expect("write");
    let f = start(&[&format!("--model_service_token_file={}", token.display())]);
    let status_with = |t: &str| {
        let mut request = tonic::Request::new(versa_proto::serving::GetModelStatusRequest {
            model_spec: Some(spec("versioned", Choice::Latest)),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().expect("ascii"));
        request
    };
    let mut models = f.server.model_client().await;
    models.get_model_status(status_with("first-token")).await.expect("first token");
    // As Kubernetes does it: the new content replaces the file.
    let next = dir.path().join("token.new");
    std::fs::write(&next, "second-token").expect("write");
    std::fs::rename(&next, &token).expect("swap");
    versa_e2e::eventually("the rotated token to be accepted", Duration::from_millis(100), || {
        let mut models = models.clone();
        let request = status_with("second-token");
        async move { models.get_model_status(request).await.ok() }
    })
    .await;
    let old = models.get_model_status(status_with("first-token")).await.expect_err("old token");
    assert_eq!(old.code(), Code::Unauthenticated);
    assert!(f.server.log().iter().any(|l| l.contains("ModelService token changed")));
}

#[tokio::test]
async fn model_service_serves_on_its_own_port_with_grpc_off() {
    let root = tempfile::tempdir().expect("tempdir");
    versa_testmodels::write_example_repository(root.path()).expect("models");
    let (admin, rest) = (versa_e2e::free_port(), versa_e2e::free_port());
    let server = versa_e2e::ServerProcess::start_with_ports(
        &[
            "--port=0".to_owned(),
            format!("--rest_api_port={rest}"),
            format!("--model_service_port={admin}"),
            format!("--model_base_path={}/versioned", root.path().display()),
            "--model_name=versioned".to_owned(),
        ],
        admin,
        rest,
        &["Running gRPC ModelService at", "Exporting HTTP/REST API at"],
    );
    let mut models = versa_e2e::ModelClient::connect(format!("http://127.0.0.1:{admin}"))
        .await
        .expect("connect to ModelService");
    let status = models
        .get_model_status(versa_proto::serving::GetModelStatusRequest {
            model_spec: Some(spec("versioned", Choice::Latest)),
        })
        .await
        .expect("status");
    assert_eq!(status.into_inner().model_version_status.len(), 1);
    assert!(server.log().iter().any(|l| l.contains("PredictionService is off")));
}

#[tokio::test]
async fn a_request_whose_inputs_disagree_in_rows_fails_alone_with_batching_on() {
    let f = start(&["--enable_batching", "--batching_min_speedup=0"]);
    let pair = |a_rows: usize, b_rows: usize| PredictRequest {
        model_spec: Some(spec("pair", Choice::Latest)),
        inputs: [
            ("a".to_owned(), f32_tensor(&[a_rows as i64, 3], vec![1.0; a_rows * 3])),
            ("b".to_owned(), f32_tensor(&[b_rows as i64, 3], vec![2.0; b_rows * 3])),
        ]
        .into(),
        ..PredictRequest::default()
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut client = f.server.prediction_client().await;
        let body = if i % 10 == 3 { pair(2, 3) } else { pair(2, 2) };
        tasks.push(tokio::spawn(async move { (i, client.predict(body).await) }));
    }
    for t in tasks {
        let (i, outcome) = t.await.expect("task");
        match outcome {
            Ok(answer) => {
                assert_ne!(i % 10, 3, "a bad request was answered");
                assert_eq!(
                    answer.into_inner().outputs["sum"].float_val,
                    vec![3.0; 6],
                    "request {i}"
                );
            }
            Err(e) => {
                assert_eq!(i % 10, 3, "request {i} failed with a bad one: {e:?}");
                assert_eq!(e.code(), Code::InvalidArgument);
            }
        }
    }
    // No rows: empty outputs, answered alone.
    let mut client = f.server.prediction_client().await;
    let empty = client.predict(pair(0, 0)).await.expect("zero rows").into_inner();
    assert!(empty.outputs["sum"].float_val.is_empty());
}
