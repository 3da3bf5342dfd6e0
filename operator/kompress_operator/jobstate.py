"""Read a run's outcome from its Job and Pods: pure functions over API objects (as dicts)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kompress_jobs.spec.contract import JobFailure, JobMessage, RunSummary, operator_mismatch
from kompress_jobs.errors import VersionMismatchError
from kompress_jobs.spec.status import TrialCounts, WorkerCounts
from pydantic import ValidationError

from .conditions import FAILED, RUNNING, SUCCEEDED


SUSPENDED = "Suspended"  # a Job's own state: no Pods until whoever suspended it (Kueue) resumes it


@dataclass(frozen=True)
class JobOutcome:
    state: str  # Running / Succeeded / Failed / Suspended, or "" while nothing has started
    reason: str = ""
    message: str = ""
    result: RunSummary | None = None  # the pipeline's summary from a successful Pod
    failures: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    details: dict = field(default_factory=dict)


def _termination(pod: dict) -> dict | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return None


def _message(terminated: dict | None) -> JobMessage | None:
    """The JobMessage the pipeline wrote to its termination log; its text (the log's tail, with
    FallbackToLogsOnError) as an error when it is not one; None when there is nothing."""
    text = ((terminated or {}).get("message") or "").strip()
    if not text:
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        return JobMessage.failure(terminated.get("reason") or "Error", text[-500:])
    mismatch = operator_mismatch(document)
    if mismatch:
        return JobMessage.failure(VersionMismatchError.reason, mismatch)
    try:
        return JobMessage.model_validate(document)
    except ValidationError as exc:
        return JobMessage.failure("ResultUnreadable", f"the Job's message does not follow the contract: {exc}"[:500])


def job_outcome(job: dict, pods: list[dict]) -> JobOutcome:
    status = job.get("status") or {}
    finished = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    newest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    common = {"failures": int(status.get("failed") or 0), "start_time": status.get("startTime"),
              "completion_time": status.get("completionTime")}

    if "Complete" in finished:
        for pod in newest_first:
            if pod.get("status", {}).get("phase") == "Succeeded":
                message = _message(_termination(pod))
                if message is not None and message.result is not None:
                    return JobOutcome(SUCCEEDED, "Completed", "", message.result, **common)
                if message is not None:  # a message the operator cannot read
                    return JobOutcome(FAILED, message.error.reason, message.error.message, **common)
        return JobOutcome(FAILED, "ResultMissing", "the Job completed but left no result in its termination message", **common)

    if "Failed" in finished:
        condition = finished["Failed"]
        reason, message = condition.get("reason") or "JobFailed", condition.get("message") or ""
        for pod in newest_first:
            terminated = _termination(pod)
            said = _message(terminated)
            if said is not None and said.error is not None:  # the pipeline said why: that is the useful reason
                return JobOutcome(FAILED, said.error.reason, f"{said.error.message} ({reason}: {message})".strip(), **common)
            if terminated:
                exit_text = f"exit code {terminated.get('exitCode')}, {terminated.get('reason') or 'Error'}"
                return JobOutcome(FAILED, reason, f"{message}; last Pod: {exit_text}".strip("; "), **common)
        return JobOutcome(FAILED, reason, message, **common)

    if (job.get("spec") or {}).get("suspend"):  # Kueue's: not admitted yet, or preempted (its Pods go)
        return JobOutcome(SUSPENDED, "Suspended", f"Job {job['metadata']['name']} is suspended until Kueue admits it", **common)
    if int(status.get("active") or 0) > 0:
        return JobOutcome(RUNNING, "JobRunning", f"Job {job['metadata']['name']} is running", **common)
    return JobOutcome("", "JobPending", "", **common)


# --- a parallel study's tuning Job: worker Pods ---------------------------------------------


def tuning_counts(job: dict, pods: list[dict] = ()) -> tuple[WorkerCounts, TrialCounts | None]:
    """The workers, live from the Job's status; the trials as the last worker to leave saw the
    study (None before any left: the operator does not read the study's database)."""
    status = job.get("status") or {}
    workers = WorkerCounts(active=int(status.get("active") or 0), succeeded=int(status.get("succeeded") or 0),
                           failed=int(status.get("failed") or 0))
    reports = [m.worker for m in (_message(_termination(pod)) for pod in pods) if m is not None and m.worker is not None]
    if not reports:
        return workers, None
    latest = max(reports, key=lambda r: (r.counts.finished, r.counts.failed))
    return workers, latest.counts


def worker_error(pods: list[dict]) -> JobFailure | None:
    """The error a worker Pod reported itself (an unreachable or unsupported study database, a spec
    its image cannot read): every other Pod would meet it too, so the run fails now. A Pod killed
    without a message (its node gone) is not one: its trial is retried."""
    oldest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in oldest_first:
        terminated = _termination(pod)
        if not terminated or not (terminated.get("message") or "").lstrip().startswith("{"):
            continue
        said = _message(terminated)
        if said is not None and said.error is not None:
            return said.error
    return None
