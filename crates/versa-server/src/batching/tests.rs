//! The batcher with a real ONNX model (`y = x + version`) run by tract.

use super::*;
use versa_onnx::{ModelOptions, tvec};

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
    let batcher = Batcher::new(options(64, 50));
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let (b, h) = (batcher.clone(), h.clone());
        let n = usize::from(i % 3) + 1;
        tasks.push(tokio::spawn(async move {
            let out = b.run(h, rows(n, f32::from(i))).await.expect("run");
            (i, n, first_values(&out))
        }));
    }
    for task in tasks {
        let (i, n, values) = task.await.expect("task");
        assert_eq!(values, vec![f32::from(i) + 5.0; n], "request {i} got its own rows back");
    }
    let plans = h.cached_batch_sizes();
    assert!(plans.iter().any(|b| *b > 3), "requests were merged: plans for {plans:?}");
}

#[tokio::test]
async fn versions_never_share_a_batch() {
    let (_d1, v1) = handle(1);
    let (_d2, v2) = handle(2);
    let batcher = Batcher::new(options(64, 30));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let b = batcher.clone();
        let (h, expect) = if i % 2 == 0 { (v1.clone(), 1.0) } else { (v2.clone(), 2.0) };
        tasks.push(tokio::spawn(async move {
            let out = b.run(h, rows(2, 0.0)).await.expect("run");
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
    let batcher = Batcher::new(options(4, 0));
    let err = batcher.run(h.clone(), rows(5, 0.0)).await.expect_err("too big");
    assert_eq!(err.code, Code::InvalidArgument);
    assert_eq!(err.message, "Task size 5 is larger than maximum input batch size 4");
    // Capacity is max_enqueued_batches × max_batch_size = 16 tasks; hold the
    // only batch thread so nothing drains, then overfill.
    let held = batcher.pool.slot().await;
    let mut waiting = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let (b, h) = (batcher.clone(), h.clone());
        waiting.push(tokio::spawn(async move { b.run(h, rows(1, 0.0)).await }));
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
    let batcher = Batcher::new(BatchOptions { allowed_batch_sizes: vec![8, 16], ..options(16, 0) });
    let out = batcher.run(h.clone(), rows(3, 1.0)).await.expect("run");
    assert_eq!(first_values(&out), vec![4.0; 3], "padding rows are dropped");
    assert!(h.cached_batch_sizes().contains(&8), "ran at the padded size");
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
