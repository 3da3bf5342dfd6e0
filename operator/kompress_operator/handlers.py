"""Kopf handlers: thin glue between watch events and the pure builders.

- A ModelOptimization's generation is not yet observed (new, or its spec changed) → validate,
  supersede older Jobs, and start a Job for this generation when a slot is free (otherwise Queued).
- A slot frees (a run finishes or is deleted) → the queued runs that now fit start, in
  priority-then-age order. Runs whose last attempt failed (Pending) retry on a timer.
- A Job changes → the owner's status follows (Running, Succeeded with results, Failed with reasons).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Awaitable, Callable

import kopf

from kompress_jobs.errors import SpecError
from kompress_jobs.plan import plan_passes
from kompress_jobs.schema import API_GROUP, API_VERSION, PLURAL
from kompress_jobs.specfile import resource_from_dict

from .admission import Waiting, admit, position
from .conditions import FAILED, PENDING, QUEUED, RUNNING, SUCCEEDED, Phase, now, status_patch
from .jobspec import GENERATION_LABEL, MANAGED_BY, RESOURCE_LABEL, build_job, job_name
from .jobstate import job_outcome
from .kube import Kube, older_generation_jobs
from .metrics import OperatorMetrics
from .settings import OperatorSettings

RESERVATION_SECONDS = 60.0  # a run we started counts as running until the index shows its status
# API calls run in threads, in three lanes, so that a burst of new resources gets its Jobs first:
# Job creates never queue behind the reads and status reports of runs already going, and Events
# (best effort, as client-go's recorder treats them) never hold up either.
START_THREADS, REPORT_THREADS, EVENT_THREADS = 32, 24, 4
STATUS_WRITE_ATTEMPTS = 5
API_THREADS = START_THREADS + REPORT_THREADS + EVENT_THREADS  # pooled connections: one per thread

log = logging.getLogger(__name__)


class Slots:
    """Runs in flight: resources whose status says Running, plus runs whose Job was just created
    and whose status change the watch has not delivered yet."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.reserved: dict[tuple[str, str], tuple[int, float]] = {}  # key → (generation, when)

    def far_below(self, running_runs: kopf.Index, starting: int, cap: int) -> bool:
        """True when even counting every reservation twice, `starting` more runs stay under `cap`."""
        return sum(len(names) for names in running_runs.values()) + len(self.reserved) + starting <= cap

    def running(self, running_runs: kopf.Index) -> Counter:
        counts: Counter = Counter()
        seen = set()
        for namespace, names in running_runs.items():
            for name in names:
                counts[namespace] += 1
                seen.add((namespace, name))
        deadline = time.monotonic() - RESERVATION_SECONDS
        for key, (_, at) in list(self.reserved.items()):
            if key in seen or at < deadline:
                del self.reserved[key]
            else:
                counts[key[0]] += 1
        return counts


def _validate(body: kopf.Body):
    """The resource as pydantic sees it, checked as `kompress validate` would; SpecError otherwise."""
    document = {"apiVersion": body["apiVersion"], "kind": body["kind"],
                "metadata": {k: body["metadata"].get(k) for k in ("name", "namespace", "generation") if body["metadata"].get(k)},
                "spec": dict(body.get("spec") or {})}
    resource = resource_from_dict(document, "spec")
    plan_passes(resource.spec)
    return resource


def _summary_fields(result: dict) -> dict[str, Any]:
    return {"baseline": result.get("baseline"), "best": result.get("best"), "candidates": result.get("candidates") or [],
            "artifacts": {"uri": result["artifacts"]["uri"], "manifestSha256": result["artifacts"]["manifestSha256"]},
            "runId": result.get("runId")}


def build_registry(settings: OperatorSettings, kube: Kube, metrics: OperatorMetrics) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    slots = Slots()
    resource = (API_GROUP, API_VERSION, PLURAL)

    starts = ThreadPoolExecutor(START_THREADS, thread_name_prefix="kube-start")
    reports = ThreadPoolExecutor(REPORT_THREADS, thread_name_prefix="kube-report")
    events = ThreadPoolExecutor(EVENT_THREADS, thread_name_prefix="kube-event")

    async def call(fn, *args, lane: ThreadPoolExecutor = reports):
        return await asyncio.get_running_loop().run_in_executor(lane, fn, *args)

    def post_event(obj, reason: str, message: str, warning: bool = False) -> None:
        """Log a transition and post it as an Event, without waiting for the post."""
        meta = obj["metadata"]
        log.log(logging.WARNING if warning else logging.INFO, "%s/%s: %s: %s", meta["namespace"], meta["name"], reason, message)
        posted = events.submit(kube.event, dict(obj), "Warning" if warning else "Normal", reason, message)
        posted.add_done_callback(_log_failed_event)

    async def write_status(current, decide: Callable[[dict], dict | None]) -> dict | None:
        """Write the status fields decide(current) returns (None: nothing to write), only over
        the resource version they were decided on. Two writers race on a run's status, its
        start and its Job's watch; with a short run the result can be recorded before the start
        is written, and a plain write would then put the run back to Running for good. A
        conflict is decided again on a fresh read. Returns what was written."""
        namespace, name = current["metadata"]["namespace"], current["metadata"]["name"]
        for _ in range(STATUS_WRITE_ATTEMPTS):
            fields = decide(current)
            if fields is None:
                return None
            if await call(kube.patch_status, namespace, name, fields, current["metadata"]["resourceVersion"]):
                return fields
            current = await call(kube.get_resource, namespace, name)
            if current is None:
                return None  # deleted meanwhile
        raise RuntimeError(f"the status of {namespace}/{name} kept changing while it was being written")

    @kopf.on.startup(id="warm_up", registry=registry)
    async def warm_up(**_):
        # Start every thread and open its pooled connection now: the first burst after a start
        # would otherwise pay for them (200 resources: p99 2.6 s cold, 0.57 s warm). Best effort.
        try:
            await asyncio.gather(*(call(kube.ping, lane=lane) for lane, threads in ((starts, START_THREADS),
                                                                                    (reports, REPORT_THREADS))
                                   for _ in range(threads)))
        except Exception as exc:  # noqa: BLE001 - the API server may be away; the handlers cope then
            log.warning("could not open connections ahead of time: %s", exc)

    # --- indexes: what is in flight and what waits -------------------------------------------
    # Indexers are coroutines although they never wait: Kopf runs plain
    # functions in a thread, a hop per event that cost more than their work in a burst.

    # Kopf keeps an object's last index value until the object stops matching the filter, so the
    # phase test belongs in `when=`, not in a None result.
    @kopf.index(*resource, id="running_runs", registry=registry, when=lambda status, **_: status.get("phase") == RUNNING)
    async def running_runs(name, namespace, **_):
        return {namespace: name}

    @kopf.index(*resource, id="waiting_runs", registry=registry, when=lambda status, **_: status.get("phase") == QUEUED)
    async def waiting_runs(name, namespace, spec, meta, body, **_):
        priority = int(((spec or {}).get("job") or {}).get("priority") or 0)
        # A shallow copy of the raw object (Kopf gives each event a new one): a freed slot starts
        # the run from here, without reading it again.
        return {None: Waiting(namespace, name, priority, meta.get("creationTimestamp") or "", dict(body))}

    @kopf.index("batch", "v1", "jobs", labels=MANAGED_BY, id="run_jobs", registry=registry)
    async def run_jobs(namespace, labels, **_):
        # Complete before any handler runs (Kopf waits for every index's initial listing), so a
        # restarted operator knows which runs already have their Job without asking per resource.
        return {(namespace, labels.get(RESOURCE_LABEL)): int(labels.get(GENERATION_LABEL, "0"))}

    # --- starting runs ---------------------------------------------------------------------

    def waiting_now(waiting_runs: kopf.Index) -> list[Waiting]:
        """Queued runs not already being started."""
        return [w for w in waiting_runs.get(None, []) if w.key not in slots.reserved]

    async def start_or_queue(body, patch, running_runs, waiting_runs, parsed, logger) -> None:
        meta, status, generation = body["metadata"], body.get("status") or {}, _generation(body)
        namespace, name = meta["namespace"], meta["name"]
        me = Waiting(namespace, name, parsed.spec.job.priority, meta.get("creationTimestamp") or "")
        async with slots.lock:
            if slots.reserved.get(me.key, (None,))[0] == generation:
                return  # started a moment ago; its status write has not come back yet
            waiting = [w for w in waiting_now(waiting_runs) if w.key != me.key] + [me]
            if slots.far_below(running_runs, len(waiting), min(settings.max_running, settings.max_running_per_namespace)):
                running = None  # every waiting run fits: no need to count exactly (linear in the runs in flight)
            else:
                running = slots.running(running_runs)
            if running is not None and me.key not in admit(waiting, running, settings.max_running, settings.max_running_per_namespace):
                place = position(me.key, waiting)
                logger.debug(f"queued: in flight {dict(running)}, reserved {list(slots.reserved)}, waiting {[w.key for w in waiting]}")
                message = (f"waiting for a Job slot: {sum(running.values())}/{settings.max_running} running cluster-wide, "
                           f"{running[namespace]}/{settings.max_running_per_namespace} in {namespace}; position {place} of {len(waiting)}")
                if not (status.get("phase") == QUEUED and status.get("observedGeneration") == generation):
                    patch.status.update(status_patch(Phase(QUEUED, "ConcurrencyLimit", message), status, generation))
                    post_event(body, "Queued", message)
                return
            slots.reserved[me.key] = (generation, time.monotonic())  # the slot is ours; the API call needs no lock
        await launch(body, generation, parsed)

    async def launch(body, generation: int, parsed=None) -> None:
        """Create the run's Job (its slot already reserved) and record it as Running."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        try:
            parsed = parsed or _validate(body)  # a queued run is started from its last-seen body
            manifest = build_job(body, parsed.spec, settings)
            kopf.adopt(manifest, owner=body)
            # no read first: the name carries the generation, so an existing Job answers 409
            created = await call(kube.create_job, manifest, lane=starts)
        except BaseException:
            slots.reserved.pop(key, None)
            raise
        message = f"Job {manifest['metadata']['name']} {'created' if created else 'already exists'}"
        if created:
            post_event(body, "JobCreated", message)
        started = Phase(RUNNING, "JobCreated", message)
        await write_status(body, lambda current: _unless_started(current, generation, started, startTime=now(), completionTime=None))

    async def start_waiting(running_runs, waiting_runs) -> None:
        """Start the queued runs that fit now, in queue order. Called whenever a slot may have
        freed (a run finished or was deleted) and when a run is queued (a slot may have freed
        while its Queued status was on its way): one pass over the queue per such event, where a
        timer per waiting run used to sort the whole queue every interval, each."""
        if not waiting_runs.get(None):
            return
        async with slots.lock:
            running = slots.running(running_runs)
            if sum(running.values()) >= settings.max_running:
                return
            # Only runs queued for their current spec: a newer generation is reconcile's to decide.
            waiting = [w for w in waiting_now(waiting_runs)
                       if (w.body.get("status") or {}).get("observedGeneration") == _generation(w.body)]
            chosen = set(admit(waiting, running, settings.max_running, settings.max_running_per_namespace))
            starting = [w for w in waiting if w.key in chosen]
            for run in starting:
                slots.reserved[run.key] = (_generation(run.body), time.monotonic())
        for failed in await asyncio.gather(*(start_queued(run.body) for run in starting), return_exceptions=True):
            if isinstance(failed, Exception):  # not even Pending could be written; the next event looks again
                log.error("could not start a queued run: %s", failed)

    async def start_queued(body) -> None:
        await guarded(body, functools.partial(launch, body, _generation(body)))

    async def advance(body, status, patch, running_runs, waiting_runs, run_jobs, logger) -> None:
        """Bring the resource's current generation forward: validate it, stop Jobs of older
        generations, then start its Job (or queue it)."""
        meta = body["metadata"]
        generation, namespace, name = _generation(body), meta["namespace"], meta["name"]
        try:
            parsed = _validate(body)
        except SpecError as exc:
            message = str(exc).removeprefix("spec: ")
            patch.status.update(status_patch(Phase(FAILED, "InvalidSpec", message), dict(status), generation))
            post_event(body, "InvalidSpec", message, warning=True)
            metrics.runs_total.labels("invalid").inc()
            return
        if generation > 1:  # only a changed spec leaves Jobs of older generations behind
            for old in older_generation_jobs(await call(kube.jobs_of, namespace, name), generation):
                await call(kube.delete_job, namespace, old)
                post_event(body, "Superseded", f"spec changed: Job {old} stopped for generation {generation}")
        if generation in run_jobs.get((namespace, name), []):  # a restarted operator: the run goes on
            exists = Phase(RUNNING, "JobRunning", f"Job {job_name(name, generation)} exists")
            await write_status(body, lambda current: _unless_started(current, generation, exists))
            return
        await start_or_queue(body, patch, running_runs, waiting_runs, parsed, logger)

    async def guarded(body, step: Callable[[], Awaitable[None]]) -> None:
        """Run a step of reconciliation; an error (the API server away, a refused call) is
        written to the status as Pending/RetryingAfterError, which the retry timer picks up."""
        generation, status = _generation(body), body.get("status") or {}
        try:
            with metrics.reconciling():
                await step()
        except Exception as exc:  # noqa: BLE001 - every failure is retried; the status says which
            message = f"{type(exc).__name__}: {str(exc)[:400]}; retrying every {settings.retry_interval_seconds:g}s"
            retrying = Phase(PENDING, "RetryingAfterError", message)
            # Versioned too: the Job may have been created, and even finished, before the failure.
            await write_status(body, lambda current: _unless_started(current, generation, retrying))
            if status.get("phase") != PENDING:  # one Event per failing streak; a log line per attempt
                post_event(body, "RetryingAfterError", message, warning=True)
            else:
                log.warning("%s/%s: RetryingAfterError: %s", body["metadata"]["namespace"], body["metadata"]["name"], message)

    @kopf.on.event(*resource, id="reconcile", registry=registry)
    async def reconcile(event, type, patch, running_runs, waiting_runs, run_jobs, logger, **_):
        # Level-triggered, as controller-runtime reconcilers are: status.observedGeneration says
        # whether this generation was handled. So no "last handled" copy of the spec is kept in
        # an annotation (one write and one watch event less per resource, and nothing for a
        # GitOps replace to strip), and a restart or a re-list simply looks again.
        body = event["object"]  # plain dicts: Kopf's Body views re-walk the path on every read
        meta, status = body["metadata"], body.get("status") or {}
        namespace, name = meta["namespace"], meta["name"]
        metrics.running_jobs.set(sum(len(names) for names in running_runs.values()))
        metrics.queue_depth.set(len(waiting_runs.get(None, [])))
        advance_it = functools.partial(advance, body, status, patch, running_runs, waiting_runs, run_jobs, logger)
        if type == "DELETED":  # the garbage collector takes the Job and its Pods
            metrics.forget(namespace, name)
            slots.reserved.pop((namespace, name), None)
            await start_waiting(running_runs, waiting_runs)  # its slot, if it had one, is free
            return
        generation = _generation(body)
        if status.get("observedGeneration") != generation:
            await guarded(body, advance_it)
            return
        phase = status.get("phase")
        if type is None and phase in (SUCCEEDED, FAILED):  # listed after a restart: the gauges come back
            metrics.record_best(namespace, name, dict(status))
        if type is None and phase == RUNNING and generation not in run_jobs.get((namespace, name), []):
            await guarded(body, advance_it)  # listed, Running, and no Job: it went away while no operator watched
        elif phase in (QUEUED, SUCCEEDED, FAILED):
            await start_waiting(running_runs, waiting_runs)  # a slot may have freed, or this run may fit

    # Only runs whose last attempt failed wait on a timer (Kopf puts a finalizer on a resource
    # while a timer of its applies: queued runs carry none, so they delete without the operator).
    @kopf.timer(*resource, interval=settings.retry_interval_seconds, id="retry", registry=registry,
                when=lambda status, **_: status.get("phase") == PENDING)
    async def retry(body, status, patch, running_runs, waiting_runs, run_jobs, logger, **_):
        body = dict(body)  # the raw object, as the other handlers read it
        if status.get("observedGeneration") != _generation(body):
            return  # a newer spec: the event handler has it
        await guarded(body, functools.partial(advance, body, status, patch, running_runs, waiting_runs, run_jobs, logger))

    # --- following Jobs --------------------------------------------------------------------

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY, id="job_changed", registry=registry)
    async def job_changed(event, type, labels, namespace, running_runs, **_):
        # type None is the initial listing: a Job that finished while no operator ran is reported now.
        if type == "DELETED":
            return
        body = event["object"]  # the plain dict, as in reconcile
        owner, generation = labels.get(RESOURCE_LABEL), int(labels.get(GENERATION_LABEL, "0"))
        outcome = job_outcome(body, [])
        if not outcome.state or (outcome.state == RUNNING and owner in running_runs.get(namespace, [])):
            return  # nothing to report: the status already says Running (set when the Job was created)
        if outcome.state in (SUCCEEDED, FAILED):
            outcome = job_outcome(body, await call(kube.pods_of_job, namespace, body["metadata"]["name"]))
        current = await call(kube.get_resource, namespace, owner)
        if current is None:
            return  # deleted: the garbage collector takes the Job
        if outcome.state == RUNNING:
            running = Phase(RUNNING, outcome.reason, outcome.message)
            await write_status(current, lambda fresh: _unless_started(fresh, generation, running))
            return
        # Before the write: its watch event reaches reconcile, which starts the next queued run,
        # possibly before this handler resumes, and a reservation left then would hold the slot.
        slots.reserved.pop((namespace, owner), None)
        finished = _finish_phase(outcome)
        written = await write_status(current, lambda fresh: _finish_status(fresh, generation, finished, outcome))
        if written is None:
            return  # already recorded, or superseded by a newer spec
        if outcome.state == SUCCEEDED:
            metrics.record_best(namespace, owner, written)
            metrics.runs_total.labels("succeeded" if written.get("best") else "no_candidate").inc()
        else:
            metrics.runs_total.labels("failed").inc()
        duration = _seconds_between(outcome.start_time, outcome.completion_time)
        if duration is not None:
            metrics.job_duration.labels("succeeded" if outcome.state == SUCCEEDED else "failed").observe(duration)
        post_event(current, finished.reason, finished.message, warning=outcome.state != SUCCEEDED)

    return registry


def _generation(resource: dict) -> int:
    return int(resource["metadata"].get("generation") or 1)


def _current_run(resource: dict, generation: int) -> dict | None:
    """The resource's status when `generation` is still its spec and not yet finished, else None."""
    status = resource.get("status") or {}
    if _generation(resource) != generation:
        return None  # superseded by a newer spec
    if status.get("observedGeneration") == generation and status.get("phase") in (SUCCEEDED, FAILED):
        return None  # already recorded
    return status


def _unless_started(resource: dict, generation: int, phase: Phase, **fields) -> dict | None:
    """The status for `phase` (Running, or Pending after an error), unless the run is already
    Running or finished for this generation, or its spec moved on."""
    status = _current_run(resource, generation)
    if status is None or (status.get("phase") == RUNNING and status.get("observedGeneration") == generation):
        return None
    return status_patch(phase, status, generation, **fields)


def _finish_phase(outcome) -> Phase:
    if outcome.state != SUCCEEDED:
        return Phase(FAILED, outcome.reason or "JobFailed", outcome.message or "the Job failed")
    best = outcome.result.get("best")
    if not best:
        return Phase(SUCCEEDED, "NoCandidateMetGoals", "no candidate met the goals; keep the baseline")
    return Phase(SUCCEEDED, "Completed", f"best candidate {best['name']}: {best.get('speedup')}x faster, "
                                         f"{best.get('sizeRatio')}x smaller than the baseline")


def _finish_status(resource: dict, generation: int, phase: Phase, outcome) -> dict | None:
    status = _current_run(resource, generation)
    if status is None:
        return None
    extra: dict[str, Any] = {"completionTime": outcome.completion_time or now()}
    if outcome.start_time:
        extra["startTime"] = outcome.start_time
    if outcome.state == SUCCEEDED:
        extra |= _summary_fields(outcome.result)
    return status_patch(phase, status, generation, **extra)


def _log_failed_event(posted: Future) -> None:
    if posted.exception() is not None:
        log.warning("could not post an Event: %s", posted.exception())


def _seconds_between(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    if not start or not end:
        return None
    parse = lambda text: datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()
