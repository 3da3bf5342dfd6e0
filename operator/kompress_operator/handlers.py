"""Kopf handlers: each translates a watch event into a call on the run controller, with a
snapshot of the operator's indexes. Nothing else happens here.

No Kopf timers or daemons: Kopf keeps the last-seen body of every object of a resource that has
one (to call it with fresh kwargs), which made a thousand large queued specs a thousand full
bodies in memory. Retries and re-runs are the controller's own loops over what they need."""

from __future__ import annotations

import asyncio

import kopf

from kompress_jobs.spec.schema import API_GROUP, API_VERSION, PLURAL

from . import webhook
from .fair_share import Waiting, queued_stub
from .conditions import EXECUTING, QUEUED
from .controller import RunController
from .run_ref import MANAGED_BY, ROLE_LABEL, RUN_JOB, RunRef
from .tuning_phase import slots_of
from .kube import Kube
from .memory import release_freed_memory_forever
from .metrics import OperatorMetrics
from .queue import InFlight
from .settings import OperatorSettings

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
MEMORY_RELEASE_INTERVAL = 30.0  # seconds; a burst's freed memory is back within this


def snapshot(running_runs: kopf.Index, waiting_runs: kopf.Index, run_jobs: kopf.Index, wide_runs: kopf.Index) -> InFlight:
    # The index's own store, not a copy: this runs on every watch event, and the queue can be 1000 long.
    return InFlight(running=running_runs, waiting=waiting_runs.get(None, ()), jobs=run_jobs, wide=wide_runs)


def build_registry(settings: OperatorSettings, kube: Kube, metrics: OperatorMetrics) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    controller = RunController(settings, kube, metrics)
    tasks: list[asyncio.Task] = []  # the controller's own loops
    register_indexes(registry)
    if settings.webhook_port:
        webhook.register(registry, settings, lambda user, namespace, attributes: controller.lanes.review(
            kube.user_can, user, namespace, attributes))

    @kopf.on.startup(id="warm_up", registry=registry)
    async def warm_up(**_):
        await controller.lanes.warm_up(kube.ping)
        tasks.append(asyncio.create_task(controller.reoptimizer.run_forever(settings.reoptimize_interval)))
        tasks.append(asyncio.create_task(controller.retry_forever(settings.retry_interval)))
        tasks.append(asyncio.create_task(release_freed_memory_forever(MEMORY_RELEASE_INTERVAL)))

    @kopf.on.cleanup(id="stop_loops", registry=registry)
    async def stop_loops(**_):
        for task in tasks:
            task.cancel()

    # Event handlers get plain dicts (event["object"]): Kopf's Body views re-walk the path on every read.
    @kopf.on.event(*RESOURCE, id="reconcile", registry=registry)
    async def reconcile(event, type, running_runs, waiting_runs, run_jobs, wide_runs, **_):
        await controller.resource_event(event["object"], type, snapshot(running_runs, waiting_runs, run_jobs, wide_runs))

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY, id="job_changed", registry=registry)
    async def job_changed(event, type, running_runs, waiting_runs, run_jobs, wide_runs, **_):
        await controller.job_event(event["object"], type, snapshot(running_runs, waiting_runs, run_jobs, wide_runs))

    return registry


def register_indexes(registry: kopf.OperatorRegistry) -> None:
    """What is in flight and what waits. Indexers are coroutines although they never wait: Kopf
    runs plain functions in a thread, a hop per event that cost more than their work in a burst.
    Kopf keeps an object's last index value until the object stops matching the filter, so the
    phase test belongs in `when=`, not in a None result."""

    @kopf.index(*RESOURCE, id="running_runs", registry=registry, when=lambda status, **_: status.get("phase") in EXECUTING)
    async def running_runs(name, namespace, **_):
        return {namespace: name}

    # A Tuning run holds a slot per worker Pod, a run with several targets one per target's Job:
    # the queue counts these beyond the one above.
    @kopf.index(*RESOURCE, id="wide_runs", registry=registry,
                when=lambda status, body, **_: status.get("phase") in EXECUTING and slots_of(body) > 1)
    async def wide_runs(name, namespace, body, **_):
        return {namespace: (name, slots_of(body))}

    @kopf.index(*RESOURCE, id="waiting_runs", registry=registry, when=lambda status, **_: status.get("phase") == QUEUED)
    async def waiting_runs(name, namespace, spec, meta, body, **_):
        priority = int(((spec or {}).get("job") or {}).get("priority") or 0)
        # Only what ordering and the generation check need: a queued spec can be large, and a
        # thousand of them must not grow the operator (a freed slot reads the resource afresh).
        return {None: Waiting(namespace, name, priority, meta.get("creationTimestamp") or "",
                              slots_of(body), queued_stub(body))}

    @kopf.index("batch", "v1", "jobs", labels=MANAGED_BY, id="run_jobs", registry=registry)
    async def run_jobs(namespace, labels, **_):
        # Complete before any handler runs (Kopf waits for every index's initial listing), so a
        # restarted operator knows which runs already have their Job without asking per resource.
        run = RunRef.of_labels(namespace, labels)
        return {run.key: (run.generation, run.job_key(labels.get(ROLE_LABEL, RUN_JOB)), run.rerun)}
