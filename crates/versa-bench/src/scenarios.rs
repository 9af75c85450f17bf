//! What `versa-bench` measures: throughput and latency against raw tract,
//! latency while a version swaps under load, memory during swaps.

use crate::load::{self, Bounds, GrpcPredict, RestPredict};
use crate::raw;
use crate::server::{Memory, Server, ServerOptions};
use crate::stats::{self, Stats, us};
use crate::workload::Workload;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Settings shared by every scenario.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) workload: Workload,
    pub(crate) server: PathBuf,
    pub(crate) concurrency: usize,
    pub(crate) requests: usize,
    pub(crate) limit: Duration,
    pub(crate) batching: usize,
    pub(crate) server_flags: Vec<String>,
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Raw tract, then gRPC Predict and REST predict against the server.
pub(crate) async fn throughput(setup: &Setup) -> anyhow::Result<()> {
    let w = &setup.workload;
    let root = tempfile::tempdir()?;
    let base = root.path().join("bench");
    let dir = versa_testmodels::write_version(&base, 1, &w.bytes)?;

    let raw = raw::sequential(&dir, w, setup.requests, setup.limit)?;
    let raw_all_cores = raw::all_cores(&dir, w, setup.requests, setup.limit)?;
    let batch_cost = match setup.batching {
        0 => None,
        n => Some(raw::per_sample_at_batch(&dir, w, n)?),
    };
    let options = ServerOptions {
        batching: setup.batching,
        extra: setup.server_flags.clone(),
        ..ServerOptions::default()
    };
    let server = Server::start(&setup.server, &base, &options)?;

    let bounds = Bounds::new(setup.concurrency, setup.requests, setup.limit);
    let (grpc, grpc_cpu) =
        measured(&server, &bounds, GrpcPredict::connect(server.grpc_url(), w).await?).await?;
    let (rest, rest_cpu) = measured(&server, &bounds, RestPredict::new(server.rest, w)).await?;
    let floor_bounds = Bounds::new(1, setup.requests.min(2000), setup.limit);
    let (grpc_floor, grpc_floor_cpu) =
        measured(&server, &floor_bounds, load::GrpcHealth::connect(server.grpc_url()).await?)
            .await?;
    let (rest_floor, rest_floor_cpu) =
        measured(&server, &floor_bounds, load::RestLive::new(server.rest)).await?;

    let raw_p50 = raw.pct(0.5);
    println!(
        "model: {} · concurrency: {} · cores: {} · batching: {}",
        w.name,
        setup.concurrency,
        cores(),
        if setup.batching > 0 {
            format!("max_batch_size {}", setup.batching)
        } else {
            "off".into()
        }
    );
    println!(
        "raw tract on every core at once, batch 1: {raw_all_cores:.0} req/s ({:.0}% of it served over gRPC, {:.0}% over REST)",
        100.0 * grpc.rps() / raw_all_cores,
        100.0 * rest.rps() / raw_all_cores
    );
    if let Some(cost) = batch_cost {
        println!(
            "raw tract per sample: batch 1 {:.0} µs, batch {} {:.0} µs ({:.2}× of batch 1)",
            us(raw_p50),
            setup.batching,
            us(cost),
            us(cost) / us(raw_p50)
        );
    }
    println!();
    println!("{}", stats::HEADER);
    println!("{}", stats::row("raw tract, in-process, batch 1", &raw, raw_p50));
    println!("{}", stats::row("gRPC Predict", &grpc, raw_p50));
    println!("{}", stats::row("REST :predict (instances)", &rest, raw_p50));
    println!(
        "{}",
        stats::row("floor: gRPC health Check (no model), concurrency 1", &grpc_floor, raw_p50)
    );
    println!(
        "{}",
        stats::row("floor: REST GET /live (no model), concurrency 1", &rest_floor, raw_p50)
    );
    println!();
    println!(
        "server CPU per request (user + system, all threads): gRPC Predict {:.0} µs · REST predict {:.0} µs · gRPC health {:.0} µs · REST /live {:.0} µs",
        us(grpc_cpu),
        us(rest_cpu),
        us(grpc_floor_cpu),
        us(rest_floor_cpu)
    );
    Ok(())
}

/// Warms up, runs the load, and returns its statistics with the server's CPU
/// time per request.
pub(crate) async fn measured<C: load::Call>(
    server: &Server,
    bounds: &Bounds,
    call: C,
) -> anyhow::Result<(Stats, Duration)> {
    load::warm_up(&call).await;
    let cpu_before = server.cpu_time()?;
    let (samples, elapsed) = load::run(bounds, call, Instant::now()).await;
    let cpu = server.cpu_time()?.saturating_sub(cpu_before);
    let stats = load::stats(&samples, elapsed);
    let per_request = cpu / (stats.count + stats.failed).max(1) as u32;
    Ok((stats, per_request))
}

/// gRPC load the whole time; after a steady phase, versions 2, 3, … are
/// published one after another, each taking over (AvailabilityPreserving:
/// loaded, then the previous one unloaded). Latency of requests started
/// while a swap was under way, pooled over every swap, against the rest.
pub(crate) async fn swap(setup: &Setup, steady: Duration, swaps: usize) -> anyhow::Result<()> {
    let w = &setup.workload;
    let root = tempfile::tempdir()?;
    let base = root.path().join("bench");
    versa_testmodels::write_version(&base, 1, &w.bytes)?;
    let options = ServerOptions {
        batching: setup.batching,
        transition_policy: "availability_preserving".into(),
        extra: setup.server_flags.clone(),
        ..ServerOptions::default()
    };
    let server = Server::start(&setup.server, &base, &options)?;
    let call = GrpcPredict::connect(server.grpc_url(), w).await?;
    load::warm_up(&call).await;

    let bounds = Bounds::new(setup.concurrency, usize::MAX, steady * 2 + setup.limit * 2);
    let stop = std::sync::Arc::clone(&bounds.stop);
    let origin = Instant::now();
    let running = tokio::spawn(async move { load::run(&bounds, call, origin).await });
    let mut windows = Vec::new();
    let outcome: anyhow::Result<()> = async {
        tokio::time::sleep(steady).await;
        for version in 2..2 + swaps as i64 {
            versa_testmodels::publish_version(&base, version, &w.bytes)?;
            // A swap starts when the server has seen the new version (the
            // source polls the base path once a second) and ends when the
            // previous one is gone.
            server.wait_seen(version, setup.limit).await?;
            let from = origin.elapsed();
            server.wait_only(version, setup.limit).await?;
            windows.push((from, origin.elapsed()));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let (samples, _) = running.await?;
    outcome?;

    let in_swap = |t: Duration| windows.iter().any(|(a, b)| t >= *a && t < *b);
    let warmed = steady / 10; // connections settling
    let (swapping, steady_samples): (Vec<_>, Vec<_>) =
        samples.iter().filter(|s| s.started >= warmed).partition(|s| in_swap(s.started));
    let swap_time: Duration = windows.iter().map(|(a, b)| *b - *a).sum();
    let total = samples.iter().map(|s| s.started + s.latency).max().unwrap_or_default();
    let steady_stats = load::stats(&steady_samples, total.saturating_sub(warmed + swap_time));
    let swap_stats = load::stats(&swapping, swap_time);
    println!(
        "model: {} · concurrency: {} · cores: {} · {swaps} AvailabilityPreserving swaps under gRPC load",
        w.name,
        setup.concurrency,
        cores()
    );
    let mut lengths: Vec<f64> =
        windows.iter().map(|(a, b)| (*b - *a).as_secs_f64() * 1e3).collect();
    lengths.sort_by(f64::total_cmp);
    println!(
        "each swap (new version seen by the server → it alone AVAILABLE, the previous END): median {:.0} ms, longest {:.0} ms",
        lengths[lengths.len() / 2],
        lengths[lengths.len() - 1]
    );
    println!(
        "p99 during swaps / steady p99: {:.2}× · failed requests: {}",
        us(swap_stats.pct(0.99)) / us(steady_stats.pct(0.99)).max(1e-9),
        steady_stats.failed + swap_stats.failed
    );
    println!();
    let steady_p50 = steady_stats.pct(0.5);
    println!("{}", stats::HEADER.replace("p50 vs raw tract", "p50 vs steady"));
    println!("{}", stats::row("steady (no swap under way)", &steady_stats, steady_p50));
    println!("{}", stats::row("started during a swap", &swap_stats, steady_p50));
    Ok(())
}

/// Peak resident memory while version 1 is replaced by version 2 with each
/// transition policy, as multiples of one loaded copy of the model. No load.
pub(crate) async fn memory(setup: &Setup) -> anyhow::Result<()> {
    let w = &setup.workload;
    let root = tempfile::tempdir()?;
    // The server's own footprint: the same binary serving a tiny model.
    let tiny = root.path().join("tiny");
    versa_testmodels::write_version(&tiny, 1, &versa_testmodels::versioned(1))?;
    let empty = {
        let server = Server::start(&setup.server, &tiny, &ServerOptions::default())?;
        settle(&server).await?
    };
    println!(
        "model: {} ({:.1} MB file) · cores: {} · server alone (tiny model): {:.1} MiB RSS",
        w.name,
        w.bytes.len() as f64 / 1e6,
        cores(),
        mib(empty.rss)
    );
    println!();
    println!(
        "| transition policy | RSS, version 1 loaded | one copy | peak during swap | peak / one copy | after swap | swap ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for policy in ["availability_preserving", "resource_preserving"] {
        let base = root.path().join(policy);
        versa_testmodels::write_version(&base, 1, &w.bytes)?;
        let options = ServerOptions {
            transition_policy: policy.into(),
            extra: setup.server_flags.clone(),
            ..ServerOptions::default()
        };
        let server = Server::start(&setup.server, &base, &options)?;
        let loaded = settle(&server).await?;
        let one_copy = loaded.rss.saturating_sub(empty.rss).max(1);
        server.reset_peak()?;
        let sampler = Sampler::start(server.pid());
        versa_testmodels::publish_version(&base, 2, &w.bytes)?;
        let took = server.wait_only(2, setup.limit).await?;
        let sampled_peak = sampler.stop();
        let after = settle(&server).await?;
        let peak = after.peak.max(sampled_peak);
        println!(
            "| {policy} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2}× | {:.1} MiB | {:.0} |",
            mib(loaded.rss),
            mib(one_copy),
            mib(peak),
            peak.saturating_sub(empty.rss) as f64 / one_copy as f64,
            mib(after.rss),
            took.as_secs_f64() * 1e3
        );
    }
    println!();
    println!(
        "one copy = RSS with version 1 loaded − RSS of the server with a tiny model; peak = /proc VmHWM (reset before the swap) or the highest 2 ms RSS sample, whichever is higher, minus the server alone."
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Memory once the server has been idle for a moment.
async fn settle(server: &Server) -> anyhow::Result<Memory> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.memory()
}

/// Samples a process's RSS every 2 ms on a thread of its own; keeps the highest.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut highest = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(m) = Memory::of(pid) {
                    highest = highest.max(m.rss);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            highest
        });
        Self { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// The default server binary: next to this one.
pub(crate) fn default_server() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir: &Path = exe.parent().ok_or_else(|| anyhow::anyhow!("no directory for {exe:?}"))?;
    Ok(dir.join("versa-server"))
}
