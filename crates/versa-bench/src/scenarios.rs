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
async fn measured<C: load::Call>(
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

/// gRPC load the whole time; version 2 is published after a steady phase
/// and takes over (AvailabilityPreserving: loaded, then version 1 unloaded).
/// Compares latency while the swap is under way with the steady phase.
pub(crate) async fn swap(setup: &Setup, steady: Duration) -> anyhow::Result<()> {
    let w = &setup.workload;
    let root = tempfile::tempdir()?;
    let base = root.path().join("bench");
    versa_testmodels::write_version(&base, 1, &w.bytes)?;
    let options = ServerOptions {
        batching: setup.batching,
        transition_policy: "availability_preserving".into(),
        extra: setup.server_flags.clone(),
    };
    let server = Server::start(&setup.server, &base, &options)?;
    let call = GrpcPredict::connect(server.grpc_url(), w).await?;
    load::warm_up(&call).await;

    let bounds = Bounds::new(setup.concurrency, usize::MAX, steady + setup.limit);
    let stop = std::sync::Arc::clone(&bounds.stop);
    let origin = Instant::now();
    let running = tokio::spawn(async move { load::run(&bounds, call, origin).await });
    tokio::time::sleep(steady).await;
    versa_testmodels::publish_version(&base, 2, &w.bytes)?;
    // The swap starts when the server has seen version 2 (the source polls
    // the base path once a second) and ends when version 1 is gone.
    let seen = server.wait_seen(2, setup.limit).await;
    let published = origin.elapsed();
    let outcome = server.wait_only(2, setup.limit).await;
    let swapped = origin.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (samples, _) = running.await?;
    seen?;
    outcome?;

    // The first 10% of the steady phase is left out (connections settling).
    let steady_stats = Stats::of_window(&samples, steady / 10, published);
    let swap_stats = Stats::of_window(&samples, published, swapped);
    let after = Stats::of_window(&samples, swapped, Duration::MAX);
    println!(
        "model: {} · concurrency: {} · cores: {} · AvailabilityPreserving swap 1 → 2 under gRPC load",
        w.name,
        setup.concurrency,
        cores()
    );
    println!(
        "swap took {:.0} ms (version 2 seen by the server → version 2 alone AVAILABLE, version 1 END)",
        (swapped - published).as_secs_f64() * 1e3
    );
    println!(
        "p99 during the swap / steady p99: {:.2}× · failed requests: {}",
        us(swap_stats.pct(0.99)) / us(steady_stats.pct(0.99)).max(1e-9),
        steady_stats.failed + swap_stats.failed + after.failed
    );
    println!();
    let steady_p50 = steady_stats.pct(0.5);
    println!("{}", stats::HEADER.replace("p50 vs raw tract", "p50 vs steady"));
    println!("{}", stats::row("steady (version 1)", &steady_stats, steady_p50));
    println!("{}", stats::row("during the swap", &swap_stats, steady_p50));
    println!("{}", stats::row("after (version 2)", &after, steady_p50));
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
