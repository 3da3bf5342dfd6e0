"""Queuing through Kueue (operator setting kueueLocalQueue): the Job the operator builds, what the
policy allows, how a suspended Job reads, and every status transition Kueue causes (admission,
preemption), as Kueue's documented contract has them: a Job created suspended with the
kueue.x-k8s.io/queue-name label; Kueue unsuspends it when admitted and suspends it again (its Pods
deleted) when it preempts it. The operator never unsuspends. Kueue itself cannot run on the test
machines (its API server, 1.20, predates Job.spec.suspend), so its moves are played on the objects."""

from __future__ import annotations

import pytest
from kompress_jobs.spec.specfile import resource_from_dict
from kompress_operator import decisions
from kompress_operator.conditions import PENDING, QUEUED, RUNNING, SUCCEEDED, TUNING
from kompress_operator.fair_share import Waiting
from kompress_operator.jobspec import KUEUE_QUEUE_LABEL, build_job
from kompress_operator.jobstate import SUSPENDED, job_outcome
from kompress_operator.policy import PolicyViolation, enforce
from kompress_operator.queue import InFlight, RunQueue
from kompress_operator.run_ref import RUN_JOB, TUNING_JOB
from kompress_operator.settings import OperatorSettings

from .conftest import resource_dict

pytestmark = pytest.mark.unit

KUEUE = OperatorSettings(kueue_local_queue="ml-batch", study_storage_secret="study-db", storage_locations=("*",))
OWN_QUEUE = OperatorSettings(study_storage_secret="study-db", storage_locations=("*",))


def body(**spec) -> dict:
    document = resource_dict(name="m", **spec)
    document["metadata"] |= {"namespace": "team-a", "generation": 2, "uid": "u-1"}
    return document


def job_for(document: dict, settings: OperatorSettings, role: str = RUN_JOB) -> dict:
    return build_job(document, resource_from_dict(document).spec, settings, role)


def test_with_kueue_the_job_is_created_suspended_in_the_namespaces_local_queue():
    job = job_for(body(), KUEUE)
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "ml-batch"
    # The Pods carry the run's own labels, not Kueue's: Kueue manages the Job, not its Pods.
    assert KUEUE_QUEUE_LABEL not in job["spec"]["template"]["metadata"]["labels"]
    chosen = job_for(body(job={"queueName": "gpu-queue", "priorityClassName": "batch-high"}),
                     KUEUE.model_copy(update={"allowed_priority_classes": ("batch-*",)}))
    assert chosen["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue"
    assert chosen["spec"]["template"]["spec"]["priorityClassName"] == "batch-high"  # Kueue orders the Workload by it


def test_a_parallel_studys_tuning_job_waits_in_kueue_too_and_is_not_capped_by_the_operators_slots():
    tuning = {"trials": 8, "parallelism": 6, "searchSpace": [{"pass": "static-int8", "parameter": "calibrationSamples",
                                                             "low": 16, "high": 64}]}
    document = body(tuning=tuning)
    job = job_for(document, KUEUE, TUNING_JOB)
    assert job["spec"]["suspend"] is True and job["spec"]["parallelism"] == 6
    enforce(resource_from_dict(document).spec, KUEUE, "team-a")  # Kueue's quota decides what fits
    with pytest.raises(PolicyViolation, match="parallelism 6 can never start"):
        enforce(resource_from_dict(document).spec, OWN_QUEUE, "team-a")


def test_without_kueue_no_job_is_suspended_and_a_queue_name_is_refused_naming_the_setting():
    job = job_for(body(), OWN_QUEUE)
    assert "suspend" not in job["spec"] and KUEUE_QUEUE_LABEL not in job["metadata"]["labels"]
    with pytest.raises(PolicyViolation) as refused:
        enforce(resource_from_dict(body(job={"queueName": "gpu-queue"})).spec, OWN_QUEUE, "team-a")
    assert "spec.job.queueName" in str(refused.value) and "operator policy kueueLocalQueue" in str(refused.value)


def suspended_job(suspend: bool = True, active: int = 0) -> dict:
    return {"metadata": {"name": "m-g2"}, "spec": {"suspend": suspend}, "status": {"active": active}}


def test_a_suspended_job_reads_as_suspended_and_an_admitted_one_as_running():
    assert job_outcome(suspended_job(), []).state == SUSPENDED
    assert job_outcome(suspended_job(suspend=False, active=1), []).state == RUNNING
    finished = suspended_job() | {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    assert job_outcome(finished, []).state == "Failed"  # a finished Job is finished, suspended or not


def resource(phase: str | None, observed: int | None = 2) -> dict:
    status = {} if phase is None else {"phase": phase, "observedGeneration": observed, "conditions": []}
    return {"metadata": {"name": "m", "namespace": "team-a", "generation": 2}, "status": status}


def reason_of(patch: dict) -> str:
    return next(c["reason"] for c in patch["conditions"] if c["type"] == "Running")


WAITING = lambda r: decisions.waiting_for_kueue(r, 2, "Job m-g2 created, suspended until Kueue admits it")  # noqa: E731
PREEMPTED = lambda r: decisions.preempted(r, 2, "Kueue suspended Job m-g2")  # noqa: E731
ADMITTED = lambda r: decisions.job_running(r, 2, decisions.Transition(RUNNING, "JobRunning", "Job m-g2 is running"))  # noqa: E731
STUDY_PREEMPTED = lambda r: decisions.preempted(r, 2, "Kueue suspended Job m-g2-tuning", phase=TUNING)  # noqa: E731
STUDY_ADMITTED = lambda r: decisions.tuning_started(r, 2, "Job m-g2-tuning admitted", {"parallelism": 3})  # noqa: E731
TABLE = [
    ("a new run waits for Kueue", WAITING, (None, None), (QUEUED, "WaitingForKueue")),
    ("a run that failed to start waits for Kueue", WAITING, (PENDING, 2), (QUEUED, "WaitingForKueue")),
    ("a late creation write never undoes Running", WAITING, (RUNNING, 2), None),
    ("nor a result", WAITING, (SUCCEEDED, 2), None),
    ("admitted: Running", ADMITTED, (QUEUED, 2), (RUNNING, "JobRunning")),
    ("preempted while running: Queued again", PREEMPTED, (RUNNING, 2), (QUEUED, "Preempted")),
    ("a suspended Job of a queued run changes nothing", PREEMPTED, (QUEUED, 2), None),
    ("a suspended Job after the result changes nothing", PREEMPTED, (SUCCEEDED, 2), None),
    ("a suspended Job of an older spec changes nothing", PREEMPTED, (RUNNING, 1), None),
    ("a study's phase is not a run's", PREEMPTED, (TUNING, 2), None),
    ("after a parallel study, the run's Job waits in turn", WAITING, (TUNING, 2), (QUEUED, "WaitingForKueue")),
    ("a study's Job preempted: Queued again", STUDY_PREEMPTED, (TUNING, 2), (QUEUED, "Preempted")),
    ("a study's Job admitted (again): Tuning", STUDY_ADMITTED, (QUEUED, 2), (TUNING, "TuningStarted")),
    ("readmitted after a preemption: Running again", ADMITTED, (QUEUED, 2), (RUNNING, "JobRunning")),
]


@pytest.mark.parametrize("decide, standing, written", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_kueue_status_decisions(decide, standing, written):
    patch = decide(resource(*standing))
    assert (patch["phase"], reason_of(patch)) == written if written else patch is None


def test_admission_records_when_the_run_started():
    patch = ADMITTED(resource(QUEUED))
    assert patch["startTime"] and patch["completionTime"] is None


def waiting(name: str, generation: int = 1, observed: int = 1, runs: int = 0, slots: int = 1) -> Waiting:
    stub = {"metadata": {"namespace": "a", "name": name, "generation": generation},
            "status": {"observedGeneration": observed, "reoptimization": {"runs": runs}}}
    return Waiting("a", name, 0, "2026-01-01T00:00:00Z", slots, stub)


def test_with_kueue_every_queued_run_without_its_job_is_launched_once_whatever_the_slots():
    queue = RunQueue(max_running=1, max_per_namespace=1)
    jobs = {("a", "has-job"): [(1, RUN_JOB, 0)], ("a", "rerun"): [(1, RUN_JOB, 0)]}
    now = InFlight(running={"a": ["busy"]}, jobs=jobs,
                   waiting=[waiting("has-job"), waiting("rerun", runs=1), waiting("study", slots=4), waiting("stale", observed=0),
                            waiting("new")])
    assert [w.name for w in queue.take_unlaunched(now, decisions.generation_of)] == ["rerun", "study", "new"]
    assert queue.take_unlaunched(now, decisions.generation_of) == []  # reserved: created once
