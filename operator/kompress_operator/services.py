"""What the controller's helpers (re-optimization, the tuning phase) use of the controller, as
protocols: they are handed the controller but do not import it, so the modules form no circle."""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from .jobstate import JobOutcome
from .kube import Kube
from .lanes import ApiLanes
from .metrics import OperatorMetrics
from .settings import OperatorSettings
from .writer import EventRecorder, StatusWriter


class RunServices(Protocol):
    """The API, the writers, the metrics and the settings of the run controller."""

    settings: OperatorSettings
    kube: Kube
    lanes: ApiLanes
    metrics: OperatorMetrics
    status: StatusWriter
    events: EventRecorder


class RunSteps(RunServices, Protocol):
    """The controller's steps the tuning phase hands a run on to."""

    async def guarded(self, body: dict, step: Callable[[], Awaitable[None]]) -> None: ...

    async def start_run_job(self, current: dict, generation: int, tuning: dict) -> None: ...

    async def finish(self, current: dict, generation: int, outcome: JobOutcome, rerun: int = 0) -> None: ...

    async def job_deleted(self, namespace: str, owner: str, generation: int, job: str, rerun: int = 0) -> None: ...
