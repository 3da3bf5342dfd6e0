"""The operator's decisions and run queue, without an API server: every status transition from
every phase a run can be in, and the queue's slots, reservations and admission."""

from __future__ import annotations

import asyncio

import pytest
from kompress_jobs.spec.contract import RunArtifacts, RunSummary
from kompress_jobs.spec.status import CandidateSummary
from kompress_operator import decisions
from kompress_operator.conditions import (
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Transition,
)
from kompress_operator.fair_share import Waiting
from kompress_operator.jobstate import JobOutcome
from kompress_operator.queue import RESERVATION_SECONDS, InFlight, RunQueue
from kompress_operator.run_ref import RunRef
from kompress_operator.writer import status_merge_patch

pytestmark = pytest.mark.unit

RESULT = RunSummary(run_id="r", metric="accuracy", batch_size=1, artifacts=RunArtifacts(uri="s3://b/r", manifest_sha256="ab" * 32),
                    baseline=CandidateSummary(name="baseline", technique="none", accepted=True),
                    best=CandidateSummary(name="int8", technique="quantization", accepted=True, speedup=2.0, size_ratio=3.9))
SUCCESS = JobOutcome(SUCCEEDED, "Completed", result=RESULT, start_time="2026-01-01T00:00:00Z", completion_time="2026-01-01T00:01:00Z")
NO_PICK = JobOutcome(SUCCEEDED, "Completed", result=RESULT.model_copy(update={"best": None}))
FAILURE = JobOutcome(FAILED, "ModelLoadFailed", "model file /m.pt: no such file")


def resource(generation: int = 2, observed: int | None = 2, phase: str | None = RUNNING) -> dict:
    status = {} if phase is None else {"phase": phase, "observedGeneration": observed, "conditions": []}
    return {"metadata": {"name": "m", "namespace": "a", "generation": generation, "resourceVersion": "7"}, "status": status}


def phase_of(patch: dict | None) -> str | None:
    return None if patch is None else patch["phase"]


def reason_of(patch: dict) -> str:
    return next(c["reason"] for c in patch["conditions"] if c["type"] == "Succeeded")


# (what is decided, the run as it stands: generation, observedGeneration, phase) → the phase written, or None
STARTED = lambda r: decisions.started(r, 2, "Job m-g2 created")  # noqa: E731
QUEUED_ = lambda r: decisions.queued(r, 2, "waiting for a Job slot")  # noqa: E731
RETRYING = lambda r: decisions.retrying(r, 2, "ApiException: 500")  # noqa: E731
FINISHED = lambda r: decisions.finished(r, 2, SUCCESS)  # noqa: E731
FAILED_ = lambda r: decisions.finished(r, 2, FAILURE)  # noqa: E731
GONE = lambda r: decisions.job_gone(r, 2, "m-g2")  # noqa: E731
INVALID = lambda r: decisions.invalid_spec(r, 2, "passes[0].type: bad")  # noqa: E731
TABLE = [
    ("start a new run", STARTED, (2, None, None), RUNNING),
    ("start a queued run", STARTED, (2, 2, QUEUED), RUNNING),
    ("start after an error", STARTED, (2, 2, PENDING), RUNNING),
    ("a late start never undoes a result", STARTED, (2, 2, SUCCEEDED), None),
    ("a late start never undoes a failure", STARTED, (2, 2, FAILED), None),
    ("no second start", STARTED, (2, 2, RUNNING), None),
    ("a start for a spec that moved on", STARTED, (3, 2, RUNNING), None),
    ("an older generation's run may start the new one", STARTED, (2, 1, SUCCEEDED), RUNNING),
    ("queue a new run", QUEUED_, (2, None, None), QUEUED),
    ("queued once per generation", QUEUED_, (2, 2, QUEUED), None),
    ("never queue a running run", QUEUED_, (2, 2, RUNNING), None),
    ("never queue a finished run", QUEUED_, (2, 2, SUCCEEDED), None),
    ("requeue after an error", QUEUED_, (2, 2, PENDING), QUEUED),
    ("an error before the start", RETRYING, (2, None, None), PENDING),
    ("an error after the start changes nothing", RETRYING, (2, 2, RUNNING), None),
    ("an error after the result changes nothing", RETRYING, (2, 2, SUCCEEDED), None),
    ("a result", FINISHED, (2, 2, RUNNING), SUCCEEDED),
    ("a result before the Running write landed", FINISHED, (2, 2, QUEUED), SUCCEEDED),
    ("a result recorded once", FINISHED, (2, 2, SUCCEEDED), None),
    ("a result of a superseded spec is dropped", FINISHED, (3, 2, RUNNING), None),
    ("a failure", FAILED_, (2, 2, RUNNING), FAILED),
    ("a failure after an error", FAILED_, (2, 2, PENDING), FAILED),
    ("a Job gone mid-run", GONE, (2, 2, RUNNING), FAILED),
    ("a Job gone after its result changes nothing", GONE, (2, 2, SUCCEEDED), None),
    ("a Job of an older spec gone (superseded) changes nothing", GONE, (3, 2, RUNNING), None),
    ("an invalid spec", INVALID, (2, 1, SUCCEEDED), FAILED),
    ("an invalid spec that changed meanwhile", INVALID, (3, 1, SUCCEEDED), None),
]


@pytest.mark.parametrize("decide, standing, written", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_status_decisions(decide, standing, written):
    patch = decide(resource(*standing))
    assert phase_of(patch) == written
    if patch is not None:  # written through the status model the CRD's status schema is generated from, unchanged by it
        assert status_merge_patch(patch) == patch
        assert patch["observedGeneration"] == 2
        assert {c["type"] for c in patch["conditions"]} == {"Accepted", "Running", "Succeeded", "Reconciling", "Stalled"}


def test_a_result_carries_the_summary_and_the_job_times():
    patch = decisions.finished(resource(), 2, SUCCESS)
    assert patch["best"]["name"] == "int8" and patch["artifacts"] == {"uri": "s3://b/r", "manifestSha256": "ab" * 32}
    assert patch["runId"] == "r" and patch["baseline"] == {"name": "baseline", "technique": "none", "accepted": True, "paretoOptimal": False}
    assert (patch["startTime"], patch["completionTime"]) == ("2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z")
    assert reason_of(patch) == "Completed"


@pytest.mark.parametrize("outcome, reason, words", [
    (SUCCESS, "Completed", "best candidate int8: 2.0x faster, 3.9x smaller"),
    (NO_PICK, "NoCandidateMetGoals", "keep the baseline"),
    (FAILURE, "ModelLoadFailed", "no such file"),
    (JobOutcome(FAILED), "JobFailed", "the Job failed"),
])
def test_finish_phase_names_the_reason(outcome, reason, words):
    phase = decisions.finish_phase(outcome)
    assert phase.reason == reason and words in phase.message


def test_a_job_gone_names_the_job_and_how_to_run_again():
    patch = decisions.job_gone(resource(), 2, "m-g2")
    assert reason_of(patch) == "JobDeleted"
    stalled = next(c for c in patch["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and "Job m-g2 was deleted" in stalled["message"] and "change the spec" in stalled["message"]


@pytest.mark.parametrize("given, written", [("BackoffLimitExceeded", "BackoffLimitExceeded"), ("store: S3 down!", "store:S3down"),
                                            ("9lives", "lives"), ("", "Unknown"), ("Error", "Error")])
def test_condition_reasons_follow_the_kubernetes_rule(given, written):
    from kompress_operator.conditions import condition_reason

    assert condition_reason(given) == written


def test_unless_started_keeps_extra_fields():
    patch = decisions.unless_started(resource(2, None, None), 2, Transition(RUNNING, "JobRunning", "exists"), startTime="t")
    assert patch["startTime"] == "t" and patch["phase"] == RUNNING


# --- the queue ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def waiting(namespace: str, name: str, priority: int = 0, created: str = "2026-01-01T00:00:00Z", observed: int = 1) -> Waiting:
    body = {"metadata": {"namespace": namespace, "name": name, "generation": 1}, "status": {"observedGeneration": observed}}
    return Waiting(namespace, name, priority, created, body=body)


def test_a_run_starts_while_slots_are_free_and_waits_with_its_position_when_not():
    queue = RunQueue(max_running=2, max_per_namespace=2, clock=Clock())
    assert queue.try_start(waiting("a", "one"), 1, InFlight()).start
    assert queue.try_start(waiting("a", "two"), 1, InFlight()).start
    verdict = queue.try_start(waiting("a", "three"), 1, InFlight())
    assert not verdict.start
    assert verdict.message == "waiting for a Job slot: 2/2 running cluster-wide, 2/2 in a; position 1 of 1"


def test_a_reservation_counts_until_the_index_shows_the_run_or_it_expires():
    clock = Clock()
    queue = RunQueue(max_running=1, max_per_namespace=1, clock=clock)
    assert queue.try_start(waiting("a", "one"), 1, InFlight()).start and queue.just_started(("a", "one"), 1)
    assert not queue.just_started(("a", "one"), 2)  # a newer generation is a new run
    assert queue.running(InFlight()) == {"a": 1}
    assert queue.running(InFlight(running={"a": ["one"]})) == {"a": 1} and not queue.reserved  # the index has it now
    queue.reserve(("a", "two"), 1)
    clock.now += RESERVATION_SECONDS + 1
    assert queue.running(InFlight()) == {} and not queue.reserved


def test_a_job_of_an_older_spec_going_does_not_free_the_slot_reserved_for_the_new_one():
    queue = RunQueue(max_running=1, max_per_namespace=1, clock=Clock())
    queue.reserve(("a", "m"), 2)
    queue.release(("a", "m"), 1)  # the superseded generation's Job was deleted
    assert queue.just_started(("a", "m"), 2)
    queue.release(("a", "m"), 2)
    assert not queue.reserved


def test_a_released_slot_starts_the_next_queued_runs_in_priority_then_age_order():
    queue = RunQueue(max_running=3, max_per_namespace=2, clock=Clock())
    queued = [waiting("a", "old", created="2026-01-01T00:00:00Z"), waiting("a", "new", created="2026-01-02T00:00:00Z"),
              waiting("b", "urgent", priority=5, created="2026-01-03T00:00:00Z"), waiting("a", "newest", created="2026-01-04T00:00:00Z")]
    now = InFlight(running={"a": ["running"]}, waiting=queued)
    started = queue.take_startable(now, decisions.generation_of)
    assert [w.name for w in started] == ["urgent", "old"]  # a's cap is 2: one running + old
    assert set(queue.reserved) == {("b", "urgent"), ("a", "old")}
    assert queue.take_startable(now, decisions.generation_of) == []  # their slots are reserved: nothing starts twice


def test_runs_queued_for_an_older_spec_are_left_to_the_reconciler():
    queue = RunQueue(max_running=4, max_per_namespace=4, clock=Clock())
    stale = waiting("a", "changed", observed=0)
    assert queue.take_startable(InFlight(waiting=[stale]), decisions.generation_of) == []


def test_a_full_cluster_starts_nothing_and_a_run_of_another_namespace_is_not_held_back():
    queue = RunQueue(max_running=2, max_per_namespace=1, clock=Clock())
    full = InFlight(running={"a": ["x"], "b": ["y"]}, waiting=[waiting("c", "z")])
    assert queue.take_startable(full, decisions.generation_of) == []
    one_free = InFlight(running={"a": ["x"]}, waiting=[waiting("a", "blocked"), waiting("b", "fits")])
    assert [w.name for w in queue.take_startable(one_free, decisions.generation_of)] == ["fits"]


def test_in_flight_answers_from_the_index_snapshots():
    now = InFlight(running={"a": ["one", "two"], "b": ["three"]}, jobs={("a", "one"): [(1, "run", 0), (2, "run", 0)]})
    assert now.running_count() == 3 and now.is_running(("a", "two")) and not now.is_running(("b", "two"))
    assert now.has_job(RunRef("a", "one", 2)) and not now.has_job(RunRef("a", "one", 3)) and not now.has_job(RunRef("c", "x", 1))


def test_no_operator_function_is_longer_than_sixty_lines():
    import ast

    from .conftest import REPO

    long = []
    for path in sorted((REPO / "operator" / "kompress_operator").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_freed_memory_is_handed_back_on_an_interval(monkeypatch):
    """A burst of large specs leaves glibc's heap full of freed blocks it keeps (docs/benchmarks.md)."""
    import platform

    from kompress_operator import memory

    if platform.libc_ver()[0] == "glibc":
        assert memory._malloc_trim() is not None
    trims: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: trims.append)

    async def a_while() -> None:
        loop = asyncio.create_task(memory.release_freed_memory_forever(0.01))
        deadline = asyncio.get_running_loop().time() + 60  # until it trimmed three times, however loaded the machine
        while len(trims) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        loop.cancel()

    asyncio.run(a_while())
    assert len(trims) >= 3 and set(trims) == {0}


def test_the_writer_refuses_a_status_field_the_crd_does_not_declare():
    """A status field outside the model would be pruned by the API server without a word: the writer fails instead."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="bestModel"):
        status_merge_patch({"phase": RUNNING, "bestModel": "int8"})
    assert status_merge_patch({"completionTime": None, "phase": RUNNING}) == {"completionTime": None, "phase": RUNNING}


def test_the_gauges_come_from_the_status_read_as_the_typed_model():
    """After a restart the operator reads each finished resource's status through the status
    model and exports its gauges; a stored status that does not parse is skipped, not fatal."""
    from kompress_operator.metrics import OperatorMetrics
    from kompress_operator.writer import read_status

    body = {"metadata": {"namespace": "a", "name": "m"}, "status": {
        "phase": SUCCEEDED, "baseline": {"name": "baseline", "technique": "none", "accepted": True, "metricValue": 0.98},
        "best": {"name": "int8", "technique": "quantization", "accepted": True, "latencyP50Ms": 2.0, "sizeBytes": 1000,
                 "speedup": 2.5, "sizeRatio": 3.9, "metricValue": 0.97, "joulesPerCall": 0.0125},
        "promotion": {"decision": "Promoted", "reason": "FirstPromotion", "promotedAt": "2026-01-01T00:00:00Z"}}}
    metrics = OperatorMetrics()
    metrics.record_best("a", "m", read_status(body))
    labels = {"namespace": "a", "name": "m", "target": "", "candidate": "int8"}
    sample = metrics.registry.get_sample_value
    assert sample("kompress_best_speedup_ratio", labels) == 2.5 and sample("kompress_best_latency_seconds", labels) == 0.002
    assert sample("kompress_best_metric_change", labels) == pytest.approx(-0.01)
    assert sample("kompress_best_energy_joules", labels) == 0.0125  # a GPU pick's energy per call (NVML)
    metrics.forget("a", "m")
    assert sample("kompress_best_energy_joules", labels) is None
    metrics.record_best("a", "m", read_status(body))
    assert sample("kompress_promoted_timestamp_seconds", {"namespace": "a", "name": "m", "target": ""}) == 1767225600
    assert read_status({"metadata": {"namespace": "a", "name": "m"}, "status": {"best": {"name": 3}}}) is None
