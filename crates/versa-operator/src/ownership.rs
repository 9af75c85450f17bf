//! Whose is an object with a name the operator derives? Pure: the operator
//! creates or changes a child only when it is absent or controlled by this
//! very ModelDeployment (its uid); anything else is somebody's and is left
//! untouched, reported as a conflict.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference,
};

/// How an existing object relates to a ModelDeployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No such object: the operator may create it.
    Absent,
    /// Controlled by this ModelDeployment.
    Ours,
    /// Somebody else's: who, in words.
    Foreign(String),
}

/// The object's controller reference, if any.
pub fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// Decides from the object's metadata; `uid` is the ModelDeployment's.
pub fn ownership(existing: Option<&ObjectMeta>, uid: &str) -> Ownership {
    let Some(meta) = existing else { return Ownership::Absent };
    match controller(meta) {
        Some(owner) if owner.uid == uid => Ownership::Ours,
        Some(owner) if owner.kind == "ModelDeployment" => Ownership::Foreign(format!(
            "controlled by an earlier ModelDeployment {} (uid {}), not yet garbage-collected",
            owner.name, owner.uid
        )),
        Some(owner) => Ownership::Foreign(format!("controlled by {} {}", owner.kind, owner.name)),
        None => {
            let managers: Vec<&str> =
                meta.managed_fields.iter().flatten().filter_map(|m| m.manager.as_deref()).collect();
            if managers.is_empty() {
                Ownership::Foreign("not created by this ModelDeployment".into())
            } else {
                Ownership::Foreign(format!(
                    "not created by this ModelDeployment (managed by {})",
                    managers.join(", ")
                ))
            }
        }
    }
}

/// The conflict message for a child the operator may not touch, or `None`.
pub fn conflict(
    kind: &str,
    name: &str,
    existing: Option<&ObjectMeta>,
    uid: &str,
) -> Option<String> {
    match ownership(existing, uid) {
        Ownership::Foreign(who) => Some(format!(
            "{kind} {name} already exists and is {who}: left untouched; rename the ModelDeployment or remove that {kind}"
        )),
        Ownership::Absent | Ownership::Ours => None,
    }
}

/// The managed fields with `manager`'s "Update" entries (what a create or
/// any non-apply write by it records) folded into its "Apply" entry of the
/// same API version, or `None` when there is nothing to fold. Field sets
/// are unions of `fieldsV1` tries, so folding is a union: the operator's
/// applies then own every field it wrote, and a field its spec drops later
/// is removed instead of being kept by a stale "Update" owner.
pub fn as_applied(
    entries: Option<&[ManagedFieldsEntry]>,
    manager: &str,
) -> Option<Vec<ManagedFieldsEntry>> {
    let entries = entries?;
    let is_ours = |e: &ManagedFieldsEntry, operation: &str| {
        e.manager.as_deref() == Some(manager)
            && e.operation.as_deref() == Some(operation)
            && e.subresource.as_deref().unwrap_or_default().is_empty()
    };
    if !entries.iter().any(|e| is_ours(e, "Update")) {
        return None;
    }
    let (updates, mut folded): (Vec<&ManagedFieldsEntry>, Vec<&ManagedFieldsEntry>) =
        entries.iter().partition(|e| is_ours(e, "Update"));
    let mut folded: Vec<ManagedFieldsEntry> = folded.drain(..).cloned().collect();
    for update in updates {
        let applied =
            folded.iter_mut().find(|e| is_ours(e, "Apply") && e.api_version == update.api_version);
        match applied {
            Some(applied) => {
                let mut union = applied.fields_v1.take().map(|f| f.0).unwrap_or_default();
                if let Some(more) = &update.fields_v1 {
                    merge_fields(&mut union, &more.0);
                }
                applied.fields_v1 = Some(FieldsV1(union));
            }
            None => {
                let mut turned = update.clone();
                turned.operation = Some("Apply".into());
                folded.push(turned);
            }
        }
    }
    Some(folded)
}

/// The union of two `fieldsV1` tries (JSON objects whose keys are fields).
fn merge_fields(into: &mut serde_json::Value, more: &serde_json::Value) {
    match (into, more) {
        (serde_json::Value::Object(into), serde_json::Value::Object(more)) => {
            for (key, value) in more {
                match into.get_mut(key) {
                    Some(existing) => merge_fields(existing, value),
                    None => {
                        into.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (into, more) if into.is_null() => *into = more.clone(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(yaml: &str) -> ObjectMeta {
        serde_yaml::from_str(yaml).expect("metadata parses")
    }

    #[test]
    fn only_absent_or_our_own_objects_may_be_touched() {
        assert_eq!(ownership(None, "u1"), Ownership::Absent);
        let ours = meta(
            "{name: fraud, ownerReferences: [{apiVersion: serving.versa.dev/v1alpha1, kind: ModelDeployment, name: fraud, uid: u1, controller: true}]}",
        );
        assert_eq!(ownership(Some(&ours), "u1"), Ownership::Ours);
        assert!(
            matches!(ownership(Some(&ours), "u2"), Ownership::Foreign(w) if w.contains("earlier ModelDeployment fraud"))
        );
        let theirs = meta(
            "{name: checkout, managedFields: [{manager: kubectl-client-side-apply, operation: Update}]}",
        );
        assert_eq!(
            conflict("Service", "checkout", Some(&theirs), "u1").as_deref(),
            Some(
                "Service checkout already exists and is not created by this ModelDeployment (managed by kubectl-client-side-apply): left untouched; rename the ModelDeployment or remove that Service"
            )
        );
        // A non-controller reference to us does not make it ours.
        let referenced = meta(
            "{name: x, ownerReferences: [{apiVersion: serving.versa.dev/v1alpha1, kind: ModelDeployment, name: fraud, uid: u1}]}",
        );
        assert!(matches!(ownership(Some(&referenced), "u1"), Ownership::Foreign(_)));
        let rs = meta(
            "{name: x, ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: u9, controller: true}]}",
        );
        assert_eq!(
            ownership(Some(&rs), "u1"),
            Ownership::Foreign("controlled by Deployment web".into())
        );
    }

    #[test]
    fn fields_written_without_apply_are_handed_to_apply() {
        let created = meta(
            "{name: x, managedFields: [{manager: versa-operator, operation: Update, apiVersion: v1, fieldsType: FieldsV1, fieldsV1: {f:data: {}}}, {manager: kube-controller-manager, operation: Update}]}",
        );
        let handed =
            as_applied(created.managed_fields.as_deref(), "versa-operator").expect("turned");
        let ops: Vec<_> = handed
            .iter()
            .map(|e| {
                (
                    e.manager.as_deref().unwrap_or_default(),
                    e.operation.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(ops, [("kube-controller-manager", "Update"), ("versa-operator", "Apply")]);
        let recorded = created.managed_fields.as_deref().unwrap_or_default();
        assert_eq!(handed[1].fields_v1, recorded[0].fields_v1);
        // Nothing to turn: already applied, or not ours at all.
        let applied =
            meta("{name: x, managedFields: [{manager: versa-operator, operation: Apply}]}");
        assert!(as_applied(applied.managed_fields.as_deref(), "versa-operator").is_none());
        // An Update entry beside the Apply one (a hand-over that failed
        // once, or a write by an older operator) is folded into it.
        let both = meta(
            "{name: x, managedFields: [{manager: versa-operator, operation: Apply, apiVersion: v1, fieldsV1: {f:data: {f:a: {}}}}, {manager: other, operation: Apply, apiVersion: v1}, {manager: versa-operator, operation: Update, apiVersion: v1, fieldsV1: {f:data: {f:b: {}}, f:metadata: {}}}]}",
        );
        let folded = as_applied(both.managed_fields.as_deref(), "versa-operator").expect("folded");
        assert_eq!(folded.len(), 2, "{folded:?}");
        assert_eq!(folded[1].manager.as_deref(), Some("other"));
        let union = folded[0].fields_v1.as_ref().map(|f| f.0.clone()).unwrap_or_default();
        assert_eq!(union, serde_json::json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {}}));
        assert!(as_applied(None, "versa-operator").is_none());
    }
}
