"""The tuning phase of a run whose spec.tuning.parallelism is above 1.

The run starts with a tuning Job (jobspec.build_job, role tuning: `parallelism` worker Pods, all
on one study in a shared database) and the status says Tuning, with the workers read from that
Job and the trial counts each worker reports as it leaves. When the Job completes, the run's own
Job starts (the run controller's `start_run_job`): it reads the study and measures the best
trials with every other candidate on one node, so latencies from different nodes are never
compared. A worker Pod that reports an error of its own (an unreachable database) fails the run
at once and stops the tuning Job, since every other Pod would meet it too; a Pod that dies
without one only costs its trial, which is retried.
"""

from __future__ import annotations

from kompress_jobs.spec.status import TuningStatus
from kompress_jobs.spec.tuning_spec import Tuning

from . import decisions
from .conditions import FAILED, QUEUED, RUNNING, TUNING
from .decisions import generation_of
from .jobstate import JobOutcome, job_outcome, tuning_counts, worker_error
from .queue import InFlight
from .run_ref import RUN_JOB, TUNING_JOB, RunRef, reruns_of
from .services import RunSteps


def tuning_of(resource: dict) -> dict:
    """spec.tuning as written, with the two fields the operator reads defaulted."""
    written = (resource.get("spec") or {}).get("tuning") or {}
    return {field: Tuning.model_fields[field].default for field in ("trials", "parallelism")} | written


def slots_of(resource: dict) -> int:
    """The Job slots a run holds: a worker Pod each while Tuning, a Job per hardware target while
    Running, and while it waits the most it will hold (its study's workers, or its targets)."""
    targets = len((resource.get("spec") or {}).get("targets") or ()) or 1
    phase = (resource.get("status") or {}).get("phase")
    parallelism = int(tuning_of(resource)["parallelism"])
    if phase == TUNING:
        return parallelism
    if phase == RUNNING:
        return targets
    return max(targets, parallelism)


class TuningPhase:
    def __init__(self, runs: RunSteps):
        self.runs = runs

    async def started(self, body: dict, generation: int, message: str, created: bool) -> None:
        tuning = tuning_of(body)
        message += f": {tuning['parallelism']} worker Pods on one study of {tuning['trials']} trials"
        if created:
            self.runs.events.post(body, "TuningStarted", message)
        status = TuningStatus(parallelism=tuning["parallelism"]).to_wire()
        if self.runs.settings.kueue_local_queue:  # its Job waits, suspended, for Kueue to admit it
            waiting = f"{message}, suspended until Kueue admits it"
            await self.runs.status.write(body, lambda current: decisions.waiting_for_kueue(current, generation, waiting, tuning=status))
            return
        await self.runs.status.write(body, lambda current: decisions.tuning_started(current, generation, message, status))
        await self._catch_up(body, generation)

    async def _catch_up(self, body: dict, generation: int) -> None:
        """The tuning Job's first events may come before the status says Tuning, and are dropped
        then (seen: a study whose status showed no worker while all three ran): its workers, read
        once now that it does. Level-triggered, as a controller reads what is, not what it was told."""
        runs, meta = self.runs, body["metadata"]
        name = RunRef.of_resource(body).job_name(TUNING_JOB)
        jobs = await runs.lanes.report(runs.kube.jobs_of, meta["namespace"], meta["name"])
        job = next((j for j in jobs if j["metadata"]["name"] == name), None)
        current = await runs.lanes.report(runs.kube.get_resource, meta["namespace"], meta["name"])
        if job is not None and current is not None and tuning_counts(job)[0].active:
            await self._progress(current, generation, job, [])

    async def job_event(self, job: dict, event_type: str | None, now: InFlight) -> None:
        runs, meta = self.runs, job["metadata"]
        run = RunRef.of_job(job)
        (namespace, owner), generation, rerun = run.key, run.generation, run.rerun
        done = {c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
        if event_type == "DELETED":
            if not done & {"Complete", "Failed"}:
                await runs.job_deleted(namespace, owner, generation, meta["name"], rerun)
            return
        if "Complete" in done and now.has_job(run, RUN_JOB):
            return  # already handed over to the run's Job
        pods = await runs.lanes.report(runs.kube.pods_of_job, namespace, meta["name"]) if done or _left(job) else []
        current = await runs.lanes.report(runs.kube.get_resource, namespace, owner)
        if current is None or generation_of(current) != generation or reruns_of(current) != rerun:
            return  # deleted (the garbage collector takes the Job), or superseded (advance or a re-run deletes it)
        error = worker_error(pods) if "Failed" not in done else None
        if "Failed" in done or error is not None:
            outcome = job_outcome(job, pods) if error is None else JobOutcome(FAILED, error.reason, error.message)
            await runs.finish(current, generation, outcome, rerun)  # first: the Job's deletion must not read as JobDeleted
            if error is not None:  # the other workers would fail the same way: stop them
                await runs.lanes.report(runs.kube.delete_job, namespace, meta["name"])
            return
        if (job.get("spec") or {}).get("suspend") and not done:  # Kueue's: not admitted yet, or preempted
            message = f"Kueue suspended Job {meta['name']} (preempted or evicted); the study goes on where it was once admitted"
            if await runs.status.write(current, lambda fresh: decisions.preempted(fresh, generation, message, rerun, phase=TUNING)):
                runs.events.post(current, "Preempted", message, warning=True)
            return
        if "Complete" in done:
            tuning = self._tuning(current, job, pods)
            await runs.guarded(current, lambda: runs.start_run_job(current, generation, tuning))
            return
        await self._progress(current, generation, job, pods)

    @staticmethod
    def _tuning(current: dict, job: dict, pods: list[dict]) -> dict:
        workers, trials = tuning_counts(job, pods)
        return TuningStatus(parallelism=tuning_of(current)["parallelism"], workers=workers, trials=trials).to_wire()

    async def _progress(self, current: dict, generation: int, job: dict, pods: list[dict]) -> None:
        """The workers and trials of a study that runs, into the status when they changed."""
        tuning, name = self._tuning(current, job, pods), job["metadata"]["name"]
        active = tuning["workers"]["active"]
        if decisions.observed(current) == (generation, QUEUED) and active:  # Kueue admitted the study's Job
            admitted = f"Job {name} admitted: {active} worker Pod(s) running"
            await self.runs.status.write(current, lambda fresh: decisions.tuning_started(fresh, generation, admitted, tuning))
            return
        total = tuning_of(current)["trials"]
        await self.runs.status.write(current, lambda fresh: decisions.tuning_progress(fresh, generation, tuning, total))


def _left(job: dict) -> bool:
    """A worker Pod finished (it reported the study's counts) or failed (it may have said why)."""
    status = job.get("status") or {}
    return int(status.get("failed") or 0) + int(status.get("succeeded") or 0) > 0
