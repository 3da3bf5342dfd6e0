"""Re-optimization: runs of an unchanged spec, on its schedule or when its model or job image changes.

One loop looks every reoptimize_interval seconds at the resources that ask for it, as the watch
last delivered them (a Kopf timer would put a finalizer on each, and deleting one would then wait
for the operator). A trigger queues the run again (decisions.rerun): status.reoptimization.runs
goes up, which names the next Job, and the run waits for a slot like any other. What a trigger
compares against (the model's digest, the job image) is recorded the first time each generation
is looked at. CronJob conventions: the latest missed time runs once, a time past
startingDeadlineSeconds is skipped, and concurrencyPolicy says what a trigger does while a run is
not finished (Forbid: a due time is skipped and a changed model waits; Replace: stop it, run again).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from datetime import datetime, timezone
from typing import Callable

from kompress_jobs.spec.cron import due
from kompress_jobs.spec.schema import API_GROUP, PLURAL, Artifacts, ConcurrencyPolicy, JobSettings, ReoptimizeOn
from kompress_jobs.spec.sources import ModelSource
from kompress_jobs.spec.tuning_spec import Tuning
from kompress_jobs.spec.wire import Model
from pydantic import Field, ValidationError

from . import decisions, locations, policy
from .conditions import FAILED, QUEUED, SUCCEEDED, Transition
from .decisions import generation_of
from .model_digest import DigestUnavailable, ModelDigests
from .run_ref import RunRef, reruns_of
from .services import RunServices
from .authors import AUTHOR_ANNOTATION, JOB_CREATE, SECRET_GET, asked_fields, recorded_author

log = logging.getLogger(__name__)
TIME = "%Y-%m-%dT%H:%M:%SZ"
RERUN_REFUSED = "RerunRefused"
NAMESPACE_CHECKS = 2  # one namespace's checks at once, and its digest reads still running
DIGEST_TIMEOUT_SECONDS = 20.0
CHECK_TIMEOUT_SECONDS = 60.0  # a whole check, status write included  # one resource's store may hang; the others' schedules must not wait on it


class WatchedSpec(Model):
    """What re-optimization reads of a spec; the rest (passes, data, goals) is the controller's."""

    model: ModelSource
    artifacts: Artifacts = Field(default_factory=Artifacts)
    schedule: str | None = None
    starting_deadline_seconds: int | None = None
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    reoptimize_on: ReoptimizeOn = Field(default_factory=ReoptimizeOn)
    job: JobSettings = Field(default_factory=JobSettings)
    tuning: Tuning | None = None  # its storageSecret is reviewed again before a re-run


WATCHED_FIELDS = tuple(field.alias for field in WatchedSpec.model_fields.values())


def watched_stub(body: dict) -> dict:
    """What the loop keeps of a resource between looks: never its passes, data or goals, so a
    thousand large specs on a schedule cost the operator little."""
    spec, meta = body.get("spec") or {}, body.get("metadata") or {}
    author = (meta.get("annotations") or {}).get(AUTHOR_ANNOTATION)
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {**{k: meta[k] for k in ("namespace", "name", "uid", "generation", "resourceVersion", "creationTimestamp")
                            if k in meta}, **({"annotations": {AUTHOR_ANNOTATION: author}} if author else {})},
            "spec": {k: spec[k] for k in WATCHED_FIELDS if k in spec}, "status": body.get("status") or {}}


def wants_reruns(body: dict) -> bool:
    spec = body.get("spec") or {}
    triggers = spec.get("reoptimizeOn") or {}
    return bool(spec.get("schedule") or triggers.get("modelChange") or triggers.get("jobImageChange"))


class Reoptimizer:
    def __init__(self, runs: RunServices, digests: ModelDigests | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.runs, self.digests, self.clock = runs, digests or ModelDigests(), clock
        self.watched: dict[tuple[str, str], dict] = {}
        self._warned: dict[tuple[str, str], str] = {}
        self._reading: Counter[str] = Counter()  # digest reads still running, per namespace (threads)
        self._reading_lock = threading.Lock()

    def track(self, body: dict, event_type: str | None) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type != "DELETED" and wants_reruns(body):
            self.watched[key] = watched_stub(body)
        else:
            self.watched.pop(key, None)
            self._warned.pop(key, None)

    async def run_forever(self, interval: float, concurrency: int = 8) -> None:
        """A few checks at a time (each may read S3 or hash a file, and a fleet has many), and at
        most NAMESPACE_CHECKS of one namespace: each namespace's round starts on its own, so one
        namespace's slow store never holds back another's schedules."""
        slots, rounds = asyncio.Semaphore(concurrency), {}

        async def one(body: dict) -> None:
            async with slots:
                try:
                    await asyncio.wait_for(self.check(body), CHECK_TIMEOUT_SECONDS)
                except Exception as exc:  # noqa: BLE001 - one resource's trouble must not stop the others'
                    log.warning("%s/%s: re-optimization check failed: %s", body["metadata"]["namespace"],
                                body["metadata"]["name"], exc)

        async def namespace_round(bodies: list[dict]) -> None:
            lane = asyncio.Semaphore(NAMESPACE_CHECKS)

            async def in_lane(body: dict) -> None:
                async with lane:
                    await one(body)
            await asyncio.gather(*(in_lane(body) for body in bodies))

        try:
            while True:
                await asyncio.sleep(interval)
                by_namespace: dict[str, list[dict]] = {}
                for (namespace, _), body in list(self.watched.items()):
                    by_namespace.setdefault(namespace, []).append(body)
                for namespace, bodies in by_namespace.items():
                    if namespace not in rounds or rounds[namespace].done():  # else its last round is still going
                        rounds[namespace] = asyncio.create_task(namespace_round(bodies))
        finally:
            for task in rounds.values():
                task.cancel()

    async def check(self, body: dict) -> None:
        """Queue a run again if a trigger fired; else record what the triggers compare against."""
        generation, (observed, phase) = generation_of(body), decisions.observed(body)
        if observed != generation or phase is None or _refused(body):
            return  # a new spec is the reconciler's; a refused one waits for a fix
        try:
            spec = WatchedSpec.model_validate(watched_stub(body)["spec"])
        except ValidationError:
            return  # the controller refuses it, naming the field
        finished = phase in (SUCCEEDED, FAILED)
        replace = spec.concurrency_policy is ConcurrencyPolicy.REPLACE
        seen = dict((body.get("status") or {}).get("reoptimization") or {})
        if seen.get("generation") != generation:
            seen = {"lastScheduleTime": seen.get("lastScheduleTime")}  # digests and image are this generation's to record
        record, trigger = {"generation": generation}, None
        for look in (self._model, self._image, self._schedule):
            fired, fields = await look(body, spec, seen, finished or replace)
            record |= fields
            trigger = trigger or fired
        if trigger and (finished or replace):
            refused = await self.author_refused(body, spec)
            if refused:
                self._warn_once(body, RERUN_REFUSED, refused)
                await self.runs.status.write(body, lambda fresh: decisions.rerun_refused(fresh, generation, refused))
                return
            await self.rerun(body, generation, trigger, replace and not finished, record)
        else:
            await self.runs.status.write(body, lambda fresh: decisions.watched(fresh, generation, record))

    async def author_refused(self, body: dict, spec: WatchedSpec) -> str | None:
        """Why the spec's last author may no longer have it run again, or None. A re-run is a new run
        on their behalf, long after the review at apply: it is reviewed again with the user and
        groups the admission webhook recorded (only where the operator serves the webhook)."""
        if not self.runs.settings.webhook_port:
            return None
        namespace, author = body["metadata"]["namespace"], recorded_author(body)
        if author is None:
            return ("its author is not recorded (applied before kompress recorded authors, or past its admission "
                    "webhook): a user with access must change its spec once for it to run again")
        asks = [("create modeloptimizations.kompress.io", {"verb": "create", "group": API_GROUP, "resource": PLURAL})]
        if asked_fields(spec.job):
            asks.append((f"create jobs.batch ({', '.join(asked_fields(spec.job))})", JOB_CREATE))
        secret = spec.tuning.storage_secret if spec.tuning else None
        if secret:
            asks.append((f"get Secret {secret.name!r}", {**SECRET_GET, "name": secret.name}))
        for what, attributes in asks:
            allowed, reason = await self.runs.lanes.review(self.runs.kube.user_can, author, namespace, attributes)
            if not allowed:
                return (f"its last author {author['username']} may no longer {what} in namespace {namespace}"
                        + (f" ({reason})" if reason else "") + "; a user with access must change its spec for it to run again")
        return None

    async def rerun(self, body: dict, generation: int, trigger: Transition, replacing: bool, record: dict) -> None:
        runs, seen_runs = self.runs, reruns_of(body)
        written = await runs.status.write(body, lambda fresh: decisions.rerun(fresh, generation, seen_runs, trigger,
                                                                                replacing, record))
        if not written:
            return
        runs.events.post(body, trigger.reason, trigger.message)
        runs.metrics.reruns_total.labels(trigger.reason).inc()
        if replacing:  # concurrencyPolicy Replace: the run in flight stops
            namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
            for job in await runs.lanes.report(runs.kube.jobs_of, namespace, name):
                ran = RunRef.of_labels(namespace, job["metadata"].get("labels") or {})
                if ran.generation == generation and ran.rerun <= seen_runs:
                    await runs.lanes.report(runs.kube.delete_job, namespace, job["metadata"]["name"])
                    runs.events.post(body, "Superseded", f"{trigger.reason}: Job {job['metadata']['name']} stopped "
                                                         "(concurrencyPolicy Replace)")

    async def _model(self, body: dict, spec: WatchedSpec, seen: dict, may_run: bool) -> tuple[Transition | None, dict]:
        if not spec.reoptimize_on.model_change:
            return None, {}
        # The operator reads with its own identity: only what the namespace may read itself, only S3.
        namespace = body["metadata"]["namespace"]
        refused = locations.digest_readable(spec, self.runs.settings, namespace)
        try:
            if refused:
                raise DigestUnavailable(refused)
            digest = await asyncio.wait_for(self._read_digest(namespace, spec), DIGEST_TIMEOUT_SECONDS)
        except (DigestUnavailable, asyncio.TimeoutError) as exc:
            why = str(exc) or f"no answer within {DIGEST_TIMEOUT_SECONDS:g}s"
            self._warn_once(body, "ModelDigestUnavailable", f"cannot read the model's digest to notice changes: {why}")
            return None, {}
        fields = {"modelUri": spec.model.uri, "modelDigest": digest}
        if seen.get("modelUri") != spec.model.uri or not seen.get("modelDigest") or seen["modelDigest"] == digest:
            return None, fields
        changed = Transition(QUEUED, "ModelChanged", f"model changed: {spec.model.uri} is now {digest[:23]} (was {seen['modelDigest'][:23]})")
        return changed, (fields if may_run else {})  # Forbid, while a run is on: compare again after it

    async def _read_digest(self, namespace: str, spec: WatchedSpec) -> str:
        """The digest, read in a thread. A read that timed out cannot be stopped and runs on (within
        the client's own timeouts): a namespace with NAMESPACE_CHECKS reads still running starts no
        more, so a store that never answers ties up no more threads than that."""
        with self._reading_lock:
            if self._reading[namespace] >= NAMESPACE_CHECKS:
                raise DigestUnavailable(f"{self._reading[namespace]} earlier reads of this namespace's models have not finished")
            self._reading[namespace] += 1

        def read() -> str:
            try:
                return self.digests.of(spec)
            finally:
                with self._reading_lock:
                    self._reading[namespace] -= 1
        return await asyncio.to_thread(read)

    async def _image(self, body: dict, spec: WatchedSpec, seen: dict, may_run: bool) -> tuple[Transition | None, dict]:
        if not spec.reoptimize_on.job_image_change:
            return None, {}
        image = policy.job_image(spec, self.runs.settings)
        if not seen.get("jobImage") or seen["jobImage"] == image:
            return None, {"jobImage": image}
        return Transition(QUEUED, "JobImageChanged", f"job image changed: {image} (was {seen['jobImage']})"), (
            {"jobImage": image} if may_run else {})

    async def _schedule(self, body: dict, spec: WatchedSpec, seen: dict, may_run: bool) -> tuple[Transition | None, dict]:
        if not spec.schedule:
            return None, {}
        last = datetime.strptime(seen.get("lastScheduleTime") or body["metadata"]["creationTimestamp"], TIME)
        when = due(spec.schedule, last.replace(tzinfo=timezone.utc), self.clock(), spec.starting_deadline_seconds)
        if when.latest is None:
            return None, {}
        fields = {"lastScheduleTime": when.latest.strftime(TIME)}
        if when.skipped or not may_run:
            why = when.skipped or f"the run due at {fields['lastScheduleTime']} is skipped: the last run has not finished (concurrencyPolicy Forbid)"
            self.runs.events.post(body, "ScheduleSkipped", why, warning=True)
            return None, fields
        missed = f"; {when.missed} earlier time(s) missed, run once" if when.missed else ""
        return Transition(QUEUED, "Scheduled", f"scheduled run of {fields['lastScheduleTime']} ({spec.schedule}){missed}"), fields

    def _warn_once(self, body: dict, reason: str, message: str) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if self._warned.get(key) != message:
            self._warned[key] = message
            self.runs.events.post(body, reason, message, warning=True)


def _refused(body: dict) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Accepted" and c.get("status") == "False" for c in conditions)
