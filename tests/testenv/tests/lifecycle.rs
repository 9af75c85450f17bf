//! The whole lifecycle under live traffic: three serving Pods, unversioned
//! Predict over gRPC and REST the whole time; v1 stable → v2 canary at 10% →
//! 50% → promote v2 → unload v1 → roll back by re-applying the first
//! manifest → a corrupt canary; and a ResourcePreserving model swapped
//! beside it. Bounded in requests and time.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use versa_proto::serving::prediction_service_client::PredictionServiceClient;
use versa_proto::serving::{ModelSpec, PredictRequest, model_spec};
use versa_proto::tensorflow::{TensorProto, TensorShapeProto, tensor_shape_proto::Dim};
use versa_testenv::versa::{
    StatusLog, VersaEnv, assert_phases_in_order, init_test_tracing, predict,
};

const MAX_REQUESTS: usize = 400_000;
const MAX_DURATION: Duration = Duration::from_secs(150);

fn fraud(versions: &str, labels: &str, traffic: &str) -> String {
    format!(
        "[{{name: fraud, basePath: ROOT/fraud, versionPolicy: {{specific: {{versions: [{versions}]}}}}, labels: {{{labels}}}, traffic: {{{traffic}}}}}]"
    )
}

/// Per step: (ok, failed, answers by version).
#[derive(Debug, Default, Clone)]
struct Tally {
    ok: u64,
    failed: u64,
    by_version: BTreeMap<i64, u64>,
    errors: Vec<String>,
}

/// Unversioned Predict over gRPC and REST against every Pod, round robin,
/// counted per step.
struct Load {
    step: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tallies: Arc<Mutex<BTreeMap<usize, Tally>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn grpc_request() -> PredictRequest {
    PredictRequest {
        model_spec: Some(ModelSpec { name: "fraud".into(), ..ModelSpec::default() }),
        inputs: [(
            "x".to_owned(),
            TensorProto {
                dtype: 1,
                tensor_shape: Some(TensorShapeProto {
                    dim: vec![Dim { size: 1, ..Dim::default() }, Dim { size: 4, ..Dim::default() }],
                    ..TensorShapeProto::default()
                }),
                float_val: vec![0.0; 4],
                ..TensorProto::default()
            },
        )]
        .into(),
        ..PredictRequest::default()
    }
}

impl Load {
    fn start(ips: Vec<Ipv4Addr>, clients_per_protocol: usize) -> Self {
        let step = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tallies: Arc<Mutex<BTreeMap<usize, Tally>>> = Arc::default();
        let sent = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..clients_per_protocol * 2 {
            let grpc = client % 2 == 0;
            let (ips, step, stop, tallies, sent) =
                (ips.clone(), step.clone(), stop.clone(), tallies.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut channels = Vec::new();
                for ip in &ips {
                    let channel =
                        tonic::transport::Endpoint::from_shared(format!("http://{ip}:8500"))
                            .expect("endpoint")
                            .connect_lazy();
                    channels.push(PredictionServiceClient::new(channel));
                }
                let mut i = client;
                while !stop.load(Ordering::Relaxed)
                    && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                    && started.elapsed() < MAX_DURATION
                {
                    i += 1;
                    let at = step.load(Ordering::Relaxed);
                    let pod = i % ips.len();
                    let answer: Result<i64, String> = if grpc {
                        let mut request = tonic::Request::new(grpc_request());
                        request.set_timeout(Duration::from_secs(5));
                        match channels[pod].clone().predict(request).await {
                            Ok(r) => r
                                .into_inner()
                                .model_spec
                                .and_then(|s| match s.version_choice {
                                    Some(model_spec::VersionChoice::Version(v)) => Some(v),
                                    _ => None,
                                })
                                .ok_or_else(|| "no version in the response".to_owned()),
                            Err(status) => Err(format!("gRPC {}: {status}", ips[pod])),
                        }
                    } else {
                        match predict(&http, ips[pod], "fraud", None).await {
                            Ok(a) if a.status == 200 => {
                                a.version.ok_or_else(|| "no version header".to_owned())
                            }
                            other => Err(format!("REST {}: {other:?}", ips[pod])),
                        }
                    };
                    let mut tallies = tallies.lock().expect("lock");
                    let tally = tallies.entry(at).or_default();
                    match answer {
                        Ok(version) => {
                            tally.ok += 1;
                            *tally.by_version.entry(version).or_default() += 1;
                        }
                        Err(e) => {
                            tally.failed += 1;
                            if tally.errors.len() < 5 {
                                tally.errors.push(e);
                            }
                        }
                    }
                }
            }));
        }
        Self { step, stop, tallies, tasks }
    }

    /// Starts counting under a new step number.
    fn enter(&self, step: usize) {
        self.step.store(step, Ordering::Relaxed);
    }

    fn tally(&self, step: usize) -> Tally {
        self.tallies.lock().expect("lock").get(&step).cloned().unwrap_or_default()
    }

    async fn finish(self) -> BTreeMap<usize, Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        self.tallies.lock().expect("lock").clone()
    }
}

fn share(tally: &Tally, version: i64) -> f64 {
    let total: u64 = tally.by_version.values().sum();
    tally.by_version.get(&version).copied().unwrap_or(0) as f64 / total.max(1) as f64
}

#[tokio::test]
async fn the_whole_lifecycle_under_load_loses_nothing() {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let log = StatusLog::start(&env, "fraud");
    let steps: Vec<(&str, String, &[&str])> = vec![
        ("v1 stable", fraud("1", "stable: 1", ""), &["MovingLabels", "Ready"]),
        (
            "v2 canary 10%",
            fraud("1, 2", "stable: 1, canary: 2", "stable: 90, canary: 10"),
            &["LoadingVersions", "MovingLabels", "ShiftingTraffic", "Ready"],
        ),
        (
            "canary 50%",
            fraud("1, 2", "stable: 1, canary: 2", "stable: 50, canary: 50"),
            &["ShiftingTraffic", "Ready"],
        ),
        (
            "promote v2",
            fraud("1, 2", "stable: 2", ""),
            &["MovingLabels", "ShiftingTraffic", "Ready"],
        ),
        ("unload v1", fraud("2", "stable: 2", ""), &["UnloadingVersions", "Ready"]),
        (
            "roll back to v1",
            fraud("1", "stable: 1", ""),
            &["LoadingVersions", "MovingLabels", "UnloadingVersions", "Ready"],
        ),
    ];

    // Step 0 without load (no Pods yet), then load for everything after.
    let started = Instant::now();
    let g = env.apply(&env.manifest("fraud", 3, &steps[0].1)).await.expect("apply");
    env.wait_ready("fraud", g).await.expect("ready");
    let mut report = vec![format!(
        "{}: Ready {:.2}s after apply (3 new Pods)",
        steps[0].0,
        started.elapsed().as_secs_f64()
    )];
    let ips = env.ready_ips("fraud").await.expect("ips");
    assert_eq!(ips.len(), 3);
    let pods_before = env.pod_restarts("fraud").await.expect("pods");
    let load = Load::start(ips.clone(), 2);
    let settle = Duration::from_millis(2500);
    tokio::time::sleep(settle).await;

    for (index, (name, models, expected)) in steps.iter().enumerate().skip(1) {
        load.enter(index);
        let started = Instant::now();
        let g = env.apply(&env.manifest("fraud", 3, models)).await.expect("apply");
        env.wait_ready("fraud", g).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let took = started.elapsed();
        assert_phases_in_order(&log.phases_through(g, "Ready").await, expected);
        let phases = log.phase_times(g);
        let timeline: Vec<String> = phases
            .iter()
            .map(|(p, at)| {
                format!("{p} +{:.2}s", at.saturating_duration_since(started).as_secs_f64())
            })
            .collect();
        // Steady traffic at this step's weights.
        let steady = index + 100;
        load.enter(steady);
        tokio::time::sleep(settle).await;
        let t = load.tally(steady);
        let canary = share(&t, 2);
        report.push(format!(
            "{name}: Ready {:.2}s after apply [{}]; steady: {} requests, v2 share {:.1}%",
            took.as_secs_f64(),
            timeline.join(", "),
            t.ok,
            canary * 100.0
        ));
        let expected_share = match index {
            1 => 0.10,
            2 => 0.50,
            3 | 4 => 1.0,
            _ => 0.0,
        };
        // Without a split, unversioned requests go to the latest loaded version.
        assert!(t.ok > 100, "{name}: too few steady requests ({})", t.ok);
        assert!(
            (canary - expected_share).abs() <= 0.06,
            "{name}: v2 share {canary:.3}, want {expected_share}"
        );
    }

    // A corrupt canary: stops, Degraded; stable serves on.
    load.enter(50);
    let g = env
        .apply(&env.manifest(
            "fraud",
            3,
            &fraud("1, 9", "stable: 1, canary: 9", "stable: 90, canary: 10"),
        ))
        .await
        .expect("apply");
    let md = env
        .wait_condition("fraud", g, "Degraded", Some("VersionLoadFailed"), Duration::from_secs(60))
        .await
        .expect("stopped");
    tokio::time::sleep(settle).await;
    let status = md.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Stopped"));
    let corrupt = load.tally(50);
    report.push(format!(
        "corrupt canary v9: Stopped/Degraded; {} requests, all answered by v1: {}",
        corrupt.ok,
        corrupt.by_version.keys().eq([1].iter())
    ));
    assert_eq!(corrupt.by_version.keys().copied().collect::<Vec<_>>(), [1], "only v1 answered");

    let tallies = load.finish().await;
    let (ok, failed): (u64, u64) =
        tallies.values().fold((0, 0), |(o, f), t| (o + t.ok, f + t.failed));
    let errors: Vec<&String> = tallies.values().flat_map(|t| t.errors.iter()).collect();
    report.push(format!("total: {ok} requests answered, {failed} failed (gRPC + REST, 4 clients)"));
    eprintln!("lifecycle:\n  {}", report.join("\n  "));
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert_eq!(
        env.pod_restarts("fraud").await.expect("pods"),
        pods_before,
        "no Pod restarted or replaced"
    );
}

#[tokio::test]
async fn a_resource_preserving_model_never_holds_two_versions() {
    init_test_tracing();
    let env = VersaEnv::start().await.expect("env");
    let ranker = |v: i64| {
        format!(
            "[{{name: fraud, basePath: ROOT/fraud, transition: ResourcePreserving, versionPolicy: {{specific: {{versions: [{v}]}}}}, labels: {{stable: {v}}}}}]"
        )
    };
    let log = StatusLog::start(&env, "ranker");
    let g = env.apply(&env.manifest("ranker", 3, &ranker(1))).await.expect("apply");
    env.wait_ready("ranker", g).await.expect("ready");
    let ips = env.ready_ips("ranker").await.expect("ips");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let g = env.apply(&env.manifest("ranker", 3, &ranker(2))).await.expect("apply");
    env.wait_ready("ranker", g).await.expect("swapped");
    let took = started.elapsed();
    assert_phases_in_order(
        &log.phases_through(g, "Ready").await,
        &["LoadingVersions", "MovingLabels", "Ready"],
    );
    for ip in &ips {
        let a = predict(&http, *ip, "fraud", Some("labels/stable")).await.expect("predict");
        assert_eq!(a.version, Some(2));
        let old = predict(&http, *ip, "fraud", Some("versions/1")).await.expect("predict");
        assert_eq!(old.status, 404, "v1 gone on {ip}");
    }
    // In no observed status did a Pod hold both (available copies never exceed the Pods).
    for entry in log.entries() {
        let model = &entry.status.models[0];
        let available: i32 = model.versions.iter().map(|v| v.available).sum();
        assert!(available <= entry.status.ready_replicas.max(3), "two copies on a Pod: {model:?}");
    }
    eprintln!(
        "ResourcePreserving swap v1 → v2 on 3 Pods: Ready {:.2}s after apply",
        took.as_secs_f64()
    );
}
