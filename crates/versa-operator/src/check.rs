//! `versa-operator --check_installation`, the chart's `helm test`: with the
//! operator's own credentials and flags, is the installation able to work?
//!
//! * the ModelDeployment CRD is Established and serves the version the
//!   operator speaks;
//! * the ServiceAccount may list ModelDeployments where the operator watches
//!   them, and do the rest of what the operator does (access reviews);
//! * with leader election, a replica holds the Lease and renewed it within
//!   the lease duration.
//!
//! Fetching is in [`run`]; what the fetched objects mean is decided by the
//! pure functions beside it.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::{CustomResourceExt as _, Resource as _};
use std::time::Duration;
use versa_crd::ModelDeployment;

/// What to check, from the operator's flags.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The namespace the operator watches; `None`: every namespace.
    pub namespace: Option<String>,
    /// The Lease the replicas elect a leader on, when leader election is on.
    pub lease: Option<LeaseRef>,
    /// Whether the operator writes NetworkPolicies (and so must be allowed to).
    pub network_policy: bool,
}

#[derive(Debug, Clone)]
pub struct LeaseRef {
    pub namespace: String,
    pub name: String,
    /// The operator's `--lease_duration_seconds`, for a Lease that records none.
    pub duration: Duration,
}

/// One check's outcome: what was checked, and what is wrong if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub problem: Option<String>,
}

impl Finding {
    fn ok(check: impl Into<String>) -> Self {
        Self { check: check.into(), problem: None }
    }

    fn failed(check: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { check: check.into(), problem: Some(problem.into()) }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            None => write!(f, "ok    {}", self.check),
            Some(p) => write!(f, "FAIL  {}: {p}", self.check),
        }
    }
}

/// Every finding; the installation works when none has a problem.
pub async fn run(client: &kube::Client, options: &CheckOptions) -> Vec<Finding> {
    let mut findings = vec![crd(client).await];
    findings.push(list(client, options).await);
    for needed in needed_access(options) {
        findings.push(access(client, needed).await);
    }
    if let Some(lease) = &options.lease {
        let api: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
        let check = format!("Lease {}/{} held and renewed", lease.namespace, lease.name);
        findings.push(match api.get_opt(&lease.name).await {
            Ok(Some(found)) => match lease_problem(&found, lease.duration, Timestamp::now()) {
                None => Finding::ok(check),
                Some(p) => Finding::failed(check, p),
            },
            Ok(None) => Finding::failed(check, "no such Lease: no replica has led yet"),
            Err(e) => Finding::failed(check, api_error(&e)),
        });
    }
    findings
}

async fn crd(client: &kube::Client) -> Finding {
    let name = ModelDeployment::crd_name();
    let check = format!("CRD {name} Established, serving {}", ModelDeployment::version(&()));
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.get_opt(name).await {
        Ok(Some(crd)) => match crd_problem(&crd, &ModelDeployment::version(&())) {
            None => Finding::ok(check),
            Some(p) => Finding::failed(check, p),
        },
        Ok(None) => Finding::failed(check, "not installed (the chart's crds/ were skipped?)"),
        Err(e) => Finding::failed(check, api_error(&e)),
    }
}

async fn list(client: &kube::Client, options: &CheckOptions) -> Finding {
    let (api, check) = match &options.namespace {
        Some(ns) => (
            Api::<ModelDeployment>::namespaced(client.clone(), ns),
            format!("list ModelDeployments in {ns}"),
        ),
        None => (Api::<ModelDeployment>::all(client.clone()), "list ModelDeployments".to_owned()),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Finding::ok(check),
        Err(e) => Finding::failed(check, api_error(&e)),
    }
}

async fn access(client: &kube::Client, needed: Access) -> Finding {
    let what = needed.to_string();
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(needed.group.to_owned()),
                resource: Some(needed.resource.to_owned()),
                subresource: needed.subresource.map(str::to_owned),
                verb: Some(needed.verb.to_owned()),
                namespace: needed.namespace,
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => Finding::ok(what),
        Ok(answer) => {
            let reason = answer.status.and_then(|s| s.reason).filter(|r| !r.is_empty());
            Finding::failed(what, reason.unwrap_or_else(|| "not allowed".into()))
        }
        Err(e) => Finding::failed(what, api_error(&e)),
    }
}

/// One thing the operator does, as an access review asks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// API group; empty: the core group.
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub verb: &'static str,
    /// `None`: every namespace (or a cluster-scoped resource).
    pub namespace: Option<String>,
}

impl std::fmt::Display for Access {
    /// `may patch modeldeployments/status.serving.versa.dev in ml`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "may {} {}", self.verb, self.resource)?;
        if let Some(sub) = self.subresource {
            write!(f, "/{sub}")?;
        }
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        Ok(())
    }
}

/// Everything the operator does to objects where it watches, as
/// (API group, resource with subresource, verbs): the chart's RBAC
/// (`templates/rbac.yaml`), which a test holds equal to it both ways.
pub const WATCHED_ACCESS: &[(&str, &str, &[&str])] = &[
    ("serving.versa.dev", "modeldeployments", &["get", "list", "watch", "patch"]),
    ("serving.versa.dev", "modeldeployments/status", &["get", "patch"]),
    ("apps", "deployments", &["get", "list", "watch", "create", "patch"]),
    ("apps", "replicasets", &["list"]),
    ("", "services", &["get", "create", "patch"]),
    ("", "configmaps", &["get", "create", "patch"]),
    ("", "secrets", &["get", "create", "patch"]),
    ("", "pods", &["get", "list", "watch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// With `--network_policy`.
pub const NETWORK_POLICY_ACCESS: (&str, &str, &[&str]) =
    ("networking.k8s.io", "networkpolicies", &["get", "create", "patch"]);

/// With leader election, in the Lease's namespace.
pub const LEASE_ACCESS: (&str, &str, &[&str]) =
    ("coordination.k8s.io", "leases", &["get", "create", "update"]);

/// The installation check's own read of the CRD (by name; the check fails
/// by itself when it is refused).
pub const CRD_ACCESS: (&str, &str, &[&str]) =
    ("apiextensions.k8s.io", "customresourcedefinitions", &["get"]);

/// What the operator needs: the chart's RBAC, seen from the other side.
pub fn needed_access(options: &CheckOptions) -> Vec<Access> {
    let expand =
        |(group, resource, verbs): (&'static str, &'static str, &'static [&'static str]),
         namespace: Option<String>| {
            let (resource, subresource) = match resource.split_once('/') {
                Some((r, sub)) => (r, Some(sub)),
                None => (resource, None),
            };
            verbs
                .iter()
                .map(move |verb| Access {
                    group,
                    resource,
                    subresource,
                    verb,
                    namespace: namespace.clone(),
                })
                .collect::<Vec<_>>()
        };
    let mut needed: Vec<Access> =
        WATCHED_ACCESS.iter().flat_map(|rule| expand(*rule, options.namespace.clone())).collect();
    if options.network_policy {
        needed.extend(expand(NETWORK_POLICY_ACCESS, options.namespace.clone()));
    }
    if let Some(lease) = &options.lease {
        needed.extend(expand(LEASE_ACCESS, Some(lease.namespace.clone())));
    }
    needed
}

/// Why the CRD cannot serve `version`, if it cannot.
pub fn crd_problem(crd: &CustomResourceDefinition, version: &str) -> Option<String> {
    let conditions = crd.status.as_ref().and_then(|s| s.conditions.as_ref());
    let condition = |type_: &str| {
        conditions.into_iter().flatten().find(|c| c.type_ == type_).map(|c| {
            (
                c.status == "True",
                format!("{type_} is {}: {}", c.status, c.message.clone().unwrap_or_default()),
            )
        })
    };
    for type_ in ["NamesAccepted", "Established"] {
        match condition(type_) {
            Some((true, _)) => {}
            Some((false, said)) => return Some(said),
            None => return Some(format!("no {type_} condition yet")),
        }
    }
    match crd.spec.versions.iter().find(|v| v.name == version) {
        Some(v) if v.served => None,
        Some(_) => Some(format!("version {version} is not served")),
        None => Some(format!(
            "no version {version} (has {}): the CRD is older or newer than this operator",
            crd.spec.versions.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Why the Lease shows no live leader at `now`, if it does not: no holder,
/// or no renewal within its duration (`fallback` when it records none).
pub fn lease_problem(lease: &Lease, fallback: Duration, now: Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref();
    let Some(holder) = spec.and_then(|s| s.holder_identity.as_deref()).filter(|h| !h.is_empty())
    else {
        return Some("nobody holds it".into());
    };
    let Some(renewed) = spec.and_then(|s| s.renew_time.as_ref()) else {
        return Some(format!("held by {holder}, never renewed"));
    };
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(fallback, Duration::from_secs);
    let age_ms = now.as_millisecond().saturating_sub(renewed.0.as_millisecond());
    let limit_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    (age_ms > limit_ms).then(|| {
        format!(
            "held by {holder}, last renewed {:.1} s ago (lease duration {} s): the leader is gone or cannot renew",
            age_ms as f64 / 1000.0,
            duration.as_secs()
        )
    })
}

fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if status.code == 403 => {
            format!("forbidden: {} (the chart's RBAC is missing or not bound)", status.message)
        }
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => format!("API server unreachable or refused: {other}"),
    }
}

#[cfg(test)]
mod tests;
