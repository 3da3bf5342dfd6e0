"""The re-run triggers and their CronJob rules, over a stand-in for the run controller."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from kompress_jobs.spec.cron import due
from kompress_operator import decisions
from kompress_operator.metrics import OperatorMetrics
from kompress_operator.model_digest import DigestUnavailable
from kompress_operator.reoptimizer import Reoptimizer
from kompress_operator.settings import OperatorSettings

from .conftest import resource_dict

pytestmark = pytest.mark.unit

CREATED = "2026-12-03T10:00:30Z"
SETTINGS = OperatorSettings(default_artifacts="s3://models")  # namespace ns may read s3://models/ns/
MODEL = "s3://models/ns/cnn.pt"


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


class Runs:
    """What the reoptimizer uses of the run controller: a status writer, events, Jobs, metrics."""

    def __init__(self, jobs=()):
        self.settings, self.metrics, self.events_posted, self.deleted = SETTINGS, OperatorMetrics(), [], []
        self.jobs = list(jobs)
        self.status = SimpleNamespace(write=self._write)
        self.events = SimpleNamespace(post=lambda body, reason, message, warning=False: self.events_posted.append((reason, message)))
        self.kube = SimpleNamespace(jobs_of=lambda namespace, name: self.jobs, delete_job=lambda namespace, name: self.deleted.append(name))
        self.lanes = SimpleNamespace(report=self._call)

    async def _call(self, function, *args):
        return function(*args)

    async def _write(self, body, decide):
        patch = decide(body)
        if patch:
            body["status"] = {**body.get("status", {}), **patch}
        return patch


def body(phase="Succeeded", reoptimization=None, model=MODEL, **spec):
    document = resource_dict(name="m", model=model, data="s3://models/ns/digits.npz", **spec)
    document["metadata"] |= {"namespace": "ns", "generation": 1, "creationTimestamp": CREATED}
    document["status"] = {"observedGeneration": 1, "phase": phase, "conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": CREATED}]}
    if reoptimization is not None:
        document["status"]["reoptimization"] = reoptimization
    return document


def check(resource, now: str, digest="etag:a", jobs=()):
    runs = Runs(jobs)

    def digest_of(spec):
        if isinstance(digest, Exception):
            raise digest
        return digest

    reoptimizer = Reoptimizer(runs, digests=SimpleNamespace(of=digest_of), clock=lambda: at(now))
    asyncio.run(reoptimizer.check(resource))
    return runs


def test_the_first_look_records_the_digest_and_a_later_change_queues_a_run():
    resource = body(reoptimizeOn={"modelChange": True})
    runs = check(resource, "2026-12-03T10:05:00Z")
    assert resource["status"]["phase"] == "Succeeded" and resource["status"]["reoptimization"]["modelDigest"] == "etag:a"
    runs = check(resource, "2026-12-03T10:06:00Z", digest="etag:b")
    status = resource["status"]
    assert status["phase"] == "Queued" and status["reoptimization"]["runs"] == 1
    assert status["reoptimization"]["reason"] == "ModelChanged" and status["reoptimization"]["modelDigest"] == "etag:b"
    assert runs.events_posted[0][0] == "ModelChanged" and "etag:a" in runs.events_posted[0][1]
    check(resource, "2026-12-03T10:07:00Z", digest="etag:b")  # nothing new: no second run
    assert resource["status"]["reoptimization"]["runs"] == 1


def test_forbid_waits_for_a_changed_model_and_skips_a_due_time_while_a_run_is_on():
    resource = body("Running", {"generation": 1, "modelUri": MODEL, "modelDigest": "etag:a",
                                "lastScheduleTime": "2026-12-03T10:00:00Z"},
                    reoptimizeOn={"modelChange": True}, schedule="*/5 * * * *")
    runs = check(resource, "2026-12-03T10:05:10Z", digest="etag:b")
    record = resource["status"]["reoptimization"]
    assert resource["status"]["phase"] == "Running" and record.get("runs", 0) == 0
    assert record["modelDigest"] == "etag:a", "the change is compared again once the run is over"
    assert record["lastScheduleTime"] == "2026-12-03T10:05:00Z"
    assert runs.events_posted == [("ScheduleSkipped", "the run due at 2026-12-03T10:05:00Z is skipped: the last run has "
                                                      "not finished (concurrencyPolicy Forbid)")]
    resource["status"]["phase"] = "Succeeded"
    check(resource, "2026-12-03T10:06:00Z", digest="etag:b")
    assert resource["status"]["reoptimization"]["reason"] == "ModelChanged"


def test_replace_stops_the_run_in_flight():
    jobs = [{"metadata": {"name": "m-g1", "labels": {"kompress.io/generation": "1", "kompress.io/rerun": "0"}}},
            {"metadata": {"name": "m-g0", "labels": {"kompress.io/generation": "0"}}}]
    resource = body("Running", {"lastScheduleTime": "2026-12-03T10:00:00Z"}, schedule="*/5 * * * *",
                    concurrencyPolicy="Replace")
    runs = check(resource, "2026-12-03T10:05:10Z", jobs=jobs)
    assert resource["status"]["phase"] == "Queued" and resource["status"]["reoptimization"]["runs"] == 1
    assert runs.deleted == ["m-g1"] and ("Superseded", "Scheduled: Job m-g1 stopped (concurrencyPolicy Replace)") in runs.events_posted


def test_missed_times_run_once_and_a_time_past_its_deadline_is_skipped():
    resource = body(reoptimization={"lastScheduleTime": "2026-12-03T10:00:00Z"}, schedule="*/5 * * * *")
    check(resource, "2026-12-03T10:31:00Z")
    record = resource["status"]["reoptimization"]
    assert record["lastScheduleTime"] == "2026-12-03T10:30:00Z" and "5 earlier time(s) missed, run once" in record["message"]

    late = body(reoptimization={"lastScheduleTime": "2026-12-03T10:00:00Z"}, schedule="*/5 * * * *", startingDeadlineSeconds=30)
    runs = check(late, "2026-12-03T10:06:00Z")
    assert late["status"]["phase"] == "Succeeded" and late["status"]["reoptimization"]["lastScheduleTime"] == "2026-12-03T10:05:00Z"
    assert runs.events_posted[0][0] == "ScheduleSkipped" and "starting deadline (30s)" in runs.events_posted[0][1]


def test_a_changed_job_image_queues_a_run_and_an_unreadable_model_warns():
    resource = body(reoptimization={"generation": 1, "jobImage": "ghcr.io/kompress/kompress-job:0.0.9"},
                    reoptimizeOn={"jobImageChange": True, "modelChange": True})
    runs = check(resource, "2026-12-03T10:06:00Z", digest=DigestUnavailable("s3://models/x: 403"))
    assert resource["status"]["reoptimization"]["reason"] == "JobImageChanged"
    assert "kompress-job:0.1.0 (was ghcr.io/kompress/kompress-job:0.0.9)" in resource["status"]["reoptimization"]["message"]
    assert ("ModelDigestUnavailable", "cannot read the model's digest to notice changes: s3://models/x: 403") in runs.events_posted


def test_a_refused_or_unobserved_spec_is_left_to_the_reconciler():
    refused = body("Failed", schedule="* * * * *")
    refused["status"]["conditions"] = [{"type": "Accepted", "status": "False"}]
    check(refused, "2026-12-03T11:00:00Z")
    assert "reoptimization" not in refused["status"]
    newer = body(schedule="* * * * *")
    newer["metadata"]["generation"] = 2
    check(newer, "2026-12-03T11:00:00Z")
    assert "reoptimization" not in newer["status"]


def test_a_rerun_is_decided_once_per_count():
    resource = body()
    phase = decisions.Transition("Queued", "Scheduled", "x")
    assert decisions.rerun(resource, 1, 0, phase, False, {})["reoptimization"]["runs"] == 1
    assert decisions.rerun(resource, 1, 3, phase, False, {}) is None  # another replica moved it on
    assert decisions.rerun(body("Running"), 1, 0, phase, False, {}) is None  # Forbid


@pytest.mark.parametrize("schedule, last, now, expected", [
    ("0 3 * * *", "2026-12-01T03:00:00Z", "2026-12-03T04:00:00Z", ("2026-12-03T03:00:00Z", 1)),
    ("@hourly", "2026-12-03T03:00:00Z", "2026-12-03T03:59:59Z", (None, 0)),
])
def test_due_picks_the_latest_time(schedule, last, now, expected):
    when = due(schedule, at(last), at(now))
    assert (when.at and when.at.strftime("%Y-%m-%dT%H:%M:%SZ"), when.missed) == expected


@pytest.mark.parametrize("model, why", [
    ("/dev/zero", "only from S3"),  # would hash forever
    ("s3://models/other-team/cnn.pt", "outside the locations allowed in namespace ns"),  # another team's object
])
def test_the_operator_reads_no_digest_outside_the_namespace_or_off_s3(model, why):
    digests = SimpleNamespace(of=lambda spec: pytest.fail(f"the operator read {spec.model.uri} with its own identity"))
    runs = Runs()
    resource = body(model=model, reoptimizeOn={"modelChange": True})
    asyncio.run(Reoptimizer(runs, digests=digests, clock=lambda: at("2026-12-03T10:05:00Z")).check(resource))
    assert runs.events_posted and runs.events_posted[0][0] == "ModelDigestUnavailable" and why in runs.events_posted[0][1]
    assert "modelDigest" not in resource["status"].get("reoptimization", {})


def test_a_hanging_model_store_warns_and_every_other_schedule_still_fires(monkeypatch):
    import threading

    import kompress_operator.reoptimizer as reoptimizer_module

    monkeypatch.setattr(reoptimizer_module, "DIGEST_TIMEOUT_SECONDS", 0.3)
    runs, release = Runs(), threading.Event()

    def digest_of(spec):
        if spec.model.uri.endswith("hangs.pt"):
            release.wait()  # an endpoint that accepts and never answers (or /dev/zero, before this issue)
        return "etag:a"

    stuck = body(model="s3://models/ns/hangs.pt", reoptimizeOn={"modelChange": True})
    stuck["metadata"]["name"] = "stuck"
    scheduled = [body(reoptimization={"lastScheduleTime": "2026-12-03T10:00:00Z"}, schedule="*/5 * * * *") for _ in range(3)]
    for i, resource in enumerate(scheduled):
        resource["metadata"]["name"] = f"nightly-{i}"
    now = [at("2026-12-03T10:05:10Z")]
    reoptimizer = Reoptimizer(runs, digests=SimpleNamespace(of=digest_of), clock=lambda: now[0])
    for resource in [stuck, *scheduled]:
        reoptimizer.track(resource, None)
    scheduled = [reoptimizer.watched[("ns", r["metadata"]["name"])] for r in scheduled]  # what the loop keeps and writes
    assert all("passes" not in r["spec"] and "data" not in r["spec"] for r in scheduled), "the loop keeps a stub, not the spec"

    def reasons() -> list:
        return [(r["status"].get("reoptimization") or {}).get("reason") for r in scheduled]

    async def until(done, seconds: float = 60.0) -> None:
        """Until the loop has done it (not a fixed sleep: a loaded machine is slower, never wrong)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def two_schedules():
        task = asyncio.create_task(reoptimizer.run_forever(0.01))
        try:
            await until(lambda: None not in reasons())
            first = reasons()
            now[0] = at("2026-12-03T10:10:10Z")  # the next due time, while the stuck store still hangs
            await until(lambda: all(r["status"]["reoptimization"].get("lastScheduleTime") == "2026-12-03T10:10:00Z"
                                    for r in scheduled) and any(e[0] == "ModelDigestUnavailable" for e in runs.events_posted))
            return first
        finally:
            task.cancel()
            release.set()  # before asyncio.run waits for its threads
    assert asyncio.run(two_schedules()) == ["Scheduled"] * 3
    assert all(r["status"]["reoptimization"]["lastScheduleTime"] == "2026-12-03T10:10:00Z" for r in scheduled)
    assert any(reason == "ModelDigestUnavailable" and "no answer within 0.3s" in message for reason, message in runs.events_posted)


class ReviewingRuns(Runs):
    """Runs whose operator serves the webhook, with a SubjectAccessReview that answers by a table."""

    def __init__(self, allowed: dict[str, bool]):
        super().__init__()
        self.settings = OperatorSettings(default_artifacts="s3://models", webhook_port=9443)
        self.asked = []

        def user_can(user, namespace, attributes):
            self.asked.append((user["username"], namespace, attributes["resource"]))
            return allowed.get(attributes["resource"], False), "" if allowed.get(attributes["resource"]) else "no RBAC rule matched"
        self.kube.user_can = user_can
        self.lanes.review = self._call


def authored(user="alice", groups=("team-a",), **spec):
    from kompress_operator.authors import AUTHOR_ANNOTATION, author_annotation

    resource = body(schedule="*/5 * * * *", **spec)
    resource["metadata"]["annotations"] = {AUTHOR_ANNOTATION: author_annotation({"username": user, "groups": list(groups)})}
    return resource


def check_reviewed(resource, allowed):
    runs = ReviewingRuns(allowed)
    asyncio.run(Reoptimizer(runs, clock=lambda: at("2026-12-03T10:06:00Z")).check(resource))
    return runs


def test_a_rerun_is_reviewed_again_for_its_last_author():
    resource = authored()
    runs = check_reviewed(resource, {"modeloptimizations": True})
    assert resource["status"]["phase"] == "Queued" and runs.asked == [("alice", "ns", "modeloptimizations")]


def test_a_rerun_whose_author_lost_access_is_refused_with_a_condition_and_the_last_result_kept():
    resource = authored(job={"nodeSelector": {"pool": "gpu"}})
    runs = check_reviewed(resource, {"modeloptimizations": True, "jobs": False})
    status = resource["status"]
    assert status["phase"] == "Succeeded" and "runs" not in (status.get("reoptimization") or {})
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "RerunRefused"
    assert "alice may no longer create jobs.batch (spec.job.nodeSelector) in namespace ns" in stalled["message"]
    assert runs.events_posted[-1][0] == "RerunRefused"
    assert runs.asked == [("alice", "ns", "modeloptimizations"), ("alice", "ns", "jobs")]
    # access back: the next due time runs, and Stalled clears
    runs = check_reviewed(resource, {"modeloptimizations": True, "jobs": True})
    assert resource["status"]["phase"] == "Queued"
    assert next(c for c in resource["status"]["conditions"] if c["type"] == "Stalled")["status"] == "False"


def test_a_rerun_without_a_recorded_author_is_refused_where_the_webhook_records_them():
    resource = body(schedule="*/5 * * * *")
    runs = check_reviewed(resource, {"modeloptimizations": True})
    assert resource["status"]["phase"] == "Succeeded" and runs.asked == []
    assert "its author is not recorded" in resource["status"]["reoptimization"]["message"]
    plain = body(schedule="*/5 * * * *")  # without the webhook there is no review, at apply or now
    check(plain, "2026-12-03T10:06:00Z")
    assert plain["status"]["phase"] == "Queued"


def test_a_namespace_whose_store_hangs_holds_two_reads_and_never_delays_another_namespaces_schedule():
    """Proof on the old code: one round gathered every namespace's checks, so twenty hanging
    digests in one namespace held every other namespace's due schedule for the whole round."""
    import threading

    runs, release, reading, most = Runs(), threading.Event(), [0], [0]
    lock = threading.Lock()

    def digest_of(spec):
        with lock:
            reading[0] += 1
            most[0] = max(most[0], reading[0])
        try:
            release.wait()  # an allowed endpoint that accepts and never answers
            return "etag:a"
        finally:
            with lock:
                reading[0] -= 1

    reoptimizer = Reoptimizer(runs, digests=SimpleNamespace(of=digest_of), clock=lambda: at("2026-12-03T10:05:10Z"))
    for i in range(20):
        slow = body(model="s3://models/slow/m.pt", reoptimizeOn={"modelChange": True})
        slow["metadata"] |= {"namespace": "slow", "name": f"hangs-{i}"}
        reoptimizer.track(slow, None)
    nightly = body(reoptimization={"lastScheduleTime": "2026-12-03T10:00:00Z"}, schedule="*/5 * * * *")
    reoptimizer.track(nightly, None)
    watched = reoptimizer.watched[("ns", "m")]

    async def scheduled_while_the_other_hangs():
        task = asyncio.create_task(reoptimizer.run_forever(0.01))
        try:
            deadline = asyncio.get_running_loop().time() + 60  # a hang guard: it fires in milliseconds
            while (watched["status"].get("reoptimization") or {}).get("reason") != "Scheduled":
                assert asyncio.get_running_loop().time() < deadline, "the schedule waited on another namespace's store"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # more rounds of the slow namespace, its reads still hanging
        finally:
            task.cancel()
            release.set()

    asyncio.run(scheduled_while_the_other_hangs())
    assert most[0] <= 2, f"{most[0]} reads of one namespace's store ran at once"
