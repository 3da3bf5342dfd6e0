"""The operator's side of parallel tuning, without an API server: the tuning Job it builds, the
slots a study takes in the queue, the policy on parallelism and study storage, the Tuning status
transitions, and how worker Pods are read."""

from __future__ import annotations

import json

import pytest
from kompress_jobs.spec.contract import JobEnv, JobMessage, WorkerReport
from kompress_jobs.spec.specfile import resource_from_dict
from kompress_jobs.spec.status import TrialCounts, TuningStatus, WorkerCounts
from kompress_operator import decisions, policy
from kompress_operator.conditions import PENDING, QUEUED, RUNNING, TUNING, Transition
from kompress_operator.fair_share import Waiting
from kompress_operator.jobspec import build_job
from kompress_operator.jobstate import tuning_counts, worker_error
from kompress_operator.queue import InFlight, RunQueue
from kompress_operator.run_ref import ROLE_LABEL, TUNING_JOB, RunRef
from kompress_operator.settings import OperatorSettings

from .conftest import resource_dict

pytestmark = pytest.mark.unit

SEARCH = [{"pass": "int8", "parameter": "perChannel", "choices": [True, False]}]
SETTINGS = OperatorSettings(storage_locations=("*",), max_running=4, max_running_per_namespace=4, study_storage_secret="studies")


def body(parallelism: int = 3, trials: int = 12, **tuning) -> dict:
    document = resource_dict(name="study", passes=[{"type": "OnnxExport"}, {"type": "StaticInt8", "name": "int8"}],
                             tuning={"trials": trials, "parallelism": parallelism, "searchSpace": SEARCH, **tuning})
    document["apiVersion"], document["kind"] = "kompress.io/v1alpha1", "ModelOptimization"
    document["metadata"] |= {"namespace": "team", "generation": 2}
    return document


def spec_of(document: dict):
    return resource_from_dict(document).spec


def test_the_tuning_job_runs_parallelism_worker_pods_with_the_study_url_from_a_secret():
    document = body()
    job = build_job(document, spec_of(document), SETTINGS, TUNING_JOB)
    assert job["metadata"]["name"] == "study-g2-tuning" == RunRef("team", "study", 2).job_name(TUNING_JOB)
    assert job["metadata"]["labels"][ROLE_LABEL] == "tuning"
    assert (job["spec"]["completions"], job["spec"]["parallelism"], job["spec"]["backoffLimit"]) == (3, 3, 5)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kompress", "job", "--tuning-worker"]
    storage = next(e for e in container["env"] if e["name"] == JobEnv.STUDY_STORAGE.value)
    assert storage["valueFrom"] == {"secretKeyRef": {"name": "studies", "key": "url", "optional": True}}
    # The run's Job gets the URL too (it reads the study), and runs the pipeline as ever.
    run = build_job(document, spec_of(document), SETTINGS)
    assert run["metadata"]["name"] == "study-g2" and run["spec"]["template"]["spec"]["containers"][0]["command"] == ["kompress", "job"]
    own = body(storageSecret={"name": "team-db", "key": "dsn"})
    env = build_job(own, spec_of(own), SETTINGS)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "team-db", "key": "dsn", "optional": True} in [e.get("valueFrom", {}).get("secretKeyRef") for e in env]


def test_a_single_pod_study_gets_no_tuning_job_and_no_study_url():
    document = body(parallelism=1)
    env = build_job(document, spec_of(document), SETTINGS)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert JobEnv.STUDY_STORAGE.value not in {e["name"] for e in env}


@pytest.mark.parametrize("settings, document, field, key, words", [
    (OperatorSettings(storage_locations=("*",), max_running=4, max_running_per_namespace=2, study_storage_secret="s"), body(parallelism=3),
     "spec.tuning.parallelism", "maxRunningPerNamespace", ["parallelism 3 can never start", "at most 2 run at once"]),
    (OperatorSettings(storage_locations=("*",), max_running=2, max_running_per_namespace=4, study_storage_secret="s"), body(parallelism=3),
     "spec.tuning.parallelism", "maxRunning", ["at most 2 run at once"]),
    (OperatorSettings(storage_locations=("*",), max_running=4, max_running_per_namespace=4), body(parallelism=2),
     "spec.tuning.storageSecret", "studyStorageSecret", ["share a study in a database"]),
])
def test_the_policy_refuses_a_study_that_could_never_start_or_has_no_database(settings, document, field, key, words):
    with pytest.raises(policy.PolicyViolation) as raised:
        build_job(document, spec_of(document), settings, TUNING_JOB)
    message = str(raised.value)
    assert message.startswith(f"{field}: ") and f"(operator policy {key})" in message and all(w in message for w in words)


def test_a_tuning_run_holds_a_slot_per_trial_pod_and_waits_for_all_of_them():
    queue = RunQueue(max_running=4, max_per_namespace=4)
    wide = Waiting("team", "study", 0, "2026-01-01T00:00:00Z", slots=3)
    busy = InFlight(running={"team": ["other", "tuning"]}, wide={"team": [("tuning", 2)]})  # 1 + 2 slots taken
    verdict = queue.try_start(wide, 1, busy)
    assert not verdict.start and verdict.message.startswith("waiting for 3 Job slots (one per worker Pod): 3/4 running")
    assert queue.try_start(wide, 1, InFlight(running={"team": ["other"]})).start
    assert queue.running(InFlight(running={"team": ["other"]})) == {"team": 4}  # its reservation counts 3
    # Queued behind a study, a one-slot run does not overtake it forever: the head waits for its slots.
    queue = RunQueue(max_running=4, max_per_namespace=4)
    small = Waiting("team", "small", 0, "2026-01-02T00:00:00Z", body={"metadata": {"generation": 1}, "status": {"observedGeneration": 1}})
    head = Waiting("team", "study", 0, "2026-01-01T00:00:00Z", slots=3, body=small.body)
    started = queue.take_startable(InFlight(running={"team": ["a", "b"]}, waiting=[head, small]), decisions.generation_of)
    assert started == []


def status(phase: str | None, generation: int = 2, tuning: dict | None = None) -> dict:
    document = body()
    document["status"] = {} if phase is None else {"phase": phase, "observedGeneration": generation, "conditions": [],
                                                   **({"tuning": tuning} if tuning else {})}
    return document


TUNING_STATUS = TuningStatus(parallelism=3).to_wire()
PROGRESS = TuningStatus(parallelism=3, workers=WorkerCounts(active=2, succeeded=1, failed=1),
                        trials=TrialCounts(finished=4, failed=1, running=2)).to_wire()


def test_tuning_goes_forward_only_to_running_or_pending_and_its_counts_are_written_when_they_change():
    started = decisions.tuning_started(status(QUEUED), 2, "Job study-g2-tuning created", TUNING_STATUS)
    assert started["phase"] == TUNING and started["tuning"] == TUNING_STATUS
    running = next(c for c in started["conditions"] if c["type"] == "Running")
    assert running["status"] == "True" and running["reason"] == "TuningStarted"
    assert decisions.tuning_started(status(TUNING), 2, "again", TUNING_STATUS) is None
    assert decisions.queued(status(TUNING), 2, "waiting") is None  # never back to the queue
    progress = decisions.tuning_progress(status(TUNING, tuning=TUNING_STATUS), 2, PROGRESS, 12)
    assert progress["tuning"] == PROGRESS
    said = next(c["message"] for c in progress["conditions"] if c["type"] == "Running")
    assert said == "2 worker Pod(s) running, 1 done, 1 lost; trials: 4 of 12 finished, 1 failed"
    early = decisions.tuning_progress(status(TUNING, tuning=TUNING_STATUS), 2, TuningStatus(
        parallelism=3, workers=WorkerCounts(active=3)).to_wire(), 12)
    assert "3 worker Pod(s) running, 0 done, 0 lost; 12 trials (counts come as workers finish)" in early["conditions"][1]["message"]
    assert decisions.tuning_progress(status(TUNING, tuning=PROGRESS), 2, PROGRESS, 12) is None  # unchanged: no write
    assert decisions.tuning_progress(status(RUNNING), 2, PROGRESS, 12) is None  # a late count never undoes Running
    measuring = decisions.measuring(status(TUNING), 2, "study done", PROGRESS)
    assert measuring["phase"] == RUNNING and "startTime" not in measuring  # the run started with its study
    assert decisions.retrying(status(TUNING), 2, "ApiException")["phase"] == PENDING
    assert decisions.unless_started(status(TUNING), 2, Transition(TUNING, "x")) is None


def pod(created: str, exit_code: int, message: str = "") -> dict:
    return {"metadata": {"creationTimestamp": created}, "status": {"phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{"state": {"terminated": {"exitCode": exit_code, "message": message}}}]}}


def test_worker_pods_are_read_for_counts_and_for_errors_that_every_pod_would_meet():
    job = {"metadata": {"name": "study-g2-tuning"}, "status": {"succeeded": 1, "failed": 1, "active": 2}}
    assert tuning_counts(job) == (WorkerCounts(active=2, succeeded=1, failed=1), None)  # no worker has reported yet
    report = lambda n: JobMessage.worker_done(WorkerReport(study="s", trials=[n], stopped_because="trial budget reached",  # noqa: E731
                                                           counts=TrialCounts(finished=n + 1))).to_wire()
    pods = [pod("t1", 0, json.dumps(report(6))), pod("t2", 0, json.dumps(report(9)))]
    assert tuning_counts(job, pods)[1] == TrialCounts(finished=10)  # the study's count, from the latest to leave
    killed = pod("t3", 137, "Traceback (most recent call last): ...")  # the log's tail: died, said nothing
    assert worker_error(pods + [killed]) is None
    said = pod("t4", 1, json.dumps(JobMessage.failure("StudyStorageUnreachable", "cannot use the study database at db:5432/k").to_wire()))
    error = worker_error(pods + [killed, said])
    assert (error.reason, error.message) == ("StudyStorageUnreachable", "cannot use the study database at db:5432/k")


class OneResourceApi:
    """The API as the tuning phase sees it, for one resource and its tuning Job: status patches merge
    into the resource (a resourceVersion per write); calls run at once, in order."""

    def __init__(self, resource: dict, job: dict):
        self.resource, self.job = resource | {"metadata": resource["metadata"] | {"resourceVersion": "1"}}, job

    async def report(self, fn, *args):
        return fn(*args)

    def jobs_of(self, namespace: str, name: str) -> list[dict]:
        return [self.job]

    def pods_of_job(self, namespace: str, name: str) -> list[dict]:
        return []

    def get_resource(self, namespace: str, name: str) -> dict:
        return json.loads(json.dumps(self.resource))

    def patch_status(self, namespace: str, name: str, status: dict, resource_version: str | None = None) -> bool:
        if resource_version and resource_version != self.resource["metadata"]["resourceVersion"]:
            return False
        merged = self.resource.get("status", {}) | status
        version = str(int(self.resource["metadata"]["resourceVersion"]) + 1)
        self.resource = self.resource | {"status": merged, "metadata": self.resource["metadata"] | {"resourceVersion": version}}
        return True


@pytest.mark.parametrize("before", [None, PENDING])
def test_workers_that_start_before_the_status_says_tuning_still_reach_the_status(before):
    """The Job's event with its 3 active workers comes before the operator has written Tuning: it
    is dropped then (the status is not Tuning yet), so starting the phase reads the Job once.
    (From Queued, the event itself starts Tuning: Kueue's admission.)"""
    import asyncio
    from types import SimpleNamespace

    from kompress_operator.tuning_phase import TuningPhase
    from kompress_operator.writer import StatusWriter

    job = build_job(body(), spec_of(body()), SETTINGS, TUNING_JOB) | {"status": {"active": 3}}
    api = OneResourceApi(status(before), job)
    runs = SimpleNamespace(kube=api, lanes=api, status=StatusWriter(api, api), settings=SETTINGS,
                           events=SimpleNamespace(post=lambda *args, **kwargs: None))
    phase = TuningPhase(runs)

    asyncio.run(phase.job_event(job, "MODIFIED", InFlight()))  # too early: nothing to update yet
    assert "tuning" not in api.resource.get("status", {})
    asyncio.run(phase.started(api.get_resource("team", "study"), 2, "Job study-g2-tuning created", created=True))
    assert api.resource["status"]["phase"] == TUNING
    assert api.resource["status"]["tuning"]["workers"] == {"active": 3, "succeeded": 0, "failed": 0}
