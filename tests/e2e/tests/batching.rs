//! `--enable_batching` against the real binary: concurrent requests merged
//! (fewer runs than requests) and answered correctly over gRPC and REST,
//! upstream's errors for oversized requests,
//! bad batching files refused before any port is bound.

mod common;

use common::{start, version_of};
use versa_e2e::server::Started;
use versa_e2e::{Choice, ServerProcess, f32_tensor, spec};
use versa_proto::serving::PredictRequest;

fn batching_file(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("batching.config");
    std::fs::write(&path, text).expect("write");
    format!("--batching_parameters_file={}", path.display())
}

fn request(rows: usize, value: f32) -> PredictRequest {
    PredictRequest {
        model_spec: Some(spec("versioned", Choice::Version(2))),
        inputs: [("x".to_owned(), f32_tensor(&[rows as i64, 4], vec![value; rows * 4]))].into(),
        ..PredictRequest::default()
    }
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_answered_each_with_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = batching_file(
        dir.path(),
        "max_batch_size { value: 8 } batch_timeout_micros { value: 2000 } max_enqueued_batches { value: 100 }",
    );
    // Every batchable model batched, whatever its measured gain.
    let f = start(&["--enable_batching", &file, "--batching_min_speedup=0"]);
    let mut tasks = Vec::new();
    for i in 0..64u16 {
        let mut client = f.server.prediction_client().await;
        tasks.push(tokio::spawn(async move {
            let rows = usize::from(i % 3) + 1;
            let response =
                client.predict(request(rows, f32::from(i))).await.expect("predict").into_inner();
            let y = &response.outputs["y"];
            assert_eq!(y.float_val.len(), rows * 4, "request {i}: its own rows only");
            assert!(
                y.float_val.iter().all(|v| *v == f32::from(i) + 2.0),
                "request {i}: {:?}",
                y.float_val
            );
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // Answers alone would pass with merging broken: the runs must be fewer
    // than the requests.
    let metrics = versa_e2e::metrics_text(&f.server).await;
    let requests = versa_e2e::metric_sum(&metrics, "versa_batch_requests_sum");
    let runs = versa_e2e::metric_sum(&metrics, "versa_batch_requests_count");
    assert_eq!(requests, 64.0, "every request ran in a batch");
    assert!(runs < requests, "requests were merged: {runs} runs for {requests} requests");
    // REST goes through the same batcher.
    let http = reqwest::Client::new();
    let body: serde_json::Value = http
        .post(f.server.rest_url("/v1/models/versioned/versions/1:predict"))
        .body(r#"{"instances": [[1, 1, 1, 1], [2, 2, 2, 2]]}"#)
        .send()
        .await
        .expect("REST")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body["predictions"],
        serde_json::json!([[2.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0]])
    );

    // Larger than max_batch_size: upstream's error and codes.
    let mut client = f.server.prediction_client().await;
    let err = client.predict(request(9, 0.0)).await.expect_err("too big");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "Task size 9 is larger than maximum input batch size 8");
    let status = http
        .post(f.server.rest_url("/v1/models/versioned:predict"))
        .body(format!(r#"{{"instances": {}}}"#, serde_json::json!(vec![[0; 4]; 9])))
        .send()
        .await
        .expect("REST")
        .status();
    assert_eq!(status, 400);
    let one = client.predict(request(1, 0.0)).await.expect("predict").into_inner();
    assert_eq!(version_of(&one), 2.0);
}

#[tokio::test]
async fn batching_is_chosen_per_model_by_the_speedup_measured_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = batching_file(dir.path(), "max_batch_size { value: 8 }");
    // No model runs a batch 1000 times cheaper per row: nothing is batched,
    // so a request larger than max_batch_size is simply run.
    let unbatched = start(&["--enable_batching", &file, "--batching_min_speedup=1000"]);
    let mut client = unbatched.server.prediction_client().await;
    let response = client.predict(request(9, 1.0)).await.expect("not batched").into_inner();
    assert_eq!(response.outputs["y"].float_val, vec![3.0; 9 * 4]);
    assert!(
        unbatched
            .server
            .log()
            .iter()
            .any(|l| l.contains("cheaper per row") && l.contains("rows=8")),
        "the measured speedup is logged"
    );
    // The same model with a bar it clears (any batch of 8 beats 0.01×): batched.
    let batched = start(&["--enable_batching", &file, "--batching_min_speedup=0.01"]);
    let mut client = batched.server.prediction_client().await;
    let err = client.predict(request(9, 1.0)).await.expect_err("batched");
    assert_eq!(err.message(), "Task size 9 is larger than maximum input batch size 8");
}

#[test]
fn bad_batching_parameters_stop_the_server_before_it_binds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("models");
    versa_testmodels::write_example_repository(root.path()).expect("models");
    let base = format!("--model_base_path={}/versioned", root.path().display());
    for (text, expected) in [
        (
            "max_batch_size { value: 32 } allowed_batch_sizes: 8 allowed_batch_sizes: 16",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 16; expected 32",
        ),
        ("max_batch_size { value: 0 }", "max_batch_size must be positive, got 0"),
        ("max_batch_size: {", "invalid protobuf text format"),
    ] {
        let file = batching_file(dir.path(), text);
        let args = vec![
            "--model_name=versioned".to_owned(),
            base.clone(),
            "--enable_batching".into(),
            file,
        ];
        match ServerProcess::try_start(&args) {
            Started::Exited { code, log } => {
                assert_eq!(code, Some(1), "{log:?}");
                assert!(log.iter().any(|l| l.contains(expected)), "{expected}: {log:?}");
            }
            Started::Serving(_) => panic!("{text} was accepted"),
        }
    }
}
