//! `mirror`: what shadow traffic costs the requests it copies. The same
//! gRPC load against version 1 with no mirror, a 10% mirror and a 100%
//! mirror (version 2: the same model), each on a fresh server; client
//! latency, throughput and server CPU per request beside raw tract, and
//! what became of the copies (agreed, shed, timed out).

use crate::load::{Bounds, GrpcPredict};
use crate::promtext;
use crate::raw;
use crate::scenarios::{Setup, measured};
use crate::server::{Server, ServerOptions};
use crate::stats::us;
use crate::workload::MODEL_NAME;
use std::path::Path;

/// A config serving `base` as model `bench`: version 1 takes every request
/// (split `stable` 100, `candidate` 0), version 2 mirrors `percent` of them.
fn config(base: &Path, percent: u32) -> String {
    let mirror = if percent == 0 {
        String::new()
    } else {
        format!(r#"mirror {{ label: "candidate" percent: {percent} }}"#)
    };
    format!(
        r#"model_config_list {{ config {{
  name: "{MODEL_NAME}" base_path: "{}" model_platform: "onnx"
  model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
  version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "candidate" value: 2 }}
  traffic_split {{ key: "stable" value: 100 }} traffic_split {{ key: "candidate" value: 0 }}
  {mirror}
}} }}"#,
        base.display()
    )
}

/// One configuration's figures in one round.
#[derive(Debug)]
struct Run {
    ok: usize,
    failed: usize,
    rps: f64,
    p50: f64,
    p99: f64,
    cpu: f64,
}

/// Copies by outcome, and the requests version 1 answered, from the
/// server's `/metrics`.
async fn outcomes(server: &Server) -> anyhow::Result<(Vec<(String, u64)>, u64)> {
    let text =
        reqwest::get(format!("http://127.0.0.1:{}/metrics", server.rest)).await?.text().await?;
    let mut counts: Vec<(String, u64)> = Vec::new();
    for sample in
        promtext::samples(&text).iter().filter(|s| s.name == "versa_mirror_requests_total")
    {
        let result = sample.label("result").to_owned();
        match counts.iter_mut().find(|(r, _)| *r == result) {
            Some((_, n)) => *n += sample.value as u64,
            None => counts.push((result, sample.value as u64)),
        }
    }
    counts.sort();
    let answered = promtext::samples(&text)
        .iter()
        .filter(|s| s.name == "versa_requests_total" && s.label("version") == "1")
        .map(|s| s.value as u64)
        .sum();
    Ok((counts, answered))
}

pub(crate) async fn mirror(setup: &Setup) -> anyhow::Result<()> {
    let w = &setup.workload;
    let root = tempfile::tempdir()?;
    let base = root.path().join("bench");
    let dir = versa_testmodels::write_version(&base, 1, &w.bytes)?;
    versa_testmodels::write_version(&base, 2, &w.bytes)?;
    let raw = raw::sequential(&dir, w, setup.requests, setup.limit)?;
    let raw_p50 = raw.pct(0.5);
    println!(
        "model: {} · concurrency: {} · cores: {} · mirror: version 2 (the same model) copying version 1's requests",
        w.name,
        setup.concurrency,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    // Rounds in rotated order, so drift of the machine falls on every
    // configuration alike; the table gives medians over rounds.
    const ROUNDS: usize = 3;
    const PERCENTS: [u32; 3] = [0, 10, 100];
    let mut runs: Vec<Vec<Run>> = PERCENTS.iter().map(|_| Vec::new()).collect();
    let mut copied: Vec<Vec<(String, u64)>> = PERCENTS.iter().map(|_| Vec::new()).collect();
    let mut served = [0u64; 3];
    for round in 0..ROUNDS {
        for k in 0..PERCENTS.len() {
            let ix = (k + round) % PERCENTS.len();
            let percent = PERCENTS[ix];
            let file = root.path().join(format!("mirror-{percent}.config"));
            std::fs::write(&file, config(&base, percent))?;
            let options = ServerOptions {
                config_file: Some(file),
                extra: setup.server_flags.clone(),
                ..ServerOptions::default()
            };
            let server = Server::start(&setup.server, &base, &options)?;
            let bounds = Bounds::new(setup.concurrency, setup.requests, setup.limit);
            let call = GrpcPredict::connect(server.grpc_url(), w).await?;
            let (stats, cpu) = measured(&server, &bounds, call).await?;
            // Copies still queued finish (or time out) within the mirror timeout.
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            let (outcome, answered) = outcomes(&server).await?;
            served[ix] += answered;
            for (result, n) in outcome {
                match copied[ix].iter_mut().find(|(r, _)| *r == result) {
                    Some((_, total)) => *total += n,
                    None => copied[ix].push((result, n)),
                }
            }
            runs[ix].push(Run {
                ok: stats.count,
                failed: stats.failed,
                rps: stats.rps(),
                p50: us(stats.pct(0.5)),
                p99: us(stats.pct(0.99)),
                cpu: us(cpu),
            });
        }
    }
    let median = |runs: &[Run], f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base_p99 = median(&runs[0], |r| r.p99);
    let mut rows = Vec::new();
    let mut copies = Vec::new();
    for (ix, percent) in PERCENTS.iter().enumerate() {
        let r = &runs[ix];
        let name =
            if *percent == 0 { "no mirror".to_owned() } else { format!("mirror {percent}%") };
        let p99 = median(r, |r| r.p99);
        rows.push(format!(
            "| gRPC Predict, {name} | {} | {} | {:.0} | {:.0} | {p99:.0} | {:.2}× | {:.0} | {:.2}× |",
            r.iter().map(|r| r.ok).sum::<usize>(),
            r.iter().map(|r| r.failed).sum::<usize>(),
            median(r, |r| r.rps),
            median(r, |r| r.p50),
            p99 / base_p99.max(1e-9),
            median(r, |r| r.cpu),
            median(r, |r| r.p50) / us(raw_p50).max(1e-9),
        ));
        let total: u64 = copied[ix].iter().map(|(_, n)| n).sum();
        let shown: Vec<String> = copied[ix]
            .iter()
            .map(|(r, n)| format!("{r} {n} ({:.1}%)", 100.0 * *n as f64 / total.max(1) as f64))
            .collect();
        if *percent > 0 {
            copies.push(format!(
                "{name}: {total} copies of {} requests version 1 answered (warm-up included) — {}",
                served[ix],
                shown.join(", ")
            ));
        }
    }
    println!("{ROUNDS} rounds per configuration, medians; ok and failed summed over rounds");
    println!();
    println!(
        "| path | ok | failed | req/s | p50 µs | p99 µs | p99 vs no mirror | server CPU µs/request | p50 vs raw tract |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| raw tract, in-process, batch 1 | {} | 0 | {:.0} | {:.0} | {:.0} | | | 1.00× |",
        raw.count,
        raw.rps(),
        us(raw_p50),
        us(raw.pct(0.99))
    );
    for row in rows {
        println!("{row}");
    }
    println!();
    for line in copies {
        println!("{line}");
    }
    Ok(())
}
