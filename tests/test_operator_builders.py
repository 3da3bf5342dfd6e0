"""The operator's pure parts: the Job it builds, conditions, reading a Job's outcome, admission."""

import json
from collections import Counter

import pytest
from kompress_jobs.spec.contract import JobMessage, RunArtifacts, RunSummary
from kompress_jobs.spec.specfile import resource_from_dict
from kompress_jobs.spec.status import CandidateSummary
from kompress_operator.conditions import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    Transition,
    conditions_for,
    set_condition,
)
from kompress_operator.fair_share import Fairness, Waiting, admit, fair_order, position
from kompress_operator.jobspec import build_job
from kompress_operator.jobstate import job_outcome
from kompress_operator.run_ref import RunRef
from kompress_operator.settings import OperatorSettings

from .conftest import resource_dict

pytestmark = pytest.mark.unit


SUMMARY = RunSummary(run_id="r", metric="accuracy", batch_size=1, artifacts=RunArtifacts(uri="s3://b/r", manifest_sha256="ab" * 32),
                     baseline=CandidateSummary(name="baseline", technique="none", accepted=True),
                     best=CandidateSummary(name="static-int8", technique="quantization", accepted=True, speedup=2.0))


def body(**spec):
    document = resource_dict(name="resnet", **spec)
    document["metadata"] |= {"namespace": "team-a", "generation": 3, "uid": "u-1"}
    return document


def build(**spec):
    document = body(**spec)
    return build_job(document, resource_from_dict(document).spec, OperatorSettings(default_artifacts="s3://b/p", storage_locations=("*",),
                                                                                allowed_priority_classes=("batch-*",)))


def test_job_is_named_after_resource_and_generation():
    assert RunRef("ns", "resnet", 3).job_name() == "resnet-g3"
    assert RunRef("ns", "resnet", 3, rerun=2).job_name("tuning") == "resnet-g3-r2-tuning"
    long = RunRef("ns", "x" * 70, 12).job_name()
    assert len(long) <= 63 and long.endswith("-g12") and long != RunRef("ns", "x" * 71, 12).job_name()


def test_cpu_job_is_hardened_and_carries_the_spec():
    job = build()
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["name"] == "resnet-g3" and job["metadata"]["namespace"] == "team-a"
    assert job["spec"]["backoffLimit"] == 1 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert container["command"] == ["kompress", "job"] and container["image"].endswith("kompress-job:0.1.0")
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"} and pod["restartPolicy"] == "Never"
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "50Gi"}} in pod["volumes"]  # bounded by the policy
    env = {e["name"]: e["value"] for e in container["env"]}
    carried = json.loads(env["KOMPRESS_RESOURCE"])
    assert carried["spec"]["passes"][1]["type"] == "StaticInt8" and carried["metadata"]["generation"] == 3
    assert env["KOMPRESS_RUN_ID"] == "team-a-resnet-g3" and env["KOMPRESS_DEFAULT_ARTIFACTS"] == "s3://b/p"
    assert "nvidia.com/gpu" not in json.dumps(job)


def test_gpu_job_asks_for_a_gpu_and_lands_where_told():
    job = build(job={"device": "GPU", "nodeSelector": {"accelerator": "h100"}, "priorityClassName": "batch-high",
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "resources": {"requests": {"cpu": 4, "memory": "16Gi"}}, "activeDeadlineSeconds": 3600})
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": "1"}}
    assert container["image"].endswith("kompress-job-gpu:0.1.0")
    assert pod["nodeSelector"] == {"accelerator": "h100"} and pod["priorityClassName"] == "batch-high"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert job["spec"]["activeDeadlineSeconds"] == 3600


def test_condition_transition_time_changes_only_on_flips():
    first = set_condition([], "Running", "True", "JobCreated", "", 1, "t1")
    same = set_condition(first, "Running", "True", "JobRunning", "now running", 1, "t2")
    flipped = set_condition(same, "Running", "False", "Completed", "", 1, "t3")
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "JobRunning"
    assert flipped[0]["lastTransitionTime"] == "t3"


def test_conditions_for_each_phase():
    running = {c["type"]: c["status"] for c in conditions_for(Transition(RUNNING, "JobCreated"), [], 2, "t")}
    assert running == {"Accepted": "True", "Running": "True", "Succeeded": "Unknown", "Reconciling": "True", "Stalled": "False"}
    done = {c["type"]: c for c in conditions_for(Transition(SUCCEEDED, "Completed"), [], 2, "t")}
    assert done["Succeeded"]["status"] == "True" and done["Reconciling"]["status"] == "False"
    invalid = {c["type"]: c for c in conditions_for(Transition(FAILED, "InvalidSpec", "spec.x: bad"), [], 2, "t")}
    assert invalid["Accepted"]["status"] == "False" and invalid["Accepted"]["message"] == "spec.x: bad"
    assert invalid["Stalled"]["status"] == "True" and invalid["Succeeded"]["observedGeneration"] == 2


def pod(phase, message, exit_code, created="2026-01-01T00:00:00Z"):
    return {"metadata": {"creationTimestamp": created}, "status": {"phase": phase, "containerStatuses": [
        {"state": {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed", "message": message}}}]}}


def test_outcome_of_a_completed_job_is_its_pipeline_result():
    job = {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}}
    outcome = job_outcome(job, [pod("Succeeded", json.dumps(JobMessage.success(SUMMARY).to_wire()), 0)])
    assert outcome.state == SUCCEEDED and outcome.result.best.name == "static-int8"


def test_outcome_of_a_failed_job_carries_the_pipelines_reason():
    job = {"metadata": {"name": "j"}, "status": {"failed": 2, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}}
    error = JobMessage.failure("ModelLoadFailed", "model file /m.pt: no such file").to_wire()
    outcome = job_outcome(job, [pod("Failed", "old", 1, "2026-01-01T00:00:00Z"), pod("Failed", json.dumps(error), 1, "2026-01-01T00:01:00Z")])
    assert outcome.state == FAILED and outcome.reason == "ModelLoadFailed" and outcome.failures == 2
    assert outcome.message.startswith("model file /m.pt: no such file (BackoffLimitExceeded")


def test_outcome_of_a_crashed_pod_without_message():
    job = {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                                                "message": "Job was active longer than specified deadline"}]}}
    outcome = job_outcome(job, [pod("Failed", "", 137)])
    assert outcome.reason == "DeadlineExceeded" and "exit code 137" in outcome.message


def test_admission_shares_slots_between_namespaces_then_orders_each_by_priority_and_age():
    waiting = [Waiting("a", "old", 0, "2026-01-01T00:00:00Z"), Waiting("a", "new", 0, "2026-01-02T00:00:00Z"),
               Waiting("b", "urgent", 5, "2026-01-03T00:00:00Z"), Waiting("c", "other", 0, "2026-01-04T00:00:00Z"),
               Waiting("a", "first", 9, "2026-01-05T00:00:00Z")]
    # a already holds a slot: b and c (none held) go first; a's priority 9 orders only a's own runs.
    assert admit(waiting, Counter({"a": 1}), max_total=4, max_per_namespace=2) == [("b", "urgent"), ("c", "other"), ("a", "first")]
    assert admit(waiting, Counter({"a": 2}), max_total=3, max_per_namespace=2) == [("b", "urgent")]
    assert admit(waiting, Counter(), max_total=0, max_per_namespace=2) == []
    assert position(("a", "new"), waiting) == 5  # a: first, old, new; b and c take turns between
    across = Fairness(priority_across_namespaces=True)
    assert admit(waiting, Counter({"a": 1}), max_total=4, max_per_namespace=2, fairness=across)[0] == ("a", "first")


def test_one_tenant_with_fifty_queued_runs_does_not_delay_another_tenants_first_run():
    flood = [Waiting("greedy", f"run-{i:02d}", 1000, f"2026-01-01T00:00:{i:02d}Z") for i in range(50)]
    late = Waiting("quiet", "first", -1000, "2026-01-02T00:00:00Z")
    # A cap of 2, both slots taken by the greedy tenant: the next freed slot goes to the quiet one.
    assert admit(flood + [late], Counter({"greedy": 1}), max_total=2, max_per_namespace=2) == [("quiet", "first")]
    assert position(("quiet", "first"), flood + [late], Counter({"greedy": 2})) == 1
    # Weights: a namespace of weight 3 gets three turns for the other's one.
    order = [w.namespace for w in fair_order(flood[:8] + [Waiting("quiet", f"q{i}", 0, "2026-01-02T00:00:00Z") for i in range(8)],
                                             Counter(), Fairness(weights={"greedy": 3}))][:8]
    assert order.count("greedy") == 6 and order.count("quiet") == 2


def test_with_one_slot_freed_at_a_time_the_tenant_served_last_waits_its_turn():
    """Proof on the old code (and tests/cluster/test_slot_hoarding.py): with one slot, the freed
    slot left both namespaces at a share of 0, and the tie went to the oldest queued run, the
    flooding tenant's own, fifty times in a row."""
    from kompress_operator.queue import InFlight, RunQueue

    flood = [Waiting("greedy", f"run-{i:02d}", 0, f"2026-01-01T00:00:{i:02d}Z") for i in range(50)]
    late = Waiting("quiet", "first", 0, "2026-01-02T00:00:00Z")
    queue = RunQueue(max_running=1, max_per_namespace=1)
    queue.reserve(("greedy", "forever"), 1)  # the greedy tenant's run took the slot
    queue.release(("greedy", "forever"))  # and its deadline ended it
    assert admit(flood + [late], Counter(), 1, 1, served=queue.served) == [("quiet", "first")]
    assert position(("quiet", "first"), flood + [late], served=queue.served) == 1
    started = queue.take_startable(InFlight(waiting=[*flood, late]), lambda body: None)
    assert [run.key for run in started] == [("quiet", "first")] and queue.served["quiet"] > queue.served["greedy"]
    assert admit(flood, Counter(), 1, 1, served=queue.served) == [("greedy", "run-00")], "then the flood's turn again"


def test_operator_registers_no_change_handlers():
    # main.NoDiffBase gives Kopf no diff base, so a change handler (on.create / update / resume /
    # field) would never see a change: the handlers read status.observedGeneration instead.
    from kompress_operator.handlers import build_registry
    from kompress_operator.kube import Kube
    from kompress_operator.metrics import OperatorMetrics

    registry = build_registry(OperatorSettings(), Kube(), OperatorMetrics())
    assert not registry._changing.get_all_handlers()  # Kopf keeps no public accessor for this kind
    assert {h.id for h in registry._watching.get_all_handlers()} == {"reconcile", "job_changed"}
