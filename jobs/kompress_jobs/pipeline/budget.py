"""spec.budget as a clock: started when the run starts, asked before each pass and by a study
before each trial. A pass not started because the budget is spent is a skipped candidate whose
reason names the field; a run whose budget is spent before any pass made a model fails, saying so."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import BudgetSpentError
from ..measurement.candidates import Candidate


@dataclass
class BudgetClock:
    duration: str | None = None  # as written (spec.budget.duration); None: no budget
    seconds: float = float("inf")
    started: float = field(default_factory=time.monotonic)
    cut: bool = False  # a pass was skipped because the budget was spent

    @classmethod
    def of(cls, spec) -> "BudgetClock":
        return cls(spec.budget.duration, spec.budget.seconds()) if spec.budget is not None else cls()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def deadline(self) -> float | None:
        """When the budget is spent (time.monotonic()); None without one."""
        return self.started + self.seconds if self.duration is not None else None

    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def spent(self) -> bool:
        return self.remaining() <= 0

    def why(self) -> str:
        return f"spec.budget.duration {self.duration} was spent ({self.elapsed():.0f} s into the run): not started"

    def skip(self) -> str:
        """Record that a pass was left out for the budget; its reason."""
        self.cut = True
        return self.why()

    def check_something_made(self, produced: list[Candidate]) -> None:
        """BudgetSpentError when the budget ran out before any pass made a model."""
        if self.cut and not any(c.model is not None for c in produced):
            raise BudgetSpentError(f"spec.budget.duration {self.duration} was spent before any pass made a candidate "
                                   f"(loading the model and data took {self.elapsed():.0f} s): give the run a longer budget, "
                                   f"or none")
