//! What every pass shares: the client, metrics, options, the Event
//! recorder, the back-off counts and the canaries' analysis windows.

use crate::error::{Error, Result};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::resources::{self, FIELD_MANAGER};
use crate::sidecar::SidecarOptions;
use crate::validate::SpecPolicy;
use kube::runtime::events::{Recorder, Reporter};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub sidecar: SidecarOptions,
    /// Requeue while a rollout moves (versions loading, labels to move).
    pub progress_requeue: Duration,
    /// Requeue when all is settled: the backstop for missed events and drift.
    pub steady_requeue: Duration,
    /// Cap of the exponential back-off of a failing ModelDeployment.
    pub max_retry_backoff: Duration,
    /// Watch one namespace only; all when `None`.
    pub namespace: Option<String>,
    /// Names this instance in Events.
    pub instance: Option<String>,
    /// Give each ModelDeployment a NetworkPolicy opening the ModelService
    /// port to these Pods only.
    pub network_policy: Option<resources::OperatorPods>,
    /// What ModelDeployments may put into serving Pods.
    pub policy: SpecPolicy,
    /// Whether this replica may act (leader election); `None`: always.
    pub leadership: Option<Leadership>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sidecar: SidecarOptions::default(),
            progress_requeue: Duration::from_secs(1),
            steady_requeue: Duration::from_secs(30),
            max_retry_backoff: Duration::from_secs(300),
            namespace: None,
            instance: None,
            network_policy: None,
            policy: SpecPolicy::default(),
            leadership: None,
        }
    }
}

/// Shared by every pass.
pub struct Context {
    pub client: kube::Client,
    pub metrics: Metrics,
    pub options: Options,
    recorder: Recorder,
    /// Consecutive failures per ModelDeployment, for the back-off.
    failures: Mutex<HashMap<String, u32>>,
    /// The canaries' analysis windows (snapshots), in memory only: after a
    /// restart each metric opens a new window.
    pub(crate) windows: crate::analysis::Windows,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: kube::Client, metrics: Metrics, options: Options) -> Self {
        let reporter =
            Reporter { controller: FIELD_MANAGER.into(), instance: options.instance.clone() };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            metrics,
            options,
            recorder,
            failures: Mutex::new(HashMap::new()),
            windows: crate::analysis::Windows::default(),
        }
    }

    pub(crate) fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Fails unless this replica may write now.
    pub(crate) fn acting(&self) -> Result<()> {
        match &self.options.leadership {
            Some(l) if !l.acting() => Err(Error::NotLeading),
            _ => Ok(()),
        }
    }

    /// Counts a failure of `key`; returns the wait before its retry.
    pub(crate) fn back_off(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        retry_delay(*n, self.options.max_retry_backoff)
    }

    pub(crate) fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

/// Wait before retry `n` (1-based): 1 s, 2 s, 4 s, … up to `cap`.
pub fn retry_delay(n: u32, cap: Duration) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(20)).min(cap)
}
