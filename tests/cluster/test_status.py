"""The status as the API server sees it: typed in the CRD (generated from
ModelOptimizationStatus), documented by kubectl explain, validated on write, and read by kstatus
(Argo CD's and Flux's health checks) the way those tools read it."""

from __future__ import annotations

import json

from .conftest import GROUP, PLURAL, VERSION, apply, condition, phase_is, resource, wait_for
from .test_lifecycle import SLOW_BENCHMARK


def kstatus(obj: dict) -> str:
    """sigs.k8s.io/cli-utils kstatus' generic rules (status/generic.go), which Argo CD and Flux use
    for custom resources: a lagging observedGeneration or Reconciling=True is InProgress,
    Stalled=True is Failed, anything else is Current."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return "InProgress"
    if (condition(obj, "Reconciling") or {}).get("status") == "True":
        return "InProgress"
    if (condition(obj, "Stalled") or {}).get("status") == "True":
        return "Failed"
    return "Current"


def explain(cluster, path: str) -> str:
    # This API server (1.20) publishes OpenAPI v2 only, a moment after the CRD is established.
    answer = lambda: cluster.kubectl("explain", path, "--output=plaintext-openapiv2", check=False)  # noqa: E731
    return wait_for(lambda: answer().stdout or None, f"kubectl explain {path}", timeout=60)


def test_kubectl_explain_documents_the_status_conditions(cluster):
    explained = explain(cluster, f"{PLURAL}.status.conditions")
    for field in ("lastTransitionTime", "message", "observedGeneration", "reason", "status", "type"):
        assert field in explained, explained
    assert "the Kubernetes condition convention" in explained
    assert "The pick" in explain(cluster, f"{PLURAL}.status.best")


def test_the_api_server_refuses_a_status_outside_the_schema(cluster, namespace, s3, api):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    apply(cluster, namespace, resource("typed", s3))
    custom = client.CustomObjectsApi(api)
    bad = {"status": {"conditions": [{"type": "Succeeded", "status": "Maybe", "reason": "Guess", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    try:
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "typed", bad)
        raise AssertionError("a condition status of Maybe was accepted")
    except ApiException as exc:
        assert exc.status == 422 and "Maybe" in json.loads(exc.body)["message"]


def test_kstatus_reads_each_phase_as_gitops_tools_do(cluster, namespace, s3, start_operator, node):
    start_operator()
    apply(cluster, namespace, resource("healthy", s3, benchmark=SLOW_BENCHMARK))
    apply(cluster, namespace, resource("broken", s3, passes=[{"type": "DynamicInt8"}]))  # needs OnnxExport first
    assert kstatus(wait_for(phase_is(cluster, namespace, "healthy", "Running"), "the run to start")) == "InProgress"
    assert kstatus(wait_for(phase_is(cluster, namespace, "broken", "Failed"), "the invalid spec")) == "Failed"
    done = wait_for(phase_is(cluster, namespace, "healthy", "Succeeded", "Failed"), "the run to finish")
    assert done["status"]["phase"] == "Succeeded" and kstatus(done) == "Current"
