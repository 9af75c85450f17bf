//! Raw tract in-process: the floor every server figure is compared with.

use crate::stats::Stats;
use crate::workload::Workload;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use versa_onnx::{IntoTValue, ModelOptions, OnnxModel, TVec, Tensor};

fn load(dir: &Path) -> anyhow::Result<OnnxModel> {
    OnnxModel::load(dir, ModelOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn run_once(model: &OnnxModel, input: &Tensor) -> anyhow::Result<()> {
    model
        .run(TVec::from_iter([input.clone().into_tvalue()]))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Batch-1 runs on one thread, one after another.
pub(crate) fn sequential(
    dir: &Path,
    w: &Workload,
    requests: usize,
    limit: Duration,
) -> anyhow::Result<Stats> {
    let model = load(dir)?;
    let input = w.tensor();
    for _ in 0..10 {
        run_once(&model, &input)?;
    }
    let mut latencies = Vec::with_capacity(requests);
    let started = Instant::now();
    while latencies.len() < requests && started.elapsed() < limit {
        let t = Instant::now();
        run_once(&model, &input)?;
        latencies.push(t.elapsed());
    }
    Ok(Stats::new(latencies, 0, started.elapsed()))
}

/// Batch-1 runs on every core at once (one thread per core): the most
/// requests per second the model allows on this machine.
pub(crate) fn all_cores(
    dir: &Path,
    w: &Workload,
    requests: usize,
    limit: Duration,
) -> anyhow::Result<f64> {
    let model = Arc::new(load(dir)?);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let input = w.tensor();
    run_once(&model, &input)?;
    let started = Instant::now();
    let done: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (model, input) = (Arc::clone(&model), input.clone());
                scope.spawn(move || {
                    let mut n = 0;
                    while n < requests / threads && started.elapsed() < limit {
                        if run_once(&model, &input).is_err() {
                            break;
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Time per sample when `batch` samples run as one batch (median of a few runs).
pub(crate) fn per_sample_at_batch(
    dir: &Path,
    w: &Workload,
    batch: usize,
) -> anyhow::Result<Duration> {
    let model = load(dir)?;
    let shape: Vec<usize> = std::iter::once(batch).chain(w.sample_shape.iter().copied()).collect();
    let values = vec![0.5f32; batch * w.sample_len()];
    let input = versa_onnx::convert::tensor_from_vec(&shape, values);
    run_once(&model, &input)?;
    let mut times: Vec<Duration> = Vec::new();
    let started = Instant::now();
    while times.len() < 50 && (times.len() < 3 || started.elapsed() < Duration::from_secs(5)) {
        let t = Instant::now();
        run_once(&model, &input)?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    Ok(times[times.len() / 2] / batch as u32)
}
