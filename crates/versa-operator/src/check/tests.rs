use super::*;

fn crd(yaml: &str) -> CustomResourceDefinition {
    let mut crd: CustomResourceDefinition = ModelDeployment::crd();
    crd.status = Some(serde_yaml::from_str(yaml).expect("status"));
    crd
}

const ESTABLISHED: &str = "
conditions:
- {type: NamesAccepted, status: 'True', reason: NoConflicts, message: no conflicts found}
- {type: Established, status: 'True', reason: InitialNamesAccepted, message: the initial names have been accepted}
";

#[test]
fn an_established_crd_serving_our_version_passes() {
    assert_eq!(crd_problem(&crd(ESTABLISHED), "v1alpha1"), None);
}

#[test]
fn a_crd_not_yet_established_or_without_our_version_fails() {
    let pending = crd("
conditions:
- {type: NamesAccepted, status: 'True', reason: NoConflicts}
- {type: Established, status: 'False', reason: Installing, message: the initial names have not been accepted}
");
    let problem = crd_problem(&pending, "v1alpha1").expect("problem");
    assert!(problem.contains("Established is False"), "{problem}");
    assert_eq!(
        crd_problem(&crd("{}"), "v1alpha1").as_deref(),
        Some("no NamesAccepted condition yet")
    );
    let problem = crd_problem(&crd(ESTABLISHED), "v1").expect("problem");
    assert!(problem.contains("no version v1 (has v1alpha1)"), "{problem}");
    let mut unserved = crd(ESTABLISHED);
    unserved.spec.versions[0].served = false;
    assert_eq!(
        crd_problem(&unserved, "v1alpha1").as_deref(),
        Some("version v1alpha1 is not served")
    );
}

fn lease(yaml: &str) -> Lease {
    serde_yaml::from_str(&format!("metadata: {{name: versa}}\nspec: {yaml}")).expect("lease")
}

fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

#[test]
fn a_lease_renewed_within_its_duration_passes() {
    let held = lease(
        "{holderIdentity: op-0, leaseDurationSeconds: 15, renewTime: '2026-01-01T00:00:00.000000Z'}",
    );
    let fallback = Duration::from_secs(60);
    assert_eq!(lease_problem(&held, fallback, at("2026-01-01T00:00:14Z")), None);
    let problem = lease_problem(&held, fallback, at("2026-01-01T00:00:16Z")).expect("stale");
    assert!(
        problem.contains("held by op-0, last renewed 16.0 s ago (lease duration 15 s)"),
        "{problem}"
    );
}

#[test]
fn a_lease_without_holder_or_renewal_fails() {
    let now = at("2026-01-01T00:00:01Z");
    let d = Duration::from_secs(15);
    assert_eq!(lease_problem(&lease("{}"), d, now).as_deref(), Some("nobody holds it"));
    assert_eq!(
        lease_problem(&lease("{holderIdentity: ''}"), d, now).as_deref(),
        Some("nobody holds it")
    );
    assert_eq!(
        lease_problem(&lease("{holderIdentity: op-0}"), d, now).as_deref(),
        Some("held by op-0, never renewed")
    );
    // No duration recorded: the operator's flag decides.
    let held = lease("{holderIdentity: op-0, renewTime: '2026-01-01T00:00:00.000000Z'}");
    assert!(lease_problem(&held, Duration::from_millis(500), now).is_some());
    assert_eq!(lease_problem(&held, d, now), None);
}

#[test]
fn needed_access_follows_the_flags() {
    let cluster_wide = CheckOptions { namespace: None, lease: None, network_policy: false };
    let needed = needed_access(&cluster_wide);
    assert!(needed.iter().all(|a| a.namespace.is_none()));
    assert!(
        needed.iter().all(|a| a.group != "networking.k8s.io" && a.group != "coordination.k8s.io")
    );
    let namespaced = CheckOptions {
        namespace: Some("ml".into()),
        lease: Some(LeaseRef {
            namespace: "versa-system".into(),
            name: "versa".into(),
            duration: Duration::from_secs(15),
        }),
        network_policy: true,
    };
    let shown: Vec<String> = needed_access(&namespaced).iter().map(Access::to_string).collect();
    for expected in [
        "may patch networkpolicies.networking.k8s.io in ml",
        "may update leases.coordination.k8s.io in versa-system",
        "may patch modeldeployments/status.serving.versa.dev in ml",
        "may watch pods in ml",
    ] {
        assert!(shown.iter().any(|s| s == expected), "{expected} not in {shown:#?}");
    }
}

#[test]
fn findings_print_ok_or_the_problem() {
    assert_eq!(Finding::ok("list ModelDeployments").to_string(), "ok    list ModelDeployments");
    assert_eq!(Finding::failed("x", "forbidden").to_string(), "FAIL  x: forbidden");
}

/// The rules of the chart's RBAC template, as (group, resource, verb): its
/// rules are written as flow lists, one key per line.
fn chart_rules() -> std::collections::BTreeSet<(String, String, String)> {
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/versa-operator/templates/rbac.yaml");
    let text = std::fs::read_to_string(path).expect("rbac.yaml");
    let list = |line: &str, key: &str| -> Option<Vec<String>> {
        let rest = line.trim().trim_start_matches("- ").strip_prefix(key)?;
        let inner = rest.trim().strip_prefix('[')?.strip_suffix(']')?;
        Some(inner.split(',').map(|s| s.trim().trim_matches('"').to_owned()).collect())
    };
    let mut rules = std::collections::BTreeSet::new();
    let (mut groups, mut resources) = (Vec::new(), Vec::new());
    for line in text.lines() {
        if let Some(g) = list(line, "apiGroups:") {
            groups = g;
        } else if let Some(r) = list(line, "resources:") {
            resources = r;
        } else if let Some(verbs) = list(line, "verbs:") {
            for g in &groups {
                for r in &resources {
                    for v in &verbs {
                        rules.insert((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
    }
    rules
}

#[test]
fn the_access_checked_is_exactly_the_charts_rbac() {
    let options = CheckOptions {
        namespace: None,
        lease: Some(LeaseRef {
            namespace: "versa-system".into(),
            name: "versa-operator".into(),
            duration: std::time::Duration::from_secs(15),
        }),
        network_policy: true,
    };
    let checked: std::collections::BTreeSet<(String, String, String)> = needed_access(&options)
        .iter()
        .map(|a| {
            let resource = match a.subresource {
                Some(sub) => format!("{}/{sub}", a.resource),
                None => a.resource.to_owned(),
            };
            (a.group.to_owned(), resource, a.verb.to_owned())
        })
        .collect();
    let mut checked = checked;
    let (group, resource, verbs) = CRD_ACCESS;
    checked.extend(verbs.iter().map(|v| (group.to_owned(), resource.to_owned(), (*v).to_owned())));
    let chart = chart_rules();
    assert!(chart.len() > 20, "the template's rules were not read: {chart:?}");
    let granted_unchecked: Vec<_> = chart.difference(&checked).collect();
    let checked_not_granted: Vec<_> = checked.difference(&chart).collect();
    assert!(
        granted_unchecked.is_empty() && checked_not_granted.is_empty(),
        "granted but not checked: {granted_unchecked:?}; checked but not granted: {checked_not_granted:?}"
    );
}
