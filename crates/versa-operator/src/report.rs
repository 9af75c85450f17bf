//! What a pass tells the user: the status subresource and Events. Every
//! failure lands in both (and in the failure metric, counted by the error
//! policy); a status write that itself fails still leaves an Event and a log.

use crate::controller::{Context, Error};
use crate::plan::Plan;
use crate::resources::FIELD_MANAGER;
use crate::status;
use k8s_openapi::jiff::Timestamp;
use kube::Resource as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde_json::json;
use versa_crd::{ModelDeployment, ModelDeploymentStatus};

/// Writes the status subresource (server-side apply, one field manager).
///
/// The write is conditional on `resource_version`, the object's version the
/// pass read: `status.models` is an atomic list, so an unconditional apply
/// would overwrite a `rollout.command` a user patched in meanwhile. A
/// changed object fails with 409 Conflict ([`is_conflict`]); the pass runs
/// again on what it now holds.
pub async fn write_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    resource_version: Option<&str>,
    status: &ModelDeploymentStatus,
) -> Result<Option<String>, kube::Error> {
    let patch = status_patch(resource_version, status);
    tracing::debug!(generation = status.observed_generation, "status written");
    let written = Api::<ModelDeployment>::namespaced(client.clone(), namespace)
        .patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch))
        .await?;
    Ok(written.metadata.resource_version)
}

/// Removes the rollout-command annotation once its command is recorded in
/// status: a merge patch of that annotation alone, conditional on the
/// object's `resource_version` (a newer command written meanwhile stays,
/// for the next pass). Failures are logged; the command's id in status
/// keeps it from being applied twice.
pub async fn remove_command(ctx: &Context, md: &ModelDeployment, resource_version: Option<&str>) {
    // Without a version the patch would be unconditional (and could remove
    // a newer command): leave it for the next pass.
    let (Some(namespace), Some(name), Some(_)) =
        (md.metadata.namespace.as_deref(), md.metadata.name.as_deref(), resource_version)
    else {
        return;
    };
    let patch = json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": { versa_crd::command::COMMAND_ANNOTATION: null },
        }
    });
    let api = Api::<ModelDeployment>::namespaced(ctx.client.clone(), namespace);
    match api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => tracing::debug!("rollout command annotation removed"),
        Err(e) if is_conflict(&e) => {
            tracing::debug!("rollout command annotation changed meanwhile: left for the next pass");
        }
        Err(e) => tracing::warn!(error = %e, "the rollout command annotation could not be removed"),
    }
}

/// The apply patch of a status write, conditional on `resource_version`.
fn status_patch(
    resource_version: Option<&str>,
    status: &ModelDeploymentStatus,
) -> serde_json::Value {
    let mut patch = json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": status,
    });
    if let Some(version) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    patch
}

/// Whether a write failed because the object changed since it was read.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

/// The API server refuses Event notes over 1 KiB.
const MAX_NOTE_BYTES: usize = 1000;

/// The longest prefix of `s` of at most `max` bytes, cut at a character.
fn truncate_bytes(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Records an Event on the ModelDeployment (failures to record are logged).
pub async fn publish(
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
        note: Some(truncate_bytes(&note, MAX_NOTE_BYTES).to_owned()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder().publish(&event, &md.object_ref(&())).await {
        tracing::warn!(error = %e, "event not recorded");
    }
}

/// Events for every model whose phase changed this pass.
pub async fn announce(
    ctx: &Context,
    md: &ModelDeployment,
    previous: Option<&ModelDeploymentStatus>,
    plan: &Plan,
) {
    let before = status::previous_models(previous, md.metadata.generation);
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

/// Puts a failed pass into status (`Degraded` with the error's reason and
/// message) and, when that condition changes, a Warning Event.
pub async fn failure(ctx: &Context, md: &ModelDeployment, namespace: &str, error: &Error) {
    let Some(reason) = error.reason() else { return };
    let message = error.to_string();
    let previous = md.status.as_ref();
    let generation = md.metadata.generation;
    let status = status::failed(previous, generation, reason, &message, Timestamp::now());
    tracing::warn!(reason, error = %message, "pass failed");
    if status::condition_changed(previous, &status, status::DEGRADED) {
        publish(ctx, md, EventType::Warning, reason, "Reconcile", message.clone()).await;
    }
    if previous != Some(&status) {
        let name = md.metadata.name.as_deref().unwrap_or_default();
        let version = md.metadata.resource_version.as_deref();
        if let Err(e) = write_status(&ctx.client, namespace, name, version, &status).await {
            tracing::warn!(error = %e, "the failure could not be written to status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_are_cut_to_the_byte_limit_at_a_character() {
        let note = "é".repeat(700);
        let cut = truncate_bytes(&note, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES && cut.len() >= MAX_NOTE_BYTES - 1);
        assert_eq!(truncate_bytes("short", MAX_NOTE_BYTES), "short");
    }

    #[test]
    fn a_status_write_is_conditional_on_the_version_read() {
        let status = ModelDeploymentStatus::default();
        let patch = status_patch(Some("42"), &status);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["kind"], "ModelDeployment");
        assert!(status_patch(None, &status).get("metadata").is_none());
    }
}
