"""Apache TVM: a library the TVM pass compiled in this run (formats/tvm.py refuses any other), run
by Relax's virtual machine with a function per batch size; a batch of another size runs in chunks.
Its weights are pre-packed once at load, into the layouts the tuned kernels read. TVM's thread pool
is sized by TVM_NUM_THREADS before TVM first loads in its process: a process of its own
(contained.py), where a crash fails this candidate, not the run."""

from __future__ import annotations

import os

import numpy as np

from ..formats.tvm import LIBRARY, PARAMS, manifest
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import Processor, output_names_for
from .fixed_batch import FixedBatchRunner
from .registry import register


@register
class TvmRunner(FixedBatchRunner):
    runtime = "tvm"
    contained = True  # a crash costs this candidate, not the run (contained.py)
    module, package = "tvm", "apache-tvm"
    what = "the TVM library"
    formats = frozenset({ModelFormat.TVM})

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None):
        os.environ["TVM_NUM_THREADS"] = str(threads)  # read once, when TVM's pool starts in this process of its own
        import tvm
        from tvm import relax

        self.device, self._tvm = device, tvm
        about = manifest(model.path)
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(model.path / LIBRARY)), tvm.cpu())
        stored = np.load(model.path / PARAMS)
        params = [tvm.runtime.tensor(stored[key]) for key in stored.files]
        self._dtypes = [np.dtype(row["dtype"]) for row in about["rows"]]
        # per batch size: the function, its pre-packed weights, and input tensors the batch is copied into
        self._calls = {size: (self._vm[f"main_b{size}"], self._vm[f"main_b{size}_transform_params"](params),
                              [tvm.runtime.empty((size, *row["shape"]), row["dtype"]) for row in about["rows"]])
                       for size in about["batchSizes"]}
        self.input_names = tuple(input_names or about["inputs"])
        self.output_names = output_names_for(about["outputs"])

    def batch_sizes(self) -> list[int]:
        return list(self._calls)

    def run_batch(self, size: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        function, packed, inputs = self._calls[size]
        for tensor, array, dtype in zip(inputs, arrays, self._dtypes):
            tensor.copyfrom(np.ascontiguousarray(array, dtype=dtype))
        got = function(*inputs, *packed)
        return [t.numpy() for t in ([got] if isinstance(got, self._tvm.runtime.Tensor) else got)]
