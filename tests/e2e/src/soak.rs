//! A soak: a real server under a mix of valid, malformed, oversized,
//! cancelled and slow requests, more than it can serve, for a bounded time;
//! then valid requests below capacity while the hostile mix goes on at a
//! lower rate. Records every outcome per class of client and the server's
//! resident memory over time. Used by the end-to-end suite (seconds) and
//! by `versa-bench --scenario soak` (minutes).

mod hostile;

use crate::{PredictionClient, f32_tensor, spec};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;
use versa_proto::serving::PredictRequest;

/// The soak's model: `soak` (MLP 256 → 1024 → 1024 → 10, input `input`).
pub const MODEL: &str = "soak";
const WIDTH: usize = 256;

/// Writes the soak's model repository under `root`; returns its base path.
pub fn model_repository(root: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let base = root.join(MODEL);
    versa_testmodels::write_version(&base, 1, &versa_testmodels::mlp(&[WIDTH, 1024, 1024, 10]))?;
    Ok(base)
}

/// Server flags that make the soak's load exceed capacity on any machine:
/// one inference thread, a short queue, short read timeouts.
pub fn server_flags() -> Vec<String> {
    [
        "--num_inference_threads=1",
        "--max_queued_inferences=8",
        "--max_concurrent_requests=64",
        "--request_read_timeout_seconds=2",
        "--inline_inference_max_micros=0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The server under soak, serving [`model_repository`]'s model as `model`.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub pid: u32,
    pub grpc_port: u16,
    pub rest_port: u16,
    pub model: &'static str,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Overload phase.
    pub overload: Duration,
    /// Below-capacity phase.
    pub below_capacity: Duration,
    /// Clients per valid class (gRPC, REST) during overload.
    pub valid_clients: usize,
    /// Clients per hostile class.
    pub hostile_clients: usize,
}

/// Everything a soak saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// (class, outcome) → count.
    pub outcomes: BTreeMap<(String, String), u64>,
    /// (seconds since start, VmRSS KiB).
    pub rss: Vec<(f64, u64)>,
    pub hwm_kib: u64,
    pub start_rss_kib: u64,
    /// Whether the server was alive at the end.
    pub alive: bool,
    /// Valid requests below capacity, and how many of them failed.
    pub below_capacity: (u64, u64),
    /// A few outcomes no class expects, for the report.
    pub unexpected: Vec<String>,
}

impl Report {
    pub fn count(&self, class: &str, outcome: &str) -> u64 {
        self.outcomes.get(&(class.to_owned(), outcome.to_owned())).copied().unwrap_or(0)
    }

    pub fn total(&self, outcome: &str) -> u64 {
        self.outcomes.iter().filter(|((_, o), _)| o == outcome).map(|(_, n)| n).sum()
    }

    /// Most resident memory in the `quarter`-th quarter of the overload phase (0–3).
    pub fn rss_max_in_quarter(&self, quarter: usize, overload: Duration) -> u64 {
        let q = overload.as_secs_f64() / 4.0;
        let (from, to) = (q * quarter as f64, q * (quarter + 1) as f64);
        self.rss.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, r)| *r).max().unwrap_or(0)
    }

    /// The outcomes as a Markdown table.
    pub fn table(&self) -> String {
        let mut classes: Vec<&String> = self.outcomes.keys().map(|(c, _)| c).collect();
        classes.dedup();
        let mut out = String::from("| client class | outcomes |\n|---|---|\n");
        for class in classes {
            let cells: Vec<String> = self
                .outcomes
                .iter()
                .filter(|((c, _), _)| c == class)
                .map(|((_, o), n)| format!("{o} {n}"))
                .collect();
            out.push_str(&format!("| {class} | {} |\n", cells.join(", ")));
        }
        out
    }
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<(String, String), u64>,
    unexpected: Vec<String>,
}

type Shared = Arc<Mutex<Tally>>;

fn note(tally: &Shared, class: &str, outcome: &str) {
    let mut t = tally.lock().expect("tally");
    *t.outcomes.entry((class.to_owned(), outcome.to_owned())).or_default() += 1;
}

fn unexpected(tally: &Shared, class: &str, what: String) {
    note(tally, class, "UNEXPECTED");
    let mut t = tally.lock().expect("tally");
    if t.unexpected.len() < 20 {
        t.unexpected.push(format!("{class}: {what}"));
    }
}

fn valid_request(model: &str, rows: usize) -> PredictRequest {
    PredictRequest {
        model_spec: Some(spec(model, crate::Choice::Latest)),
        inputs: [(
            "input".to_owned(),
            f32_tensor(&[rows as i64, WIDTH as i64], vec![0.25; rows * WIDTH]),
        )]
        .into(),
        ..PredictRequest::default()
    }
}

fn grpc_outcome(
    result: &Result<tonic::Response<versa_proto::serving::PredictResponse>, tonic::Status>,
    rows: usize,
) -> Result<&'static str, String> {
    match result {
        Ok(r)
            if r.get_ref()
                .outputs
                .get("logits")
                .is_some_and(|t| t.float_val.len() == rows * 10) =>
        {
            Ok("ok")
        }
        Ok(r) => Err(format!("wrong answer: {:?}", r.get_ref().outputs.keys())),
        Err(e) if e.code() == Code::ResourceExhausted => Ok("shed"),
        Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
    }
}

/// A tiny deterministic generator (no extra dependency).
struct Draw(u64);

impl Draw {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

async fn grpc_client(port: u16) -> Option<PredictionClient> {
    PredictionClient::connect(format!("http://127.0.0.1:{port}")).await.ok()
}

/// Runs a soak against `target`.
pub async fn run(target: Target, options: &Options) -> Report {
    let tally: Shared = Arc::default();
    let started = Instant::now();
    let overload_over = Arc::new(AtomicBool::new(false));
    let all_over = Arc::new(AtomicBool::new(false));
    let start_rss = read_status(target.pid, "VmRSS").unwrap_or(0);
    let rss = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (rss, all_over) = (Arc::clone(&rss), Arc::clone(&all_over));
        tokio::spawn(async move {
            while !all_over.load(Ordering::Relaxed) {
                if let Some(kib) = read_status(target.pid, "VmRSS") {
                    rss.lock().expect("rss").push((started.elapsed().as_secs_f64(), kib));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    let mut valid = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    // Valid clients: only during overload (then one below capacity).
    for i in 0..options.valid_clients {
        let (t, over) = (Arc::clone(&tally), Arc::clone(&overload_over));
        valid.push(tokio::spawn(valid_grpc(target, t, over, i)));
        let (t, over) = (Arc::clone(&tally), Arc::clone(&overload_over));
        valid.push(tokio::spawn(valid_rest(target, t, over, i)));
    }
    // Hostile clients: until the end, at full speed during overload and at
    // a tenth of it below capacity.
    for _ in 0..options.hostile_clients {
        for kind in 0..6u8 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let (t, over, all) =
                (Arc::clone(&tally), Arc::clone(&overload_over), Arc::clone(&all_over));
            tasks.push(tokio::spawn(hostile::client(target, kind, t, over, all, seed)));
        }
    }
    tokio::time::sleep(options.overload).await;
    overload_over.store(true, Ordering::Relaxed);
    // The overload's last requests finish before the load drops below capacity.
    for t in valid {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    // Below capacity: one valid client at a time, every request must succeed.
    let below_until = Instant::now() + options.below_capacity;
    let (mut sent, mut failed) = (0u64, 0u64);
    if let Some(mut client) = grpc_client(target.grpc_port).await {
        let mut draw = Draw(seed | 1);
        while Instant::now() < below_until {
            let rows = 1 + draw.next(8) as usize;
            sent += 1;
            let result = client.predict(valid_request(target.model, rows)).await;
            match grpc_outcome(&result, rows) {
                Ok("ok") => {}
                Ok(_) | Err(_) => {
                    failed += 1;
                    unexpected(&tally, "below-capacity", format!("{:?}", result.err()));
                }
            }
        }
    }
    all_over.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let _ = sampler.await;
    let tally =
        Arc::try_unwrap(tally).map(|m| m.into_inner().unwrap_or_default()).unwrap_or_default();
    let rss = rss.lock().expect("rss").clone();
    Report {
        outcomes: tally.outcomes,
        rss,
        hwm_kib: read_status(target.pid, "VmHWM").unwrap_or(0),
        start_rss_kib: start_rss,
        alive: read_status(target.pid, "VmRSS").is_some(),
        below_capacity: (sent, failed),
        unexpected: tally.unexpected,
    }
}

fn read_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok()
    })
}

async fn valid_grpc(target: Target, tally: Shared, over: Arc<AtomicBool>, i: usize) {
    let Some(mut client) = grpc_client(target.grpc_port).await else {
        return unexpected(&tally, "valid-grpc", "cannot connect".into());
    };
    let mut draw = Draw(0x1234_5678 + i as u64);
    while !over.load(Ordering::Relaxed) {
        let rows = 1 + draw.next(8) as usize;
        let result = client.predict(valid_request(target.model, rows)).await;
        match grpc_outcome(&result, rows) {
            Ok(outcome) => note(&tally, "valid-grpc", outcome),
            Err(e) => unexpected(&tally, "valid-grpc", e),
        }
    }
}

async fn valid_rest(target: Target, tally: Shared, over: Arc<AtomicBool>, i: usize) {
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/v1/models/{}:predict", target.rest_port, target.model);
    let mut draw = Draw(0x8765_4321 + i as u64);
    while !over.load(Ordering::Relaxed) {
        let rows = 1 + draw.next(8) as usize;
        let body = format!("{{\"inputs\": {}}}", serde_json::json!(vec![vec![0.25; WIDTH]; rows]));
        match http.post(&url).body(body).send().await {
            Ok(r) if r.status() == 200 => note(&tally, "valid-rest", "ok"),
            Ok(r) if r.status() == 429 => note(&tally, "valid-rest", "shed"),
            Ok(r) => {
                let status = r.status();
                unexpected(
                    &tally,
                    "valid-rest",
                    format!("{status}: {}", r.text().await.unwrap_or_default()),
                )
            }
            Err(e) => unexpected(&tally, "valid-rest", e.to_string()),
        }
    }
}
