//! `--scenario soak`: the end-to-end suite's soak (`versa_e2e::soak`) for
//! as long as `--duration` says, against a release server: outcomes per
//! client class, resident memory over time, and whether any valid request
//! failed below capacity.

use crate::scenarios::Setup;
use crate::server::{Server, ServerOptions};
use crate::workload::MODEL_NAME;
use std::time::Duration;
use versa_e2e::soak::{self, Options, Target};

pub(crate) async fn soak(setup: &Setup) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let base = soak::model_repository(root.path())?;
    let mut extra = soak::server_flags();
    extra.extend(setup.server_flags.iter().cloned());
    let server =
        Server::start(&setup.server, &base, &ServerOptions { extra, ..ServerOptions::default() })?;
    let overload = setup.limit;
    let options = Options {
        overload,
        below_capacity: (overload / 4).max(Duration::from_secs(5)),
        valid_clients: setup.concurrency.max(4),
        hostile_clients: 2,
    };
    let target = Target {
        pid: server.pid(),
        grpc_port: server.grpc,
        rest_port: server.rest,
        model: MODEL_NAME,
    };
    let cpu_before = server.cpu_time()?;
    let report = soak::run(target, &options).await;
    let cpu = server.cpu_time()?.saturating_sub(cpu_before);
    println!(
        "soak: {} s above capacity ({} valid clients per API, {} per hostile class), then {} s below; flags {}",
        overload.as_secs(),
        options.valid_clients,
        options.hostile_clients,
        options.below_capacity.as_secs(),
        soak::server_flags().join(" ")
    );
    println!();
    println!("{}", report.table());
    let (sent, failed) = report.below_capacity;
    println!("below capacity: {sent} valid requests, {failed} failed");
    println!("unexpected outcomes: {}", report.unexpected.len());
    for u in &report.unexpected {
        println!("  {u}");
    }
    println!("server alive at the end: {}", report.alive);
    println!(
        "server CPU: {:.1} s over {:.0} s",
        cpu.as_secs_f64(),
        (overload + options.below_capacity).as_secs_f64()
    );
    println!();
    println!("| overload tenth | max RSS MiB |");
    println!("|---|---|");
    let tenth = overload.as_secs_f64() / 10.0;
    for i in 0..10 {
        let (from, to) = (tenth * i as f64, tenth * (i + 1) as f64);
        let max = report
            .rss
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0);
        println!("| {}–{} s | {:.1} |", from as u64, to as u64, max as f64 / 1024.0);
    }
    println!();
    println!(
        "RSS at start {:.1} MiB, VmHWM {:.1} MiB",
        report.start_rss_kib as f64 / 1024.0,
        report.hwm_kib as f64 / 1024.0
    );
    anyhow::ensure!(report.alive, "the server did not survive the soak");
    anyhow::ensure!(failed == 0, "{failed} valid requests failed below capacity");
    Ok(())
}
