//! The objects a ModelDeployment owns, on the API server: reading them
//! (to check whose they are before touching them), applying them, the
//! reload token from its Secret, and the Pods that really belong to the
//! ModelDeployment's Deployment.

use crate::controller::Error;
use crate::ownership;
use crate::resources::{self, FIELD_MANAGER, Names};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;

/// The children as they are now (metadata only, plus the Secret's data).
#[derive(Debug, Default)]
pub struct Existing {
    /// (kind, name, metadata if it exists), in apply order.
    pub objects: Vec<(&'static str, String, Option<ObjectMeta>)>,
    pub secret: Option<Secret>,
}

async fn meta_of<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::namespaced(client.clone(), namespace).get_opt(name).await
}

impl Existing {
    /// The metadata of the child of `kind`, if it exists.
    pub fn meta_of(&self, kind: &str) -> Option<&ObjectMeta> {
        // Kinds as `K::kind` spells them.
        self.objects.iter().find(|(k, _, _)| *k == kind).and_then(|(_, _, meta)| meta.as_ref())
    }

    /// The uid of the child of `kind`, if it exists.
    pub fn uid_of(&self, kind: &str) -> Option<&str> {
        self.meta_of(kind).and_then(|m| m.uid.as_deref())
    }
}

/// Reads every child by its derived name.
pub async fn observe(
    client: &kube::Client,
    namespace: &str,
    names: &Names,
    network_policy: Option<&str>,
) -> Result<Existing, kube::Error> {
    let secret: Option<Secret> = meta_of(client, namespace, &names.secret).await?;
    let config_map: Option<ConfigMap> = meta_of(client, namespace, &names.config_map).await?;
    let deployment: Option<Deployment> = meta_of(client, namespace, &names.deployment).await?;
    let service: Option<Service> = meta_of(client, namespace, &names.service).await?;
    let mut objects = vec![
        ("Secret", names.secret.clone(), secret.as_ref().map(|o| o.metadata.clone())),
        ("ConfigMap", names.config_map.clone(), config_map.map(|o| o.metadata)),
        ("Deployment", names.deployment.clone(), deployment.map(|o| o.metadata)),
        ("Service", names.service.clone(), service.map(|o| o.metadata)),
    ];
    if let Some(name) = network_policy {
        let policy: Option<NetworkPolicy> = meta_of(client, namespace, name).await?;
        objects.push(("NetworkPolicy", name.to_owned(), policy.map(|o| o.metadata)));
    }
    Ok(Existing { objects, secret })
}

/// Every child that exists and is not this ModelDeployment's (`uid`).
pub fn conflicts(existing: &Existing, uid: &str) -> Vec<String> {
    existing
        .objects
        .iter()
        .filter_map(|(kind, name, meta)| ownership::conflict(kind, name, meta.as_ref(), uid))
        .collect()
}

/// The token in the Secret, if it holds a usable one.
pub fn token_in(secret: Option<&Secret>) -> Option<String> {
    secret
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(resources::TOKEN_KEY))
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .map(|t| t.trim().to_owned())
        // What a bearer token can be: visible ASCII, as the sidecar takes it.
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic()))
}

/// Writes one child the ownership check allowed. The uid the check saw
/// goes with it: an object deleted and made anew by somebody else in
/// between is refused by the API server (a uid cannot change), not taken
/// over. A child the check saw absent is *created* (POST), never applied:
/// an apply would merge into an object somebody created in between and
/// adopt it; a create fails with 409 instead and the next pass checks again.
pub async fn apply<K>(
    client: &kube::Client,
    namespace: &str,
    object: K,
    checked: &Existing,
) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let kind = K::kind(&()).into_owned();
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let Some(seen) = checked.meta_of(&kind) else {
        return create(&api, &kind, &name, &object).await;
    };
    let uid = seen.uid.clone().unwrap_or_default();
    // A hand-over that failed right after the create is retried here.
    hand_over(&api, &kind, &name, seen).await;
    let mut value = serde_json::to_value(&object).unwrap_or_default();
    // Server-side apply needs `apiVersion` and `kind`, which typed objects
    // leave out when serialised.
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = kind.clone().into();
    value["metadata"]["uid"] = uid.into();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(value))
        .await
        .map_err(|source| Error::Apply { object: format!("{kind} {name}"), source })
}

/// Creates a child, then hands the fields the create recorded to server-side
/// apply (as the operator's later applies own them), so a field the spec
/// drops later is removed, not kept by a stale "Update" owner.
async fn create<K>(api: &Api<K>, kind: &str, name: &str, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let params = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
    let created = match api.create(&params, object).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            return Err(Error::Conflict(vec![format!(
                "{kind} {name} appeared while this pass checked it (made by somebody else, or by a pass whose answer was lost): left untouched, checked again on the next pass"
            )]));
        }
        Err(source) => return Err(Error::Apply { object: format!("{kind} {name}"), source }),
    };
    hand_over(api, kind, name, created.meta()).await;
    Ok(created)
}

/// Folds the operator's non-apply field ownership (what a create records)
/// into its apply entry, with the object's uid and resourceVersion as
/// preconditions. A failure (the object changed meanwhile) is logged and
/// retried on the next pass, which sees the entry again.
async fn hand_over<K>(api: &Api<K>, kind: &str, name: &str, meta: &ObjectMeta)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(entries) = ownership::as_applied(meta.managed_fields.as_deref(), FIELD_MANAGER) else {
        return;
    };
    let patch = serde_json::json!({
        "metadata": {
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
            "managedFields": entries,
        }
    });
    match api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => tracing::debug!(kind, name, "fields handed to server-side apply"),
        Err(e) => {
            tracing::warn!(kind, name, error = %e, "could not hand fields to server-side apply: retried next pass");
        }
    }
}

/// The Pods the Deployment (`deployment_uid`) runs: labelled for this
/// ModelDeployment *and* controlled by one of the Deployment's ReplicaSets.
/// A Pod that only carries the label is not sent the reload token.
pub async fn pods_of(
    client: &kube::Client,
    namespace: &str,
    md_name: &str,
    deployment_uid: &str,
) -> Result<Vec<Pod>, kube::Error> {
    let selector = ListParams::default().labels(&resources::pod_selector(md_name));
    let sets = Api::<ReplicaSet>::namespaced(client.clone(), namespace).list(&selector).await?;
    let owners: BTreeSet<String> = sets
        .items
        .iter()
        .filter(|rs| controller_uid(&rs.metadata) == Some(deployment_uid))
        .filter_map(|rs| rs.metadata.uid.clone())
        .collect();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace).list(&selector).await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        // A Failed or Succeeded Pod's address may already be another Pod's.
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter(|p| controller_uid(&p.metadata).is_some_and(|uid| owners.contains(uid)))
        .collect())
}

fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    ownership::controller(meta).map(|r| r.uid.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn only_a_real_token_is_used() {
        let with = |data: &[u8]| Secret {
            data: Some([(resources::TOKEN_KEY.to_owned(), ByteString(data.to_vec()))].into()),
            ..Secret::default()
        };
        let token = "a".repeat(64);
        assert_eq!(token_in(Some(&with(format!("{token}\n").as_bytes()))), Some(token));
        assert_eq!(token_in(Some(&with(b""))), None, "emptied");
        assert_eq!(
            token_in(Some(&with(b"rotated+by/hand=="))).as_deref(),
            Some("rotated+by/hand==")
        );
        assert_eq!(token_in(Some(&with(b"two words"))), None);
        assert_eq!(token_in(Some(&with(&[0xff; 40]))), None, "not text");
        assert_eq!(token_in(Some(&Secret::default())), None, "no data");
        assert_eq!(token_in(None), None, "deleted");
    }
}
