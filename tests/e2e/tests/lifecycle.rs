//! Versions coming and going under the real binary: on disk, by config-file
//! polling, under live traffic; start-up failures and graceful shutdown.

mod common;

use common::{start, version_of};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use versa_e2e::server::Started;
use versa_e2e::{Choice, ServerProcess, eventually, versioned_request};
use versa_testmodels as models;

async fn latest_version(client: &mut versa_e2e::PredictionClient, model: &str) -> Option<f32> {
    client
        .predict(versioned_request(model, Choice::Latest))
        .await
        .ok()
        .map(|r| version_of(&r.into_inner()))
}

#[tokio::test]
async fn version_directories_appearing_and_disappearing_on_disk() {
    let f = start(&[]);
    let mut client = f.server.prediction_client().await;
    assert_eq!(latest_version(&mut client, "versioned").await, Some(3.0));

    models::publish_version(&f.path("versioned"), 4, &models::versioned(4)).expect("publish v4");
    eventually("version 4 served", Duration::from_millis(100), || {
        let mut c = client.clone();
        async move { (latest_version(&mut c, "versioned").await == Some(4.0)).then_some(()) }
    })
    .await;

    std::fs::remove_dir_all(f.path("versioned/4")).expect("remove v4");
    eventually("back to version 3", Duration::from_millis(100), || {
        let mut c = client.clone();
        async move { (latest_version(&mut c, "versioned").await == Some(3.0)).then_some(()) }
    })
    .await;

    // A base path that vanishes unloads nothing.
    std::fs::rename(f.path("versioned"), f.path("moved-away")).expect("rename");
    tokio::time::sleep(Duration::from_millis(2500)).await; // two poll periods
    assert_eq!(latest_version(&mut client, "versioned").await, Some(3.0));
}

/// Traffic over gRPC and REST, unversioned, while versions are published
/// and retired. Returns (ok, failed) counts.
async fn traffic_during(
    server: &ServerProcess,
    swap: impl std::future::Future<Output = ()>,
) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let grpc = server.prediction_client().await;
        let url = server.rest_url("/v1/models/versioned:predict");
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut grpc = grpc;
            // Bounded: at most 20,000 requests per client.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let success = if i % 2 == 0 {
                    grpc.predict(versioned_request("versioned", Choice::Latest)).await.is_ok()
                } else {
                    http.post(&url)
                        .body(r#"{"instances": [[0,0,0,0]]}"#)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                };
                let counter = if success { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    swap.await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

#[tokio::test]
async fn version_swaps_under_traffic_fail_no_request() {
    let root = tempfile::tempdir().expect("tempdir");
    let base = root.path().join("versioned");
    models::write_version(&base, 1, &models::versioned(1)).expect("v1");
    let server = ServerProcess::start(&[
        format!("--model_base_path={}", base.display()),
        "--model_name=versioned".into(),
        "--file_system_poll_wait_seconds=1".into(),
    ]);
    let mut probe = server.prediction_client().await;
    let (ok, failed) = traffic_during(&server, async {
        for v in 2..=4 {
            models::publish_version(&base, v, &models::versioned(v)).expect("publish");
            eventually("new version serves", Duration::from_millis(50), || {
                let mut c = probe.clone();
                async move {
                    (latest_version(&mut c, "versioned").await == Some(v as f32)).then_some(())
                }
            })
            .await;
            std::fs::remove_dir_all(base.join((v - 1).to_string())).expect("retire old");
        }
        // Roll back by deleting the newest: version 3 is loaded again first.
        models::publish_version(&base, 3, &models::versioned(3)).expect("republish 3");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::fs::remove_dir_all(base.join("4")).expect("delete newest");
        eventually("rolled back to 3", Duration::from_millis(50), || {
            let mut c = probe.clone();
            async move { (latest_version(&mut c, "versioned").await == Some(3.0)).then_some(()) }
        })
        .await;
    })
    .await;
    eprintln!("swap under traffic: {ok} requests succeeded, {failed} failed");
    assert!(ok > 100, "traffic ran: {ok}");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert_eq!(latest_version(&mut probe, "versioned").await, Some(3.0));
}

#[tokio::test]
async fn config_file_polling_applies_changes() {
    let root = tempfile::tempdir().expect("tempdir");
    models::write_example_repository(root.path()).expect("models");
    let config = root.path().join("models.yaml");
    let write = |models: &str| {
        std::fs::write(&config, format!("model_config_list:\n  config:\n{models}")).expect("write")
    };
    let entry = |name: &str| {
        format!(
            "    - {{name: {name}, base_path: {}/{name}, model_platform: onnx}}\n",
            root.path().display()
        )
    };
    write(&entry("versioned"));
    let server = ServerProcess::start(&[
        format!("--model_config_file={}", config.display()),
        "--model_config_file_poll_wait_seconds=1".into(),
    ]);
    let mut client = server.prediction_client().await;
    assert!(latest_version(&mut client, "broken").await.is_none());
    write(&(entry("versioned") + &entry("broken")));
    eventually("broken/2 added by the poll", Duration::from_millis(100), || {
        let mut c = client.clone();
        async move { (latest_version(&mut c, "broken").await == Some(2.0)).then_some(()) }
    })
    .await;
    // A broken file is logged and the running config stays.
    std::fs::write(&config, "model_config_list: [[[").expect("write");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(latest_version(&mut client, "broken").await, Some(2.0));
    assert!(server.log().iter().any(|l| l.contains("Failed to read ModelServerConfig file")));
}

fn start_failure(args: &[String]) -> (Option<i32>, Vec<String>) {
    match ServerProcess::try_start(args) {
        Started::Exited { code, log } => (code, log),
        Started::Serving(_) => panic!("expected {args:?} to fail"),
    }
}

#[test]
fn bad_flags_and_configs_exit_before_binding_with_one_line() {
    let root = tempfile::tempdir().expect("tempdir");
    let bad_config = root.path().join("bad.config");
    std::fs::write(&bad_config, "model_config_list { config { name: \"m\" base_path: \"relative\" model_platform: \"onnx\" } }")
        .expect("write");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["--no_such_flag=1".into()], 2, "versa-server: unexpected argument '--no_such_flag'"),
        (
            vec!["--model_base_path=/m".into(), "--enable_model_warmup=maybe".into()],
            2,
            "versa-server: invalid value 'maybe'",
        ),
        (vec![], 1, "versa-server: set either --model_config_file"),
        (
            vec![format!("--model_config_file={}", bad_config.display())],
            1,
            "versa-server: Expected model m to have an absolute path",
        ),
        (
            vec!["--model_config_file=/does/not/exist".into()],
            1,
            "versa-server: cannot read /does/not/exist",
        ),
    ];
    for (args, code, start) in cases {
        let (got, log) = start_failure(&args);
        assert_eq!(got, Some(code), "{args:?}: {log:?}");
        let last = log.last().expect("a reason");
        assert!(last.starts_with(start), "{args:?}: {last}");
        assert!(!log.iter().any(|l| l.contains("Running gRPC")), "no port bound for {args:?}");
    }
}

#[test]
fn a_model_whose_versions_all_fail_stops_start_up() {
    let root = tempfile::tempdir().expect("tempdir");
    models::write_version(&root.path().join("m"), 1, &models::corrupt()).expect("corrupt");
    let (code, log) = start_failure(&[
        format!("--model_base_path={}/m", root.path().display()),
        "--model_name=m".into(),
        "--max_num_load_retries=0".into(),
    ]);
    assert_eq!(code, Some(1));
    let last = log.last().expect("reason");
    assert!(last.starts_with("versa-server: Failed to start server. Error: 1 model(s) did not become available: {{name: m version: 1} due to error:"), "{last}");
}

#[test]
fn sigterm_stops_gracefully() {
    let root = tempfile::tempdir().expect("tempdir");
    models::write_version(&root.path().join("m"), 1, &models::versioned(1)).expect("model");
    let mut server =
        ServerProcess::start(&[format!("--model_base_path={}/m", root.path().display())]);
    assert_eq!(server.terminate(), Some(0));
    assert!(server.log().iter().any(|l| l.contains("shutting down")));
}
