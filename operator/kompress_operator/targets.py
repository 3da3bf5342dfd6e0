"""A run with hardware targets (spec.targets): one Job per target, and status.targets[] that says
where each stands, as pure functions in the manner of decisions.py (the resource in, the status
fields to write out, or None).

The run as a whole is Running while any target's Job is at work, and finishes once every target
has: Succeeded when each did, else Failed naming the targets that failed (the others' results
stay in their entries). `targetsDone` ("1/2") is the printer column Targets.
"""

from __future__ import annotations

from typing import Any

from .conditions import FAILED, QUEUED, RUNNING, SUCCEEDED, Transition, now, status_patch
from .decisions import current_run, finish_phase
from .jobstate import JobOutcome

DONE = (SUCCEEDED, FAILED)


def target_names(resource: dict) -> list[str]:
    """The names of spec.targets, in order; empty for a resource without targets."""
    return [t["name"] for t in (resource.get("spec") or {}).get("targets") or []]


def launched(resource: dict, generation: int, jobs: dict[str, str], waiting: bool, message: str,
             unschedulable: dict[str, str] | None = None) -> dict | None:
    """Every target's Job was created: each target Running (Queued while Kueue has not admitted
    it), the run Running (Queued/WaitingForKueue); a target no node takes now says so."""
    status = current_run(resource, generation)
    if status is None or (status.get("phase") == RUNNING and status.get("observedGeneration") == generation):
        return None
    phase = QUEUED if waiting else RUNNING
    entries = [{"name": name, "phase": phase, "reason": "WaitingForKueue" if waiting else "JobCreated",
                "message": f"Job {job} created", "job": job,
                **({"unschedulable": (unschedulable or {})[name]} if name in (unschedulable or {}) else {})}
               for name, job in jobs.items()]
    top = Transition(QUEUED, "WaitingForKueue", message) if waiting else Transition(RUNNING, "JobCreated", message)
    times = {} if waiting else {"startTime": now(), "completionTime": None}
    return status_patch(top, status, generation, targets=entries, targetsDone=f"0/{len(entries)}", **times)


def target_moved(resource: dict, generation: int, rerun: int, target: str, phase: Transition) -> dict | None:
    """A target's Job runs (Kueue admitted it), or was suspended again (preempted): its entry
    follows, and the run is Running while any target's Job runs."""
    status = current_run(resource, generation, rerun)
    entries = list((status or {}).get("targets") or [])
    entry = next((e for e in entries if e["name"] == target), None)
    if status is None or entry is None or entry.get("phase") in DONE or entry.get("phase") == phase.name:
        return None
    moved = entry | {"phase": phase.name, "reason": phase.reason, "message": phase.message}
    if phase.name == RUNNING and entry.get("phase") == QUEUED:
        moved["startTime"] = now()
    entries = [moved if e["name"] == target else e for e in entries]
    return _summarize(status, generation, entries)


def target_finished(resource: dict, generation: int, rerun: int, target: str, outcome: JobOutcome) -> dict | None:
    """A target's Job finished (or went, as a failed outcome): its entry gets the result; once
    every target is done, the run finishes."""
    status = current_run(resource, generation, rerun)
    entries = list((status or {}).get("targets") or [])
    entry = next((e for e in entries if e["name"] == target), None)
    if status is None or entry is None or entry.get("phase") in DONE:
        return None
    phase = finish_phase(outcome)
    done: dict[str, Any] = entry | {"phase": phase.name, "reason": phase.reason, "message": phase.message,
                                    "completionTime": outcome.completion_time or now()}
    if outcome.start_time:
        done["startTime"] = outcome.start_time
    if outcome.state == SUCCEEDED:
        fields = outcome.result.status_fields()
        done |= {k: v for k, v in fields.items() if k in _RESULT_FIELDS and v is not None}
        done["candidates"] = done.get("candidates", [])[:8]
    entries = [done if e["name"] == target else e for e in entries]
    return _summarize(status, generation, entries)


_RESULT_FIELDS = ("baseline", "best", "candidates", "artifacts", "runId", "promotion", "machine", "plan")


def _summarize(status: dict, generation: int, entries: list[dict]) -> dict:
    """The run's own phase from its targets'."""
    finished = [e for e in entries if e.get("phase") in DONE]
    counted = f"{len(finished)}/{len(entries)}"
    if len(finished) < len(entries):
        running = [e["name"] for e in entries if e.get("phase") == RUNNING]
        if not running and status.get("phase") == QUEUED:  # nothing admitted yet
            return {"targets": entries, "targetsDone": counted}
        message = f"{counted} targets done" + (f"; running: {', '.join(running)}" if running else "")
        started = {"startTime": now(), "completionTime": None} if status.get("phase") == QUEUED else {}  # Kueue admitted one
        return status_patch(Transition(RUNNING, "TargetsRunning", message), status, generation,
                            targets=entries, targetsDone=counted, **started)
    failed = [e for e in entries if e["phase"] == FAILED]
    if failed:
        message = "; ".join(f"{e['name']}: {e.get('reason')}: {e.get('message', '')}" for e in failed)
        phase = Transition(FAILED, "TargetsFailed", f"{len(failed)} of {len(entries)} targets failed: {message}")
    else:
        picks = "; ".join(f"{e['name']}: " + (f"{e['best']['name']} {e['best'].get('speedup')}x faster"
                                              if e.get("best") else "no candidate met the goals") for e in entries)
        phase = Transition(SUCCEEDED, "Completed", f"{len(entries)} targets done: {picks}")
    return status_patch(phase, status, generation, targets=entries, targetsDone=counted, completionTime=now())
