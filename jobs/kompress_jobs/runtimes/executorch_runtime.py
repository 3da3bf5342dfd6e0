"""ExecuTorch: a .pte program run by ExecuTorch's host runtime, its operators delegated to XNNPACK
where the program says so, as on a phone or an edge CPU.

A program holds a method per batch size it was built for (`forward_b<N>`, the ExecuTorch pass
writes one per benchmark batch size and one for batch 1, sharing their weights), or a user's single
`forward`; a batch of another size runs in chunks of the sizes it has. XNNPACK's thread pool is the
process's own, set to the benchmark's threads. A native runtime may crash the process, so it runs in
one of its own (contained.py): a crash fails this candidate with the signal named, not the run."""

from __future__ import annotations

import re

import numpy as np

from ..errors import ModelLoadError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import Processor, output_names_for
from .fixed_batch import FixedBatchRunner
from .registry import register

_METHOD = re.compile(r"^forward(?:_b(\d+))?$")


@register
class ExecuTorchRunner(FixedBatchRunner):
    runtime = "executorch"
    contained = True  # a crash costs this candidate, not the run (contained.py)
    module, package = "executorch.runtime", "executorch"
    what = "the ExecuTorch program"
    formats = frozenset({ModelFormat.EXECUTORCH})

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None):
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime, Verification

        self.device, self._torch = device, torch
        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool: one per process, as benchmark.threads says
        program = Runtime.get().load_program(str(model.path), verification=Verification.InternalConsistency)
        self.methods: dict[int, object] = {}
        for name in program.method_names:
            if not _METHOD.match(name):
                continue
            meta = program.metadata(name)
            self.methods[int(meta.input_tensor_meta(0).sizes()[0])] = program.load_method(name)
            count = meta.num_outputs()
        if not self.methods:
            raise ModelLoadError(f"model file {model.path}: the program has no forward method "
                                 f"({', '.join(sorted(program.method_names)) or 'no method'})")
        self.input_names = tuple(input_names or ("input",))
        self.output_names = output_names_for(count)

    def batch_sizes(self) -> list[int]:
        return list(self.methods)

    def run_batch(self, size: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [self._torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        return [t.numpy().copy() for t in self.methods[size].execute(tensors)]
