//! The reconcile loop: dereference (the ModelDeployment, its children, its
//! Pods, what their sidecars serve) → validate → plan (pure) → apply (owned
//! objects, per-Pod config reloads) → status. Level-triggered: every pass
//! recomputes from the spec, the cluster and the sidecars; nothing
//! remembered between passes is trusted (the retry count only paces
//! retries), and a periodic requeue catches what watches miss.
//!
//! A pass never touches an object it does not own, writes nothing unless
//! this replica leads, and reports every failure in status, as an Event and
//! in the failure metric before retrying with exponential back-off.

use crate::canary_pass;
use crate::children::{self, Existing};
use crate::fleet::{self, Observed, is_ready};
use crate::plan::{self, Phase, PodView, Routing};
use crate::report;
use crate::resources::{self, Names};
use crate::rollout_report;
use crate::status::{self, PodCounts};
use crate::validate;
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;
use versa_crd::ModelDeployment;
use versa_proto::text_format;

pub use crate::context::{Context, Options, retry_delay};
pub use crate::error::{Error, PASS_TIMEOUT, Result};

/// Runs the controller until the stream of ModelDeployments ends.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let (mds, deployments, pods) = match &ctx.options.namespace {
        Some(ns) => (
            Api::<ModelDeployment>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone())),
    };
    // Watches end server-side every 45 s, well within the client's read
    // timeout, so a quiet watch is renewed rather than cut.
    let owned = watcher::Config::default().labels(resources::DEPLOYMENT_LABEL).timeout(45);
    Controller::new(mds, watcher::Config::default().timeout(45))
        .owns(deployments, owned.clone())
        .watches(pods, owned, |pod: Pod| {
            let name = pod.labels().get(resources::DEPLOYMENT_LABEL)?.clone();
            Some(ObjectRef::<ModelDeployment>::new(&name).within(&pod.namespace()?))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile event");
            }
        })
        .await;
}

/// The back-off key: a ModelDeployment made anew under the same name starts afresh.
fn key(md: &ModelDeployment) -> String {
    let uid = md.metadata.uid.as_deref().unwrap_or_default();
    format!("{}/{}/{uid}", md.namespace().unwrap_or_default(), md.name_any())
}

fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failures.with_label_values(&[error.metric_label()]).inc();
    if matches!(error, Error::NotLeading) {
        return Action::requeue(Duration::from_secs(1));
    }
    if matches!(error, Error::StatusChanged) {
        // The watch brings the new object too; this is the backstop.
        tracing::info!(resource = %md.name_any(), "{error}");
        return Action::requeue(Duration::from_millis(200));
    }
    let mut delay = ctx.back_off(&key(&md));
    // Nothing watches the object in the way: look again at least as often
    // as the steady resync, so removing it resumes the rollout soon.
    if matches!(error, Error::Conflict(_)) {
        delay = delay.min(ctx.options.steady_requeue);
    }
    tracing::warn!(resource = %md.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// One pass for one ModelDeployment.
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = md.namespace().ok_or(Error::NoNamespace)?;
    let span = tracing::info_span!(
        "reconcile",
        resource = %format!("{namespace}/{}", md.name_any()),
        generation = md.metadata.generation.unwrap_or_default()
    );
    let _timer = ctx.metrics.pass();
    async {
        ctx.acting()?;
        let limit = PASS_TIMEOUT;
        let result = tokio::time::timeout(limit, reconcile_in(&md, &ctx, &namespace))
            .await
            .unwrap_or(Err(Error::PassTimeout(limit)));
        match &result {
            Ok(_) => ctx.succeeded(&key(&md)),
            Err(e) if ctx.acting().is_ok() => report::failure(&ctx, &md, &namespace, e).await,
            Err(_) => {}
        }
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_in(md: &ModelDeployment, ctx: &Context, namespace: &str) -> Result<Action> {
    let name = md.name_any();
    let client = &ctx.client;
    let generation = md.metadata.generation;
    let previous = md.status.as_ref();
    let now = Timestamp::now();
    let uid = md.metadata.uid.clone().unwrap_or_default();

    // Validate: a spec the operator refuses changes nothing but the status.
    let problems = validate::problems(&name, &md.spec, &ctx.options.policy);
    if !problems.is_empty() {
        let status = status::invalid(previous, generation, &problems, now);
        if status::condition_changed(previous, &status, status::DEGRADED) {
            let note = problems.join("; ");
            tracing::warn!(problems = %note, "spec refused");
            report::publish(ctx, md, EventType::Warning, "InvalidSpec", "Validate", note).await;
        }
        if previous != Some(&status) {
            ctx.acting()?;
            write_status(client, namespace, md, &status).await?;
        }
        return Ok(Action::await_change());
    }

    // Owned objects: read them all, touch none that is somebody else's.
    let names = Names::of(&name);
    let policy_name =
        ctx.options.network_policy.as_ref().map(|_| resources::network_policy_name(&name));
    let existing = children::observe(client, namespace, &names, policy_name.as_deref()).await?;
    let conflicts = children::conflicts(&existing, &uid);
    if !conflicts.is_empty() {
        return Err(Error::Conflict(conflicts));
    }
    ctx.acting()?;
    let token = ensure_token(ctx, md, namespace, &existing).await?;

    // Plan from the Pods of our Deployment (none before it exists) and what
    // their sidecars serve.
    let pods = match existing.uid_of("Deployment") {
        Some(deployment_uid) => children::pods_of(client, namespace, &name, deployment_uid).await?,
        None => Vec::new(),
    };
    let model_names: Vec<String> = md.spec.models.iter().map(|m| m.name.clone()).collect();
    let observed = fleet::observe(ctx, &pods, &token, &model_names).await;
    let views: Vec<PodView> = observed.iter().map(|o| o.view.clone()).collect();
    // Canaries: the step machine decides what each model serves this pass
    // (the spec is never changed); due analysis metrics are measured.
    let canaries = canary_pass::run(ctx, md, &observed, analysis_time(now)).await;
    let spec = canaries.planned.as_ref().unwrap_or(&md.spec);
    let plan = plan::plan(spec, &views, &status::previous_models(previous, generation), now);

    // Apply: the boot config first, so a Pod (re)starting now gets this
    // phase; the Pods need the ConfigMap and the Secret, so the Deployment
    // comes after them.
    ctx.acting()?;
    let boot = text_format::to_text("tensorflow.serving.ModelServerConfig", &plan.boot_config);
    children::apply(client, namespace, resources::config_map(md, &boot), &existing).await?;
    children::apply(client, namespace, resources::deployment(md), &existing).await?;
    children::apply(client, namespace, resources::service(md), &existing).await?;
    if let Some(operator) = &ctx.options.network_policy {
        children::apply(client, namespace, resources::network_policy(md, operator), &existing)
            .await?;
    }
    ctx.acting()?;
    let pushed = fleet::push(ctx, &observed, &plan).await;
    let mut pod_errors: Vec<String> = observed.iter().filter_map(|o| o.error.clone()).collect();
    pod_errors.extend(pushed.values().filter_map(|r| r.as_ref().err().map(ToString::to_string)));

    // In force: what every Ready Pod confirmed, whole.
    let ready: Vec<&Observed> =
        observed.iter().filter(|o| o.view.ready && o.view.models.is_some()).collect();
    let all_confirmed = ready.iter().all(|o| {
        pushed.get(&o.view.name).is_some_and(Result::is_ok) && plan.routing_whole_for(&o.view.name)
    });
    let in_force: BTreeMap<String, Routing> = plan
        .models
        .iter()
        .map(|m| {
            let routing = if all_confirmed && !ready.is_empty() {
                m.in_force_if_accepted.clone()
            } else {
                m.in_force.clone()
            };
            (m.name.clone(), routing)
        })
        .collect();

    // Status and Events.
    let counts = PodCounts {
        desired: md.spec.replicas,
        existing: i32::try_from(pods.len()).unwrap_or(i32::MAX),
        ready: i32::try_from(pods.iter().filter(|p| is_ready(p)).count()).unwrap_or(i32::MAX),
    };
    let mut new_status =
        status::after_pass(previous, generation, &plan, &in_force, counts, &pod_errors, now);
    rollout_report::attach(&mut new_status, &canaries, generation, now);
    let mut version = md.metadata.resource_version.clone();
    if previous != Some(&new_status) {
        ctx.acting()?;
        version = write_status(client, namespace, md, &new_status).await?;
    }
    // The command (if any) is in the stored status now: its annotation goes.
    if canaries.command.is_some() {
        rollout_report::announce_command(ctx, md, &canaries).await;
        report::remove_command(ctx, md, version.as_deref()).await;
    }
    // Events once the state they tell of is stored: a pass whose write
    // fails (a conflict) tells nothing, and the next one decides again.
    report::announce(ctx, md, previous, &plan).await;
    rollout_report::announce(ctx, md, &canaries).await;

    let settled = plan.models.iter().all(|m| m.phase == Phase::Ready)
        && counts.ready == counts.desired
        && pod_errors.is_empty();
    let stopped = plan.models.iter().any(|m| m.phase == Phase::Stopped);
    let mut requeue =
        if settled || stopped { ctx.options.steady_requeue } else { ctx.options.progress_requeue };
    // A step waiting for its weight looks again soon; a timed pause or an
    // analysis metric wakes the pass when it is due.
    let waiting = canaries
        .rollouts
        .values()
        .filter_map(|r| r.status.as_ref())
        .any(|r| r.phase == "Progressing" && r.state.step_ready_at.is_none());
    if waiting {
        requeue = requeue.min(ctx.options.progress_requeue);
    }
    if let Some(wake) = canaries.wake {
        let until = Duration::from_millis(
            u64::try_from(wake.as_millis().saturating_sub(analysis_time(now).as_millis()))
                .unwrap_or(0),
        );
        requeue = requeue.min(until.max(ctx.options.progress_requeue));
    }
    Ok(Action::requeue(requeue))
}

/// Writes the pass's status, conditional on the version the pass read.
async fn write_status(
    client: &kube::Client,
    namespace: &str,
    md: &ModelDeployment,
    status: &versa_crd::ModelDeploymentStatus,
) -> Result<Option<String>> {
    let version = md.metadata.resource_version.as_deref();
    report::write_status(client, namespace, &md.name_any(), version, status)
        .await
        .map_err(|e| if report::is_conflict(&e) { Error::StatusChanged } else { Error::Kube(e) })
}

/// The decision core's clock reading of `now`.
fn analysis_time(now: Timestamp) -> versa_analysis::Timestamp {
    versa_analysis::Timestamp::from_millis(now.as_millisecond())
}

/// The reload token from the Secret the operator owns; a missing, emptied
/// or garbled one is (re)created with a fresh token. Pods pick the new one
/// up when their Secret volume updates (the sidecar re-reads the file), so
/// rollouts go on without restarting a Pod.
async fn ensure_token(
    ctx: &Context,
    md: &ModelDeployment,
    namespace: &str,
    existing: &Existing,
) -> Result<String> {
    if let Some(token) = children::token_in(existing.secret.as_ref()) {
        return Ok(token);
    }
    let token = resources::new_token()?;
    children::apply(&ctx.client, namespace, resources::secret(md, &token), existing).await?;
    let name = Names::of(&md.name_any()).secret;
    // A ModelDeployment whose models have a status got through a pass, so
    // it had a token before.
    if md.status.as_ref().is_some_and(|s| !s.models.is_empty()) {
        let what = if existing.secret.is_some() { "held no usable token" } else { "was missing" };
        let note = format!(
            "Secret {name} {what}: created a new reload token; Pods use it once their Secret volume updates"
        );
        tracing::warn!(secret = %name, "{note}");
        report::publish(ctx, md, EventType::Warning, "ReloadTokenRecreated", "Token", note).await;
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=11).map(|n| retry_delay(n, cap).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(u32::MAX, cap), cap);
    }
}
