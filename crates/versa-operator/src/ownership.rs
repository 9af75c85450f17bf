//! Whose is an object with a name the operator derives? Pure: the operator
//! creates or changes a child only when it is absent or controlled by this
//! very ModelDeployment (its uid); anything else is somebody's and is left
//! untouched, reported as a conflict.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

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
}
