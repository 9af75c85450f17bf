//! The batcher with a real ONNX model (`y = x + version`) run by tract.

use super::*;
use versa_onnx::{ModelOptions, tvec};
use versa_proto::serving::BatchingParameters;

fn model(version: i64) -> (tempfile::TempDir, OnnxModel) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path =
        versa_testmodels::write_version(dir.path(), version, &versa_testmodels::versioned(version))
            .expect("write");
    let model = OnnxModel::load(&path, ModelOptions::default()).expect("load");
    (dir, model)
}

fn rows(n: usize, value: f32) -> TVec<TValue> {
    tvec![versa_onnx::convert::tensor_from_vec(&[n, 4], vec![value; n * 4]).into()]
}

fn first_values(out: &TVec<TValue>) -> Vec<f32> {
    let view = out[0].to_plain_array_view::<f32>().expect("f32");
    view.outer_iter().map(|row| row[0]).collect()
}

fn handle(version: i64) -> (tempfile::TempDir, ServableHandle<OnnxModel>) {
    let (dir, model) = model(version);
    (dir, ServableHandle::detached(ServableId::new("m", version), model))
}

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new())
}

fn options(max: usize, timeout_ms: u64) -> BatchOptions {
    BatchOptions {
        max_batch_size: max,
        batch_timeout: Duration::from_millis(timeout_ms),
        max_enqueued_batches: 4,
        num_batch_threads: 1,
        allowed_batch_sizes: Vec::new(),
    }
}

#[tokio::test]
async fn concurrent_requests_share_a_run_and_get_their_own_rows() {
    let (_dir, h) = handle(5);
    let metrics = metrics();
    let batcher = Batcher::new(options(64, 50), Arc::clone(&metrics));
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let (b, h) = (batcher.clone(), h.clone());
        let n = usize::from(i % 3) + 1;
        tasks.push(tokio::spawn(async move {
            let out = b.run(h, rows(n, f32::from(i)), None).await.expect("run");
            (i, n, first_values(&out))
        }));
    }
    for task in tasks {
        let (i, n, values) = task.await.expect("task");
        assert_eq!(values, vec![f32::from(i) + 5.0; n], "request {i} got its own rows back");
    }
    // 20 requests: were any two merged, there were fewer than 20 runs.
    let runs = metrics.batch_tasks.get_sample_count();
    assert_eq!(metrics.batch_tasks.get_sample_sum(), 20.0, "every request ran in some batch");
    assert!(runs < 20, "requests were merged: {runs} runs for 20 requests");
}

#[tokio::test]
async fn versions_never_share_a_batch() {
    let (_d1, v1) = handle(1);
    let (_d2, v2) = handle(2);
    let batcher = Batcher::new(options(64, 30), metrics());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let b = batcher.clone();
        let (h, expect) = if i % 2 == 0 { (v1.clone(), 1.0) } else { (v2.clone(), 2.0) };
        tasks.push(tokio::spawn(async move {
            let out = b.run(h, rows(2, 0.0), None).await.expect("run");
            assert_eq!(first_values(&out), vec![expect; 2]);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

#[tokio::test]
async fn oversized_requests_and_full_queues_are_refused_as_upstream() {
    let (_dir, h) = handle(1);
    let batcher = Batcher::new(options(4, 0), metrics());
    let err = batcher.run(h.clone(), rows(5, 0.0), None).await.expect_err("too big");
    assert_eq!(err.code, Code::InvalidArgument);
    assert_eq!(err.message, "Task size 5 is larger than maximum input batch size 4");
    // Capacity is max_enqueued_batches × max_batch_size = 16 tasks; hold the
    // only batch thread so nothing drains, then overfill.
    let held = batcher.pool.slot().await;
    let mut waiting = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let (b, h) = (batcher.clone(), h.clone());
        waiting.push(tokio::spawn(async move { b.run(h, rows(1, 0.0), None).await }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(held);
    for w in waiting {
        match w.await.expect("task") {
            Ok(out) => assert_eq!(first_values(&out), vec![1.0]),
            Err(e) => {
                assert_eq!(e.code, Code::Unavailable);
                assert_eq!(
                    e.message,
                    "The batch scheduling queue to which this task was submitted is full"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "an overfull queue refuses");
}

#[tokio::test]
async fn batches_are_padded_to_allowed_sizes() {
    let (_dir, h) = handle(3);
    let metrics = metrics();
    let padded = BatchOptions { allowed_batch_sizes: vec![8, 16], ..options(16, 0) };
    let batcher = Batcher::new(padded, Arc::clone(&metrics));
    let out = batcher.run(h.clone(), rows(3, 1.0), None).await.expect("run");
    assert_eq!(first_values(&out), vec![4.0; 3], "padding rows are dropped");
    assert_eq!(metrics.batch_rows.get_sample_sum(), 8.0, "ran at the padded size");
}

/// `two_in_two_out`: `sum = a + b`, `product = a * b`, 3 columns each.
fn two_input_handle() -> (tempfile::TempDir, ServableHandle<OnnxModel>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = versa_testmodels::two_in_two_out();
    let path = versa_testmodels::write_version(dir.path(), 1, &bytes).expect("write");
    let model = OnnxModel::load(&path, ModelOptions::default()).expect("load");
    (dir, ServableHandle::detached(ServableId::new("pair", 1), model))
}

fn pair(a_rows: usize, b_rows: usize) -> TVec<TValue> {
    tvec![
        versa_onnx::convert::tensor_from_vec(&[a_rows, 3], vec![1.0f32; a_rows * 3]).into(),
        versa_onnx::convert::tensor_from_vec(&[b_rows, 3], vec![2.0f32; b_rows * 3]).into(),
    ]
}

#[tokio::test]
async fn a_request_whose_inputs_disagree_in_rows_fails_alone() {
    let (_dir, h) = two_input_handle();
    let batcher = Batcher::new(options(64, 30), metrics());
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (b, h) = (batcher.clone(), h.clone());
        let inputs = if i == 5 { pair(2, 3) } else { pair(2, 2) };
        tasks.push(tokio::spawn(async move { (i, b.run(h, inputs, None).await) }));
    }
    for t in tasks {
        let (i, outcome) = t.await.expect("task");
        match outcome {
            Ok(out) => {
                assert_ne!(i, 5);
                let view = out[0].to_plain_array_view::<f32>().expect("f32");
                assert!(view.iter().all(|v| *v == 3.0), "request {i}");
            }
            Err(e) => {
                assert_eq!(i, 5, "only the bad request fails: {e:?}");
                assert_eq!(e.code, Code::InvalidArgument);
                assert_eq!(
                    e.message,
                    "inputs disagree on the batch size: input 0 has 2 rows, input 1 has 3"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_batch_that_fails_together_is_run_one_request_at_a_time() {
    let (_dir, h) = handle(1);
    let batch = vec![
        // Rows that cannot be stacked with the others (3 columns, not 4):
        // the merged run fails, each request then runs alone.
        (tvec![versa_onnx::convert::tensor_from_vec(&[1, 3], vec![0.0f32; 3]).into()], false),
        (rows(2, 1.0), true),
    ];
    let mut replies = Vec::new();
    let tasks = batch
        .into_iter()
        .map(|(inputs, _)| {
            let (reply, answer) = oneshot::channel();
            replies.push(answer);
            Task {
                handle: h.clone(),
                rows: rows_of(&inputs).expect("rows"),
                inputs,
                reply,
                _held: None,
            }
        })
        .collect();
    run_batch(tasks, 4);
    let bad = replies.remove(0).await.expect("reply");
    assert!(bad.is_err(), "the malformed request fails");
    let good = replies.remove(0).await.expect("reply").expect("the other one is answered");
    assert_eq!(first_values(&good), vec![2.0; 2]);
}

#[tokio::test]
async fn a_request_with_no_rows_gets_empty_outputs_without_joining_a_batch() {
    let (_dir, h) = handle(2);
    let metrics = metrics();
    let batcher = Batcher::new(options(8, 10), Arc::clone(&metrics));
    let out = batcher.run(h, rows(0, 0.0), None).await.expect("empty batch");
    assert_eq!(out[0].shape(), &[0, 4]);
    assert_eq!(metrics.batch_tasks.get_sample_count(), 0, "it joined no batch");
}

#[test]
fn parameters_follow_upstream_defaults_and_checks() {
    let defaults = BatchOptions::from_parameters(&BatchingParameters::default()).expect("defaults");
    assert_eq!((defaults.max_batch_size, defaults.max_enqueued_batches), (1000, 10));
    assert_eq!(defaults.batch_timeout, Duration::ZERO);
    let bad = BatchingParameters {
        max_batch_size: Some(32),
        allowed_batch_sizes: vec![8, 16],
        ..BatchingParameters::default()
    };
    assert_eq!(
        BatchOptions::from_parameters(&bad).expect_err("mismatch"),
        "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 16; expected 32"
    );
}

#[test]
fn only_models_with_a_batch_dimension_everywhere_are_batched() {
    let (_dir, m) = model(1);
    assert!(batchable(&m));
}

#[tokio::test]
async fn requests_whose_callers_went_away_are_not_run() {
    let (_dir, h) = handle(1);
    let metrics = metrics();
    let batcher = Batcher::new(options(64, 0), Arc::clone(&metrics));
    // Hold the only batch thread so everything queues.
    let held = batcher.pool.slot().await;
    let mut gone = Vec::new();
    for _ in 0..4 {
        let (b, h) = (batcher.clone(), h.clone());
        gone.push(tokio::spawn(async move { b.run(h, rows(1, 0.0), None).await }));
    }
    let (b, h2) = (batcher.clone(), h.clone());
    let kept = tokio::spawn(async move { b.run(h2, rows(2, 0.0), None).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    for task in &gone {
        task.abort();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(held);
    let out = kept.await.expect("joins").expect("the caller still waiting is answered");
    assert_eq!(first_values(&out), vec![1.0; 2]);
    assert_eq!(metrics.batch_tasks.get_sample_sum(), 1.0, "only the request still awaited ran");
}

/// Lateness of `n` requests sent one after another, each the only one
/// queued, sorted.
async fn lone_request_latencies(batcher: &Batcher, h: &ServableHandle<OnnxModel>) -> Vec<Duration> {
    // The first request also starts the queue's worker: not counted.
    batcher.run(h.clone(), rows(1, 0.0), None).await.expect("run");
    let mut took = Vec::new();
    for _ in 0..40 {
        let started = std::time::Instant::now();
        batcher.run(h.clone(), rows(1, 0.0), None).await.expect("run");
        took.push(started.elapsed());
    }
    took.sort();
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_zero_timeout_a_lone_request_runs_at_once_not_at_the_next_timer_tick() {
    let (_dir, h) = handle(1);
    let batcher = Batcher::new(options(8, 0), metrics());
    let took = lone_request_latencies(&batcher, &h).await;
    // Waiting for tokio's millisecond timer made every one of these take
    // about 1 ms; the model itself runs in microseconds.
    let quartile = took[took.len() / 4];
    assert!(quartile < Duration::from_micros(400), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_waits_the_batch_timeout_to_tens_of_microseconds() {
    let (_dir, h) = handle(1);
    let timeout = Duration::from_micros(300);
    let mut o = options(8, 0);
    o.batch_timeout = timeout;
    let batcher = Batcher::new(o, metrics());
    let took = lone_request_latencies(&batcher, &h).await;
    assert!(took[0] >= timeout, "a batch ran before its timeout: {took:?}");
    // tokio's timer rounds 300 µs up to the next millisecond tick, and each
    // request starts just after the tick that ended the one before: every
    // one of them took about 1 ms. The fastest is what the scheduler can
    // do; a loaded machine delays the rest (the CI saw a quartile of 830 µs).
    assert!(took[0] < timeout + Duration::from_micros(400), "{took:?}");
}
