"""The Helm chart, kustomize overlays, GitOps manifests and images, checked by the real tools that
consume them (helm, kubectl kustomize, promtool). Tests against the API server: tests/cluster/test_chart.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kompress_operator.crd import CRD_FILE, render
from kompress_operator.metrics import OperatorMetrics

from .conftest import REPO

pytestmark = pytest.mark.unit

CHART = REPO / "charts" / "kompress"
VALUES = sorted((REPO / "tests" / "fixtures" / "chart-values").glob("*.yaml"))
DEPLOY = REPO / "deploy"


def run(tool: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, check=check, timeout=120)


def template(assets: Path, *args: str) -> list[dict]:
    out = run(assets / "helm", "template", "kompress", CHART, "--namespace", "kompress-system", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def operator_env(docs: list[dict]) -> dict[str, str]:
    container = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("values", [None, *VALUES], ids=lambda v: v.stem if v else "defaults")
def test_helm_lint_passes(assets, values):
    args = ["--strict"] + (["-f", values] if values else [])
    result = run(assets / "helm", "lint", CHART, *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_rejects_typos_and_wrong_types(assets):
    for bad in (["--set", "concurency.maxRunning=1"], ["--set", "replicaCount=two"],
                ["--set", "metrics.serviceMonitor.interval=soon"], ["--set", "watchNamespaces[0]=Team_A"]):
        result = run(assets / "helm", "template", "kompress", CHART, *bad, check=False)
        assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr, bad


def test_chart_installs_the_generated_crd_and_keeps_it(assets):
    generated = yaml.safe_load(render())
    crd = of_kind(template(assets), "CustomResourceDefinition")[0]
    assert crd["spec"] == generated["spec"] and crd["metadata"]["name"] == generated["metadata"]["name"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    unkept = of_kind(template(assets, "--set", "crds.keep=false"), "CustomResourceDefinition")[0]
    assert "helm.sh/resource-policy" not in unkept["metadata"]["annotations"]
    assert not of_kind(template(assets, "--set", "crds.enabled=false"), "CustomResourceDefinition")
    assert (CHART / "files" / "crds" / CRD_FILE).read_text() == render()


def test_rbac_grants_only_what_the_operator_calls(assets):
    for args in ([], ["-f", REPO / "tests/fixtures/chart-values/namespaced-ha.yaml"]):
        docs = template(assets, *args)
        # the users' roles and the metrics readers' (get /metrics) apart
        operators = [role for role in of_kind(docs, "ClusterRole")
                     if not _aggregated(role) and not role["metadata"]["name"].endswith("-metrics-reader")]
        rules = [rule for role in operators for rule in role["rules"]]
        for rule in rules:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            assert not {"secrets", "configmaps"} & set(rule["resources"]), rule
            assert not {"update", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        granted = {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
        assert granted[("", "pods")] == {"list"} and granted[("", "events")] == {"create"}
        assert granted[("batch", "jobs")] == {"list", "watch", "create", "delete"}
        assert granted[("kompress.io", "modeloptimizations/status")] == {"get", "patch"}
        assert granted[("authorization.k8s.io", "subjectaccessreviews")] == {"create"}  # the webhook's and /metrics' need
        assert granted[("authentication.k8s.io", "tokenreviews")] == {"create"}  # who a scraper is
        assert not [r for r in rules if "admissionregistration.k8s.io" in r["apiGroups"]]  # the chart registers it
    namespaced = template(assets, "-f", REPO / "tests/fixtures/chart-values/namespaced-ha.yaml")
    assert {b["metadata"]["namespace"] for b in of_kind(namespaced, "RoleBinding")} == {"team-a", "team-b"}
    assert operator_env(namespaced)["KOMPRESS_NAMESPACES"] == "team-a,team-b"


def _aggregated(role: dict) -> set[str]:
    prefix = "rbac.authorization.k8s.io/aggregate-to-"
    return {k[len(prefix):] for k, v in role["metadata"]["labels"].items() if k.startswith(prefix) and v == "true"}


def test_modeloptimizations_join_the_built_in_admin_edit_and_view_roles(assets):
    roles = {tuple(sorted(_aggregated(r))): r["rules"] for r in of_kind(template(assets), "ClusterRole") if _aggregated(r)}
    assert set(roles) == {("admin", "edit"), ("view",)}
    assert roles[("view",)] == [{"apiGroups": ["kompress.io"], "resources": ["modeloptimizations", "modeloptimizations/status"],
                                 "verbs": ["get", "list", "watch"]}]
    assert "create" in roles[("admin", "edit")][0]["verbs"] and "modeloptimizations/status" not in roles[("admin", "edit")][0]["resources"]
    assert not [r for r in of_kind(template(assets, "--set", "rbac.aggregateToDefaultRoles=false"), "ClusterRole") if _aggregated(r)]


def test_two_replicas_by_default_with_peering_a_rolling_update_a_disruption_budget_and_anti_affinity(assets):
    ha = template(assets)
    deployment = of_kind(ha, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 2 and operator_env(ha)["KOMPRESS_PEERING"] == "kompress"
    # A new Pod answers the webhook before an old one stops: never fewer than two during a rollout.
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    selector = deployment["spec"]["selector"]["matchLabels"]
    budget = of_kind(ha, "PodDisruptionBudget")[0]
    assert budget["apiVersion"] == "policy/v1" and budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    spread = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spread[0]["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}}
    peering = of_kind(ha, "ClusterKopfPeering")[0]
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    rules = [r for role in of_kind(ha, "ClusterRole") for r in role["rules"]]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get", "list", "watch", "patch"]} in rules
    # A stopping Pod keeps answering the webhook until the endpoints drop it, within its grace period.
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "10"]}}
    assert pod["terminationGracePeriodSeconds"] == 40
    assert "lifecycle" not in of_kind(template(assets, "--set", "shutdownDelaySeconds=0"), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    old_cluster = of_kind(template(assets, "--kube-version", "1.20.2"), "PodDisruptionBudget")[0]
    assert old_cluster["apiVersion"] == "policy/v1beta1"  # policy/v1 came with 1.21

    single = template(assets, "--set", "replicaCount=1")
    assert operator_env(single)["KOMPRESS_PEERING"] == ""
    assert of_kind(single, "Deployment")[0]["spec"]["strategy"] == {"type": "Recreate"}  # never two operators at once
    assert not of_kind(single, "ClusterKopfPeering") and not of_kind(single, "PodDisruptionBudget")
    assert "affinity" not in of_kind(single, "Deployment")[0]["spec"]["template"]["spec"]
    assert not of_kind(template(assets, "--set", "crds.enabled=false"), "CustomResourceDefinition")  # peering's too


def test_extension_points_reach_the_objects(assets, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "commonLabels": {"cost-centre": "ml-platform"},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "extraEnvFrom": [{"configMapRef": {"name": "site-settings"}}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}],
    }))
    docs = template(assets, "-f", values)
    assert all(d["metadata"]["labels"]["cost-centre"] == "ml-platform" for d in docs if d["kind"] != "CustomResourceDefinition"
               or d["metadata"]["name"].endswith("kopf.dev"))
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert container["envFrom"] == [{"configMapRef": {"name": "site-settings"}}]
    assert [m["name"] for m in container["volumeMounts"]] == ["webhook-tls", "ca"] and [v["name"] for v in pod["volumes"]] == ["webhook-tls", "ca"]
    selector = of_kind(docs, "Deployment")[0]["spec"]["selector"]["matchLabels"]
    assert pod["topologySpreadConstraints"] == [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                                  "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}]
    assert "affinity" in pod  # the default anti-affinity stays


def test_job_settings_reach_the_operator(assets):
    env = operator_env(template(assets, "-f", REPO / "tests/fixtures/chart-values/namespaced-ha.yaml"))
    assert json.loads(env["KOMPRESS_JOB_RESOURCES"]) == {"requests": {"cpu": "4", "memory": "16Gi"},
                                                         "limits": {"memory": "8Gi", "nvidia.com/gpu": 1}}  # Helm merges maps
    assert json.loads(env["KOMPRESS_JOB_ENV"]) == {"AWS_REGION": "eu-west-1"}
    assert env["KOMPRESS_DEFAULT_ARTIFACTS"] == "s3://ml-artifacts/kompress"
    assert env["KOMPRESS_JOB_SERVICE_ACCOUNT"] == "kompress-jobs"
    assert env["KOMPRESS_CPU_IMAGE"] == "ghcr.io/kompress/kompress-job:0.1.0"


def test_the_chart_renders_as_a_subchart_of_an_umbrella_chart_with_global_values(assets, tmp_path, monkeypatch):
    umbrella = tmp_path / "platform"
    umbrella.mkdir()
    (umbrella / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "platform", "version": "1.0.0",
        "dependencies": [{"name": "kompress", "version": yaml.safe_load((CHART / "Chart.yaml").read_text())["version"],
                          "repository": f"file://{CHART}"}]}))
    (umbrella / "values.yaml").write_text(yaml.safe_dump({
        "global": {"imageRegistry": "registry.example.com", "imagePullSecrets": [{"name": "platform-pull"}]},
        "kompress": {"replicaCount": 2, "imagePullSecrets": ["kompress-pull"], "artifacts": {"uri": "s3://ml/kompress"}}}))
    run(assets / "helm", "dependency", "build", umbrella)
    run(assets / "helm", "lint", umbrella)
    out = run(assets / "helm", "template", "platform", umbrella, "--namespace", "kompress-system").stdout
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    deployment = of_kind(docs, "Deployment")[0]["spec"]
    assert deployment["replicas"] == 2
    # The global registry and pull secrets reach the operator's Pod and, through it, every Job's.
    pod = deployment["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "kompress-pull"}, {"name": "platform-pull"}]
    assert pod["containers"][0]["image"] == "registry.example.com/kompress/kompress-operator:0.1.0"
    from kompress_jobs.spec.specfile import resource_from_dict
    from kompress_operator.jobspec import build_job
    from kompress_operator.settings import OperatorSettings

    env = {name: value for name, value in operator_env(docs).items() if value}
    monkeypatch.setattr("os.environ", {**env})
    settings = OperatorSettings()
    sample = yaml.safe_load((DEPLOY / "samples" / "cpu" / "digits-cnn.yaml").read_text())
    sample["metadata"] |= {"namespace": "team-a", "generation": 1}
    job = build_job(sample, resource_from_dict(sample).spec, settings)["spec"]["template"]["spec"]
    assert job["imagePullSecrets"] == [{"name": "kompress-pull"}, {"name": "platform-pull"}]
    assert job["containers"][0]["image"] == "registry.example.com/kompress/kompress-job:0.1.0"


def test_images_are_pinned_by_digest(assets):
    digest = "sha256:" + "ab" * 32
    docs = template(assets, "--set", f"image.digest={digest}", "--set", f"jobs.cpuImage.digest={digest}")
    container = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/kompress/kompress-operator@{digest}"
    assert operator_env(docs)["KOMPRESS_CPU_IMAGE"] == f"ghcr.io/kompress/kompress-job@{digest}"
    assert operator_env(docs)["KOMPRESS_GPU_IMAGE"] == "ghcr.io/kompress/kompress-job-gpu:0.1.0"  # unpinned: the tag
    refused = run(assets / "helm", "template", "kompress", CHART, "--set", "image.digest=latest", check=False)
    assert refused.returncode != 0 and "digest" in refused.stderr


# Set per replica on purpose: equal peering priorities would make Kopf freeze every replica. The
# chart registers the webhook itself, so the operator's self-registration stays off.
NOT_FROM_THE_CHART = {"peering_priority", "webhook_register", "webhook_host"}


def test_the_charts_operator_environment_is_the_operator_settings(assets, monkeypatch):
    from kompress_operator.settings import OperatorSettings

    env = operator_env(template(assets, "-f", REPO / "tests/fixtures/chart-values/namespaced-ha.yaml", "--set", "debug=true",
                                "--set", "tuning.adminSecretName=study-admin"))  # from a Secret: named, its value not rendered
    env.pop("POD_ID")  # Kopf's peer identity, not a setting
    expected = {OperatorSettings.env_name(name) for name in OperatorSettings.model_fields} - {
        OperatorSettings.env_name(name) for name in NOT_FROM_THE_CHART}
    assert set(env) == expected, f"only in the chart: {set(env) - expected}; only in the settings: {expected - set(env)}"
    for name, value in env.items():
        monkeypatch.setenv(name, value or "")
    settings = OperatorSettings()  # every value the chart writes parses
    assert settings.namespaces == ("team-a", "team-b") and settings.peering == "kompress" and settings.debug
    assert settings.job_env == {"AWS_REGION": "eu-west-1"} and settings.retry_interval == 5.0


def test_the_charts_webhook_is_the_operators_and_its_certificate_matches_the_service(assets):
    import base64

    from cryptography import x509

    from kompress_operator import webhook

    docs = template(assets)
    for ours in webhook.configurations({"service": {}}):
        charted = of_kind(docs, ours["kind"])[0]["webhooks"][0]
        path = charted["clientConfig"]["service"]["path"]
        assert path == ours["webhooks"][0]["clientConfig"]["service"]["path"]
        assert {k: v for k, v in charted.items() if k != "clientConfig"} == {k: v for k, v in ours["webhooks"][0].items() if k != "clientConfig"}
    charted = of_kind(docs, "ValidatingWebhookConfiguration")[0]["webhooks"][0]
    client_config = charted.pop("clientConfig")
    service = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == client_config["service"]["name"])
    assert client_config["service"]["path"] == f"/{webhook.HANDLER_ID}" and service["spec"]["ports"][0]["targetPort"] == "webhook"
    secret = next(s for s in of_kind(docs, "Secret") if s["metadata"]["name"].endswith("-webhook-tls"))
    assert secret["data"]["ca.crt"] == client_config["caBundle"]
    certificate = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert f"{service['metadata']['name']}.kompress-system.svc" in names
    deployment = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert deployment["volumes"] == [{"name": "webhook-tls", "secret": {"secretName": secret["metadata"]["name"]}}]
    env = operator_env(docs)
    assert env["KOMPRESS_WEBHOOK_PORT"] == "9443" and env["KOMPRESS_WEBHOOK_CERT_DIR"] == "/tls"

    managed = template(assets, "--set", "webhook.certificate.source=cert-manager")
    assert not [s for s in of_kind(managed, "Secret") if s["metadata"]["name"].endswith("-webhook-tls")]
    certificate = of_kind(managed, "Certificate")[0]
    hook = of_kind(managed, "ValidatingWebhookConfiguration")[0]
    assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"kompress-system/{certificate['metadata']['name']}"
    assert "caBundle" not in hook["webhooks"][0]["clientConfig"] and of_kind(managed, "Issuer")

    off = template(assets, "--set", "webhook.enabled=false")
    assert not of_kind(off, "ValidatingWebhookConfiguration") and operator_env(off)["KOMPRESS_WEBHOOK_PORT"] == ""
    rules = [r for role in of_kind(off, "ClusterRole") for r in role["rules"]]
    assert [r for r in rules if "subjectaccessreviews" in r.get("resources", [])], "/metrics still asks who may read it"
    rules = [r for role in of_kind(template(assets, "--set", "webhook.enabled=false", "--set", "metrics.access=Open"), "ClusterRole")
             for r in role["rules"]]
    assert not [r for r in rules if "subjectaccessreviews" in r.get("resources", [])]


def test_the_policy_reaches_the_operator(assets, monkeypatch):
    from kompress_operator.settings import OperatorSettings

    env = operator_env(template(assets, "--set-json", 'policy={"allowedImages": ["registry.example.com/ml/*", "ghcr.io/acme/*"],'
                                                      ' "allowServiceAccounts": true, "allowedTolerations": [{"key": "dedicated"}],'
                                                      ' "namespaceMaxActiveDeadlineSeconds": {"team-a": 3600},'
                                                      ' "maxJobResources": {"cpu": "8", "nvidia.com/gpu": 1}, "allowedQueues": ["team-*"]}'))
    for name, value in env.items():
        monkeypatch.setenv(name, value or "")
    settings = OperatorSettings()
    assert settings.allowed_images == ("registry.example.com/ml/*", "ghcr.io/acme/*") and settings.allow_service_accounts
    assert [t.key for t in settings.allowed_tolerations] == ["dedicated"]
    assert settings.deadline_limit("team-a") == 3600 and settings.default_deadline("team-a") == 3600
    assert settings.max_job_resources == {"cpu": "8", "nvidia.com/gpu": 1} and settings.allowed_queues == ("team-*",)
    defaults = operator_env(template(assets))
    assert defaults["KOMPRESS_ALLOW_SERVICE_ACCOUNTS"] == "false" and defaults["KOMPRESS_ALLOWED_IMAGES"] == ""


def test_service_monitor_selects_the_metrics_service(assets):
    docs = template(assets, "-f", REPO / "tests/fixtures/chart-values/monitoring.yaml")
    monitor, service = of_kind(docs, "ServiceMonitor")[0], of_kind(docs, "Service")[0]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    dashboard = of_kind(docs, "ConfigMap")[0]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1" and dashboard["metadata"]["namespace"] == "monitoring"
    json.loads(dashboard["data"]["kompress.json"])


# --- alerts and dashboard: valid PromQL, and only metrics the operator exports ---------------------

def exported_metric_names() -> set[str]:
    """Every series name the operator's registry exposes, with the suffixes histograms and counters add."""
    names = set()
    for family in OperatorMetrics().registry.collect():
        base = family.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
    return names


def alert_rules(assets: Path) -> dict:
    rule = of_kind(template(assets, "-f", REPO / "tests/fixtures/chart-values/monitoring.yaml"), "PrometheusRule")[0]
    return rule["spec"]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((CHART / "files" / "dashboards" / "kompress.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_alert_rules_pass_promtool(assets, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(alert_rules(assets)))
    result = run(assets / "promtool", "check", "rules", rules, check=False)
    assert result.returncode == 0 and "SUCCESS: 5 rules found" in result.stdout, result.stdout + result.stderr
    assert {r["alert"] for g in alert_rules(assets)["groups"] for r in g["rules"]} == {
        "KompressOperatorDown", "KompressRunsFailing", "KompressQueueStuck", "KompressReconcileErrors", "KompressPromotionFailing"}


def test_every_alert_waits_before_firing_and_links_its_runbook(assets):
    import re

    anchors = {heading.lower() for heading in re.findall(r"^## (\w+)$", (REPO / "docs" / "runbook.md").read_text(), re.M)}
    for rule in (r for g in alert_rules(assets)["groups"] for r in g["rules"]):
        assert rule.get("for"), rule["alert"]
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base.endswith("docs/runbook.md") and anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]


def test_one_teams_bad_specs_page_nobody_and_a_namespace_failing_for_the_platform_does(assets, tmp_path):
    """Before: one failed run of one user's bad spec fired KompressRunsFailing at once, for an hour,
    summed over every namespace."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(alert_rules(assets)))
    job = 'job="kompress-metrics"'
    # a run every minute: team-a's specs are invalid or its model does not load; team-b's store refuses uploads
    series = [
        {"series": f'kompress_runs_total{{{job},outcome="failed",namespace="team-a",reason="InvalidSpec"}}', "values": "0+1x60"},
        {"series": f'kompress_runs_total{{{job},outcome="failed",namespace="team-a",reason="ModelLoadFailed"}}', "values": "0+1x60"},
        {"series": f'kompress_runs_total{{{job},outcome="failed",namespace="team-b",reason="ArtifactStoreFailed"}}', "values": "0+1x60"},
        {"series": f'kompress_runs_total{{{job},outcome="succeeded",namespace="team-b",reason="Completed"}}', "values": "0x60"},
        {"series": f'up{{{job}}}', "values": "1x60"},
    ]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "KompressRunsFailing", "exp_alerts": []},  # not before its `for:`
            {"eval_time": "40m", "alertname": "KompressRunsFailing", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "team-b"},
                "exp_annotations": {
                    "summary": "Most runs in namespace team-b fail for reasons of the platform's.",
                    "description": "100% of the runs of the last hour in team-b failed (not counting invalid specs or models); "
                                   "`kubectl get mopt -n team-b` shows each one's Succeeded condition reason.",
                    "runbook_url": "https://github.com/kompress/kompress/blob/main/docs/runbook.md#kompressrunsfailing"}}]},
        ]}]}))
    result = run(assets / "promtool", "test", "rules", tmp_path / "test.yaml", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(assets, tmp_path):
    # Grafana's variables replaced by what they expand to, then promtool parses each query.
    def expand(expr: str) -> str:
        return (expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$job", ".*").replace("$namespace", ".*")
                .replace("$cluster", ".*"))
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": expand(e)}
                                                        for i, e in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = run(assets / "promtool", "check", "rules", path, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_follows_the_cluster_variable():
    """One Grafana over several clusters (Thanos, Mimir): every query is narrowed to the clusters chosen."""
    dashboard = json.loads((CHART / "files" / "dashboards" / "kompress.json").read_text())
    assert "cluster" in [v["name"] for v in dashboard["templating"]["list"]]
    assert [e for e in dashboard_exprs() if 'cluster=~"$cluster"' not in e] == []


def used_metric_names(assets: Path) -> set[str]:
    exprs = dashboard_exprs() + [r["expr"] for g in alert_rules(assets)["groups"] for r in g["rules"]]
    return {m for e in exprs for m in re.findall(r"\b(kompress_[a-z_]+)", e)}


def test_dashboard_and_alerts_use_only_exported_metrics(assets):
    used = used_metric_names(assets)
    assert len(used) >= 9
    assert used <= exported_metric_names(), used - exported_metric_names()


# --- plain manifests, kustomize, GitOps ------------------------------------------------------------

def test_plain_manifests_are_the_rendered_chart(assets):
    checked_in = (DEPLOY / "kustomize" / "base" / "kompress.yaml").read_text()
    rendered = run(assets / "helm", "template", "kompress", CHART, "--namespace", "kompress-system",
                   "--set", "webhook.certificate.source=cert-manager").stdout
    assert checked_in.split("\n", 1)[1] == rendered, "deploy/kustomize/base/kompress.yaml is stale: run scripts/render-manifests"


@pytest.mark.parametrize("overlay", ["base", "overlays/cpu", "overlays/gpu"])
def test_kustomize_renders_every_overlay(assets, overlay):
    docs = [d for d in yaml.safe_load_all(run(assets / "kubectl", "kustomize", DEPLOY / "kustomize" / overlay).stdout) if d]
    deployment = of_kind(docs, "Deployment")[0]
    assert deployment["metadata"]["namespace"] == "kompress-system"
    env = operator_env(docs)
    if overlay == "overlays/gpu":
        assert env["KOMPRESS_MAX_RUNNING"] == "2"
        assert [d["spec"]["job"]["device"] for d in of_kind(docs, "ModelOptimization") if "device" in d["spec"].get("job", {})] == ["GPU"]
    if overlay == "overlays/cpu":
        assert json.loads(env["KOMPRESS_JOB_RESOURCES"])["requests"]["cpu"] == "4"


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu"])
def test_every_overlay_admits_the_samples_it_ships(assets, overlay, monkeypatch):
    """They shipped the sample with no artifact location, so the operator refused it and the Argo CD
    application never became Healthy."""
    from kompress_jobs.spec.specfile import resource_from_dict
    from kompress_operator import policy
    from kompress_operator.settings import OperatorSettings

    docs = [d for d in yaml.safe_load_all(run(assets / "kubectl", "kustomize", DEPLOY / "kustomize" / overlay).stdout) if d]
    for name, value in operator_env(docs).items():
        monkeypatch.setenv(name, value or "")
    monkeypatch.delenv("POD_ID", raising=False)
    settings = OperatorSettings()
    samples = of_kind(docs, "ModelOptimization")
    assert samples and settings.default_artifacts
    for sample in samples:
        namespace = sample["metadata"].get("namespace") or "default"
        assert policy.violations(resource_from_dict(sample).spec, settings, namespace) == [], sample["metadata"]["name"]


def test_the_readme_install_admits_the_cluster_sample(assets, monkeypatch):
    from kompress_jobs.spec.specfile import load_resource_file
    from kompress_operator import policy
    from kompress_operator.settings import OperatorSettings

    env = operator_env(template(assets, "--set", "artifacts.uri=s3://ml-artifacts/kompress", "--set", "artifacts.secretName=kompress-s3"))
    for name, value in env.items():
        monkeypatch.setenv(name, value or "")
    monkeypatch.delenv("POD_ID", raising=False)
    sample = load_resource_file(DEPLOY / "samples" / "cpu" / "digits-cnn.yaml").spec
    assert policy.violations(sample, OperatorSettings(), "default") == []


def test_samples_are_valid_resources():
    from kompress_jobs.planning.plan import plan_passes
    from kompress_jobs.spec.specfile import load_resource_file

    samples = sorted((DEPLOY / "samples").glob("*/digits-*.yaml"))
    assert len(samples) == 2
    for sample in samples:
        plan_passes(load_resource_file(sample).spec)


CHART_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]


def _check_gitops_values(assets, tmp_path, values: dict, where: str) -> None:
    """What a GitOps tool renders must pass the schema and keep still: a webhook certificate from
    cert-manager (a self-signed one changes on every render), a PrometheusRule kube-prometheus-stack
    selects wherever one is enabled."""
    assert values["webhook"]["certificate"]["source"] == "cert-manager", where
    rule = values.get("metrics", {}).get("prometheusRule", {})
    assert not rule.get("enabled") or rule["labels"] == {"release": "kube-prometheus-stack"}, where
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    first, second = (run(assets / "helm", "template", "kompress", CHART, "-f", str(file)).stdout for _ in range(2))
    assert first == second, f"{where}: two renders differ"


def test_argocd_applications_pin_a_chart_version_and_render_the_same_twice(assets, tmp_path):
    for path in sorted((DEPLOY / "argocd").glob("*.yaml")):
        app = yaml.safe_load(path.read_text())
        assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
        source = app["spec"]["source"]
        assert source["targetRevision"] in (CHART_VERSION, f"v{CHART_VERSION}"), path  # never main
        if "chart" in source:  # the released chart, from the OCI registry
            assert source["chart"] == "kompress" and not source["repoURL"].startswith(("oci://", "https://github"))
            _check_gitops_values(assets, tmp_path, source["helm"]["valuesObject"], path.name)
        else:
            assert (REPO / source["path"]).is_dir(), source["path"]
            run(assets / "kubectl", "kustomize", REPO / source["path"])


def test_flux_release_pins_the_oci_chart_and_renders_the_same_twice(assets, tmp_path):
    docs = [d for d in yaml.safe_load_all(run(assets / "kubectl", "kustomize", DEPLOY / "flux").stdout) if d]
    repo, release = of_kind(docs, "HelmRepository")[0], of_kind(docs, "HelmRelease")[0]
    assert repo["apiVersion"] == "source.toolkit.fluxcd.io/v1" and release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    assert repo["spec"]["type"] == "oci" and repo["spec"]["url"].startswith("oci://")
    chart = release["spec"]["chart"]["spec"]
    assert chart == {"chart": "kompress", "version": CHART_VERSION,
                     "sourceRef": {"kind": "HelmRepository", "name": repo["metadata"]["name"], "namespace": "flux-system"}}
    _check_gitops_values(assets, tmp_path, release["spec"]["values"], "flux HelmRelease")


def test_the_readme_enables_the_prometheus_rule_with_the_label_kube_prometheus_stack_selects():
    install = re.search(r"helm install kompress .*?(?=\n\S)", (REPO / "README.md").read_text(), re.S).group(0)
    assert "metrics.prometheusRule.enabled=true" in install
    assert "metrics.prometheusRule.labels.release=kube-prometheus-stack" in install


def test_the_release_script_packages_a_chart_that_renders_from_its_archive(assets, tmp_path):
    """Pushing needs a registry, which cannot run here: the archive it would push is checked."""
    clone = tmp_path / "repo"
    for part in ("charts", "scripts"):
        shutil.copytree(REPO / part, clone / part)
    done = subprocess.run([str(clone / "scripts/release-chart")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HELM": str(assets / "helm")})
    assert done.returncode == 0, done.stderr
    archive = clone / "dist" / f"kompress-{CHART_VERSION}.tgz"
    assert f"packaged dist/{archive.name}" in done.stdout
    shown = yaml.safe_load(run(assets / "helm", "show", "chart", archive).stdout)
    assert (shown["name"], shown["version"]) == ("kompress", CHART_VERSION)
    assert "values.schema.json" in run("tar", "tzf", archive).stdout  # tar: the archive's own listing
    assert of_kind([d for d in yaml.safe_load_all(run(assets / "helm", "template", "kompress", archive).stdout) if d],
                   "CustomResourceDefinition")


# --- images ----------------------------------------------------------------------------------------

def test_dockerfiles_run_as_non_root_and_the_operator_image_has_no_model_runtime():
    images = DEPLOY / "images"
    for name in ("operator", "job", "job-gpu"):
        text = (images / f"{name}.Dockerfile").read_text()
        assert re.search(r"^USER 65532:65532$", text, re.M), name
        assert 'CMD ["operator"]' in text if name == "operator" else 'CMD ["job"]' in text
    operator = (images / "operator.Dockerfile").read_text()
    assert '".[operator]"' in operator and "[job]" not in operator and "torch" not in operator.replace("no torch", "")
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "kompress-runs", "tests"} <= set(ignored)
    job = (images / "job.Dockerfile").read_text()  # the one script the job image builds with is in its context
    assert "RUN scripts/build-llama-tools /usr/local/llama-tools" in job and "!scripts/build-llama-tools" in ignored
    build = (REPO / "scripts" / "build-images").read_text()
    assert "deploy/images/$image.Dockerfile" in build and "for image in operator job job-gpu" in build
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == "ghcr.io/kompress/kompress-operator"
    assert values["jobs"]["cpuImage"]["repository"] == "ghcr.io/kompress/kompress-job"


def test_operator_runs_without_torch_numpy_or_onnxruntime():
    """What the slim operator image holds is enough: importing and starting the CLI, and planning
    every pass type (as the operator validates specs), never needs the job's runtimes."""
    blocked = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy", "boto3", "matplotlib", "optuna", "tensorrt",
               "openvino", "nncf", "transformers", "safetensors", "tokenizers", "pyarrow")
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}: raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import kompress_operator.main, kompress_operator.handlers\n"
        "from kompress_jobs.passes import PASSES\n"
        "from kompress_jobs.spec.schema import PASS_TYPES\n"
        "assert sorted(PASSES) == sorted(PASS_TYPES)\n"
        "from kompress.cli import main\n"
        "sys.exit(main(['operator', '--help']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--max-running" in result.stdout, result.stderr


def test_kind_quickstart_is_valid_shell_and_uses_files_that_exist():
    script = DEPLOY / "kind" / "quickstart.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for path in re.findall(r"\b((?:deploy|charts|scripts)/[\w./-]+)", text):
        assert (REPO / path).exists(), path


def test_serving_examples_read_where_promotion_writes(assets):
    """deploy/serving: the KServe storageUri and the init container's location are the sample's
    promotion root, and the init container's command is one `kompress` accepts."""
    from kompress.cli import _parser
    from kompress_jobs.storage.promoted import MIRROR
    from kompress_jobs.spec.specfile import resource_from_dict

    docs = [d for d in yaml.safe_load_all(run(assets / "kubectl", "kustomize", DEPLOY / "serving").stdout) if d]
    optimization = resource_from_dict(of_kind(docs, "ModelOptimization")[0], "sample")
    assert optimization.spec.promotion is not None and optimization.spec.schedule
    root = optimization.spec.promotion.uri
    service = of_kind(docs, "InferenceService")[0]
    assert service["spec"]["predictor"]["model"]["storageUri"] == f"{root}/{MIRROR}/"
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    args = _parser().parse_args(init["command"][1:])
    assert args.command == "fetch-promoted" and args.location == root
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert str(args.target).startswith(mounts["models"] + "/")
    assert {m["name"] for m in pod["containers"][0]["volumeMounts"]} == {"models"}


def test_the_default_render_holds_a_network_policy_and_scrapes_with_a_token(assets):
    docs = template(assets, "--set", "metrics.serviceMonitor.enabled=true")
    policy = of_kind(docs, "NetworkPolicy")[0]
    deployment = of_kind(docs, "Deployment")[0]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    container_ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["webhook", "metrics", "health"]
    assert {r["ports"][0]["port"] for r in policy["spec"]["ingress"]} == container_ports
    assert policy["spec"]["ingress"][1]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert operator_env(docs)["KOMPRESS_METRICS_ACCESS"] == "TokenReview"
    rules = [r for role in of_kind(docs, "ClusterRole") for r in role.get("rules", [])]
    assert {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]} in rules
    assert {"nonResourceURLs": ["/metrics"], "verbs": ["get"]} in rules
    assert of_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"][0]["bearerTokenFile"].endswith("serviceaccount/token")

    readers = template(assets, "--set-json", 'metrics.readers=[{"kind": "ServiceAccount", "name": "prom", "namespace": "obs"}]')
    binding = next(b for b in of_kind(readers, "ClusterRoleBinding") if b["roleRef"]["name"].endswith("-metrics-reader"))
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prom", "namespace": "obs"}]
    open_ = template(assets, "--set", "metrics.access=Open", "--set", "webhook.enabled=false", "--set", "networkPolicy.enabled=false")
    assert not of_kind(open_, "NetworkPolicy")
    assert not [r for role in of_kind(open_, "ClusterRole") for r in role.get("rules", [])
                if "tokenreviews" in r.get("resources", []) or "subjectaccessreviews" in r.get("resources", [])]


def test_the_webhook_can_require_the_api_servers_client_certificate(assets):
    assert operator_env(template(assets))["KOMPRESS_WEBHOOK_CLIENT_CA"] == ""
    docs = template(assets, "--set", "webhook.clientCA.configMapName=apiserver-webhook-client")
    assert operator_env(docs)["KOMPRESS_WEBHOOK_CLIENT_CA"] == "/webhook-client-ca/ca.crt"
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert {"name": "webhook-client-ca", "configMap": {"name": "apiserver-webhook-client"}} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "webhook-client-ca", "mountPath": "/webhook-client-ca", "readOnly": True} in mounts


def test_a_study_database_per_namespace_reaches_the_operator_and_grants_only_its_secret(assets):
    assert "KOMPRESS_STUDY_ADMIN_URL" not in operator_env(template(assets))
    docs = template(assets, "--set", "tuning.adminSecretName=study-admin")
    container = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    admin = next(e for e in container["env"] if e["name"] == "KOMPRESS_STUDY_ADMIN_URL")
    assert admin["valueFrom"] == {"secretKeyRef": {"name": "study-admin", "key": "url"}}
    rules = [r for role in of_kind(docs, "ClusterRole") for r in role.get("rules", []) if "secrets" in r.get("resources", [])]
    assert rules == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["kompress-study-database"], "verbs": ["patch"]},
                     {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]
