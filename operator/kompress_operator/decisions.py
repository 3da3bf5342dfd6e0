"""Every status transition of a run, as pure functions: the resource as last read (and what was
observed of its Job) in, the status fields to write out, or None when nothing is to be written.

The status writer calls them again on a fresh read when its versioned write meets a conflict, so
each must decide from the resource it is given, never from what the caller saw earlier: two
writers race on a run's status (its start, and its Job's watch), and a late "Running" must not
overwrite a result already recorded.
"""

from __future__ import annotations

from typing import Any

from .conditions import FAILED, PENDING, QUEUED, RUNNING, SUCCEEDED, TUNING, Transition, now, set_condition, status_patch
from .run_ref import reruns_of
from .jobstate import JobOutcome


def generation_of(resource: dict) -> int:
    return int(resource["metadata"].get("generation") or 1)


def observed(resource: dict) -> tuple[int | None, str | None]:
    """(status.observedGeneration, status.phase)."""
    status = resource.get("status") or {}
    return status.get("observedGeneration"), status.get("phase")


def current_run(resource: dict, generation: int, rerun: int | None = None) -> dict | None:
    """The resource's status when `generation` (and re-run, when given) is still its run and not
    yet finished, else None."""
    if generation_of(resource) != generation:
        return None  # superseded by a newer spec
    if rerun is not None and reruns_of(resource) != rerun:
        return None  # a Job of a run before a scheduled or triggered one
    if observed(resource) in ((generation, SUCCEEDED), (generation, FAILED)):
        return None  # already recorded
    return resource.get("status") or {}


def refused(resource: dict, generation: int, reason: str, message: str) -> dict | None:
    """Failed for this generation before any Job (InvalidSpec, PolicyViolation), unless the spec moved on."""
    if generation_of(resource) != generation:
        return None
    return status_patch(Transition(FAILED, reason, message), resource.get("status") or {}, generation)


def invalid_spec(resource: dict, generation: int, message: str) -> dict | None:
    return refused(resource, generation, "InvalidSpec", message)


def unless_started(resource: dict, generation: int, phase: Transition, rerun: int | None = None, **fields: Any) -> dict | None:
    """The status for `phase` (Tuning, Running, or Pending after an error), unless the run is
    already Running or finished for this generation, or its spec moved on. From Tuning only
    forward: to Running (the run's Job) or Pending (its start failed)."""
    status = current_run(resource, generation, rerun)
    if status is None or observed(resource) == (generation, RUNNING):
        return None
    if observed(resource) == (generation, TUNING) and phase.name not in (RUNNING, PENDING):
        return None
    return status_patch(phase, status, generation, **fields)


def queued(resource: dict, generation: int, message: str) -> dict | None:
    """Queued for this generation, unless it already is (the position message is not refreshed:
    that would be a write per queued run each time the queue moves) or the run went on."""
    if observed(resource) == (generation, QUEUED):
        return None
    return unless_started(resource, generation, Transition(QUEUED, "ConcurrencyLimit", message))


def waiting_for_kueue(resource: dict, generation: int, message: str, **fields: Any) -> dict | None:
    """Queued: the run's Job exists, suspended, until Kueue admits it; also after a parallel study
    (its run's Job waits in turn). Never once that Job runs or ran."""
    status = current_run(resource, generation)
    if status is None or observed(resource) == (generation, RUNNING):
        return None
    return status_patch(Transition(QUEUED, "WaitingForKueue", message), status, generation, **fields)


def job_running(resource: dict, generation: int, phase: Transition, rerun: int = 0) -> dict | None:
    """Running, as the run's Job says; from Queued (Kueue admitted the Job) with the time it started."""
    fields = {"startTime": now(), "completionTime": None} if observed(resource) == (generation, QUEUED) else {}
    return unless_started(resource, generation, phase, rerun=rerun, **fields)


def preempted(resource: dict, generation: int, message: str, rerun: int = 0, phase: str = RUNNING) -> dict | None:
    """Queued again: Kueue suspended the Job at work (preempted, or evicted) and its Pods went; the
    run goes on when Kueue admits it again. Only from `phase` of this run: Running for the run's
    Job, Tuning for a parallel study's (whose study resumes where it was)."""
    status = current_run(resource, generation, rerun)
    if status is None or observed(resource) != (generation, phase):
        return None
    return status_patch(Transition(QUEUED, "Preempted", message), status, generation)


def started(resource: dict, generation: int, message: str) -> dict | None:
    return unless_started(resource, generation, Transition(RUNNING, "JobCreated", message), startTime=now(), completionTime=None)


def tuning_started(resource: dict, generation: int, message: str, tuning: dict) -> dict | None:
    """Tuning: a parallel study's worker Pods run (the run's Job comes after them)."""
    return unless_started(resource, generation, Transition(TUNING, "TuningStarted", message),
                          startTime=now(), completionTime=None, tuning=tuning)


def tuning_progress(resource: dict, generation: int, tuning: dict, total: int) -> dict | None:
    """The worker and trial counts of a Tuning run (of `total` trials), when they changed."""
    status = resource.get("status") or {}
    if generation_of(resource) != generation or observed(resource) != (generation, TUNING) or status.get("tuning") == tuning:
        return None
    workers, trials = tuning["workers"], tuning.get("trials")
    message = f"{workers['active']} worker Pod(s) running, {workers['succeeded']} done, {workers['failed']} lost"
    message += (f"; trials: {trials['finished']} of {total} finished, {trials['failed']} failed" if trials
                else f"; {total} trials (counts come as workers finish)")
    return status_patch(Transition(TUNING, "TrialsRunning", message), status, generation, tuning=tuning)


def measuring(resource: dict, generation: int, message: str, tuning: dict) -> dict | None:
    """Running after Tuning: the run's Job measures the study's best trials with the other candidates."""
    return unless_started(resource, generation, Transition(RUNNING, "TuningFinished", message), tuning=tuning)


def retrying(resource: dict, generation: int, message: str) -> dict | None:
    # Versioned too: the Job may have been created, and even finished, before the failure.
    return unless_started(resource, generation, Transition(PENDING, "RetryingAfterError", message))


def finish_phase(outcome: JobOutcome) -> Transition:
    if outcome.state != SUCCEEDED:
        return Transition(FAILED, outcome.reason or "JobFailed", outcome.message or "the Job failed")
    best = outcome.result.best
    if best is None:
        return Transition(SUCCEEDED, "NoCandidateMetGoals", "no candidate met the goals; keep the baseline")
    noisy = [c.name for c in (outcome.result.baseline, best) if c is not None and c.noisy]
    doubt = f"; uncertain: the latency of {' and '.join(noisy)} stayed noisy (see report.md)" if noisy else ""
    return Transition(SUCCEEDED, "Completed", f"best candidate {best.name}: {best.speedup}x faster, "
                                         f"{best.size_ratio}x smaller than the baseline{doubt}")


def finished(resource: dict, generation: int, outcome: JobOutcome, rerun: int = 0) -> dict | None:
    """Succeeded with the results, or Failed with the Job's reason; once per run."""
    status = current_run(resource, generation, rerun)
    if status is None:
        return None
    fields: dict[str, Any] = {"completionTime": outcome.completion_time or now()}
    if outcome.start_time:
        fields["startTime"] = outcome.start_time
    if outcome.state == SUCCEEDED:
        fields |= outcome.result.status_fields()
    return status_patch(finish_phase(outcome), status, generation, **fields)


def job_gone_phase(job: str) -> Transition:
    return Transition(FAILED, "JobDeleted", f"Job {job} was deleted before the run finished; change the spec to run it again")


def job_gone(resource: dict, generation: int, job: str, rerun: int = 0) -> dict | None:
    """Failed/JobDeleted when the run of this generation had not finished: its slot frees."""
    status = current_run(resource, generation, rerun)
    if status is None:
        return None
    return status_patch(job_gone_phase(job), status, generation, completionTime=now())


def rerun(resource: dict, generation: int, seen_runs: int, phase: Transition, replace: bool, fields: dict) -> dict | None:
    """Queued again for the same spec (a schedule, or the model or job image changed): the
    re-run count names the next Job. Only from a finished run, unless the policy is Replace;
    and only once per decision (another replica, or a later tick, sees the count moved on)."""
    status = resource.get("status") or {}
    if generation_of(resource) != generation or observed(resource)[0] != generation or reruns_of(resource) != seen_runs:
        return None
    if observed(resource)[1] not in (SUCCEEDED, FAILED) and not replace:
        return None
    record = dict(status.get("reoptimization") or {}) | fields | {"runs": seen_runs + 1, "reason": phase.reason,
                                                                  "message": phase.message}
    return status_patch(phase, status, generation, reoptimization=record, startTime=None, completionTime=None)


def watched(resource: dict, generation: int, fields: dict) -> dict | None:
    """Record what the re-run triggers compare against (or a skipped schedule), when it changed."""
    status = resource.get("status") or {}
    record = dict(status.get("reoptimization") or {})
    if generation_of(resource) != generation or all(record.get(k) == v for k, v in fields.items()):
        return None
    return {"reoptimization": record | fields}


def rerun_refused(resource: dict, generation: int, message: str) -> dict | None:
    """A due re-run refused because its author's access is gone: the last run's result stays, and
    Stalled says that nothing will run again until a user with access changes the spec."""
    status = resource.get("status") or {}
    if generation_of(resource) != generation:
        return None
    record = dict(status.get("reoptimization") or {}) | {"reason": "RerunRefused", "message": message}
    conditions = set_condition(list(status.get("conditions") or []), "Stalled", "True", "RerunRefused", message, generation, now())
    if record == status.get("reoptimization") and conditions == status.get("conditions"):
        return None
    return {"reoptimization": record, "conditions": conditions}
