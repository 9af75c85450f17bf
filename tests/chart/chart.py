#!/usr/bin/env python3
"""The versa-operator Helm chart, tested offline (no cluster).

    chart.py test
        Lints the chart (`helm lint --strict`, with the Helm CLI of the venv
        and with Helm as a library), renders it with several values,
        validates every built-in kind against Kubernetes 1.33's schemas, and
        checks what the chart must say (least-privilege RBAC, the generated
        CRD, leader election, the metrics Service, the NetworkPolicy switch,
        image digest, PodDisruptionBudget, Prometheus monitors, the `helm
        test` Pod, the values schema, and a README row for every value).

The cluster tests (tests/testenv/tests/chart.rs) install it with the Helm CLI.
"""

import json
import os
import pathlib
import subprocess
import sys
import unittest

import helm_python
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "versa-operator"
GENERATED_CRD = ROOT / "crds" / "modeldeployments.serving.versa.dev.yaml"
ARGOCD = ROOT / "examples" / "argocd"
HELM = pathlib.Path(os.environ.get("VERSA_VENV", pathlib.Path.home() / ".cache/versa/venv")) / "bin" / "helm"
# Kinds whose schemas kubernetes-validate does not have.
NOT_BUILT_IN = ("serving.versa.dev/", "monitoring.coreos.com/", "apiextensions.k8s.io/")
VALUE_SETS = (
    {},
    {"networkPolicy": {"enabled": True}, "replicas": 2},
    {"watchNamespace": "ml", "logFormat": "json"},
    {"serviceMonitor": {"enabled": True, "relabelings": [{"action": "labeldrop", "regex": "pod"}]}, "podMonitor": {"enabled": True}},
    {"image": {"digest": "sha256:" + "ab" * 32}, "priorityClassName": "system-cluster-critical", "podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"}},
    {"extraArgs": ["--api_timeout_seconds=30"], "extraEnv": [{"name": "X", "value": "1"}], "imagePullSecrets": [{"name": "regcred"}]},
)


def render(values=None, name="versa", namespace="versa-system", crds=True):
    """The rendered objects, CRDs first, as a list of dicts."""
    chart = helm_python.Chart.load(str(CHART))
    docs = [yaml.safe_load(crd["data"]) for crd in chart.crds] if crds else []
    rendered = chart.render(values or {}, name=name, namespace=namespace)
    for path in sorted(rendered):
        if not path.endswith(".yaml"):
            continue
        docs.extend(d for d in yaml.safe_load_all(rendered[path]) if d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def operator_container(docs):
    (deployment,) = by_kind(docs, "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_pod(docs):
    (pod,) = by_kind(docs, "Pod")
    return pod


def leaf_keys(values, prefix=""):
    """Dotted paths of values.yaml's leaves (lists and empty maps are leaves)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_keys(value, path + ".")
        else:
            yield path


class ChartTest(unittest.TestCase):
    def test_lints_clean(self):
        for values in VALUE_SETS:
            report = helm_python.lint(str(CHART), values, strict=True, namespace="versa-system")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            self.assertEqual(problems, [], f"helm lint {values}")

    def test_the_helm_cli_lints_clean(self):
        self.assertTrue(HELM.exists(), f"{HELM} missing: run `make pyenv`")
        for values in VALUE_SETS:
            run = subprocess.run([str(HELM), "lint", "--strict", str(CHART), "--namespace", "versa-system", "--set-json", f"{json.dumps(values)}"] if values else [str(HELM), "lint", "--strict", str(CHART)], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, f"helm lint --strict {values}: {run.stdout}{run.stderr}")

    def test_built_in_kinds_validate_against_kubernetes(self):
        for values in VALUE_SETS:
            for doc in render(values):
                if doc["apiVersion"].startswith(NOT_BUILT_IN):
                    continue
                kubernetes_validate.validate(doc, "1.33.0", strict=True)

    def test_the_crd_is_the_generated_one(self):
        chart_crd = (CHART / "crds" / GENERATED_CRD.name).read_text()
        self.assertEqual(chart_crd, GENERATED_CRD.read_text(), "run `make generate`")

    def test_rbac_is_exactly_what_the_operator_uses(self):
        docs = render()
        roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
        self.assertEqual(set(roles), {"versa-versa-operator", "versa-versa-operator-crd", "versa-versa-operator-view", "versa-versa-operator-edit"})
        # For people: aggregated roles, bound to nobody by the chart.
        view, edit = roles.pop("versa-versa-operator-view"), roles.pop("versa-versa-operator-edit")
        self.assertEqual(view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"], "true")
        self.assertNotIn("rbac.authorization.k8s.io/aggregate-to-view", edit["metadata"]["labels"])
        self.assertEqual(sorted(v for rule in view["rules"] for v in rule["verbs"]), ["get", "list", "watch"])
        self.assertEqual(edit["rules"], [{"apiGroups": ["serving.versa.dev"], "resources": ["modeldeployments"], "verbs": ["create", "update", "patch", "delete", "deletecollection"]}], "no person writes status")
        self.assertEqual({r["metadata"]["name"] for r in by_kind(render({"userRoles": {"enabled": False}}), "ClusterRole")}, {"versa-versa-operator", "versa-versa-operator-crd"})
        role = roles["versa-versa-operator"]
        rules = {(g, r): sorted(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        self.assertEqual(
            rules,
            {
                ("serving.versa.dev", "modeldeployments"): ["get", "list", "patch", "watch"],
                ("serving.versa.dev", "modeldeployments/status"): ["get", "patch"],
                ("apps", "deployments"): ["create", "get", "list", "patch", "watch"],
                ("apps", "replicasets"): ["list"],
                ("", "services"): ["create", "get", "patch"],
                ("", "configmaps"): ["create", "get", "patch"],
                ("", "secrets"): ["create", "get", "patch"],
                ("", "pods"): ["get", "list", "watch"],
                ("events.k8s.io", "events"): ["create", "patch"],
            },
        )
        for r in roles.values():
            for rule in r["rules"]:
                self.assertNotIn("*", rule["verbs"] + rule["resources"] + rule["apiGroups"])
        # The installation check reads the chart's own CRD, and nothing else.
        self.assertEqual(
            roles["versa-versa-operator-crd"]["rules"],
            [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "resourceNames": ["modeldeployments.serving.versa.dev"], "verbs": ["get"]}],
        )
        (lease_role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("leader-election")]
        self.assertEqual(lease_role["metadata"]["namespace"], "versa-system")
        self.assertEqual(lease_role["rules"], [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}])
        sa = by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
        for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
            self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": sa, "namespace": "versa-system"}])

    def test_network_policy_permission_only_when_enabled(self):
        def groups(values):
            role = [r for r in by_kind(render(values), "ClusterRole") if r["metadata"]["name"] == "versa-versa-operator"][0]
            return {g for rule in role["rules"] for g in rule["apiGroups"]}

        self.assertNotIn("networking.k8s.io", groups({}))
        self.assertIn("networking.k8s.io", groups({"networkPolicy": {"enabled": True}}))
        self.assertIn("--network_policy=true", operator_container(render({"networkPolicy": {"enabled": True}}))["args"])

    def test_deployment_runs_the_operator_with_leader_election(self):
        docs = render({"replicas": 2})
        (deployment,) = by_kind(docs, "Deployment")
        self.assertEqual(deployment["spec"]["replicas"], 2)
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        self.assertEqual(container["image"], "ghcr.io/versa-dev/versa-operator:0.1.0")
        self.assertIn("--leader_elect=true", container["args"])
        self.assertIn("--log_format=text", container["args"])
        self.assertEqual(pod["serviceAccountName"], "versa-versa-operator")
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/healthz")
        env = {e["name"] for e in container["env"]}
        self.assertLessEqual({"POD_NAME", "POD_NAMESPACE", "RUST_LOG"}, env)
        (service,) = by_kind(docs, "Service")
        self.assertEqual(service["spec"]["ports"][0]["port"], 8080)
        self.assertEqual(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"])

    def test_pods_run_as_non_root_with_nothing_writable_or_escalating(self):
        docs = render()
        pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
        self.assertEqual(
            pod["securityContext"],
            {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        )
        self.assertEqual(pod["containers"][0]["securityContext"], {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}})
        self.assertNotIn("priorityClassName", pod)
        pod = by_kind(render({"priorityClassName": "system-cluster-critical", "podSecurityContext": {"runAsUser": 1000}}), "Deployment")[0]["spec"]["template"]["spec"]
        self.assertEqual(pod["priorityClassName"], "system-cluster-critical")
        self.assertEqual(pod["securityContext"]["runAsUser"], 1000, "merged over the defaults (Helm's rule for maps)")
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        pod = by_kind(render({"podSecurityContext": {"fsGroup": None}}), "Deployment")[0]["spec"]["template"]["spec"]
        self.assertNotIn("fsGroup", pod["securityContext"], "null drops a default")

    def test_image_digest_wins_over_the_tag(self):
        digest = "sha256:" + "0f" * 32
        self.assertEqual(operator_container(render({"image": {"tag": "0.2.0"}}))["image"], "ghcr.io/versa-dev/versa-operator:0.2.0")
        docs = render({"image": {"repository": "registry.example/versa-operator", "tag": "0.2.0", "digest": digest, "pullPolicy": "Always"}})
        for container in (operator_container(docs), test_pod(docs)["spec"]["containers"][0]):
            self.assertEqual(container["image"], f"registry.example/versa-operator@{digest}")
            self.assertEqual(container["imagePullPolicy"], "Always")

    def test_extra_args_env_labels_and_scheduling_reach_the_pods(self):
        values = {
            "extraArgs": ["--api_timeout_seconds=30"],
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
            "logLevel": "debug",
            "logFormat": "json",
            "podLabels": {"team": "ml"},
            "podAnnotations": {"a": "b"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {}},
            "imagePullSecrets": [{"name": "regcred"}],
            "resources": {"requests": {"cpu": "1"}},
        }
        docs = render(values)
        template = by_kind(docs, "Deployment")[0]["spec"]["template"]
        container = template["spec"]["containers"][0]
        self.assertEqual(container["args"][-1], "--api_timeout_seconds=30", "extra flags last: they win")
        self.assertIn("--log_format=json", container["args"])
        self.assertIn({"name": "EXTRA", "value": "1"}, container["env"])
        self.assertIn({"name": "RUST_LOG", "value": "debug"}, container["env"])
        self.assertEqual(template["metadata"]["labels"]["team"], "ml")
        self.assertEqual(template["metadata"]["annotations"], {"a": "b"})
        for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
            self.assertEqual(template["spec"][key], values[key])
        self.assertEqual(container["resources"], {"requests": {"cpu": "1", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})

    def test_pod_disruption_budget_with_more_than_one_replica(self):
        self.assertEqual(by_kind(render(), "PodDisruptionBudget"), [], "one replica: a PDB would block drains")
        (pdb,) = by_kind(render({"replicas": 2}), "PodDisruptionBudget")
        (deployment,) = by_kind(render({"replicas": 2}), "Deployment")
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        self.assertEqual(pdb["spec"], {"minAvailable": 1, "selector": deployment["spec"]["selector"]})
        (pdb,) = by_kind(render({"podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"}}), "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["maxUnavailable"], "50%")
        self.assertNotIn("minAvailable", pdb["spec"])
        self.assertEqual(by_kind(render({"replicas": 3, "podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget"), [])

    def test_monitors_only_when_enabled(self):
        docs = render()
        self.assertEqual(by_kind(docs, "ServiceMonitor") + by_kind(docs, "PodMonitor"), [])
        relabel = [{"action": "labeldrop", "regex": "pod"}]
        docs = render({"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}, "relabelings": relabel}})
        (monitor,) = by_kind(docs, "ServiceMonitor")
        self.assertEqual(by_kind(docs, "PodMonitor"), [])
        self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prom")
        (service,) = by_kind(docs, "Service")
        for k, v in monitor["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(service["metadata"]["labels"][k], v, "the ServiceMonitor selects the metrics Service")
        self.assertEqual(monitor["spec"]["endpoints"], [{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s", "relabelings": relabel}])
        (monitor,) = by_kind(render({"podMonitor": {"enabled": True, "interval": "", "scrapeTimeout": ""}}), "PodMonitor")
        self.assertEqual(monitor["spec"]["podMetricsEndpoints"], [{"port": "metrics", "path": "/metrics"}])
        self.assertEqual(monitor["spec"]["selector"]["matchLabels"], by_kind(docs, "Deployment")[0]["spec"]["selector"]["matchLabels"])
        with self.assertRaises(helm_python.HelmError):
            render({"serviceMonitor": {"enabled": True}, "metrics": {"service": {"enabled": False}}})

    def test_helm_test_pod_checks_the_installation_as_the_operator(self):
        docs = render({"watchNamespace": "ml", "extraArgs": ["--api_timeout_seconds=30"]})
        pod = test_pod(docs)
        self.assertEqual(pod["metadata"]["annotations"], {"helm.sh/hook": "test", "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded"})
        self.assertEqual(pod["spec"]["restartPolicy"], "Never")
        operator = operator_container(docs)
        (check,) = pod["spec"]["containers"]
        self.assertEqual(check["image"], operator["image"])
        self.assertEqual(check["args"], operator["args"] + ["--check_installation"], "the operator's own flags")
        self.assertNotIn("command", check, "the image has no shell: its entrypoint is the operator")
        self.assertEqual(check["securityContext"], operator["securityContext"])
        self.assertEqual(pod["spec"]["serviceAccountName"], by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"])
        selector = by_kind(docs, "Deployment")[0]["spec"]["selector"]["matchLabels"]
        self.assertFalse(selector.items() <= pod["metadata"]["labels"].items(), "no operator selector picks the test Pod")

    def test_watch_namespace_turns_cluster_roles_into_roles(self):
        docs = render({"watchNamespace": "ml"})
        self.assertEqual([r["metadata"]["name"] for r in by_kind(docs, "ClusterRole")], ["versa-versa-operator-crd", "versa-versa-operator-view", "versa-versa-operator-edit"], "the crd check and the aggregated user roles stay cluster-wide")
        roles = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == "ml"]
        self.assertEqual(len(roles), 1)
        self.assertIn("--namespace=ml", operator_container(docs)["args"])

    def test_bad_values_are_refused_by_the_schema(self):
        chart = helm_python.Chart.load(str(CHART))
        for bad in (
            {"replicas": "two"},
            {"replica": 2},
            {"image": {"pullPolicy": "Sometimes"}},
            {"image": {"digest": "latest"}},
            {"image": {"registry": "x"}},
            {"networkPolicy": {"enabled": "yes"}},
            {"logFormat": "xml"},
            {"podDisruptionBudget": {"enabled": "sometimes"}},
            {"podDisruptionBudget": {"minAvailable": "half"}},
            {"serviceMonitor": {"interval": "often"}},
            {"serviceMonitor": {"enabled": True, "port": 1}},
            {"podMonitor": {"labels": {"a": 1}}},
            {"extraArgs": ["-v"]},
            {"extraEnv": [{"value": "no name"}]},
            {"imagePullSecrets": ["regcred"]},
            {"resources": {"request": {}}},
        ):
            with self.assertRaises(helm_python.HelmError, msg=str(bad)):
                chart.render(bad, name="versa", namespace="versa-system")

    def test_the_schema_covers_every_value(self):
        schema = json.loads((CHART / "values.schema.json").read_text())
        values = yaml.safe_load((CHART / "values.yaml").read_text())

        def walk(values, schema, path):
            schema = schema.get("$ref") and resolve(schema["$ref"]) or schema
            for key, value in values.items():
                self.assertIn(key, schema.get("properties", {}), f"{path}{key} not in values.schema.json")
                sub = schema["properties"][key]
                sub = sub.get("$ref") and resolve(sub["$ref"]) or sub
                if isinstance(value, dict) and sub.get("properties"):
                    walk(value, sub, f"{path}{key}.")

        def resolve(ref):
            return schema["definitions"][ref.rsplit("/", 1)[1]]

        walk(values, schema, "")

    def test_the_readme_lists_every_value_with_its_default(self):
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        readme = (CHART / "README.md").read_text()
        rows = {}
        for line in readme.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| `") and len(cells) >= 3:
                rows[cells[0].strip("`")] = cells[1]
        for key in leaf_keys(values):
            self.assertIn(key, rows, f"charts/versa-operator/README.md has no row for `{key}`")
            value = values
            for part in key.split("."):
                value = value[part]
            if value not in ("", [], {}) and not isinstance(value, (dict, list)):
                shown = json.dumps(value) if isinstance(value, bool) else str(value)
                self.assertIn(shown, rows[key], f"README default of `{key}`")
        self.assertEqual(sorted(set(rows) - set(leaf_keys(values))), [], "README rows for values that do not exist")

def argocd_health(obj):
    """Runs the Argo CD health check (Lua, as Argo CD runs it) on `obj`."""
    import lupa

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    script = (ARGOCD / "health-modeldeployment.lua").read_text()
    run = lua.eval("function(obj, script) _G.obj = obj; return load(script)() end")
    result = run(lua.table_from(obj, recursive=True), script)
    return result["status"], result["message"]


def condition(type_, status, reason, message=""):
    return {"type": type_, "status": status, "reason": reason, "message": message}


class ArgoHealthTest(unittest.TestCase):
    def md(self, generation, observed, *conditions):
        status = {"conditions": list(conditions)}
        if observed is not None:
            status["observedGeneration"] = observed
        return {"metadata": {"generation": generation}, "status": status}

    def test_states(self):
        ready = condition("Ready", "True", "AllPodsServing", "3 Pods serve every model as specified")
        self.assertEqual(argocd_health({"metadata": {"generation": 1}})[0], "Progressing")
        self.assertEqual(argocd_health(self.md(2, 1, ready))[0], "Progressing", "old generation")
        self.assertEqual(argocd_health(self.md(2, 2, ready)), ("Healthy", "3 Pods serve every model as specified"))
        moving = argocd_health(self.md(3, 3, condition("Ready", "False", "RolloutInProgress"), condition("Progressing", "True", "LoadingVersions", "fraud: LoadingVersions")))
        self.assertEqual(moving, ("Progressing", "LoadingVersions: fraud: LoadingVersions"))
        stopped = argocd_health(self.md(4, 4, condition("Ready", "False", "RolloutStopped"), condition("Degraded", "True", "VersionLoadFailed", "model fraud: version 9 failed")))
        self.assertEqual(stopped, ("Degraded", "VersionLoadFailed: model fraud: version 9 failed"))
        paused = argocd_health(self.md(5, 5, condition("Ready", "False", "RolloutPaused"), condition("Progressing", "False", "RolloutPaused", "model fraud: v1 → v2: PauseStep")))
        self.assertEqual(paused, ("Suspended", "RolloutPaused: model fraud: v1 → v2: PauseStep"))
        aborted = argocd_health(self.md(6, 6, condition("Ready", "False", "RolloutAborted"), condition("Degraded", "True", "RolloutAborted", "model fraud: v1 → v2: FailedAnalysis")))
        self.assertEqual(aborted[0], "Degraded")

    def test_the_configmap_patch_carries_the_same_script(self):
        patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
        script = patch["data"]["resource.customizations.health.serving.versa.dev_ModelDeployment"]
        self.assertEqual(script.strip(), (ARGOCD / "health-modeldeployment.lua").read_text().strip())


ACTIONS_KEY = "resource.customizations.actions.serving.versa.dev_ModelDeployment"


def argocd_actions():
    """The resource actions as Argo CD reads them: discovery and definitions."""
    return yaml.safe_load((ARGOCD / "actions-modeldeployment.yaml").read_text())


def run_lua(script, obj):
    """Runs an Argo CD Lua script on `obj` (a Lua table), returning its result."""
    import lupa

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    run = lua.eval("function(obj, script) _G.obj = obj; return load(script)() end")
    return lua, run(lua.table_from(obj, recursive=True), script)


def lua_to_python(value):
    """A Lua table (as lupa returns it) as dicts and lists."""
    if not hasattr(value, "items"):
        return value
    items = dict(value.items())
    if items and all(isinstance(k, int) for k in items):
        return [lua_to_python(items[k]) for k in sorted(items)]
    return {k: lua_to_python(v) for k, v in items.items()}


class ArgoActionsTest(unittest.TestCase):
    def md(self, *rollouts):
        models = []
        for i, (phase, stored_pause) in enumerate(rollouts):
            rollout = {"phase": phase, "baseline": 1, "candidate": 2, "state": {"step": 1}}
            if stored_pause:
                rollout["state"]["pause"] = {"reason": "UserPaused"}
            models.append({"name": f"m{i}", "rollout": rollout})
        models.append({"name": "plain"})
        return {"metadata": {"name": "fraud"}, "status": {"models": models}}

    def enabled(self, obj):
        _, actions = run_lua(argocd_actions()["discovery.lua"], obj)
        return sorted(name for name, a in lua_to_python(actions).items() if not a["disabled"])

    def test_discovery_offers_what_applies_in_each_phase(self):
        self.assertEqual(self.enabled({"metadata": {}}), [])
        self.assertEqual(self.enabled(self.md(("Progressing", False))), ["abort", "pause", "promote", "promote-full"])
        self.assertEqual(self.enabled(self.md(("Paused", False))), ["abort", "promote", "promote-full"], "a pause step ends with promote")
        self.assertEqual(self.enabled(self.md(("Paused", True))), ["abort", "promote", "promote-full", "resume"])
        self.assertEqual(self.enabled(self.md(("Aborted", False))), ["retry"])
        self.assertEqual(self.enabled(self.md(("Promoted", False))), [])

    def test_each_action_sets_the_command_annotation_and_never_status(self):
        import re

        expected = {"promote": "Promote", "promote-full": "PromoteFull", "abort": "Abort", "pause": "Pause", "resume": "Resume", "retry": "Retry"}
        definitions = {d["name"]: d["action.lua"] for d in argocd_actions()["definitions"]}
        self.assertEqual(sorted(definitions), sorted(expected))
        obj = self.md(("Progressing", False), ("Paused", True), ("Aborted", False))
        for name, command in expected.items():
            for annotations in (None, {"team": "ml"}):
                given = json.loads(json.dumps(obj))
                if annotations is not None:
                    given["metadata"]["annotations"] = annotations
                _, result = run_lua(definitions[name], given)
                result = lua_to_python(result)
                self.assertEqual(result["status"], obj["status"], f"{name} leaves status alone")
                value = result["metadata"]["annotations"]["serving.versa.dev/rollout-command"]
                # As the operator parses it: "<model> <Command> <id>", id of [A-Za-z0-9-_.:].
                self.assertRegex(value, rf"^\* {command} [A-Za-z0-9_.:-]{{1,64}}$", name)
                if annotations is not None:
                    self.assertEqual(result["metadata"]["annotations"]["team"], "ml", "other annotations kept")

    def test_the_configmap_patch_carries_the_same_actions(self):
        patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
        self.assertEqual(yaml.safe_load(patch["data"][ACTIONS_KEY]), argocd_actions())


class GrafanaDashboardTest(unittest.TestCase):
    def test_every_series_the_dashboard_queries_is_exported(self):
        import re

        dashboard = json.loads((ARGOCD.parent / "grafana" / "versa-rollouts.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        names = {re.sub(r"_bucket$", "", n) for e in exprs for n in re.findall(r"\bversa_[a-z_]+", e)}
        crates = ARGOCD.parent.parent / "crates"
        exported = (crates / "versa-server/src/metrics.rs").read_text() + (crates / "versa-operator/src/metrics.rs").read_text()
        self.assertGreaterEqual(len(names), 5, names)
        for name in sorted(names):
            self.assertIn(f'"{name}"', exported, f"{name} is queried but not exported")
        for e in exprs:
            self.assertEqual(e.count("("), e.count(")"), e)


def main():
    if sys.argv[1:] != ["test"]:
        print(__doc__, file=sys.stderr)
        return 2
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite([loader.loadTestsFromTestCase(c) for c in (ChartTest, ArgoHealthTest, ArgoActionsTest, GrafanaDashboardTest)])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
