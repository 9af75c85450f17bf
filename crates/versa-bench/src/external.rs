//! `--scenario external`: versa-server driven by standard light load
//! generators — `h2load` for gRPC Predict, `wrk` for REST predict — so the
//! client costs far less than the server (versa-bench's own Rust client
//! costs about as much as the server and understates it). With `--peer
//! mlserver`, Seldon MLServer with ONNX Runtime on the same ONNX file is
//! driven the same way, in the same run, after a check that both servers
//! answer the same input with the same output.
//!
//! Every timed run is checked against the server's own request counters
//! (gRPC errors arrive as HTTP 200 with a `grpc-status` trailer, which the
//! generators do not read): the server must count no failure and at least
//! as many successes as the generator got responses; for gRPC, the response
//! bytes must also be the size of that many successful answers (an error
//! answer carries no message). A run that fails a check is printed as
//! INVALID and the scenario exits with an error.

use crate::answers::{mlserver_grpc_output, rest_output, same_output, versa_grpc_output};
use crate::counters::{Flavour, Outcomes, verify};
use crate::generators::{self, Run};
use crate::peer::{self, MlServer, PeerOptions};
use crate::raw;
use crate::scenarios::Setup;
use crate::server::{Server, ServerOptions};
use crate::stats::us;
use crate::workload::MODEL_NAME;
use prost::Message as _;
use std::path::Path;
use std::time::Duration;

#[derive(Debug)]
enum Kind<'a> {
    Versa(&'a Server),
    MlServer(&'a MlServer),
}

/// A server as the generators see it.
#[derive(Debug)]
struct Target<'a> {
    kind: Kind<'a>,
    name: &'static str,
    grpc_port: u16,
    rest_port: u16,
    grpc_path: &'static str,
    rest_path: String,
    /// The gRPC request message, prost-encoded (not framed).
    grpc_message: Vec<u8>,
    rest_body: String,
    metrics_url: String,
}

impl Target<'_> {
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        match self.kind {
            Kind::Versa(s) => s.cpu_time(),
            Kind::MlServer(s) => s.cpu_time(),
        }
    }

    async fn outcomes(&self, http: &reqwest::Client) -> anyhow::Result<Outcomes> {
        let text = http.get(&self.metrics_url).send().await?.error_for_status()?.text().await?;
        Ok(Outcomes::parse(
            match self.kind {
                Kind::Versa(_) => Flavour::Versa,
                Kind::MlServer(_) => Flavour::MlServer,
            },
            &text,
        ))
    }
}

/// One timed run and what the server says about it.
#[derive(Debug)]
struct Row {
    server: &'static str,
    api: String,
    run: Run,
    server_cpu: Duration,
    /// `Ok(how)` when verified, `Err(why not)` otherwise.
    verdict: Result<String, String>,
}

fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Settles, then reads the counters (the last requests may still be running).
async fn settled(target: &Target<'_>, http: &reqwest::Client) -> anyhow::Result<Outcomes> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    target.outcomes(http).await
}

/// gRPC with h2load: one request first (it must be an OK on the server: its
/// size is the size of an OK answer), a 1 s warm-up, then the timed run.
async fn grpc_row(target: &Target<'_>, setup: &Setup, dir: &Path) -> anyhow::Result<Row> {
    let http = reqwest::Client::new();
    let body = dir.join(format!("{}-grpc.bin", target.name));
    std::fs::write(&body, grpc_frame(&target.grpc_message))?;
    let (port, path, c) = (target.grpc_port, target.grpc_path, setup.concurrency);
    let before = target.outcomes(&http).await?;
    let probe = generators::h2load(port, path, &body, 1, Duration::from_secs(10), Some(1))?;
    let after = settled(target, &http).await?;
    anyhow::ensure!(
        probe.done == 1
            && probe.failed == 0
            && after.ok == before.ok + 1
            && after.new_failures(&before).is_empty(),
        "one gRPC request to {} with h2load did not succeed ({probe:?}; server counters {before:?} → {after:?})",
        target.name
    );
    generators::h2load(port, path, &body, c, Duration::from_secs(1), None)?;
    let before = settled(target, &http).await?;
    let cpu = target.cpu_time()?;
    let run = generators::h2load(port, path, &body, c, setup.limit, None)?;
    let server_cpu = target.cpu_time()?.saturating_sub(cpu);
    let after = settled(target, &http).await?;
    let verdict = verify(&run, &before, &after, c, Some(probe.data_bytes));
    let api = format!("gRPC (h2load, {} thread)", run.threads);
    Ok(Row { server: target.name, api, run, server_cpu, verdict })
}

/// REST with wrk: a 1 s warm-up, then the timed run.
async fn rest_row(target: &Target<'_>, setup: &Setup, dir: &Path) -> anyhow::Result<Row> {
    let http = reqwest::Client::new();
    let body = dir.join(format!("{}-rest.json", target.name));
    std::fs::write(&body, &target.rest_body)?;
    let (port, path, c) = (target.rest_port, target.rest_path.as_str(), setup.concurrency);
    generators::wrk(port, path, &body, c, Duration::from_secs(1))?;
    let before = settled(target, &http).await?;
    let cpu = target.cpu_time()?;
    let run = generators::wrk(port, path, &body, c, setup.limit)?;
    let server_cpu = target.cpu_time()?.saturating_sub(cpu);
    let after = settled(target, &http).await?;
    let verdict = verify(&run, &before, &after, c, None);
    let threads = if run.threads == 1 { "thread" } else { "threads" };
    let api = format!("REST (wrk, {} {threads})", run.threads);
    Ok(Row { server: target.name, api, run, server_cpu, verdict })
}

fn print_table(rows: &[Row], raw_mean: Duration, raw_all_cores: f64) {
    println!(
        "| server | API (generator) | ok (failed) | req/s | p50 µs | p90 µs | p99 µs | server CPU/req µs | generator CPU/req µs | server CPU ÷ raw | req/s ÷ raw all cores | verified |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let done = r.run.done.max(1) as f64;
        let server_cpu = r.server_cpu.as_secs_f64() * 1e6 / done;
        let (server, verified) = match &r.verdict {
            Ok(how) => (r.server.to_owned(), how.clone()),
            Err(why) => (format!("**INVALID** {}", r.server), format!("**NO**: {why}")),
        };
        let l = &r.run.latency;
        println!(
            "| {server} | {} | {} ({}) | {:.0} | {:.0} | {:.0} | {:.0} | {server_cpu:.0} | {:.1} | {:.2}× | {:.2} | {verified} |",
            r.api,
            r.run.done.saturating_sub(r.run.failed),
            r.run.failed,
            r.run.rps(),
            us(l.p50),
            us(l.p90),
            us(l.p99),
            r.run.cpu.as_secs_f64() * 1e6 / done,
            server_cpu / us(raw_mean).max(1e-9),
            r.run.rps() / raw_all_cores.max(1e-9),
        );
    }
}

fn peer_versions(options: &PeerOptions) -> String {
    std::process::Command::new(options.venv.join("bin/python"))
        .args([
            "-c",
            "import mlserver, onnxruntime; print(mlserver.__version__, onnxruntime.__version__)",
        ])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.split_once(' ').map(|(m, o)| format!("MLServer {m} + ONNX Runtime {}", o.trim()))
        })
        .unwrap_or_else(|| "MLServer + ONNX Runtime (versions unknown)".into())
}

pub(crate) async fn external(
    setup: &Setup,
    peer_options: Option<&PeerOptions>,
) -> anyhow::Result<()> {
    generators::tool("h2load")?;
    generators::tool("wrk")?;
    let w = &setup.workload;
    let root = tempfile::tempdir()?;
    let base = root.path().join("bench");
    let dir = versa_testmodels::write_version(&base, 1, &w.bytes)?;
    let raw_seq = raw::sequential(&dir, w, setup.requests, setup.limit)?;
    let raw_mean = raw_seq.elapsed / raw_seq.count.max(1) as u32;
    let raw_all_cores = raw::all_cores(&dir, w, setup.requests, setup.limit)?;

    let mut rows = Vec::new();
    let options = ServerOptions {
        batching: setup.batching,
        extra: setup.server_flags.clone(),
        ..ServerOptions::default()
    };
    let server = Server::start(&setup.server, &base, &options)?;
    let reference = versa_grpc_output(&server, w).await?;
    let rest_path = format!("/v1/models/{MODEL_NAME}:predict");
    let rest_url = format!("http://127.0.0.1:{}{rest_path}", server.rest);
    same_output(
        "versa-server REST",
        &rest_output(&rest_url, &w.rest_body(), "predictions").await?,
        &reference,
    )?;
    let target = Target {
        kind: Kind::Versa(&server),
        name: "versa-server",
        grpc_port: server.grpc,
        rest_port: server.rest,
        grpc_path: "/tensorflow.serving.PredictionService/Predict",
        rest_path,
        grpc_message: w.grpc_request().encode_to_vec(),
        rest_body: w.rest_body(),
        metrics_url: format!("http://127.0.0.1:{}/metrics", server.rest),
    };
    rows.push(grpc_row(&target, setup, root.path()).await?);
    rows.push(rest_row(&target, setup, root.path()).await?);
    drop(target);
    drop(server);

    let mut peer_line = String::new();
    if let Some(options) = peer_options {
        let model_file = dir.join(versa_testmodels::MODEL_FILE);
        let peer = MlServer::start(options, &model_file, Duration::from_secs(120)).await?;
        let rest_path = format!("/v2/models/{MODEL_NAME}/infer");
        let rest_url = format!("http://127.0.0.1:{}{rest_path}", peer.http);
        same_output("MLServer gRPC", &mlserver_grpc_output(&peer, w).await?, &reference)?;
        same_output(
            "MLServer REST",
            &rest_output(&rest_url, &peer::rest_body(w), "outputs").await?,
            &reference,
        )?;
        peer_line = format!(
            "peer: {} · parallel_workers {} ({} process(es) in its group) · ONNX Runtime intra-op threads {} · same output as versa-server (within 1e-4) over gRPC and REST",
            peer_versions(options),
            options.workers,
            peer.processes(),
            options.intra_op_threads
        );
        let target = Target {
            kind: Kind::MlServer(&peer),
            name: "MLServer",
            grpc_port: peer.grpc,
            rest_port: peer.http,
            grpc_path: peer::GRPC_PATH,
            rest_path,
            grpc_message: peer::grpc_request(w).encode_to_vec(),
            rest_body: peer::rest_body(w),
            metrics_url: format!("http://127.0.0.1:{}/metrics", peer.metrics),
        };
        rows.push(grpc_row(&target, setup, root.path()).await?);
        rows.push(rest_row(&target, setup, root.path()).await?);
    }

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let batching = match setup.batching {
        0 => "off".to_owned(),
        n => format!("max_batch_size {n}"),
    };
    println!(
        "model: {} · clients: {} · {:?} per run · cores: {cores} · versa-server batching: {batching} · flags {:?}",
        w.name, setup.concurrency, setup.limit, setup.server_flags
    );
    println!(
        "raw tract, in-process, batch 1: {:.0} µs per inference on one thread (mean; p50 {:.0} µs) · {raw_all_cores:.0} inferences/s on every core",
        us(raw_mean),
        us(raw_seq.pct(0.5))
    );
    if !peer_line.is_empty() {
        println!("{peer_line}");
    }
    println!();
    print_table(&rows, raw_mean, raw_all_cores);
    println!();
    println!(
        "CPU = user + system from /proc (server: its process tree; generator: this process's reaped-children time around the run), divided by responses. server CPU ÷ raw = server CPU per request ÷ raw tract time per inference on one thread. h2load: -m 1 (one stream per connection); latencies from its --log-file."
    );
    if let [v_grpc, v_rest, p_grpc, p_rest] = rows.as_slice() {
        let ratio = |v: &Row, p: &Row| {
            let per = |r: &Row| r.server_cpu.as_secs_f64() / r.run.done.max(1) as f64;
            format!(
                "{:.2}× its req/s at {:.2}× its server CPU per request",
                v.run.rps() / p.run.rps().max(1e-9),
                per(v) / per(p).max(1e-12)
            )
        };
        println!(
            "versa-server against MLServer: gRPC {} · REST {}",
            ratio(v_grpc, p_grpc),
            ratio(v_rest, p_rest)
        );
    }
    let invalid: Vec<String> = rows
        .iter()
        .filter_map(|r| r.verdict.as_ref().err().map(|e| format!("{} {}: {e}", r.server, r.api)))
        .collect();
    anyhow::ensure!(invalid.is_empty(), "runs with errors: {}", invalid.join(" | "));
    Ok(())
}
