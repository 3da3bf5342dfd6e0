"""What the pipeline knows about each candidate model: where it came from and how it measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from .benchmark import Latency
from ..errors import KompressError
from ..runtimes import ModelFile, Processor


class Outcome(str, Enum):
    MEASURED = "Measured"
    FAILED = "Failed"  # the pass raised; the error is recorded
    SKIPPED = "Skipped"  # its input failed
    NOT_APPLICABLE = "NotApplicable"  # e.g. a GPU pass on a machine without one


@dataclass
class Candidate:
    name: str
    technique: str
    pass_type: str | None
    parent: str | None
    lineage: list[dict[str, Any]]
    model: ModelFile | None = None
    outcome: Outcome = Outcome.MEASURED
    error: str | None = None
    runtime: str | None = None
    device: Processor | None = None
    metric_value: float | None = None
    metric_drop: float | None = None
    fidelity: dict[str, float] = field(default_factory=dict)  # closeness to the baseline's outputs (quality.fidelity)
    details: dict[str, Any] | None = None  # what the pass that made it reports (e.g. a steered search's trials)
    energy: dict[str, Any] | None = None  # per call on a GPU (profiling.energy_per_call)
    memory: dict[str, Any] | None = None  # peak resident memory of a process running it (memory_probe.py)
    latency: dict[int, Latency] = field(default_factory=dict)
    rejected_reasons: list[str] = field(default_factory=list)
    pareto_optimal: bool = False
    rank: int | None = None
    sha256: str | None = None
    artifact_key: str | None = None
    contender: bool = False  # the model promoted by an earlier run: measured alike, never picked (promotion.py)

    @property
    def is_baseline(self) -> bool:
        return self.parent is None

    @property
    def measured(self) -> bool:
        return self.outcome is Outcome.MEASURED

    @property
    def accepted(self) -> bool:
        return self.measured and not self.is_baseline and not self.contender and not self.rejected_reasons

    def artifact_files(self) -> dict[str, Path]:
        """Store key → local file for every file of this candidate (an IR's .xml and .bin, a
        checkpoint directory), all under candidates/<name>/; empty until it has an artifact key."""
        if not self.artifact_key:
            return {}
        if self.model.path.is_dir():
            return {f"{self.artifact_key}/{p.relative_to(self.model.path).as_posix()}": p for p in self.model.files}
        return {f"candidates/{self.name}/{p.name}": p for p in self.model.files}

    @property
    def size_bytes(self) -> int | None:
        return self.model.size_bytes if self.model else None


Score = tuple[float, float, dict[str, float]]  # the metric's value, its drop from the reference, fidelity figures


def score_each(measured: list[Candidate], runners: dict, score: Callable[[Candidate], Score]) -> None:
    """Each candidate's metric from `score`; one that fails at inference is marked Failed with the
    library's first line (its runner dropped), and the others go on."""
    for c in measured:
        try:
            c.metric_value, c.metric_drop, c.fidelity = score(c)
        except Exception as exc:
            c.outcome, c.error = Outcome.FAILED, f"inference failed: {str(exc).splitlines()[0][:300]}"
            runners.pop(c.name, None)
            continue
        c.runtime, c.device = runners[c.name].runtime, runners[c.name].device
        if runners[c.name].variant:
            c.details = (c.details or {}) | {"runtimeVariant": runners[c.name].variant}


def fail_benchmarked(measured: list[Candidate], runners: dict, failures: dict[str, str]) -> list[Candidate]:
    """The candidates that failed while benchmarked (a contained runtime that crashed mid-run) marked
    Failed with their error and their runners dropped; the others, to go on with. The baseline's
    failure ends the run: nothing can be judged without it."""
    for c in measured:
        if c.name in failures:
            if c.is_baseline:
                raise KompressError(f"the baseline failed while it was benchmarked: {failures[c.name]}")
            c.outcome, c.error = Outcome.FAILED, f"benchmark failed: {failures[c.name]}"
            runners.pop(c.name, None)
    return [c for c in measured if c.name not in failures]
