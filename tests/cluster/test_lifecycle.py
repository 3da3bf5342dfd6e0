"""The operator's contract over a resource's life: bad specs, restarts, deletion, spec changes,
failing Pods and the concurrency cap — each against the real API server and Job controller."""

from __future__ import annotations

import re
import time

import pytest

from .conftest import PLURAL, apply, condition, get, phase_is, resource, wait_for

SLOW_BENCHMARK = {"batchSizes": [1, 8], "warmup": 2, "iterations": 150, "rounds": 4}  # a run of several seconds


def jobs(cluster, namespace):
    return sorted(j["metadata"]["name"] for j in get(cluster, namespace, "jobs")["items"])


def test_a_spec_the_crd_can_reject_is_refused_by_kubectl(cluster, namespace, s3):
    result = apply(cluster, namespace, resource("bad", s3, goals={"maxAccuracyDrop": -1}), check=False)
    assert result.returncode != 0
    assert "spec.goals.maxAccuracyDrop" in result.stderr and "greater than or equal to 0" in result.stderr
    result = apply(cluster, namespace, resource("bad", s3, passes=[{"type": "Quantum"}]), check=False)
    assert result.returncode != 0 and "spec.passes" in result.stderr and "Unsupported value" in result.stderr


@pytest.mark.parametrize(("passes", "field", "detail"), [
    # A field of another pass type: the merged CRD schema lets it through, pydantic does not.
    ([{"type": "OnnxExport"}, {"type": "StaticInt8", "opset": 17}], "spec.passes[1].opset", "unknown field"),
    # A chain that cannot run: quantizing TorchScript without exporting it first.
    ([{"type": "DynamicInt8"}], "spec.passes[0]", "add a pass of type OnnxExport"),
])
def test_a_spec_only_the_operator_can_judge_gets_a_failed_condition(cluster, namespace, s3, start_operator, passes, field, detail):
    operator = start_operator()
    apply(cluster, namespace, resource("judged", s3, passes=passes))
    failed = wait_for(phase_is(cluster, namespace, "judged", "Failed"), "the InvalidSpec condition")
    accepted, succeeded = condition(failed, "Accepted"), condition(failed, "Succeeded")
    assert accepted["status"] == "False" and accepted["reason"] == "InvalidSpec"
    assert field in accepted["message"] and detail in accepted["message"]
    assert succeeded["status"] == "False" and condition(failed, "Stalled")["status"] == "True"
    assert jobs(cluster, namespace) == []
    # The operator did not crash and still serves other resources.
    apply(cluster, namespace, resource("fine", s3))
    assert wait_for(phase_is(cluster, namespace, "fine", "Succeeded", "Failed"), "the valid run")["status"]["phase"] == "Succeeded"
    assert operator.process.poll() is None
    assert "InvalidSpec" in {e["reason"] for e in get(cluster, namespace, "events")["items"]}


def test_operator_killed_mid_run_neither_duplicates_nor_loses_the_run(cluster, namespace, s3, start_operator, node):
    first = start_operator()
    apply(cluster, namespace, resource("survivor", s3, benchmark=SLOW_BENCHMARK))
    wait_for(lambda: any(p.startswith(f"{namespace}/survivor-g1") for p in node.started_pods), "the Pod to start")
    first.kill()  # SIGKILL: no graceful shutdown
    second = start_operator()
    done = wait_for(phase_is(cluster, namespace, "survivor", "Succeeded", "Failed"), "the run to finish after the restart")
    assert done["status"]["phase"] == "Succeeded" and done["status"]["best"]["name"]
    assert jobs(cluster, namespace) == ["survivor-g1"]
    assert len([p for p in node.started_pods if p.startswith(f"{namespace}/survivor-")]) == 1
    assert f'name="survivor",namespace="{namespace}"' in second.metrics()


def test_deleting_the_resource_takes_job_pods_and_metric_series(cluster, namespace, s3, start_operator, node):
    operator = start_operator()
    apply(cluster, namespace, resource("doomed", s3))
    wait_for(phase_is(cluster, namespace, "doomed", "Succeeded"), "the run to finish")
    assert f'name="doomed",namespace="{namespace}"' in operator.metrics()
    assert jobs(cluster, namespace) == ["doomed-g1"]

    cluster.kubectl("delete", PLURAL, "doomed", "-n", namespace)
    wait_for(lambda: jobs(cluster, namespace) == [] and not get(cluster, namespace, "pods")["items"],
             "the garbage collector to delete the Job and its Pods", timeout=60)
    wait_for(lambda: f'name="doomed",namespace="{namespace}"' not in operator.metrics(), "the metric series to go", timeout=30)


def test_deleting_mid_run_stops_the_pod(cluster, namespace, s3, start_operator, node):
    start_operator()
    apply(cluster, namespace, resource("stopped", s3, benchmark=SLOW_BENCHMARK))
    wait_for(phase_is(cluster, namespace, "stopped", "Running"), "the run to start")
    cluster.kubectl("delete", PLURAL, "stopped", "-n", namespace)
    wait_for(lambda: jobs(cluster, namespace) == [] and not get(cluster, namespace, "pods")["items"],
             "the Job and Pod to go", timeout=60)


def test_a_job_deleted_mid_run_fails_the_run_and_frees_its_slot(cluster, namespace, s3, start_operator, node):
    start_operator("--max-running", "1", "--max-running-per-namespace", "1")
    apply(cluster, namespace, resource("orphaned", s3, benchmark=SLOW_BENCHMARK))
    wait_for(phase_is(cluster, namespace, "orphaned", "Running"), "the run to start")
    apply(cluster, namespace, resource("next", s3))
    wait_for(phase_is(cluster, namespace, "next", "Queued"), "the second run to wait for the only slot")
    cluster.kubectl("delete", "job", "orphaned-g1", "-n", namespace, "--wait=false")
    failed = wait_for(phase_is(cluster, namespace, "orphaned", "Failed"), "the run whose Job went to fail")
    stalled = condition(failed, "Stalled")
    assert stalled["reason"] == "JobDeleted" and "Job orphaned-g1 was deleted" in stalled["message"]
    done = wait_for(phase_is(cluster, namespace, "next", "Succeeded", "Failed"), "the queued run to take the freed slot")
    assert done["status"]["phase"] == "Succeeded"
    assert "JobDeleted" in {e["reason"] for e in get(cluster, namespace, "events")["items"]}


def test_a_spec_change_mid_run_supersedes_the_old_job(cluster, namespace, s3, start_operator, node):
    start_operator()
    apply(cluster, namespace, resource("edited", s3, benchmark=SLOW_BENCHMARK))
    wait_for(phase_is(cluster, namespace, "edited", "Running"), "the first run to start")
    apply(cluster, namespace, resource("edited", s3, passes=[{"type": "OnnxExport"}, {"type": "DynamicInt8"}]))
    done = wait_for(lambda: (lambda o: o if o["status"].get("phase") in ("Succeeded", "Failed")
                             and o["status"].get("observedGeneration") == 2 else None)(get(cluster, namespace, PLURAL, "edited")),
                    "the second generation to finish")
    assert done["status"]["phase"] == "Succeeded"
    assert {c["name"] for c in done["status"]["candidates"]} == {"onnx-export", "dynamic-int8"}
    assert done["status"]["runId"] == f"{namespace}-edited-g2"
    wait_for(lambda: jobs(cluster, namespace) == ["edited-g2"], "the old Job to be deleted", timeout=60)
    assert "Superseded" in {e["reason"] for e in get(cluster, namespace, "events")["items"]}


def test_a_failing_pod_is_retried_then_reported_with_its_reason(cluster, namespace, s3, start_operator, node):
    start_operator()
    apply(cluster, namespace, resource("broken", s3, model={"uri": "s3://models/inputs/absent.pt", "format": "TorchScript"},
                                      job={"backoffLimit": 1}))
    failed = wait_for(phase_is(cluster, namespace, "broken", "Failed"), "the run to fail")
    succeeded = condition(failed, "Succeeded")
    assert succeeded["status"] == "False" and succeeded["reason"] == "ArtifactStoreFailed"
    assert "s3://models/inputs/absent.pt: cannot download (404)" in succeeded["message"]
    assert "BackoffLimitExceeded" in succeeded["message"]
    assert len([p for p in node.started_pods if p.startswith(f"{namespace}/broken-g1")]) == 2  # backoffLimit 1: two tries


def test_runs_over_the_cap_queue_and_start_by_priority(cluster, namespace, s3, start_operator, node):
    operator = start_operator("--max-running", "1", "--max-running-per-namespace", "1")
    apply(cluster, namespace, resource("first", s3, benchmark=SLOW_BENCHMARK))
    wait_for(phase_is(cluster, namespace, "first", "Running"), "the first run to start")
    apply(cluster, namespace, resource("low", s3))
    time.sleep(1.1)  # distinct creation timestamps: 'low' is older than 'high'
    apply(cluster, namespace, resource("high", s3, job={"backoffLimit": 0, "priority": 10}))
    for name in ("low", "high"):
        queued = wait_for(phase_is(cluster, namespace, name, "Queued"), f"{name} to be queued")
        assert condition(queued, "Running")["reason"] == "ConcurrencyLimit"
        assert "1/1 running cluster-wide" in condition(queued, "Succeeded")["message"]
        assert "kompress.io/finalizer" not in (queued["metadata"].get("finalizers") or [])  # deletes without the operator
    assert "kompress_queue_depth 2.0" in operator.metrics() or "kompress_queue_depth 1.0" in operator.metrics()
    # Edited while it waits: queued again for its new spec, keeping its place by age.
    apply(cluster, namespace, resource("low", s3, benchmark={**SLOW_BENCHMARK, "iterations": 20}))
    wait_for(lambda: (get(cluster, namespace, PLURAL, "low").get("status") or {}).get("observedGeneration") == 2,
             "the edited run to be queued for its new spec")
    assert get(cluster, namespace, PLURAL, "low")["status"]["phase"] == "Queued"
    for name in ("first", "high", "low"):
        assert wait_for(phase_is(cluster, namespace, name, "Succeeded", "Failed"), f"{name} to finish",
                        timeout=240)["status"]["phase"] == "Succeeded"
    # Pod names are <resource>-g<generation>-<random suffix>; the suffix may itself start with "g".
    order = [re.match(r"(.+)-g\d+-[a-z0-9]+$", p.split("/")[1]).group(1) for p in node.started_pods
             if p.startswith(f"{namespace}/")]
    assert order == ["first", "high", "low"]
    assert sorted(jobs(cluster, namespace)) == ["first-g1", "high-g1", "low-g2"]  # the edited spec ran, once


def test_with_kueue_every_run_gets_its_job_in_the_local_queue_at_once_and_the_operators_cap_steps_aside(
        cluster, namespace, s3, start_operator, node):
    """Kueue decides when a Job runs: the operator creates each Job at once, suspended, labelled with
    the LocalQueue. This API server (1.20) predates Job.spec.suspend and drops it, so here every Job
    runs as soon as it is created, as if Kueue admitted it at once; admission and preemption are
    played on the objects in tests/test_kueue.py."""
    start_operator("--kueue-local-queue", "ml-batch", "--max-running", "1", "--max-running-per-namespace", "1")
    apply(cluster, namespace, resource("first", s3, benchmark=SLOW_BENCHMARK))
    apply(cluster, namespace, resource("second", s3, job={"backoffLimit": 0, "queueName": "gpu-batch"}))
    both = wait_for(lambda: len(jobs(cluster, namespace)) == 2 and get(cluster, namespace, "jobs")["items"],
                    "both Jobs to be created, the operator's cap of 1 notwithstanding")
    assert {j["metadata"]["name"]: j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] for j in both} == \
        {"first-g1": "ml-batch", "second-g1": "gpu-batch"}
    for name in ("first", "second"):
        done = wait_for(phase_is(cluster, namespace, name, "Succeeded", "Failed"), f"{name} to finish", timeout=240)
        assert done["status"]["phase"] == "Succeeded"
    reasons = {e["reason"] for e in get(cluster, namespace, "events")["items"] if e["involvedObject"]["kind"] == "ModelOptimization"}
    assert "JobCreated" in reasons and "Queued" not in reasons  # never held back by the operator's own queue
