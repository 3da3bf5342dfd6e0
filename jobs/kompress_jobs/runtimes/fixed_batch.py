"""Runtimes whose models are built for a few fixed batch sizes (edge programs: an ExecuTorch method
or a LiteRT signature per size): a batch of another size runs in chunks of the largest sizes the
model has, as a caller of such a model would."""

from __future__ import annotations

import importlib
from typing import ClassVar

import numpy as np

from ..errors import DataError
from .base import Inputs, Processor, Runner

EXTRA = "edge"  # the job image's extra that installs the edge runtimes


class FixedBatchRunner(Runner):
    what: ClassVar[str]  # "the ExecuTorch program", for errors
    module: ClassVar[str]  # what must import for the runtime to run ("executorch.runtime")
    package: ClassVar[str]  # the package that installs it, for the reason when it does not

    @classmethod
    def unavailable(cls, device: Processor) -> str | None:
        try:
            importlib.import_module(cls.module)
        except ImportError:
            return f"{cls.package} is not installed (the job image's extra `{EXTRA}`)"
        return super().unavailable(device)

    def batch_sizes(self) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def run_batch(self, size: int, arrays: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - interface
        """The outputs, as float arrays in order, of `arrays` (one per input, `size` rows each)."""
        raise NotImplementedError

    def __call__(self, inputs: Inputs) -> Inputs:
        arrays = [inputs[name] for name in self.input_names]
        rows, done, outputs = len(arrays[0]), 0, []
        while done < rows:
            size = self._chunk(rows - done)
            outputs.append(self.run_batch(size, [a[done: done + size] for a in arrays]))
            done += size
        return {name: np.concatenate([o[i] for o in outputs]) for i, name in enumerate(self.output_names)}

    def _chunk(self, remaining: int) -> int:
        fitting = [size for size in self.batch_sizes() if size <= remaining]
        if not fitting:
            raise DataError(f"{self.what} runs batches of {sorted(self.batch_sizes())}, not {remaining} rows")
        return max(fitting)
