"""Read a run's outcome from its Job and Pods: pure functions over API objects (as dicts)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .conditions import FAILED, RUNNING, SUCCEEDED


@dataclass(frozen=True)
class JobOutcome:
    state: str  # Running / Succeeded / Failed, or "" while nothing has started
    reason: str = ""
    message: str = ""
    result: dict | None = None  # the pipeline's summary from a successful Pod
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


def _message(terminated: dict | None) -> dict:
    """The JSON the pipeline wrote to its termination log, or its text as an error."""
    if not terminated:
        return {}
    text = (terminated.get("message") or "").strip()
    try:
        document = json.loads(text) if text else {}
        return document if isinstance(document, dict) else {}
    except json.JSONDecodeError:
        return {"error": {"reason": terminated.get("reason") or "Error", "message": text[-500:]}}


def job_outcome(job: dict, pods: list[dict]) -> JobOutcome:
    status = job.get("status") or {}
    finished = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    newest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    common = {"failures": int(status.get("failed") or 0), "start_time": status.get("startTime"),
              "completion_time": status.get("completionTime")}

    if "Complete" in finished:
        for pod in newest_first:
            if pod.get("status", {}).get("phase") == "Succeeded":
                document = _message(_termination(pod))
                if "result" in document:
                    return JobOutcome(SUCCEEDED, "Completed", "", document["result"], **common)
        return JobOutcome(FAILED, "ResultMissing", "the Job completed but left no result in its termination message", **common)

    if "Failed" in finished:
        condition = finished["Failed"]
        reason, message = condition.get("reason") or "JobFailed", condition.get("message") or ""
        for pod in newest_first:
            terminated = _termination(pod)
            error = _message(terminated).get("error")
            if error:  # the pipeline said why: that is the useful reason
                return JobOutcome(FAILED, error.get("reason", reason), f"{error.get('message', '')} ({reason}: {message})".strip(),
                                  **common)
            if terminated:
                exit_text = f"exit code {terminated.get('exitCode')}, {terminated.get('reason') or 'Error'}"
                return JobOutcome(FAILED, reason, f"{message}; last Pod: {exit_text}".strip("; "), **common)
        return JobOutcome(FAILED, reason, message, **common)

    if int(status.get("active") or 0) > 0:
        return JobOutcome(RUNNING, "JobRunning", f"Job {job['metadata']['name']} is running", **common)
    return JobOutcome("", "JobPending", "", **common)
