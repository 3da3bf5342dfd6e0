"""Faults during a run: the operator killed at other points than mid-Pod, the API server restarted,
a watch stream silently dropped, S3 down. Each must end in the right final status with nothing
lost or duplicated. (Killed mid-Pod, deleted, edited and failing Pods: test_lifecycle.py.)"""

from __future__ import annotations

import json

import yaml

from ..harness.proxy import BreakableProxy
from .conftest import PLURAL, apply, condition, get, phase_is, resource, wait_for
from .test_lifecycle import SLOW_BENCHMARK, jobs


def pods_started(node, namespace: str, name: str) -> list[str]:
    return [p for p in node.started_pods if p.startswith(f"{namespace}/{name}-")]


def job_succeeded(cluster, namespace: str, name: str):
    return lambda: (get(cluster, namespace, "jobs", name).get("status") or {}).get("succeeded") == 1


def test_operator_down_while_the_pod_finishes_still_reports_the_result(cluster, namespace, s3, start_operator, node):
    first = start_operator()
    apply(cluster, namespace, resource("orphan", s3, benchmark=SLOW_BENCHMARK))
    wait_for(lambda: pods_started(node, namespace, "orphan"), "the Pod to start")
    first.kill()  # SIGKILL: the result arrives while nobody watches
    wait_for(job_succeeded(cluster, namespace, "orphan-g1"), "the Job to succeed without the operator")
    assert get(cluster, namespace, PLURAL, "orphan")["status"]["phase"] == "Running"
    start_operator()
    done = wait_for(phase_is(cluster, namespace, "orphan", "Succeeded", "Failed"), "the restarted operator to report")
    assert done["status"]["phase"] == "Succeeded" and done["status"]["best"]["name"]
    assert jobs(cluster, namespace) == ["orphan-g1"] and len(pods_started(node, namespace, "orphan")) == 1


def test_operator_killed_while_a_run_is_queued_starts_it_once_after_restart(cluster, namespace, s3, start_operator, node):
    first = start_operator("--max-running", "1", "--max-running-per-namespace", "1")
    apply(cluster, namespace, resource("ahead", s3, benchmark=SLOW_BENCHMARK))
    wait_for(phase_is(cluster, namespace, "ahead", "Running"), "the first run to start")
    apply(cluster, namespace, resource("waiting", s3))
    wait_for(phase_is(cluster, namespace, "waiting", "Queued"), "the second run to queue")
    first.kill()
    start_operator("--max-running", "1", "--max-running-per-namespace", "1")
    for name in ("ahead", "waiting"):
        done = wait_for(phase_is(cluster, namespace, name, "Succeeded", "Failed"), f"{name} to finish", timeout=240)
        assert done["status"]["phase"] == "Succeeded"
    assert jobs(cluster, namespace) == ["ahead-g1", "waiting-g1"]
    assert len(pods_started(node, namespace, "ahead")) == 1 and len(pods_started(node, namespace, "waiting")) == 1


def test_api_server_restarted_mid_run_reconciliation_resumes(cluster, namespace, s3, start_operator, node):
    operator = start_operator()
    apply(cluster, namespace, resource("steady", s3, benchmark=SLOW_BENCHMARK))
    wait_for(lambda: pods_started(node, namespace, "steady"), "the Pod to start")
    cluster.restart_apiserver()
    done = wait_for(phase_is(cluster, namespace, "steady", "Succeeded", "Failed"), "the run to finish after the restart")
    assert done["status"]["phase"] == "Succeeded"
    assert jobs(cluster, namespace) == ["steady-g1"] and len(pods_started(node, namespace, "steady")) == 1
    # The operator's watches came back too: a resource created after the restart is served.
    apply(cluster, namespace, resource("after", s3))
    assert wait_for(phase_is(cluster, namespace, "after", "Succeeded", "Failed"), "a run after the restart")["status"]["phase"] == "Succeeded"
    assert operator.process.poll() is None


def test_a_silently_dropped_watch_is_noticed_and_reestablished(cluster, namespace, s3, start_operator, node, tmp_path):
    proxy = BreakableProxy("127.0.0.1", cluster.api_port)
    config = yaml.safe_load(cluster.kubeconfig().read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://{proxy.address}"
    kubeconfig = tmp_path / "through-proxy"
    kubeconfig.write_text(yaml.safe_dump(config))
    try:
        # Calls already on a pooled connection the stall catches give up after --api-timeout, as watches do.
        start_operator("--watch-server-timeout", "600", "--watch-client-timeout", "5", "--api-timeout", "5", kubeconfig=kubeconfig)
        # A spec only the operator refuses: it reads and writes through the proxy, no run needed.
        apply(cluster, namespace, resource("before", s3, passes=[{"type": "DynamicInt8"}]))
        wait_for(phase_is(cluster, namespace, "before", "Failed"), "the operator to judge a spec through the proxy")
        connections = proxy.connections
        proxy.stall()  # every open stream goes silent; the server still thinks it is connected
        apply(cluster, namespace, resource("after", s3))
        done = wait_for(phase_is(cluster, namespace, "after", "Succeeded", "Failed"), "a run after the stall", timeout=240)
        assert done["status"]["phase"] == "Succeeded"
        assert proxy.connections > connections  # it gave up on the silent streams and opened new ones
    finally:
        proxy.close()


def test_s3_down_fails_the_run_with_the_store_reason_and_no_manifest(cluster, namespace, s3, start_operator, node):
    host, port = s3.removeprefix("http://").split(":")
    proxy = BreakableProxy(host, int(port))
    proxy.refuse()
    try:
        start_operator("--allowed-endpoints", f"{s3},http://{proxy.address}")
        apply(cluster, namespace, resource("unstored", s3, artifacts={"uri": "s3://models/runs", "endpointUrl": f"http://{proxy.address}"}))
        failed = wait_for(phase_is(cluster, namespace, "unstored", "Failed"), "the run to fail", timeout=240)
    finally:
        proxy.close()
    succeeded = condition(failed, "Succeeded")
    assert succeeded["reason"] == "ArtifactStoreFailed", succeeded
    assert f"http://{proxy.address}" in succeeded["message"] and "unreachable" in succeeded["message"]
    import boto3

    listing = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="models", Prefix=f"runs/{namespace}/unstored/")
    assert not listing.get("Contents"), json.dumps(listing, default=str)


def test_a_refused_job_create_is_retried_until_it_goes_through(cluster, namespace, s3, start_operator, node):
    # A quota that admits no Jobs: the API server answers 403, as for an RBAC or quota slip.
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
             "spec": {"hard": {"count/jobs.batch": "0"}}}
    apply(cluster, namespace, quota)
    wait_for(lambda: (get(cluster, namespace, "resourcequota", "no-jobs").get("status") or {}).get("used"),
             "the quota controller to count")
    start_operator()
    apply(cluster, namespace, resource("refused", s3))
    pending = wait_for(phase_is(cluster, namespace, "refused", "Pending"), "the refusal in the status")
    reconciling = condition(pending, "Reconciling")
    assert reconciling["status"] == "True" and reconciling["reason"] == "RetryingAfterError"
    assert "403" in reconciling["message"] or "Forbidden" in reconciling["message"], reconciling["message"]
    wait_for(lambda: "RetryingAfterError" in {e["reason"] for e in get(cluster, namespace, "events")["items"]},
             "a Warning Event saying so")
    assert jobs(cluster, namespace) == []
    # Level-triggered: nothing of Kopf's handler state is written into the resource.
    assert not [key for key in pending["metadata"].get("annotations", {}) if "last-handled" in key]

    cluster.kubectl("delete", "resourcequota", "no-jobs", "-n", namespace)
    done = wait_for(phase_is(cluster, namespace, "refused", "Succeeded", "Failed"), "the retried run to finish")
    assert done["status"]["phase"] == "Succeeded"
    assert jobs(cluster, namespace) == ["refused-g1"] and len(pods_started(node, namespace, "refused")) == 1
