"""The chart against the real API server: its manifests pass server-side validation, and the
operator running as the chart's own ServiceAccount (a token checked by the real RBAC authorizer)
completes a run — so the chart's RBAC is enough — while being refused what it does not need."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import boto3
import pytest
import yaml

from ..conftest import REPO
from ..harness.control_plane import free_port, host_address
from ..harness.operator_process import OperatorProcess
from ..test_chart import CHART, VALUES, used_metric_names
from .conftest import S3_ENV, apply, condition, phase_is, refusal, resource, wait_for

RELEASE, RELEASE_NAMESPACE = "kompress", "kompress-system"


def helm(cluster, *args: str, check: bool = True):
    return subprocess.run([str(cluster.assets / "helm"), "--kubeconfig", str(cluster.kubeconfig()), *map(str, args)],
                          capture_output=True, text=True, check=check, timeout=180)


def ensure_namespace(cluster, name: str) -> None:
    cluster.kubectl("create", "namespace", name, check=False)


@pytest.fixture(scope="module")
def monitoring_crds(cluster):
    cluster.kubectl("apply", "-f", str(REPO / "tests" / "fixtures" / "monitoring-crds.yaml"))
    cluster.wait_established("servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com")


@pytest.mark.parametrize("values", [None, *VALUES], ids=lambda v: v.stem if v else "defaults")
def test_rendered_chart_passes_server_side_validation(cluster, monitoring_crds, values):
    for namespace in (RELEASE_NAMESPACE, "team-a", "team-b", "monitoring"):
        ensure_namespace(cluster, namespace)
    rendered = helm(cluster, "template", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE, "--kube-version", "1.20.2",
                    *(["-f", values] if values else [])).stdout
    # Hooks (Kopf's peering objects) are created by Helm after the CRDs they need: not in this dry run.
    docs = [d for d in yaml.safe_load_all(rendered) if d and "helm.sh/hook" not in d["metadata"].get("annotations", {})]
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs)


def service_account_token(cluster, namespace: str, name: str) -> str:
    """The token the ServiceAccount token controller minted for it (Kubernetes 1.20 style)."""
    def token():
        secrets = json.loads(cluster.kubectl("get", "secrets", "-n", namespace, "-o", "json").stdout)["items"]
        for secret in secrets:
            annotations = secret["metadata"].get("annotations", {})
            if secret["type"] == "kubernetes.io/service-account-token" and \
                    annotations.get("kubernetes.io/service-account.name") == name and "token" in secret.get("data", {}):
                return base64.b64decode(secret["data"]["token"]).decode()
        return None
    return wait_for(token, f"a token for ServiceAccount {namespace}/{name}", timeout=60)


def adopt_existing_crd(cluster) -> None:
    """The session's CRD was applied with kubectl; Helm adopts objects that carry its ownership marks."""
    crd = "crd/modeloptimizations.kompress.io"
    cluster.kubectl("label", "--overwrite", crd, "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl("annotate", "--overwrite", crd, f"meta.helm.sh/release-name={RELEASE}",
                    f"meta.helm.sh/release-namespace={RELEASE_NAMESPACE}")


def mount_secret(cluster, namespace: str, name: str, folder: Path) -> Path:
    """A Secret's keys as files, as the kubelet mounts them."""
    secret = json.loads(cluster.kubectl("get", "secret", "-n", namespace, name, "-o", "json").stdout)
    mounted = folder / name
    mounted.mkdir()
    for key, value in secret["data"].items():
        (mounted / key).write_bytes(base64.b64decode(value))
    return mounted


def serve_service_here(cluster, namespace: str, service: str, port_name: str, port: int) -> None:
    """Endpoints for a Service, pointing at this machine (the API server routes webhooks to
    endpoints with --enable-aggregator-routing; Endpoints may not be loopback addresses)."""
    endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": service, "namespace": namespace},
                 "subsets": [{"addresses": [{"ip": host_address()}], "ports": [{"name": port_name, "port": port}]}]}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(endpoints))


def test_operator_with_the_charts_service_account_completes_a_run(cluster, node, s3, namespace, tmp_path):
    ensure_namespace(cluster, RELEASE_NAMESPACE)
    adopt_existing_crd(cluster)
    job_env = {**S3_ENV, "AWS_ENDPOINT_URL": s3}  # no endpointUrl in the spec: boto3 takes it from here
    sets = [f"--set-string=jobs.env.{k}={v}" for k, v in job_env.items()]
    helm(cluster, "install", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE, "--set", "replicaCount=2",
         "--set", "artifacts.uri=s3://models/chart-runs", *sets)
    operator = None
    try:
        manifest = [d for d in yaml.safe_load_all(helm(cluster, "get", "manifest", RELEASE, "-n", RELEASE_NAMESPACE).stdout) if d]
        deployment = next(d for d in manifest if d["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        token = service_account_token(cluster, RELEASE_NAMESPACE, account)
        kubeconfig = cluster.kubeconfig(user=f"sa-{account}", token=token)

        # The Deployment's own command and environment (no kubelet here: the test runs the Pod's process).
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        env["POD_ID"] = "kompress-test-pod"
        assert container["command"] == ["kompress", "operator"] and env["KOMPRESS_PEERING"] == RELEASE
        # The Pod's mounted webhook Secret, and the webhook Service's endpoint, played here too.
        env["KOMPRESS_WEBHOOK_CERT_DIR"] = str(mount_secret(cluster, RELEASE_NAMESPACE, f"{RELEASE}-webhook-tls", tmp_path))
        env["KOMPRESS_WEBHOOK_PORT"] = str(free_port())
        serve_service_here(cluster, RELEASE_NAMESPACE, f"{RELEASE}-webhook", "webhook", int(env["KOMPRESS_WEBHOOK_PORT"]))
        operator = OperatorProcess(kubeconfig, "--retry-interval", "1", env=env).start()

        # The chart's webhook answers through its Service, with the chart's certificate.
        judged = resource("judged", s3, passes=[{"type": "OnnxExport"}, {"type": "StaticInt8", "opset": 17}])
        message = refusal(cluster, namespace, judged)
        assert "spec.passes[1].opset" in message, message

        # The chart's default storage policy: a namespace reads and writes only <artifacts.uri>/<namespace>/.
        own = f"s3://models/chart-runs/{namespace}"
        client = boto3.client("s3", endpoint_url=s3)
        for name in ("digits-cnn.pt", "digits.npz"):
            client.copy_object(Bucket="models", Key=f"chart-runs/{namespace}/inputs/{name}", CopySource={"Bucket": "models", "Key": f"inputs/{name}"})
        outside = refusal(cluster, namespace, resource("outside", s3, artifacts={}))  # the shared inputs/ folder is no team's
        assert "spec.model.uri" in outside and "storageLocations" in outside and f"{own}/" in outside, outside
        apply(cluster, namespace, resource("via-chart", s3, artifacts={}, model={"uri": f"{own}/inputs/digits-cnn.pt", "format": "TorchScript"},
                                           data={"uri": f"{own}/inputs/digits.npz"}))
        done = wait_for(phase_is(cluster, namespace, "via-chart", "Succeeded", "Failed"), "the run to finish", timeout=240)
        assert condition(done, "Succeeded")["status"] == "True", done["status"]
        assert done["status"]["artifacts"]["uri"].startswith(f"{own}/via-chart/runs/"), done["status"]["artifacts"]
        # The README's first apply: the cluster sample, unchanged (it reads the job image's bundled examples)
        cluster.kubectl("apply", "-n", namespace, "-f", str(REPO / "deploy/samples/cpu/digits-cnn.yaml"))
        sample = wait_for(phase_is(cluster, namespace, "digits-cnn", "Succeeded", "Failed"), "the sample to finish", timeout=300)
        assert condition(sample, "Succeeded")["status"] == "True", sample["status"]
        assert sample["status"]["artifacts"]["uri"].startswith(f"{own}/digits-cnn/runs/"), sample["status"]["artifacts"]

        log = operator.log()
        assert "Not enough permissions" not in log and "Forbidden" not in log, log[-3000:]
        exposition = operator.metrics()
        for name in used_metric_names(cluster.assets):  # what the dashboard and the alerts query
            family = name.removesuffix("_bucket")  # histograms are typed under their base name
            assert f"# TYPE {family} " in exposition, name

        # What the operator does not need, it does not get.
        def can_i(*args: str) -> str:
            return cluster.kubectl("auth", "can-i", *args, user=f"sa-{account}", check=False).stdout.strip()
        assert can_i("list", "secrets", "--all-namespaces") == "no"
        assert can_i("get", "secrets", "-n", RELEASE_NAMESPACE) == "no"
        assert can_i("delete", "pods", "-n", namespace) == "no"
        assert can_i("update", "modeloptimizations.kompress.io", "-n", namespace) == "no"
        assert can_i("create", "jobs.batch", "-n", namespace) == "yes"
        assert can_i("patch", "modeloptimizations.kompress.io", "--subresource=status", "-n", namespace) == "yes"
        refused = cluster.kubectl("get", "secrets", "-A", user=f"sa-{account}", check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr
    finally:
        if operator:
            operator.stop()
            print(f"--- operator log (tail) ---\n{operator.log()[-6000:]}")
        helm(cluster, "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, check=False)
    # crds.keep: the CRD, and so every ModelOptimization, outlives the release.
    assert cluster.kubectl("get", "crd", "modeloptimizations.kompress.io", check=False).returncode == 0
    assert cluster.kubectl("get", "modeloptimizations", "-n", namespace, "via-chart", check=False).returncode == 0


def test_a_team_bound_to_the_built_in_edit_role_creates_modeloptimizations_and_view_reads_them(cluster, namespace, s3):
    """The chart's aggregated ClusterRoles, filled into `edit` and `view` by the API server's own
    aggregation controller; users hold nothing but a RoleBinding to a built-in role."""
    roles = helm(cluster, "template", RELEASE, CHART, "--namespace", RELEASE_NAMESPACE, "--show-only", "templates/user-roles.yaml").stdout
    cluster.kubectl("apply", "-f", "-", input=roles)
    bindings = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": f"{user}-{role}", "namespace": namespace},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                 "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]}
                for user, role in (("team-dev", "edit"), ("outsider", "view"))]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(bindings))

    def may(user: str, verb: str) -> bool:
        done = cluster.kubectl("auth", "can-i", verb, "modeloptimizations.kompress.io", "-n", namespace, user=user, check=False)
        return done.stdout.strip() == "yes"

    wait_for(lambda: may("team-dev", "create"), "the aggregation controller to add ModelOptimizations to edit", timeout=60)
    created = cluster.kubectl("apply", "-f", "-", user="team-dev",
                              input=yaml.safe_dump(resource("by-edit", s3) | {"metadata": {"name": "by-edit", "namespace": namespace}}))
    assert "created" in created.stdout
    wait_for(lambda: may("outsider", "list"), "the aggregation controller to add ModelOptimizations to view", timeout=60)
    assert "by-edit" in cluster.kubectl("get", "modeloptimizations", "-n", namespace, user="outsider").stdout
    assert not may("outsider", "create") and not may("outsider", "delete")
    cluster.kubectl("delete", "-f", "-", input=roles)


def test_the_kueue_queues_of_the_deploy_example_pass_kueues_own_schema(cluster):
    """deploy/kueue/queues.yaml against Kueue's CRDs (tests/fixtures/kueue-crds.yaml, v1beta2), server-side:
    a field Kueue does not know, or a quota it would refuse, fails here rather than in a user's cluster."""
    cluster.kubectl("apply", "-f", str(REPO / "tests" / "fixtures" / "kueue-crds.yaml"))
    cluster.wait_established(*(f"{plural}.kueue.x-k8s.io" for plural in ("resourceflavors", "clusterqueues", "localqueues")))
    queues = yaml.safe_load_all((REPO / "deploy" / "kueue" / "queues.yaml").read_text())
    for namespace in {d["metadata"]["namespace"] for d in queues if d["metadata"].get("namespace")}:
        ensure_namespace(cluster, namespace)
    applied = cluster.kubectl("apply", "--dry-run=server", "--validate=true", "-f", str(REPO / "deploy" / "kueue" / "queues.yaml"),
                              check=False)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("(server dry run)") == 4  # a flavor, a ClusterQueue, two LocalQueues
    # The check has teeth: a value Kueue's schema refuses is refused here (unknown fields, this API server prunes).
    wrong = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "q"},
             "spec": {"queueingStrategy": "Random", "resourceGroups": []}}
    refused = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(wrong), check=False)
    assert refused.returncode != 0 and "queueingStrategy" in refused.stderr, refused.stderr
    local_queues = [d for d in yaml.safe_load_all((REPO / "deploy" / "kueue" / "queues.yaml").read_text()) if d["kind"] == "LocalQueue"]
    assert {q["metadata"]["name"] for q in local_queues} == {"ml-batch"}  # the name docs/kueue.md sets as kueueLocalQueue
