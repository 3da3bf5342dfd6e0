"""Status conditions in the Kubernetes convention, as pure functions.

Types written by kompress:
- Accepted:    the spec is valid (False with reason InvalidSpec names the field).
- Running:     a Job for the current generation is executing (phase Tuning: a parallel study's
               worker Pods; phase Running: the run's Job).
- Succeeded:   the bounded run's summary: Unknown while pending, True or False at the end.
- Reconciling / Stalled: what kstatus readers (Argo CD, Flux health checks) look at.
`lastTransitionTime` changes only when a condition's status flips.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from kompress_jobs.spec.status import Phase

# The phase names, as plain strings to compare with what the status holds: declared once, in the schema.
PENDING, QUEUED, TUNING, RUNNING, SUCCEEDED, FAILED = (phase.value for phase in Phase)
EXECUTING = (TUNING, RUNNING)  # a Job of the current generation is at work (Running condition True)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Transition:
    """Where a run stands (a phase's name), with the reason and message to show for it."""

    name: str
    reason: str
    message: str = ""


def set_condition(conditions: list[dict], type_: str, status: str, reason: str, message: str,
                  generation: int | None, timestamp: str) -> list[dict]:
    """A new list with one condition set; others kept in order."""
    previous = next((c for c in conditions if c.get("type") == type_), None)
    transition = previous["lastTransitionTime"] if previous and previous.get("status") == status else timestamp
    updated = {"type": type_, "status": status, "reason": condition_reason(reason), "message": message[:1024],
               "lastTransitionTime": transition, "observedGeneration": generation}
    if not message:
        # Left out, not "": a status merge patch with "" here reached the API server (1.20) as
        # null, which the status schema refuses (tests/cluster/test_status.py).
        del updated["message"]
    if previous is None:
        return [*conditions, updated]
    return [updated if c.get("type") == type_ else c for c in conditions]


def condition_reason(reason: str) -> str:
    """A reason the API server accepts (the CRD keeps metav1.Condition's rule): a Job's or a
    pipeline's reason is written as given when it is CamelCase, cleaned up otherwise."""
    cleaned = re.sub(r"[^A-Za-z0-9_,:]", "", reason).lstrip("0123456789_,:").rstrip(",:")
    return cleaned[:1024] or "Unknown"


def conditions_for(phase: Transition, conditions: list[dict], generation: int | None, timestamp: str | None = None) -> list[dict]:
    """The full condition list for a phase (written as a whole: merge patches replace lists)."""
    ts = timestamp or now()
    finished = phase.name in (SUCCEEDED, FAILED)
    invalid = phase.reason == "InvalidSpec"
    out = set_condition(conditions, "Accepted", "False" if invalid else "True",
                        "InvalidSpec" if invalid else "SpecValid", phase.message if invalid else "", generation, ts)
    executing = phase.name in EXECUTING
    out = set_condition(out, "Running", "True" if executing else "False", phase.reason,
                        phase.message if executing else "", generation, ts)
    succeeded = {SUCCEEDED: "True", FAILED: "False"}.get(phase.name, "Unknown")
    out = set_condition(out, "Succeeded", succeeded, phase.reason, phase.message, generation, ts)
    out = set_condition(out, "Reconciling", "False" if finished else "True", phase.reason,
                        "" if finished else phase.message, generation, ts)
    return set_condition(out, "Stalled", "True" if phase.name == FAILED else "False", phase.reason,
                         phase.message if phase.name == FAILED else "", generation, ts)


def status_patch(phase: Transition, current_status: dict, generation: int | None, **fields) -> dict:
    """The status fields to merge-patch for a phase; extra fields (results, times) pass through."""
    return {
        "phase": phase.name,
        "observedGeneration": generation,
        "conditions": conditions_for(phase, list(current_status.get("conditions") or []), generation),
        **fields,
    }
