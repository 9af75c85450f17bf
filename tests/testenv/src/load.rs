//! A steady load of unversioned REST predictions across Pods, bounded in
//! count and time, counting answers per version and keeping the first
//! failures: the "zero failed requests" check of rollout tests.

use crate::versa::{Answer, ZEROS, predict_body};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most requests one load sends.
pub const MAX_REQUESTS: usize = 200_000;

/// What a load saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Successful answers per version that answered.
    pub ok: BTreeMap<i64, u64>,
    /// Failed requests.
    pub failed: u64,
    /// Failed requests per version that failed them (REST failures name
    /// the version they were routed to, once it is known).
    pub failed_by_version: BTreeMap<i64, u64>,
    /// The first few failures.
    pub errors: Vec<String>,
}

impl Tally {
    /// Successful answers in all.
    pub fn ok_total(&self) -> u64 {
        self.ok.values().sum()
    }
}

/// Unversioned predictions of `model` against every Pod until finished.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Sends one request every `pause` (round robin over `ips`) for at most
    /// `limit`, each one instance of zeros.
    pub fn start(ips: Vec<Ipv4Addr>, model: &str, pause: Duration, limit: Duration) -> Self {
        Self::start_with(ips, model, &[ZEROS], pause, limit)
    }

    /// [`Load::start`] sending the REST bodies `bodies` in turn.
    pub fn start_with(
        ips: Vec<Ipv4Addr>,
        model: &str,
        bodies: &[&'static str],
        pause: Duration,
        limit: Duration,
    ) -> Self {
        assert!(!bodies.is_empty() && !ips.is_empty(), "a load needs Pods and bodies");
        let bodies = bodies.to_vec();
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = {
            let (stop, tally, model) = (Arc::clone(&stop), Arc::clone(&tally), model.to_owned());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let started = Instant::now();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) && n < MAX_REQUESTS && started.elapsed() < limit
                {
                    let ip = ips[n % ips.len()];
                    // Every Pod gets every body in turn.
                    let body = bodies[(n / ips.len()) % bodies.len()];
                    let answer = predict_body(&http, ip, &model, None, body).await;
                    {
                        let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
                        match answer {
                            Ok(Answer { status: 200, version: Some(v), .. }) => {
                                *t.ok.entry(v).or_default() += 1;
                            }
                            other => {
                                t.failed += 1;
                                if let Ok(Answer { version: Some(v), .. }) = &other {
                                    *t.failed_by_version.entry(*v).or_default() += 1;
                                }
                                if t.errors.len() < 10 {
                                    t.errors.push(format!("{ip}: {other:?}"));
                                }
                            }
                        }
                    }
                    n += 1;
                    tokio::time::sleep(pause).await;
                }
            })
        };
        Self { stop, tally, task }
    }

    /// What it saw so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops it; what it saw.
    pub async fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.task).await;
        self.tally()
    }
}
