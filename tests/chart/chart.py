#!/usr/bin/env python3
"""The versa-operator Helm chart without a helm binary.

    chart.py render [--set-json VALUES] [--name N] [--namespace NS] [--skip-crds] OUT
        `helm template --include-crds`: the CRDs and every template, one
        multi-document YAML file.
    chart.py test
        Lints the chart, renders it with several values, validates every
        built-in kind offline against Kubernetes 1.33's schemas, and checks
        what the chart must say (least-privilege RBAC, the generated CRD,
        leader election, the metrics Service, the NetworkPolicy switch).
"""

import argparse
import json
import pathlib
import sys
import unittest

import helm_python
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "versa-operator"
GENERATED_CRD = ROOT / "crds" / "modeldeployments.serving.versa.dev.yaml"
ARGOCD = ROOT / "examples" / "argocd"


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


class ChartTest(unittest.TestCase):
    def test_lints_clean(self):
        for values in ({}, {"networkPolicy": {"enabled": True}, "replicas": 2}, {"watchNamespace": "ml"}):
            report = helm_python.lint(str(CHART), values, strict=True, namespace="versa-system")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            self.assertEqual(problems, [], f"helm lint {values}")

    def test_built_in_kinds_validate_against_kubernetes(self):
        for values in ({}, {"networkPolicy": {"enabled": True}, "replicas": 2}, {"watchNamespace": "ml"}):
            for doc in render(values):
                if doc["kind"] == "CustomResourceDefinition" or doc["apiVersion"].startswith("serving.versa.dev"):
                    continue
                kubernetes_validate.validate(doc, "1.33.0", strict=True)

    def test_the_crd_is_the_generated_one(self):
        chart_crd = (CHART / "crds" / GENERATED_CRD.name).read_text()
        self.assertEqual(chart_crd, GENERATED_CRD.read_text(), "run `make generate`")

    def test_rbac_is_exactly_what_the_operator_uses(self):
        docs = render()
        (role,) = by_kind(docs, "ClusterRole")
        rules = {(g, r): sorted(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        self.assertEqual(
            rules,
            {
                ("serving.versa.dev", "modeldeployments"): ["get", "list", "watch"],
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
        for rule in role["rules"]:
            self.assertNotIn("*", rule["verbs"] + rule["resources"] + rule["apiGroups"])
        (lease_role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("leader-election")]
        self.assertEqual(lease_role["metadata"]["namespace"], "versa-system")
        self.assertEqual(lease_role["rules"], [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}])
        (binding,) = by_kind(docs, "ClusterRoleBinding")
        self.assertEqual(binding["subjects"][0]["name"], by_kind(docs, "ServiceAccount")[0]["metadata"]["name"])

    def test_network_policy_permission_only_when_enabled(self):
        def groups(values):
            (role,) = by_kind(render(values), "ClusterRole")
            return {g for rule in role["rules"] for g in rule["apiGroups"]}

        self.assertNotIn("networking.k8s.io", groups({}))
        self.assertIn("networking.k8s.io", groups({"networkPolicy": {"enabled": True}}))
        args = by_kind(render({"networkPolicy": {"enabled": True}}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertIn("--network_policy=true", args)

    def test_deployment_runs_the_operator_with_leader_election(self):
        docs = render({"replicas": 2})
        (deployment,) = by_kind(docs, "Deployment")
        self.assertEqual(deployment["spec"]["replicas"], 2)
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        self.assertEqual(container["image"], "ghcr.io/versa-dev/versa-operator:0.1.0")
        self.assertIn("--leader_elect=true", container["args"])
        self.assertEqual(pod["serviceAccountName"], "versa-versa-operator")
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/healthz")
        env = {e["name"] for e in container["env"]}
        self.assertLessEqual({"POD_NAME", "POD_NAMESPACE"}, env)
        (service,) = by_kind(docs, "Service")
        self.assertEqual(service["spec"]["ports"][0]["port"], 8080)
        self.assertEqual(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"])

    def test_watch_namespace_turns_cluster_roles_into_roles(self):
        docs = render({"watchNamespace": "ml"})
        self.assertEqual(by_kind(docs, "ClusterRole"), [])
        roles = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == "ml"]
        self.assertEqual(len(roles), 1)
        args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertIn("--namespace=ml", args)

    def test_bad_values_are_refused_by_the_schema(self):
        chart = helm_python.Chart.load(str(CHART))
        for bad in ({"replicas": "two"}, {"image": {"pullPolicy": "Sometimes"}}, {"networkPolicy": {"enabled": "yes"}}, {"replica": 2}):
            with self.assertRaises(helm_python.HelmError, msg=str(bad)):
                chart.render(bad, name="versa", namespace="versa-system")


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

    def test_the_configmap_patch_carries_the_same_script(self):
        patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
        script = patch["data"]["resource.customizations.health.serving.versa.dev_ModelDeployment"]
        self.assertEqual(script.strip(), (ARGOCD / "health-modeldeployment.lua").read_text().strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render")
    r.add_argument("out")
    r.add_argument("--set-json", default="{}", help="values as JSON")
    r.add_argument("--name", default="versa")
    r.add_argument("--namespace", default="versa-system")
    r.add_argument("--skip-crds", action="store_true", help="templates only (helm template without --include-crds)")
    sub.add_parser("test")
    args = parser.parse_args()
    if args.command == "render":
        docs = render(json.loads(args.set_json), args.name, args.namespace, crds=not args.skip_crds)
        pathlib.Path(args.out).write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return 0
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite([loader.loadTestsFromTestCase(ChartTest), loader.loadTestsFromTestCase(ArgoHealthTest)])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
