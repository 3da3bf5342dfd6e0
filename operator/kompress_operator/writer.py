"""The one way the operator writes a run's status, and the Events that go with its transitions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from kompress_jobs.spec.status import ModelOptimizationStatus

from .conditions import Transition
from .kube import Kube
from .lanes import ApiLanes

STATUS_WRITE_ATTEMPTS = 5
log = logging.getLogger(__name__)


def status_merge_patch(fields: dict) -> dict:
    """The fields as the status model holds them, the model the CRD's status schema is generated
    from: a field or value outside it fails here, in the operator, not as a field the API server
    silently prunes. A null stays a null: in a merge patch it removes the field."""
    typed = ModelOptimizationStatus.model_validate(fields)
    return typed.model_dump(mode="json", by_alias=True, exclude_unset=True)


def read_status(body: dict) -> ModelOptimizationStatus | None:
    """A resource's status as the typed model, or None (logged) when what is stored does not parse:
    metrics and Events are derived from it, and must not stop the controller over one resource."""
    try:
        return ModelOptimizationStatus.model_validate(body.get("status") or {})
    except ValueError as exc:
        meta = body["metadata"]
        log.warning("%s/%s: status does not match the status model: %s", meta.get("namespace"), meta.get("name"), exc)
        return None


class StatusWriter:
    def __init__(self, kube: Kube, lanes: ApiLanes):
        self.kube, self.lanes = kube, lanes

    async def write(self, current: dict, decide: Callable[[dict], dict | None]) -> dict | None:
        """Write the status fields decide(current) returns (None: nothing to write), only over
        the resource version they were decided on; a conflict is decided again on a fresh read
        (see decisions.py for why). Returns what was written."""
        namespace, name = current["metadata"]["namespace"], current["metadata"]["name"]
        for _ in range(STATUS_WRITE_ATTEMPTS):
            fields = decide(current)
            if fields is None:
                return None
            fields = status_merge_patch(fields)
            if await self.lanes.report(self.kube.patch_status, namespace, name, fields, current["metadata"]["resourceVersion"]):
                return fields
            current = await self.lanes.report(self.kube.get_resource, namespace, name)
            if current is None:
                return None  # deleted meanwhile
        raise RuntimeError(f"the status of {namespace}/{name} kept changing while it was being written")


@dataclass(frozen=True)
class EventRecorder:
    kube: Kube
    lanes: ApiLanes

    def post(self, obj: dict, reason: str, message: str, warning: bool = False) -> None:
        """Log a transition and post it as an Event, without waiting for the post."""
        meta = obj["metadata"]
        log.log(logging.WARNING if warning else logging.INFO, "%s/%s: %s: %s", meta["namespace"], meta["name"], reason, message)
        self.lanes.fire(self.kube.event, dict(obj), "Warning" if warning else "Normal", reason, message)

    def phase(self, obj: dict, phase: Transition, warning: bool = False) -> None:
        self.post(obj, phase.reason, phase.message, warning)
