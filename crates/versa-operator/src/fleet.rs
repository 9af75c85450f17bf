//! The serving Pods' sidecars in one pass: what each serves
//! (`GetModelStatus`) and the config each must get (reloads), a few Pods at
//! a time, every call counted in the sidecar-call metric.

use crate::controller::Context;
use crate::leader::Leadership;
use crate::plan::{Plan, PodView};
use crate::sidecar::{Sidecar, SidecarError};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use std::collections::BTreeMap;
use std::net::IpAddr;
use tracing::Instrument as _;

/// A Pod as seen this pass.
#[derive(Debug, Clone)]
pub struct Observed {
    pub view: PodView,
    pub sidecar: Option<Sidecar>,
    pub error: Option<String>,
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Asks every running Pod's sidecar what it serves, a few at a time.
pub async fn observe(ctx: &Context, pods: &[Pod], token: &str, models: &[String]) -> Vec<Observed> {
    futures::stream::iter(pods.iter().cloned())
        .map(|pod| async move {
            let name = pod.name_any();
            let ready = is_ready(&pod);
            let ip: Option<IpAddr> = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok());
            let mut view = PodView { name: name.clone(), ready, models: None };
            let Some(ip) = ip else {
                return Observed { view, sidecar: None, error: None };
            };
            let span = tracing::debug_span!("observe", pod = %name, %ip);
            let result = async {
                let sidecar = Sidecar::connect(ip, token, &ctx.options.sidecar)
                    .await?
                    .with_epoch(ctx.options.leadership.as_ref().map(Leadership::epoch));
                let models = sidecar.models(models).await?;
                Ok::<_, SidecarError>((sidecar, models))
            }
            .instrument(span)
            .await;
            let result_label = if result.is_ok() { "ok" } else { "error" };
            ctx.metrics.sidecar_calls.with_label_values(&["GetModelStatus", result_label]).inc();
            match result {
                Ok((sidecar, models)) => {
                    view.models = Some(models);
                    Observed { view, sidecar: Some(sidecar), error: None }
                }
                // A Pod still starting is not reachable yet; only a Ready one is an error.
                Err(e) => {
                    let error = ready.then(|| format!("pod {name}: {e}"));
                    Observed { view, sidecar: None, error }
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Sends each observed Pod its config; returns the result per Pod.
pub async fn push(
    ctx: &Context,
    observed: &[Observed],
    plan: &Plan,
) -> BTreeMap<String, Result<(), SidecarError>> {
    let mut jobs = Vec::new();
    for o in observed {
        if let (Some(config), Some(sidecar)) = (plan.pod_configs.get(&o.view.name), &o.sidecar) {
            jobs.push((o.view.name.clone(), sidecar.clone(), config.clone()));
        }
    }
    futures::stream::iter(jobs)
        .map(|(pod, sidecar, config)| async move {
            // Checked again right before each write: a pass frozen after
            // the last check must not write when it wakes.
            if ctx.acting().is_err() {
                return (pod, Err(SidecarError::NotLeading));
            }
            tracing::debug!(pod = %pod, "reload sent");
            let result = sidecar
                .reload(&config)
                .instrument(tracing::debug_span!("reload", pod = %pod))
                .await;
            let label = if result.is_ok() { "ok" } else { "error" };
            ctx.metrics
                .sidecar_calls
                .with_label_values(&["HandleReloadConfigRequest", label])
                .inc();
            if let Err(e) = &result {
                tracing::warn!(pod = %pod, error = %e, "reload failed");
            }
            (pod, result)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Every Ready Pod's cumulative counters (`versa.v1.Telemetry/Snapshot`),
/// a few at a time: the snapshots by Pod, and why the others could not be
/// read.
pub async fn snapshots(
    ctx: &Context,
    observed: &[Observed],
) -> (BTreeMap<String, versa_analysis::Snapshot>, Vec<String>) {
    let jobs: Vec<(String, Sidecar)> = observed
        .iter()
        .filter(|o| o.view.ready)
        .filter_map(|o| o.sidecar.clone().map(|s| (o.view.name.clone(), s)))
        .collect();
    let unreachable = observed
        .iter()
        .filter(|o| o.view.ready && o.sidecar.is_none())
        .map(|o| format!("pod {}: sidecar not reachable", o.view.name));
    let results: Vec<(String, Result<versa_analysis::Snapshot, String>)> =
        futures::stream::iter(jobs)
            .map(|(pod, sidecar)| async move {
                let result = match sidecar.snapshot().await {
                    Ok(answer) => crate::snapshots::to_snapshot(&answer).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let label = if result.is_ok() { "ok" } else { "error" };
                ctx.metrics.sidecar_calls.with_label_values(&["Telemetry/Snapshot", label]).inc();
                (pod, result)
            })
            .buffer_unordered(16)
            .collect()
            .await;
    let mut snapshots = BTreeMap::new();
    let mut unread: Vec<String> = unreachable.collect();
    for (pod, result) in results {
        match result {
            Ok(s) => {
                snapshots.insert(pod, s);
            }
            Err(e) => {
                tracing::warn!(pod = %pod, error = %e, "counters not read");
                unread.push(format!("pod {pod}: {e}"));
            }
        }
    }
    (snapshots, unread)
}
