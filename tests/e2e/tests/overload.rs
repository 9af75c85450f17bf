//! Overload against the real binary: more requests than it may hold are shed
//! at once (RESOURCE_EXHAUSTED / 429, counted), never queued without bound;
//! connections beyond the bound are closed; clients that send too slowly are
//! cut off; below capacity, every valid request succeeds.

use std::time::Duration;
use tonic::Code;
use versa_e2e::{Choice, ServerProcess, f32_tensor, metric_sum, metrics_text, raw_http, spec};
use versa_proto::serving::PredictRequest;

/// A model slow enough that a burst piles up: 512 → 2048 → 2048 → 10.
fn slow_server(extra: &[&str]) -> (tempfile::TempDir, ServerProcess) {
    let root = tempfile::tempdir().expect("tempdir");
    let bytes = versa_testmodels::mlp(&[512, 2048, 2048, 10]);
    versa_testmodels::write_version(&root.path().join("mlp"), 1, &bytes).expect("model");
    let mut args = vec![
        format!("--model_base_path={}/mlp", root.path().display()),
        "--model_name=mlp".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let server = ServerProcess::start(&args);
    (root, server)
}

fn mlp_request(rows: usize) -> PredictRequest {
    PredictRequest {
        model_spec: Some(spec("mlp", Choice::Latest)),
        inputs: [("input".to_owned(), f32_tensor(&[rows as i64, 512], vec![0.5; rows * 512]))]
            .into(),
        ..PredictRequest::default()
    }
}

#[tokio::test]
async fn a_burst_beyond_the_bounds_is_shed_at_once_and_below_them_nothing_fails() {
    let (_root, server) = slow_server(&[
        "--num_inference_threads=1",
        "--max_queued_inferences=4",
        "--max_concurrent_requests=24",
        "--inline_inference_max_micros=0",
    ]);
    let input = server.log().iter().any(|l| l.contains("loaded"));
    assert!(input, "the model loaded");
    // 96 at once, each 16 rows: far more than one thread and a queue of 4 hold.
    let mut tasks = Vec::new();
    for _ in 0..96 {
        let mut client = server.prediction_client().await;
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            (client.predict(mlp_request(16)).await, started.elapsed())
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        let (outcome, took) = t.await.expect("task");
        match outcome {
            Ok(answer) => {
                assert_eq!(answer.into_inner().outputs["logits"].float_val.len(), 16 * 10);
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    e.message().contains("--max_queued_inferences")
                        || e.message().contains("--max_concurrent_requests"),
                    "{}",
                    e.message()
                );
                assert!(took < Duration::from_secs(5), "shed at once, not after waiting: {took:?}");
                shed += 1;
            }
        }
    }
    assert!(ok >= 5, "the thread and the queue were served: {ok}");
    assert!(shed > 0, "a burst beyond the bounds is shed");
    // REST is bounded by the same queue.
    let http = reqwest::Client::new();
    let body = format!("{{\"inputs\": {}}}", serde_json::json!(vec![vec![0.5; 512]; 16]));
    let mut rest = Vec::new();
    for _ in 0..48 {
        let (http, url, body) =
            (http.clone(), server.rest_url("/v1/models/mlp:predict"), body.clone());
        rest.push(tokio::spawn(async move {
            http.post(url).body(body).send().await.expect("REST").status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for r in rest {
        statuses.push(r.await.expect("task"));
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429), "REST sheds with 429: {statuses:?}");
    let metrics = metrics_text(&server).await;
    assert!(metric_sum(&metrics, "versa_shed_requests_total") >= f64::from(shed));
    assert_eq!(metric_sum(&metrics, "versa_inflight_requests"), 0.0, "every place came back");
    assert_eq!(metric_sum(&metrics, "versa_inflight_request_bytes"), 0.0, "every byte came back");
    // Below capacity (one at a time): nothing fails.
    let mut client = server.prediction_client().await;
    for _ in 0..20 {
        client.predict(mlp_request(16)).await.expect("below capacity, every request succeeds");
    }
}

#[tokio::test]
async fn requests_holding_more_bytes_than_the_server_allows_are_shed() {
    // 16 MiB in flight in all. Each request holds 7.5 MiB at its peak: its
    // 1.5 MiB message as it arrives, what decoding its 393,216 packed floats
    // may take (a doubling buffer: 4.5 MiB reserved) and its 1.5 MiB input
    // tensor while that is built.
    let (_root, server) = slow_server(&[
        "--max_inflight_request_bytes=16777216",
        "--num_inference_threads=1",
        "--inline_inference_max_micros=0",
    ]);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = server.prediction_client().await;
        tasks.push(tokio::spawn(async move { client.predict(mlp_request(768)).await }));
    }
    let mut shed = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("--max_inflight_request_bytes"), "{}", e.message());
                shed += 1;
            }
        }
    }
    assert!(shed > 0, "requests beyond the byte bound are shed");
    let metrics = metrics_text(&server).await;
    assert!(
        metric_sum(&metrics, "versa_shed_requests_total{api=\"grpc\",reason=\"inflight_bytes\"}")
            > 0.0,
        "{metrics}"
    );
    let mut client = server.prediction_client().await;
    client.predict(mlp_request(768)).await.expect("alone, it fits");
}

#[tokio::test]
async fn connections_beyond_the_bound_are_closed_and_counted() {
    let (_root, server) = slow_server(&["--max_connections=4"]);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", server.rest_port)).await.expect("connect"),
        );
    }
    // Let the server accept the four before more arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut closed = 0;
    for _ in 0..6 {
        let answer = raw_http(
            server.rest_port,
            b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        if answer.is_empty() {
            closed += 1;
        }
    }
    assert_eq!(closed, 6, "every connection beyond the bound is closed unanswered");
    drop(held);
    // Until the server has seen the four close, these tries are refused too
    // (and counted): count them.
    let refused_tries = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let metrics =
        versa_e2e::eventually("a connection place to free", Duration::from_millis(50), || {
            let url = server.rest_url("/metrics");
            let refused_tries = std::sync::Arc::clone(&refused_tries);
            async move {
                let text = async { reqwest::get(url).await.ok()?.text().await.ok() }.await;
                if text.is_none() {
                    refused_tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                text
            }
        })
        .await;
    let expected = 6 + refused_tries.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        metric_sum(&metrics, "versa_refused_connections_total{port=\"REST port\"}"),
        f64::from(expected)
    );
}

#[tokio::test]
async fn clients_too_slow_to_send_their_request_are_cut_off() {
    let (_root, server) = slow_server(&["--request_read_timeout_seconds=1"]);
    // Connections that never say a word, on either port (the gRPC port
    // greets them with its HTTP/2 settings all the same).
    for port in [server.grpc_port, server.rest_port] {
        let started = std::time::Instant::now();
        let _ = raw_http(port, b"", Duration::from_secs(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "silent socket held {:?}",
            started.elapsed()
        );
    }
    // Headers that never end.
    let started = std::time::Instant::now();
    let answer = raw_http(
        server.rest_port,
        b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(20),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "held {:?}", started.elapsed());
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A body that never arrives.
    let started = std::time::Instant::now();
    let answer = raw_http(
        server.rest_port,
        b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"inputs\":",
        Duration::from_secs(20),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "held {:?}", started.elapsed());
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--request_read_timeout_seconds"), "{answer}");
}

#[tokio::test]
async fn slow_or_absent_bodies_hold_neither_places_nor_the_byte_budget() {
    let (_root, server) = slow_server(&[
        "--max_concurrent_requests=2",
        "--max_inflight_request_bytes=8388608",
        "--rest_api_max_body_bytes=268435456",
    ]);
    use tokio::io::AsyncWriteExt as _;
    let mut held = Vec::new();
    // Four bodies that never finish, one declaring 200 MB it never sends.
    for declared in [200_000_000u64, 1000, 1000, 1000] {
        let mut stream =
            tokio::net::TcpStream::connect(("127.0.0.1", server.rest_port)).await.expect("connect");
        let head = format!(
            "POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n{{\"inputs\":"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = metrics_text(&server).await;
    assert_eq!(
        metric_sum(&metrics, "versa_inflight_requests "),
        0.0,
        "no place is held by a body in transit"
    );
    assert!(
        metric_sum(&metrics, "versa_inflight_request_bytes") < 1_000_000.0,
        "only what arrived is held"
    );
    // Real requests go through meanwhile.
    let mut client = server.prediction_client().await;
    for _ in 0..4 {
        client.predict(mlp_request(4)).await.expect("served while slow bodies dawdle");
    }
    drop(held);
}

#[tokio::test]
async fn what_a_message_takes_once_decoded_counts_against_the_byte_budget() {
    // 32 MiB in flight; a message of a million empty strings is 2 MB on the
    // wire and 72 MB reserved for decoding.
    let (_root, server) = slow_server(&["--max_inflight_request_bytes=33554432"]);
    let empties = versa_proto::tensorflow::TensorProto {
        dtype: versa_proto::tensorflow::DataType::DtString as i32,
        string_val: vec![Vec::new(); 1_000_000],
        ..Default::default()
    };
    let request = PredictRequest {
        model_spec: Some(spec("mlp", Choice::Latest)),
        inputs: [("input".to_owned(), empties)].into(),
        ..PredictRequest::default()
    };
    let mut client = server.prediction_client().await;
    let err = client.predict(request).await.expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("--max_inflight_request_bytes"), "{}", err.message());
    client.predict(mlp_request(4)).await.expect("still serving");
}
