//! The reconcile loop: dereference (the ModelDeployment, its Pods, what
//! their sidecars serve) → validate → plan (pure) → apply (owned objects,
//! per-Pod config reloads) → status. Level-triggered: every pass recomputes
//! from the spec, the cluster and the sidecars; nothing remembered between
//! passes is trusted, and a periodic requeue catches what watches miss.

use crate::metrics::Metrics;
use crate::plan::{self, Phase, Plan, PodView, Routing};
use crate::resources::{self, FIELD_MANAGER, Names};
use crate::sidecar::{Sidecar, SidecarError, SidecarOptions};
use crate::status::{self, PodCounts};
use crate::validate;
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;
use versa_crd::{ModelDeployment, ModelDeploymentStatus};
use versa_proto::text_format;

/// What can go wrong in a pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot create a reload token: {0}")]
    Token(#[from] getrandom::Error),
    #[error("secret {0} holds no token")]
    EmptyToken(String),
    #[error("the ModelDeployment has no namespace")]
    NoNamespace,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The `error` label of the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Token(_) | Error::EmptyToken(_) => "token",
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub sidecar: SidecarOptions,
    /// Requeue while a rollout moves (versions loading, labels to move).
    pub progress_requeue: Duration,
    /// Requeue when all is settled: the backstop for missed events and drift.
    pub steady_requeue: Duration,
    /// Watch one namespace only; all when `None`.
    pub namespace: Option<String>,
    /// Names this instance in Events.
    pub instance: Option<String>,
    /// Give each ModelDeployment a NetworkPolicy opening the ModelService
    /// port to these Pods only.
    pub network_policy: Option<resources::OperatorPods>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sidecar: SidecarOptions::default(),
            progress_requeue: Duration::from_secs(1),
            steady_requeue: Duration::from_secs(30),
            namespace: None,
            instance: None,
            network_policy: None,
        }
    }
}

/// Shared by every pass.
pub struct Context {
    pub client: kube::Client,
    pub metrics: Metrics,
    pub options: Options,
    recorder: Recorder,
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
        Self { client, metrics, options, recorder }
    }
}

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
    let owned = watcher::Config::default().labels(resources::DEPLOYMENT_LABEL);
    Controller::new(mds, watcher::Config::default())
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

fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failures.with_label_values(&[error.metric_label()]).inc();
    tracing::warn!(resource = %md.name_any(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(2))
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
    reconcile_in(&md, &ctx, &namespace).instrument(span).await
}

async fn reconcile_in(md: &ModelDeployment, ctx: &Context, namespace: &str) -> Result<Action> {
    let name = md.name_any();
    let client = &ctx.client;
    let generation = md.metadata.generation;
    let previous = md.status.as_ref();
    let now = Timestamp::now();

    // Validate: a spec the operator refuses changes nothing but the status.
    let problems = validate::problems(&md.spec);
    if !problems.is_empty() {
        let status = status::invalid(previous, generation, &problems, now);
        if !status::is_true(previous, status::DEGRADED)
            || previous.and_then(|s| s.observed_generation) != generation
        {
            let note = problems.join("; ");
            tracing::warn!(problems = %note, "spec refused");
            publish(ctx, md, EventType::Warning, "InvalidSpec", "Validate", note).await;
        }
        write_status(client, namespace, &name, &status).await?;
        return Ok(Action::await_change());
    }

    // Owned objects.
    let names = Names::of(&name);
    let token = ensure_token(client, md, namespace, &names).await?;
    let ssa = PatchParams::apply(FIELD_MANAGER).force();

    // Observe the Pods and their sidecars.
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&resources::pod_selector(&name)))
        .await?
        .items;
    let pods: Vec<Pod> =
        pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let model_names: Vec<String> = md.spec.models.iter().map(|m| m.name.clone()).collect();
    let observed = observe(ctx, &pods, &token, &model_names).await;

    // Plan.
    let views: Vec<PodView> = observed.iter().map(|o| o.view.clone()).collect();
    let plan = plan::plan(&md.spec, &views, &status::previous_models(previous), now);

    // Apply: the boot config first, so a Pod (re)starting now gets this phase.
    let boot = text_format::to_text("tensorflow.serving.ModelServerConfig", &plan.boot_config);
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(&names.config_map, &ssa, &Patch::Apply(with_kind(resources::config_map(md, &boot))))
        .await?;
    // The Pods need the ConfigMap and the Secret, so the Deployment comes after them.
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch(&names.deployment, &ssa, &Patch::Apply(with_kind(resources::deployment(md))))
        .await?;
    Api::<Service>::namespaced(client.clone(), namespace)
        .patch(&names.service, &ssa, &Patch::Apply(with_kind(resources::service(md))))
        .await?;
    if let Some(operator) = &ctx.options.network_policy {
        let policy = resources::network_policy(md, operator);
        let name = policy.metadata.name.clone().unwrap_or_default();
        Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
            .patch(&name, &ssa, &Patch::Apply(with_kind(policy)))
            .await?;
    }
    let pushed = push(ctx, &observed, &plan).await;
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
    let new_status =
        status::after_pass(previous, generation, &plan, &in_force, counts, &pod_errors, now);
    announce(ctx, md, previous, &plan).await;
    if previous != Some(&new_status) {
        write_status(client, namespace, &name, &new_status).await?;
    }

    let settled = plan.models.iter().all(|m| m.phase == Phase::Ready)
        && counts.ready == counts.desired
        && pod_errors.is_empty();
    let stopped = plan.models.iter().any(|m| m.phase == Phase::Stopped);
    Ok(Action::requeue(if settled || stopped {
        ctx.options.steady_requeue
    } else {
        ctx.options.progress_requeue
    }))
}

/// A Pod as seen this pass.
#[derive(Debug, Clone)]
struct Observed {
    view: PodView,
    sidecar: Option<Sidecar>,
    error: Option<String>,
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Asks every running Pod's sidecar what it serves, a few at a time.
async fn observe(ctx: &Context, pods: &[Pod], token: &str, models: &[String]) -> Vec<Observed> {
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
                let sidecar = Sidecar::connect(ip, token, &ctx.options.sidecar).await?;
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
async fn push(
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

/// The reload token from the Secret the operator owns, created on first use.
async fn ensure_token(
    client: &kube::Client,
    md: &ModelDeployment,
    namespace: &str,
    names: &Names,
) -> Result<String> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    if let Some(secret) = secrets.get_opt(&names.secret).await? {
        let token = secret
            .data
            .as_ref()
            .and_then(|d| d.get(resources::TOKEN_KEY))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::EmptyToken(names.secret.clone()))?;
        return Ok(token);
    }
    let token = resources::new_token()?;
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    secrets
        .patch(&names.secret, &ssa, &Patch::Apply(with_kind(resources::secret(md, &token))))
        .await?;
    Ok(token)
}

/// Server-side apply needs `apiVersion` and `kind`, which typed objects
/// leave out when serialised.
fn with_kind<K>(object: K) -> serde_json::Value
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize,
{
    let mut value = serde_json::to_value(&object).unwrap_or_default();
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}

async fn write_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &ModelDeploymentStatus,
) -> Result<()> {
    let patch = json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": status,
    });
    Api::<ModelDeployment>::namespaced(client.clone(), namespace)
        .patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch))
        .await?;
    Ok(())
}

/// Events for every model whose phase changed this pass.
async fn announce(
    ctx: &Context,
    md: &ModelDeployment,
    previous: Option<&ModelDeploymentStatus>,
    plan: &Plan,
) {
    let before = status::previous_models(previous);
    for m in &plan.models {
        if before.get(&m.name).and_then(|p| p.phase) == Some(m.phase) {
            continue;
        }
        tracing::info!(model = %m.name, phase = m.phase.as_str(), "phase");
        match &m.stop {
            Some(stop) => {
                let note = format!("model {}: {}", m.name, stop.message);
                publish(ctx, md, EventType::Warning, stop.reason, "Rollout", note).await;
            }
            None => {
                let note = format!("model {}: {}", m.name, m.phase.as_str());
                publish(ctx, md, EventType::Normal, m.phase.as_str(), "Rollout", note).await;
            }
        }
    }
}

async fn publish(
    ctx: &Context,
    md: &ModelDeployment,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
        tracing::warn!(error = %e, "event not recorded");
    }
}
