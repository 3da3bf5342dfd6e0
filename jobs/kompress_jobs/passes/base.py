"""The interface every optimization pass implements, and the registry that maps spec types to passes.

A pass turns one model file into another. Passes that *transform* the network (export, pruning,
distillation, ...) move the head of the chain, so the next pass works on their output; passes that
make a *variant* for a runtime (quantization, FP16, TensorRT, ...) branch off the head. Every pass
output is a candidate that the benchmark measures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

from ..errors import PassError
from ..spec.goals import Benchmark, Goals
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from ..spec.tasks import Task
from .settings import PassSettings, pass_type_of

if TYPE_CHECKING:  # the operator imports passes to plan them, without numpy or the runtimes
    from ..data import Dataset, Inputs
    from ..storage.store import ArtifactStore


@dataclass(frozen=True)
class PassContext:
    output_dir: Path  # an empty folder for this pass's files
    dataset: Dataset
    log: Callable[[str], None]
    task: Task = field(default_factory=Task)
    # Resolves a URI named in a pass's spec (e.g. a student model) to a local file, as the
    # pipeline does for the model and data (relative to the spec file, or fetched from S3).
    fetch: Callable[[str], Path] = Path
    # Called with (epoch, module) after each training epoch; a tuning study uses it to stop weak trials.
    on_epoch: Callable[[int, Any], None] | None = None
    goals: Goals = field(default_factory=Goals)  # a pass steered by the goals (AutoQuantize) reads them
    benchmark: Benchmark = field(default_factory=Benchmark)
    # The model as given: what the goals' drops are measured against (a pass deep in a chain steers by it).
    baseline: ModelFile | None = None
    # What passes keep between runs of this resource (TVM's tuning records), in its own store folder
    # (storage/layout.py `kept`); None where nothing is kept (a tuning trial, a test).
    kept: ArtifactStore | None = None
    # When spec.budget is spent (time.monotonic()); None: no budget. A pass whose own search could
    # outlast it (TVM's tuning) sizes that search to it.
    deadline: float | None = None

    @property
    def threads(self) -> int:
        return self.benchmark.threads

    def seconds_left(self) -> float:
        """Of spec.budget (infinite without one)."""
        import time

        return float("inf") if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """What the benchmark will run (engines are built for them)."""
        return tuple(self.benchmark.batch_sizes)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model's inputs in the order it takes them (the data is bound to them)."""
        return self.dataset.input_names

    @property
    def example_inputs(self) -> Inputs:
        """A small real batch (two rows, so exporters do not specialise on batch 1)."""
        from ..data import rows

        return rows(self.dataset.evaluation.inputs, 0, 2)


class OptimizationPass(ABC):
    type: ClassVar[str]  # set by @register from the settings class
    settings: ClassVar[type[PassSettings]]  # set by @register: the schema's `passes` union is made of these
    technique: ClassVar[str]
    # Most passes make an ONNX variant for a runtime; a pass that differs says so.
    accepts: ClassVar[frozenset[ModelFormat]] = frozenset({ModelFormat.ONNX})
    output_format: ClassVar[ModelFormat] = ModelFormat.ONNX
    moves_head: ClassVar[bool] = False
    generative: ClassVar[bool] = False  # works on causal language models (task LanguageModeling) only

    def __init__(self, spec: Any):
        self.spec = spec
        self.details: dict[str, Any] | None = None  # set by run() for the report, when the pass has more to say

    def output_format_for(self, source: ModelFormat) -> ModelFormat:
        """The format of what this pass makes from a `source` model (the chain's planner asks)."""
        return self.output_format

    def check(self, spec: Any) -> str | None:
        """What is wrong with this pass in the whole resource's spec (checked by `kompress validate`), or None."""
        return None

    def not_applicable_reason(self) -> str | None:
        """Why this pass cannot run here (e.g. no GPU), or None when it can."""
        return None

    @property
    def parameters(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.to_wire().items() if k not in ("type", "name", "input")}

    @classmethod
    def report_section(cls, name: str, details: dict[str, Any]) -> list[str]:
        """report.md lines for candidate `name`'s details (what run() set in self.details); none by default."""
        return []

    @abstractmethod
    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        """Write the optimized model under ctx.output_dir and describe it."""


PASSES: dict[str, type[OptimizationPass]] = {}


def register(settings: type[PassSettings]) -> Callable[[type[OptimizationPass]], type[OptimizationPass]]:
    """@register(SomePass): the pass class runs specs of that settings class (declared beside it);
    its type is the settings' `type` literal (declared once, there) and the registry is keyed by it."""

    def add(cls: type[OptimizationPass]) -> type[OptimizationPass]:
        cls.type = pass_type_of(settings)
        cls.settings = settings
        if PASSES.setdefault(cls.type, cls) is not cls:
            raise TypeError(f"pass type {cls.type} is registered twice ({PASSES[cls.type].__name__}, {cls.__name__})")
        return cls

    return add


def build_pass(spec: Any) -> OptimizationPass:
    return PASSES[spec.type](spec)


@contextmanager
def failing_as(what: str) -> Iterator[None]:
    """A library's error inside becomes PassError("<what> failed: <its first line>"): the report and
    the status carry one line a person can act on, not a traceback from deep inside the library."""
    try:
        yield
    except PassError:
        raise
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise PassError(f"{what} failed: {(lines[0] if lines else type(exc).__name__)[:300]}") from None
