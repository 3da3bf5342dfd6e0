"""The run controller: what the operator does for each event, over the queue, the pure
decisions, the status writer and the Job builder. Kopf stays in handlers.py; this module sees
plain dicts and index snapshots (queue.InFlight).

- A ModelOptimization's generation is not yet observed (new, or its spec changed) → validate,
  supersede older Jobs, and start a Job for this generation when a slot is free (otherwise Queued).
- A slot frees (a run finishes, is deleted, or its Job goes) → the queued runs that now fit
  start, in priority-then-age order. Runs whose last attempt failed (Pending) retry on a timer.
- A Job changes → the owner's status follows (Running, Succeeded with results, Failed with
  reasons); a Job deleted before its run finished fails the run (JobDeleted) and frees its slot.
- A parallel study runs its tuning Job first (tuning_phase.py), then hands over to the run's Job.
- A schedule, or a changed model or job image, queues an unchanged spec again (reoptimizer.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import kopf

from kompress_jobs.errors import SpecError
from kompress_jobs.planning.plan import plan_passes
from kompress_jobs.spec.specfile import resource_from_dict
from kompress_jobs.spec.status import ModelOptimizationStatus, PromotionDecision, PromotionStatus, TargetStatus

from . import decisions, policy, targets
from .fair_share import Fairness, Waiting
from .conditions import FAILED, PENDING, QUEUED, RUNNING, SUCCEEDED, TUNING, Transition
from .decisions import generation_of
from .jobspec import build_job, needs_tuning_job
from .study_databases import SECRET_KEY, SECRET_NAME, StudyDatabases
from .jobstate import SUSPENDED, JobOutcome, job_outcome
from .kube import Kube, describe_error, older_generation_jobs
from .lanes import ApiLanes
from .metrics import OperatorMetrics
from .placement import unschedulable
from .policy import PolicyViolation
from .queue import InFlight, RunQueue
from .reoptimizer import Reoptimizer
from .run_ref import ROLE_LABEL, RUN_JOB, TUNING_JOB, RunRef, reruns_of
from .settings import OperatorSettings
from .tuning_phase import TuningPhase, slots_of
from .writer import EventRecorder, StatusWriter, read_status

log = logging.getLogger(__name__)


def validate(body: dict):
    """The resource as pydantic sees it, checked as `kompress validate` would; SpecError otherwise."""
    document = {"apiVersion": body["apiVersion"], "kind": body["kind"],
                "metadata": {k: body["metadata"].get(k) for k in ("name", "namespace", "generation") if body["metadata"].get(k)},
                "spec": dict(body.get("spec") or {})}
    resource = resource_from_dict(document, "spec")
    plan_passes(resource.spec)
    return resource


def _key(obj: dict) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


class RunController:
    def __init__(self, settings: OperatorSettings, kube: Kube, metrics: OperatorMetrics, lanes: ApiLanes | None = None):
        self.settings, self.kube, self.metrics = settings, kube, metrics
        self.lanes = lanes or ApiLanes()
        self.queue = RunQueue(settings.max_running, settings.max_running_per_namespace,
                              fairness=Fairness(dict(settings.namespace_weights), settings.priority_across_namespaces))
        self.status = StatusWriter(kube, self.lanes)
        self.events = EventRecorder(kube, self.lanes)
        self.tuning = TuningPhase(self)
        self.databases = StudyDatabases(settings.study_admin_url) if settings.study_admin_url else None
        self.reoptimizer = Reoptimizer(self)
        self.pending: set[tuple[str, str]] = set()  # runs whose last attempt failed: retried by retry_forever
        self.now = InFlight()  # the latest index snapshot (live stores), for the retry loop

    # --- a ModelOptimization changed ---------------------------------------------------------

    async def resource_event(self, body: dict, event_type: str | None, now: InFlight) -> None:
        """Level-triggered, as controller-runtime reconcilers are: status.observedGeneration says
        whether this generation was handled, so a restart or a re-list simply looks again."""
        self.metrics.running_jobs.set(now.running_count())
        self.metrics.queue_depth.set(len(now.waiting))
        self.now = now
        self.reoptimizer.track(body, event_type)
        if event_type != "DELETED" and decisions.observed(body)[1] == PENDING:
            self.pending.add(_key(body))
        else:
            self.pending.discard(_key(body))
        if event_type == "DELETED":  # the garbage collector takes the Job and its Pods
            self.metrics.forget(*_key(body))
            self.queue.release(_key(body))
            await self.start_waiting(now)  # its slot, if it had one, is free
            return
        generation = generation_of(body)
        observed, phase = decisions.observed(body)
        if observed != generation:
            await self.guarded(body, lambda: self.advance(body, now))
            return
        if event_type is None and phase in (SUCCEEDED, FAILED):  # listed after a restart: the gauges come back
            status = read_status(body)
            if status is not None:
                self.metrics.record_run(*_key(body), status)
        run, role = RunRef.of_resource(body), (TUNING_JOB if phase == TUNING else RUN_JOB)
        if event_type is None and phase == RUNNING and targets.target_names(body):
            await self.guarded(body, lambda: self.target_jobs_gone(body, run, now))
        elif event_type is None and phase in (RUNNING, TUNING) and not now.has_job(run, role):
            # listed, executing, and no Job: it went away while no operator watched
            await self.guarded(body, lambda: self.job_gone(body, run.job_name(role)))
        elif phase in (QUEUED, SUCCEEDED, FAILED) or (phase == RUNNING and (body.get("status") or {}).get("tuning")):
            await self.start_waiting(now)  # a slot may have freed (a study's worker Pods too), or this run may fit

    async def retry_forever(self, interval: float) -> None:
        """Every `interval`, retry the runs whose last attempt failed (Pending), each from a fresh
        read: the loop keeps their names only."""
        while True:
            await asyncio.sleep(interval)
            for key in list(self.pending):
                try:
                    body = await self.lanes.report(self.kube.get_resource, *key)
                except Exception as exc:  # noqa: BLE001 - the API server away: the next round tries again
                    log.warning("%s/%s: cannot read it to retry: %s", *key, describe_error(exc))
                    continue
                if body is None or decisions.observed(body)[1] != PENDING:
                    self.pending.discard(key)  # deleted, or moved on
                    continue
                await self.retry(body, self.now)

    async def retry(self, body: dict, now: InFlight) -> None:
        """A run whose last attempt failed (Pending), tried again."""
        if decisions.observed(body)[0] == generation_of(body):  # else a newer spec: the event handler has it
            await self.guarded(body, lambda: self.advance(body, now))

    async def advance(self, body: dict, now: InFlight) -> None:
        """Bring the resource's current generation forward: validate it, stop Jobs of older
        generations, then start its Job (or queue it)."""
        (namespace, name), generation = _key(body), generation_of(body)
        try:
            parsed = validate(body)
            policy.enforce(parsed.spec, self.settings, namespace)
        except SpecError as exc:
            await self.refuse(body, generation, "InvalidSpec", str(exc).removeprefix("spec: "))
            return
        except PolicyViolation as exc:
            await self.refuse(body, generation, "PolicyViolation", str(exc))
            return
        if generation > 1:  # only a changed spec leaves Jobs of older generations behind
            for old in older_generation_jobs(await self.lanes.report(self.kube.jobs_of, namespace, name), generation):
                await self.lanes.report(self.kube.delete_job, namespace, old)
                self.events.post(body, "Superseded", f"spec changed: Job {old} stopped for generation {generation}")
        run = RunRef.of_resource(body)
        if parsed.spec.targets:  # creating a target's Job again answers 409: start_or_queue is safe to repeat
            await self.start_or_queue(body, parsed, now)
            return
        if now.has_job(run, RUN_JOB):  # a restarted operator: the run goes on (its Job's events say when Kueue admits it)
            message = f"Job {run.job_name(RUN_JOB)} exists"
            if policy.kueue_queue(parsed.spec, self.settings):
                await self.status.write(body, lambda current: decisions.waiting_for_kueue(current, generation, message))
                return
            exists = Transition(RUNNING, "JobRunning", message)
            await self.status.write(body, lambda current: decisions.unless_started(current, generation, exists))
            return
        if now.has_job(run, TUNING_JOB):  # its study runs, or ran: look at its Job
            for job in await self.lanes.report(self.kube.jobs_of, namespace, name):
                if job["metadata"]["name"] == run.job_name(TUNING_JOB):
                    await self.tuning.job_event(job, None, now)
            return
        await self.start_or_queue(body, parsed, now)

    async def refuse(self, body: dict, generation: int, reason: str, message: str) -> None:
        """Failed before any Job: nothing to retry until the spec (or the operator's policy) changes."""
        if await self.status.write(body, lambda current: decisions.refused(current, generation, reason, message)):
            self.events.post(body, reason, message, warning=True)
            self.metrics.runs_total.labels("invalid", body["metadata"]["namespace"], reason).inc()

    async def start_or_queue(self, body: dict, parsed, now: InFlight) -> None:
        generation, meta = generation_of(body), body["metadata"]
        slots = slots_of({"spec": body.get("spec")})  # what it will hold: its study's workers, or its targets' Jobs
        me = Waiting(meta["namespace"], meta["name"], parsed.spec.job.priority, meta.get("creationTimestamp") or "", slots=slots)
        if self.queue.just_started(me.key, generation):
            return  # its Running status has not come back yet
        if self.settings.kueue_local_queue:  # Kueue admits it: the Job is created now, suspended
            self.queue.reserve(me.key, generation, slots)
            await self.launch(body, generation, parsed)
            return
        verdict = self.queue.try_start(me, generation, now)
        if verdict.start:
            await self.launch(body, generation, parsed)
        elif await self.status.write(body, lambda current: decisions.queued(current, generation, verdict.message)):
            self.events.post(body, "Queued", verdict.message)

    async def launch(self, body: dict, generation: int, parsed=None) -> None:
        """Create the run's first Job (its slots already reserved): a parallel study's tuning Job,
        else the run's Job; and record the run as Tuning or Running."""
        try:
            parsed = parsed or validate(body)  # a queued run is started from its last-seen body
            if parsed.spec.targets:
                await self.launch_targets(body, generation, parsed)
                return
            role = TUNING_JOB if needs_tuning_job(parsed.spec) else RUN_JOB
            name, created = await self.create_job(body, parsed, role)
        except PolicyViolation as exc:  # queued before the operator restarted with a stricter policy
            self.queue.release(_key(body))
            await self.refuse(body, generation, "PolicyViolation", str(exc))
            return
        except BaseException:
            self.queue.release(_key(body))
            raise
        message = f"Job {name} {'created' if created else 'already exists'}"
        if role == TUNING_JOB:
            await self.tuning.started(body, generation, message, created)
            return
        if created:
            self.events.post(body, "JobCreated", message)
        queue = policy.kueue_queue(parsed.spec, self.settings)
        if queue:
            waiting = f"{message}, suspended until Kueue admits it from LocalQueue {queue}"
            await self.status.write(body, lambda current: decisions.waiting_for_kueue(current, generation, waiting))
            return
        await self.status.write(body, lambda current: decisions.started(current, generation, message))

    async def launch_targets(self, body: dict, generation: int, parsed) -> None:
        """A Job per hardware target, each admitted (by Kueue too) and scheduled on its own nodes."""
        jobs, created = {}, []
        for target in parsed.spec.targets:
            name, new = await self.create_job(body, parsed, RUN_JOB, target.name)
            jobs[target.name] = name
            if new:
                created.append(name)
        if created:
            self.events.post(body, "JobCreated", f"Job(s) {', '.join(created)} created, one per target")
        unmatched = await self.unschedulable_targets(body, parsed.spec)
        for name, why in unmatched.items():
            self.events.post(body, "NoMatchingNode", f"target {name}: {why}", warning=True)
        queue = policy.kueue_queue(parsed.spec, self.settings)
        message = f"{len(jobs)} target Jobs: {', '.join(jobs.values())}" + (
            f", suspended until Kueue admits each from LocalQueue {queue}" if queue else "")
        await self.status.write(body, lambda current: targets.launched(current, generation, jobs, bool(queue), message,
                                                                        unmatched))

    async def unschedulable_targets(self, body: dict, spec) -> dict[str, str]:
        """The targets no node takes now (placement.py); nothing when the Nodes cannot be read."""
        try:
            nodes = await self.lanes.report(self.kube.list_nodes)
        except Exception as exc:  # noqa: BLE001 - no right to list Nodes (an older chart): the Pods say it later
            log.info("cannot list Nodes to check the targets of %s/%s: %s", *_key(body), describe_error(exc))
            return {}
        deadline = spec.job.active_deadline_seconds or self.settings.default_deadline(body["metadata"]["namespace"])
        return unschedulable(spec, nodes, deadline)

    async def start_run_job(self, current: dict, generation: int, tuning: dict) -> None:
        """After a parallel study: the run's Job, which measures its best trials with the other candidates."""
        parsed = validate(current)
        try:
            name, created = await self.create_job(current, parsed, RUN_JOB)
        except PolicyViolation as exc:
            await self.refuse(current, generation, "PolicyViolation", str(exc))
            return
        finished = (tuning.get("trials") or {}).get("finished", 0)
        message = f"study done ({finished} trials); Job {name} {'created' if created else 'already exists'}"
        if created:
            self.events.post(current, "JobCreated", message)
        if policy.kueue_queue(parsed.spec, self.settings):
            waiting = f"{message}, suspended until Kueue admits it"
            await self.status.write(current, lambda fresh: decisions.waiting_for_kueue(fresh, generation, waiting, tuning=tuning))
            return
        await self.status.write(current, lambda fresh: decisions.measuring(fresh, generation, message, tuning))

    async def create_job(self, body: dict, parsed, role: str, target: str | None = None) -> tuple[str, bool]:
        manifest = build_job(body, parsed.spec, self.settings, role, target)
        if self.databases is not None and policy.namespace_database(parsed.spec, self.settings):
            namespace = body["metadata"]["namespace"]  # its own role and schema, and only their URL in its Secret
            url = await self.lanes.start(self.databases.ensure, namespace)
            await self.lanes.start(self.kube.apply_secret, namespace, SECRET_NAME, {SECRET_KEY: url})
        kopf.adopt(manifest, owner=body)
        # no read first: the name carries the generation, so an existing Job answers 409
        return manifest["metadata"]["name"], await self.lanes.start(self.kube.create_job, manifest)

    async def start_waiting(self, now: InFlight) -> None:
        """Start the queued runs that fit now, in queue order: one pass over the queue per event
        that may free a slot, where a timer per waiting run would sort the whole queue each."""
        starting = (self.queue.take_unlaunched if self.settings.kueue_local_queue else self.queue.take_startable)(now, generation_of)
        results = await asyncio.gather(*(self.launch_queued(run) for run in starting), return_exceptions=True)
        for failed in results:
            if isinstance(failed, Exception):  # not even Pending could be written; the next event looks again
                log.error("could not start a queued run: %s", failed)

    async def launch_queued(self, run: Waiting) -> None:
        """Start a queued run from the resource as it is now (the queue keeps only a stub of it)."""
        generation = generation_of(run.body)
        try:
            current = await self.lanes.report(self.kube.get_resource, run.namespace, run.name)
        except BaseException:
            self.queue.release(run.key, generation)
            raise
        if current is None or generation_of(current) != generation:
            self.queue.release(run.key, generation)  # deleted, or changed: the reconciler has the new spec
            return
        await self.guarded(current, lambda: self.launch(current, generation))

    async def guarded(self, body: dict, step: Callable[[], Awaitable[None]]) -> None:
        """Run a step of reconciliation; an error (the API server away, a refused call) is
        written to the status as Pending/RetryingAfterError, which the retry timer picks up."""
        generation, was_pending = generation_of(body), decisions.observed(body)[1] == PENDING
        try:
            with self.metrics.reconciling():
                await step()
        except Exception as exc:  # noqa: BLE001 - every failure is retried; the status says which
            message = f"{describe_error(exc)}; retrying every {self.settings.retry_interval:g}s"
            await self.status.write(body, lambda current: decisions.retrying(current, generation, message))
            if not was_pending:  # one Event per failing streak; a log line per attempt
                self.events.post(body, "RetryingAfterError", message, warning=True)
            else:
                log.warning("%s/%s: RetryingAfterError: %s", *_key(body), message)

    # --- a Job changed -------------------------------------------------------------------------

    async def job_event(self, job: dict, event_type: str | None, now: InFlight) -> None:
        """type None is the initial listing: a Job that finished while no operator ran is reported now."""
        run, labels = RunRef.of_job(job), job["metadata"].get("labels") or {}
        (namespace, owner), generation, rerun = run.key, run.generation, run.rerun
        if labels.get(ROLE_LABEL) == TUNING_JOB:
            await self.tuning.job_event(job, event_type, now)
            return
        if run.target:
            await self.target_job_event(job, event_type, run)
            return
        outcome = job_outcome(job, [])
        if event_type == "DELETED" and outcome.state not in (SUCCEEDED, FAILED):
            await self.job_deleted(namespace, owner, generation, job["metadata"]["name"], rerun)
            return
        if not outcome.state or (outcome.state == RUNNING and now.is_running((namespace, owner))):
            return  # nothing to report: the status already says Running (set when the Job was created)
        if outcome.state == SUSPENDED and not now.is_running((namespace, owner)):
            return  # waiting for Kueue, as the status already says
        if outcome.state in (SUCCEEDED, FAILED):
            outcome = job_outcome(job, await self.lanes.report(self.kube.pods_of_job, namespace, job["metadata"]["name"]))
        current = await self.lanes.report(self.kube.get_resource, namespace, owner)
        if current is None or reruns_of(current) != rerun:
            return  # deleted (the garbage collector takes the Job), or a Job of a run before a re-run
        if outcome.state == RUNNING:
            running = Transition(RUNNING, outcome.reason, outcome.message)
            await self.status.write(current, lambda fresh: decisions.job_running(fresh, generation, running, rerun))
        elif outcome.state == SUSPENDED:
            message = f"Kueue suspended Job {job['metadata']['name']} (preempted or evicted); it runs again when admitted"
            if await self.status.write(current, lambda fresh: decisions.preempted(fresh, generation, message, rerun)):
                self.events.post(current, "Preempted", message, warning=True)
        else:
            await self.finish(current, generation, outcome, rerun)

    async def finish(self, current: dict, generation: int, outcome: JobOutcome, rerun: int = 0) -> None:
        # Before the write: its watch event reaches the reconciler, which starts the next queued
        # run, possibly before this resumes, and a reservation left then would hold the slot.
        self.queue.release(_key(current), generation)
        written = await self.status.write(current, lambda fresh: decisions.finished(fresh, generation, outcome, rerun))
        if written is None:
            return  # already recorded, or superseded by a newer spec
        succeeded, result = outcome.state == SUCCEEDED, ModelOptimizationStatus.model_validate(written)
        if succeeded:
            self.metrics.record_best(*_key(current), result)
        self.metrics.runs_total.labels(("succeeded" if result.best else "no_candidate") if succeeded else "failed",
                                       current["metadata"]["namespace"], outcome.reason or "Unknown").inc()
        self.metrics.observe_job(outcome.start_time, outcome.completion_time, succeeded)
        self.events.phase(current, decisions.finish_phase(outcome), warning=not succeeded)
        if succeeded and result.promotion:
            self.record_promotion(current, result.promotion)

    async def target_job_event(self, job: dict, event_type: str | None, run: RunRef) -> None:
        """A target's Job changed: its entry in status.targets follows; the run finishes with its last target."""
        (namespace, owner), name = run.key, job["metadata"]["name"]
        outcome = job_outcome(job, [])
        if event_type == "DELETED" and outcome.state not in (SUCCEEDED, FAILED):
            outcome = JobOutcome(FAILED, "JobDeleted", f"Job {name} was deleted before the target's run finished")
        elif outcome.state in (SUCCEEDED, FAILED):
            outcome = job_outcome(job, await self.lanes.report(self.kube.pods_of_job, namespace, name))
        elif not outcome.state:
            return
        current = await self.lanes.report(self.kube.get_resource, namespace, owner)
        if current is None or reruns_of(current) != run.rerun:
            return
        if outcome.state == RUNNING:
            await self.status.write(current, lambda fresh: targets.target_moved(
                fresh, run.generation, run.rerun, run.target, Transition(RUNNING, outcome.reason, outcome.message)))
        elif outcome.state == SUSPENDED:
            message = f"Job {name} is suspended until Kueue admits it (again, if it was preempted)"
            await self.status.write(current, lambda fresh: targets.target_moved(
                fresh, run.generation, run.rerun, run.target, Transition(QUEUED, "WaitingForKueue", message)))
        else:
            await self.finish_target(current, run, outcome)

    async def target_jobs_gone(self, body: dict, run: RunRef, now: InFlight) -> None:
        """Listed after a restart, Running: a target whose Job went while no operator watched failed."""
        for entry in (body.get("status") or {}).get("targets") or []:
            target = run.for_target(entry["name"])
            if entry.get("phase") not in (SUCCEEDED, FAILED) and not now.has_job(target):
                gone = JobOutcome(FAILED, "JobDeleted", f"Job {target.job_name()} was deleted before the target's run finished")
                await self.finish_target(body, target, gone)

    async def finish_target(self, current: dict, run: RunRef, outcome: JobOutcome) -> None:
        written = await self.status.write(current, lambda fresh: targets.target_finished(
            fresh, run.generation, run.rerun, run.target, outcome))
        if written is None:
            return
        namespace, succeeded = run.namespace, outcome.state == SUCCEEDED
        entry = next(e for e in written["targets"] if e["name"] == run.target)
        result = TargetStatus.model_validate(entry)
        if succeeded:
            self.metrics.record_best(namespace, run.name, result, target=run.target)
            if result.promotion:
                self.record_promotion(current, result.promotion)
        self.metrics.observe_job(outcome.start_time, outcome.completion_time, succeeded)
        self.events.post(current, f"Target{entry['phase']}", f"target {run.target}: {entry.get('message', '')}",
                         warning=not succeeded)
        if written.get("phase") in (SUCCEEDED, FAILED):  # the last target: the run is over, its slots free
            self.queue.release(_key(current), run.generation)
            summary = next(c for c in written["conditions"] if c["type"] == "Succeeded")
            self.metrics.runs_total.labels("succeeded" if written["phase"] == SUCCEEDED else "failed", namespace,
                                           summary["reason"]).inc()
            self.events.phase(current, Transition(written["phase"], summary["reason"], summary.get("message", "")),
                              warning=written["phase"] == FAILED)

    def record_promotion(self, current: dict, promotion: PromotionStatus) -> None:
        """An Event and a count per decision: Promoted, Kept (and why), or Failed (a Warning)."""
        decision = promotion.decision
        self.metrics.promotions_total.labels(decision.value).inc()
        reason = {PromotionDecision.PROMOTED: "Promoted", PromotionDecision.KEPT: "PromotionKept"}.get(decision, "PromotionFailed")
        self.events.post(current, reason, promotion.message, warning=decision is PromotionDecision.FAILED)

    async def job_deleted(self, namespace: str, owner: str, generation: int, job: str, rerun: int = 0) -> None:
        current = await self.lanes.report(self.kube.get_resource, namespace, owner)
        if current is None:
            self.queue.release((namespace, owner), generation)
        elif reruns_of(current) == rerun:  # else a Job of a run before a re-run (Replace stops it)
            await self.job_gone(current, job, generation)

    async def job_gone(self, current: dict, job: str, generation: int | None = None) -> None:
        """The run's Job was deleted (by hand, or collected) before the run finished."""
        generation, rerun = generation or generation_of(current), reruns_of(current)
        self.queue.release(_key(current), generation)
        if await self.status.write(current, lambda fresh: decisions.job_gone(fresh, generation, job, rerun)):
            self.metrics.runs_total.labels("failed", current["metadata"]["namespace"], decisions.job_gone_phase(job).reason).inc()
            self.events.phase(current, decisions.job_gone_phase(job), warning=True)
