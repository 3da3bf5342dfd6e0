"""The interface every optimization pass implements, and the registry that maps spec types to passes.

A pass turns one model file into another. Passes that *transform* the network (export, pruning,
distillation, ...) move the head of the chain, so the next pass works on their output; passes that
make a *variant* for a runtime (quantization, FP16, TensorRT, ...) branch off the head. Every pass
output is a candidate that the benchmark measures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from ..modelfile import ModelFile
from ..schema import ModelFormat, TaskType

if TYPE_CHECKING:  # the operator imports passes to plan them, without numpy or the runtimes
    import numpy as np

    from ..data import Dataset


@dataclass(frozen=True)
class PassContext:
    output_dir: Path  # an empty folder for this pass's files
    dataset: Dataset
    threads: int
    log: Callable[[str], None]
    task: TaskType = TaskType.CLASSIFICATION
    # Resolves a URI named in a pass's spec (e.g. a student model) to a local file, as the
    # pipeline does for the model and data (relative to the spec file, or fetched from S3).
    fetch: Callable[[str], Path] = Path
    # Called with (epoch, module) after each training epoch; a tuning study uses it to stop weak trials.
    on_epoch: Callable[[int, Any], None] | None = None
    batch_sizes: tuple[int, ...] = (1,)  # what the benchmark will run (engines are built for them)

    @property
    def example_inputs(self) -> np.ndarray:
        """A small real batch (two rows, so exporters do not specialise on batch 1)."""
        return self.dataset.evaluation.inputs[:2]


class OptimizationPass(ABC):
    type: ClassVar[str]
    technique: ClassVar[str]
    accepts: ClassVar[frozenset[ModelFormat]]
    output_format: ClassVar[ModelFormat]
    moves_head: ClassVar[bool]

    def __init__(self, spec: Any):
        self.spec = spec

    def not_applicable_reason(self) -> str | None:
        """Why this pass cannot run here (e.g. no GPU), or None when it can."""
        return None

    @property
    def parameters(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.to_wire().items() if k not in ("type", "name", "input")}

    @abstractmethod
    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        """Write the optimized model under ctx.output_dir and describe it."""


PASSES: dict[str, type[OptimizationPass]] = {}


def register(cls: type[OptimizationPass]) -> type[OptimizationPass]:
    PASSES[cls.type] = cls
    return cls


def build_pass(spec: Any) -> OptimizationPass:
    return PASSES[spec.type](spec)
