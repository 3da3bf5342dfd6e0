"""Kopf handlers: thin glue between watch events and the pure builders.

- A ModelOptimization is created, resumed or its spec changes → validate, supersede older Jobs,
  and start a Job for this generation when a slot is free (otherwise Queued).
- Queued resources retry on a timer, in priority-then-age order.
- A Job changes → the owner's status follows (Running, Succeeded with results, Failed with reasons).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import kopf

from kompress_jobs.errors import SpecError
from kompress_jobs.plan import plan_passes
from kompress_jobs.schema import API_GROUP, API_VERSION, PLURAL
from kompress_jobs.specfile import resource_from_dict

from .admission import Waiting, admit, position
from .conditions import FAILED, QUEUED, RUNNING, SUCCEEDED, Phase, now, status_patch
from .jobspec import GENERATION_LABEL, MANAGED_BY, RESOURCE_LABEL, build_job, job_name
from .jobstate import job_outcome
from .kube import Kube, older_generation_jobs
from .metrics import OperatorMetrics
from .settings import OperatorSettings

RESERVATION_SECONDS = 60.0  # a run we started counts as running until the index shows its status


class Slots:
    """Runs in flight: resources whose status says Running, plus runs whose Job was just created
    and whose status change the watch has not delivered yet."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.reserved: dict[tuple[str, str], float] = {}

    def running(self, running_runs: kopf.Index) -> Counter:
        counts: Counter = Counter()
        seen = set()
        for namespace, names in running_runs.items():
            for name in names:
                counts[namespace] += 1
                seen.add((namespace, name))
        deadline = time.monotonic() - RESERVATION_SECONDS
        for key, at in list(self.reserved.items()):
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

    async def call(fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def event(obj, reason: str, message: str, warning: bool = False) -> None:
        await call(kube.event, dict(obj), "Warning" if warning else "Normal", reason, message)

    # --- indexes: what is in flight and what waits -------------------------------------------

    # Kopf keeps an object's last index value until the object stops matching the filter, so the
    # phase test belongs in `when=`, not in a None result.
    @kopf.index(*resource, id="running_runs", registry=registry, when=lambda status, **_: status.get("phase") == RUNNING)
    def running_runs(name, namespace, **_):
        return {namespace: name}

    @kopf.index(*resource, id="waiting_runs", registry=registry, when=lambda status, **_: status.get("phase") == QUEUED)
    def waiting_runs(name, namespace, spec, meta, **_):
        priority = int(((spec or {}).get("job") or {}).get("priority") or 0)
        return {None: Waiting(namespace, name, priority, meta.get("creationTimestamp") or "")}

    # --- starting runs ---------------------------------------------------------------------

    async def start_or_queue(body, patch, running_runs, waiting_runs, parsed, logger) -> None:
        meta, generation = body["metadata"], int(body["metadata"].get("generation") or 1)
        namespace, name = meta["namespace"], meta["name"]
        me = Waiting(namespace, name, parsed.spec.job.priority, meta.get("creationTimestamp") or "")
        async with slots.lock:
            waiting = [w for w in waiting_runs.get(None, []) if w.key != me.key] + [me]
            running = slots.running(running_runs)
            if me.key not in admit(waiting, running, settings.max_running, settings.max_running_per_namespace):
                place = position(me.key, waiting)
                logger.debug(f"queued: in flight {dict(running)}, reserved {list(slots.reserved)}, waiting {[w.key for w in waiting]}")
                message = (f"waiting for a Job slot: {sum(running.values())}/{settings.max_running} running cluster-wide, "
                           f"{running[namespace]}/{settings.max_running_per_namespace} in {namespace}; position {place} of {len(waiting)}")
                if (body.get("status") or {}).get("phase") != QUEUED:
                    patch.status.update(status_patch(Phase(QUEUED, "ConcurrencyLimit", message), body.get("status") or {}, generation))
                    await event(body, "Queued", message)
                return
            slots.reserved[me.key] = time.monotonic()  # the slot is ours; the API call needs no lock
        manifest = build_job(body, parsed.spec, settings)
        kopf.adopt(manifest, owner=body)
        try:
            created = await call(kube.create_job, manifest)
        except BaseException:
            slots.reserved.pop(me.key, None)
            raise
        message = f"Job {manifest['metadata']['name']} {'created' if created else 'already exists'}"
        patch.status.update(status_patch(Phase(RUNNING, "JobCreated", message), body.get("status") or {}, generation,
                                         startTime=now(), completionTime=None))
        if created:
            await event(body, "JobCreated", message)

    @kopf.on.resume(*resource, id="reconcile", registry=registry)
    @kopf.on.create(*resource, id="reconcile", registry=registry)
    @kopf.on.update(*resource, field="spec", id="reconcile", registry=registry)
    async def reconcile(body, meta, status, patch, running_runs, waiting_runs, logger, **_):
        with metrics.reconciling():
            generation = int(meta.get("generation") or 1)
            namespace, name = meta["namespace"], meta["name"]
            try:
                parsed = _validate(body)
            except SpecError as exc:
                message = str(exc).removeprefix("spec: ")
                if status.get("observedGeneration") != generation or status.get("phase") != FAILED:
                    patch.status.update(status_patch(Phase(FAILED, "InvalidSpec", message), dict(status), generation))
                    await event(body, "InvalidSpec", message, warning=True)
                    metrics.runs_total.labels("invalid").inc()
                return
            if status.get("observedGeneration") == generation and status.get("phase") in (SUCCEEDED, FAILED):
                metrics.record_best(namespace, name, dict(status))  # after a restart, the gauges come back
                return
            if generation > 1:  # only a changed spec leaves Jobs of older generations behind
                for old in older_generation_jobs(await call(kube.jobs_of, namespace, name), generation):
                    await call(kube.delete_job, namespace, old)
                    await event(body, "Superseded", f"spec changed: Job {old} stopped for generation {generation}")
            existing = await call(kube.get_job, namespace, job_name(name, generation))
            if existing is not None:  # a restarted operator: the run goes on, the Job watch reports it
                if status.get("phase") != RUNNING or status.get("observedGeneration") != generation:
                    patch.status.update(status_patch(Phase(RUNNING, "JobRunning", f"Job {existing['metadata']['name']} exists"),
                                                     dict(status), generation))
                return
            await start_or_queue(body, patch, running_runs, waiting_runs, parsed, logger)

    @kopf.timer(*resource, interval=settings.queue_interval_seconds, id="retry_queued", registry=registry,
                when=lambda status, **_: status.get("phase") == QUEUED)
    async def retry_queued(body, meta, status, patch, running_runs, waiting_runs, logger, **_):
        with metrics.reconciling():
            try:
                parsed = _validate(body)
            except SpecError:
                return  # the update handler reports it
            if status.get("observedGeneration") == int(meta.get("generation") or 1):
                await start_or_queue(body, patch, running_runs, waiting_runs, parsed, logger)

    # --- following Jobs --------------------------------------------------------------------

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY, id="job_changed", registry=registry)
    async def job_changed(body, type, labels, namespace, **_):
        # type None is the initial listing: a Job that finished while no operator ran is reported now.
        if type == "DELETED":
            return
        owner, generation = labels.get(RESOURCE_LABEL), int(labels.get(GENERATION_LABEL, "0"))
        outcome = job_outcome(body, [])
        if outcome.state in (SUCCEEDED, FAILED):
            outcome = job_outcome(body, await call(kube.pods_of_job, namespace, body["metadata"]["name"]))
        if not outcome.state:
            return
        current = await call(kube.get_resource, namespace, owner)
        if current is None or int(current["metadata"].get("generation") or 1) != generation:
            return  # deleted, or superseded by a newer spec
        status = current.get("status") or {}
        if status.get("observedGeneration") == generation and status.get("phase") in (SUCCEEDED, FAILED):
            return  # already recorded
        if outcome.state == RUNNING:
            if status.get("phase") != RUNNING or (status.get("conditions") and _reason(status, "Running") != "JobRunning"):
                await call(kube.patch_status, namespace, owner,
                           status_patch(Phase(RUNNING, outcome.reason, outcome.message), status, generation))
            return
        await record_finish(current, outcome, generation)

    async def record_finish(current: dict, outcome, generation: int) -> None:
        namespace, name = current["metadata"]["namespace"], current["metadata"]["name"]
        # A run that ends before the index ever showed it Running would otherwise hold its slot
        # until the reservation expires, stalling the queue behind short runs.
        slots.reserved.pop((namespace, name), None)
        status = current.get("status") or {}
        extra: dict[str, Any] = {"completionTime": outcome.completion_time or now()}
        if outcome.start_time:
            extra["startTime"] = outcome.start_time
        if outcome.state == SUCCEEDED:
            result = outcome.result
            extra |= _summary_fields(result)
            if result.get("best"):
                best = result["best"]
                phase = Phase(SUCCEEDED, "Completed", f"best candidate {best['name']}: {best.get('speedup')}x faster, "
                                                      f"{best.get('sizeRatio')}x smaller than the baseline")
            else:
                phase = Phase(SUCCEEDED, "NoCandidateMetGoals", "no candidate met the goals; keep the baseline")
            await call(kube.patch_status, namespace, name, status_patch(phase, status, generation, **extra))
            metrics.record_best(namespace, name, extra)
            metrics.runs_total.labels("succeeded" if result.get("best") else "no_candidate").inc()
        else:
            phase = Phase(FAILED, outcome.reason or "JobFailed", outcome.message or "the Job failed")
            await call(kube.patch_status, namespace, name, status_patch(phase, status, generation, **extra))
            metrics.runs_total.labels("failed").inc()
        duration = _seconds_between(outcome.start_time, outcome.completion_time)
        if duration is not None:
            metrics.job_duration.labels("succeeded" if outcome.state == SUCCEEDED else "failed").observe(duration)
        await event(current, phase.reason, phase.message, warning=outcome.state != SUCCEEDED)

    @kopf.on.event(*resource, id="resource_observed", registry=registry)
    def resource_observed(type, namespace, name, running_runs, waiting_runs, **_):
        # Indexes are updated before handlers run: the gauges follow every status change.
        metrics.running_jobs.set(sum(len(names) for names in running_runs.values()))
        metrics.queue_depth.set(len(waiting_runs.get(None, [])))
        if type == "DELETED":  # the garbage collector takes the Job and its Pods
            metrics.forget(namespace, name)
            slots.reserved.pop((namespace, name), None)

    return registry


def _reason(status: dict, condition_type: str) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == condition_type), None)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    from datetime import datetime

    if not start or not end:
        return None
    parse = lambda text: datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()
