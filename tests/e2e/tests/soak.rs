//! A short soak in every test run: more valid, malformed, oversized,
//! cancelled and slow requests than the server can serve, then valid ones
//! below capacity. No crash, no unexpected outcome, flat memory, and no
//! valid request fails below capacity. (`versa-bench --scenario soak` runs
//! the same for minutes; its figures are in BENCHMARKS.md.)

use std::time::Duration;
use versa_e2e::ServerProcess;
use versa_e2e::soak::{self, Options, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_soak_above_capacity_keeps_the_server_up_flat_and_correct() {
    let root = tempfile::tempdir().expect("tempdir");
    let base = soak::model_repository(root.path()).expect("model");
    let mut args = vec![
        format!("--model_base_path={}", base.display()),
        format!("--model_name={}", soak::MODEL),
    ];
    args.extend(soak::server_flags());
    let mut server = ServerProcess::start(&args);
    let target = Target {
        pid: server.pid(),
        grpc_port: server.grpc_port,
        rest_port: server.rest_port,
        model: soak::MODEL,
    };
    let options = Options {
        overload: Duration::from_secs(16),
        below_capacity: Duration::from_secs(4),
        valid_clients: 8,
        hostile_clients: 2,
    };
    let report = soak::run(target, &options).await;
    eprintln!("{}", report.table());
    assert!(report.alive && server.is_running(), "the server survived");
    assert!(report.unexpected.is_empty(), "unexpected outcomes: {:#?}", report.unexpected);
    assert!(report.total("shed") > 0, "the load was above capacity (something was shed)");
    assert!(report.count("valid-grpc", "ok") > 0 && report.count("valid-rest", "ok") > 0);
    let (sent, failed) = report.below_capacity;
    assert!(sent > 0);
    assert_eq!(failed, 0, "valid requests below capacity all succeed");
    // Flat: the last quarter holds no more than the second (after warm-up).
    let second = report.rss_max_in_quarter(1, options.overload);
    let last = report.rss_max_in_quarter(3, options.overload);
    eprintln!(
        "RSS KiB: start {}, 2nd quarter max {second}, last quarter max {last}, VmHWM {}",
        report.start_rss_kib, report.hwm_kib
    );
    assert!(last <= second + second / 5 + 16 * 1024, "memory grew: {second} → {last} KiB");
}
