//! Chaos under load: while a canary is rolled out and promoted with clients
//! sending requests the whole time, the operator, serving Pods' processes
//! and the API server itself are killed at seeded random moments. The
//! rollout must converge to the spec with no request failing except those
//! a killed Pod had in flight or was sent while it was down (counted apart),
//! and no Pod replaced. `VERSA_CHAOS_SEED` replays a run; the seed is printed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use versa_testenv::versa::{
    Answer, NAMESPACE, OperatorOptions, VersaEnv, init_test_tracing, predict,
};

const STABLE_1: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1]}}, labels: {stable: 1}}]";
const CANARY_2_AT_10: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [1, 2]}}, labels: {stable: 1, canary: 2}, traffic: {stable: 90, canary: 10}}]";
const PROMOTED_2: &str = "[{name: fraud, basePath: ROOT/fraud, versionPolicy: {specific: {versions: [2]}}, labels: {stable: 2}}]";

/// splitmix64: a small seeded generator, so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Operator,
    Pod,
    ApiServer,
}

/// One request's outcome: when sent and answered, to which Pod, ok or not.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    at: Instant,
    ip: Ipv4Addr,
    ok: bool,
    what: String,
}

struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(ips: Vec<Ipv4Addr>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client");
                let started = Instant::now();
                let mut n = 0usize;
                // Bounded in count and time.
                while !stop.load(Ordering::Relaxed)
                    && n < 100_000
                    && started.elapsed() < Duration::from_secs(240)
                {
                    let ip = ips[n % ips.len()];
                    n += 1;
                    let sent = Instant::now();
                    let answer = predict(&http, ip, "fraud", None).await;
                    let ok = matches!(answer, Ok(Answer { status: 200, .. }));
                    let what = match &answer {
                        Ok(a) => format!("{a:?}"),
                        Err(e) => format!("{e}"),
                    };
                    let sample = Sample { sent, at: Instant::now(), ip, ok, what };
                    samples.lock().unwrap_or_else(PoisonError::into_inner).push(sample);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        Self { stop, samples, task }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load");
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.clone()
    }
}

/// `kubectl apply`, retried while the API server is down.
async fn apply(env: &VersaEnv, models: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match env.apply(&env.manifest("fraud", 3, models)).await {
            Ok(generation) => return generation,
            Err(e) => {
                assert!(Instant::now() < deadline, "apply never went through: {e:#}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// Restarts the operator if it exited (a kubelet would); true if it had.
fn supervise(env: &mut VersaEnv) -> bool {
    let exited = env.operators[0].exited().is_some();
    if exited {
        env.operators.clear();
        env.start_operator(OperatorOptions { identity: "operator-0".into(), extra_args: args() })
            .expect("operator");
    }
    exited
}

fn args() -> Vec<String> {
    vec!["--resync_seconds=2".into()]
}

#[tokio::test]
async fn a_rollout_under_load_survives_killed_operators_pods_and_api_servers() {
    init_test_tracing();
    let seed = std::env::var("VERSA_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ 0x5eed);
    eprintln!("chaos seed {seed} (VERSA_CHAOS_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mut env = VersaEnv::start().await.expect("env");
    let g1 = apply(&env, STABLE_1).await;
    env.wait_ready("fraud", g1).await.expect("ready");
    let ips = env.ready_ips("fraud").await.expect("ips");
    assert_eq!(ips.len(), 3);
    let pods_before = env.pod_restarts("fraud").await.expect("pods");
    let load = Load::start(ips.clone());

    // Six faults: each kind once, in a seeded order, then three more.
    let mut faults = vec![Fault::Operator, Fault::Pod, Fault::ApiServer];
    for i in (1..faults.len()).rev() {
        let j = usize::try_from(rng.below(u64::try_from(i + 1).expect("small"))).expect("small");
        faults.swap(i, j);
    }
    for _ in 0..3 {
        faults.push(
            [Fault::Operator, Fault::Pod, Fault::ApiServer]
                [usize::try_from(rng.below(3)).expect("small")],
        );
    }
    let mut crashes: Vec<(Ipv4Addr, Instant)> = Vec::new();
    let mut log = Vec::new();
    let mut final_generation = 0;
    let mut operator_exits = 0;
    for (i, fault) in faults.iter().enumerate() {
        if i == 0 {
            apply(&env, CANARY_2_AT_10).await;
        }
        if i == 3 {
            final_generation = apply(&env, PROMOTED_2).await;
        }
        let wait = Duration::from_millis(300 + rng.below(2_700));
        tokio::time::sleep(wait).await;
        operator_exits += usize::from(supervise(&mut env));
        match fault {
            Fault::Operator => {
                env.operators[0].signal("KILL");
                env.operators.clear();
                tokio::time::sleep(Duration::from_millis(rng.below(1_000))).await;
                env.start_operator(OperatorOptions {
                    identity: "operator-0".into(),
                    extra_args: args(),
                })
                .expect("operator");
            }
            Fault::Pod => {
                let victim = usize::try_from(rng.below(3)).expect("small");
                let pods = env.pods("fraud").await.expect("pods");
                let ip: Ipv4Addr = pods
                    .iter()
                    .filter_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
                    .nth(victim % pods.len())
                    .expect("a pod ip");
                let name = pods
                    .iter()
                    .find(|p| {
                        p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(&ip.to_string())
                    })
                    .and_then(|p| p.metadata.name.clone())
                    .expect("pod name");
                crashes.push((ip, Instant::now()));
                assert!(env.kubelet.crash(NAMESPACE, &name), "crash {name}");
            }
            Fault::ApiServer => {
                let down = Duration::from_millis(rng.below(2_000));
                env.cluster.crash_apiserver(down).await.expect("API server back");
            }
        }
        log.push(format!("{:?} after {:.1}s", fault, wait.as_secs_f64()));
        eprintln!("chaos: {} done", log.last().map_or("", String::as_str));
    }

    // Converge to the final spec.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        operator_exits += usize::from(supervise(&mut env));
        let converged = env.get("fraud").await.ok().and_then(|md| md.status).is_some_and(|s| {
            s.observed_generation == Some(final_generation)
                && s.ready_replicas == 3
                && s.models.first().is_some_and(|m| {
                    m.phase == "Ready" && m.labels == BTreeMap::from([("stable".to_owned(), 2)])
                })
        });
        if converged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: never converged after {log:?}\n{}",
            env.operator_log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every Pod serves the spec (a Pod killed last may still be starting).
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for ip in &ips {
        loop {
            let a = predict(&http, *ip, "fraud", Some("labels/stable")).await;
            if a.as_ref().is_ok_and(|a| (a.status, a.version) == (200, Some(2))) {
                break;
            }
            assert!(Instant::now() < deadline, "seed {seed}: {ip} never served the spec: {a:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let samples = load.finish().await;

    // A failure is the killed Pod's when it ended after a crash of that Pod
    // and before the Pod answered a request sent after the crash (one in
    // flight at the kill may still have been answered).
    let killed_pods = |s: &Sample| {
        crashes.iter().any(|(ip, at)| {
            *ip == s.ip
                && s.at >= *at
                && !samples.iter().any(|o| o.ip == *ip && o.ok && o.sent > *at && o.at < s.at)
        })
    };
    let failed: Vec<&Sample> = samples.iter().filter(|s| !s.ok).collect();
    let (of_killed, others): (Vec<&Sample>, Vec<&Sample>) =
        failed.iter().partition(|s| killed_pods(s));
    eprintln!(
        "chaos seed {seed}: faults {log:?}; operator exits restarted {operator_exits}; requests {}, failed {} (killed Pods' {}, others {})",
        samples.len(),
        failed.len(),
        of_killed.len(),
        others.len()
    );
    assert!(samples.len() > 500, "the load ran ({})", samples.len());
    assert!(
        others.is_empty(),
        "seed {seed}: requests failed that no kill explains: {:?}",
        others.iter().take(5).map(|s| (&s.ip, &s.what)).collect::<Vec<_>>()
    );
    // No Pod replaced; restarts only where this test killed a process.
    let pods_after = env.pod_restarts("fraud").await.expect("pods");
    assert_eq!(
        pods_after.keys().collect::<Vec<_>>(),
        pods_before.keys().collect::<Vec<_>>(),
        "seed {seed}: no Pod replaced"
    );
    let restarts: i32 = pods_after.values().sum();
    assert_eq!(
        usize::try_from(restarts).expect("count"),
        crashes.len(),
        "seed {seed}: restarts only where a process was killed"
    );
}
