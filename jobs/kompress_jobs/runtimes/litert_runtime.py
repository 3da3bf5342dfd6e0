"""LiteRT (TensorFlow Lite's successor): a .tflite model run by LiteRT's interpreter, its builtin
operators on XNNPACK, as on a phone or an edge CPU.

A model holds a signature per batch size it was built for (`b<N>`, what the LiteRT pass writes), or
is a user's file with its own input shape; a batch of another size runs in chunks of the sizes it
has. An INT8 model's inputs and outputs may be INT8 themselves: floats are quantized on the way in
and de-quantized on the way out with the model's own scales, inside the timed call, as a caller
would. It runs in a process of its own (contained.py): a crash fails the candidate, not the run."""

from __future__ import annotations

import re

import numpy as np

from ..errors import ModelLoadError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import Processor, output_names_for
from .fixed_batch import FixedBatchRunner
from .registry import register

_SIGNATURE = re.compile(r"^b(\d+)$")


@register
class LiteRtRunner(FixedBatchRunner):
    runtime = "litert"
    contained = True  # a crash costs this candidate, not the run (contained.py)
    module, package = "ai_edge_litert.interpreter", "ai-edge-litert"
    what = "the LiteRT model"
    formats = frozenset({ModelFormat.LITERT})

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.device = device
        try:
            interpreter = Interpreter(model_path=str(model.path), num_threads=threads)
        except ValueError as exc:
            raise ModelLoadError(f"model file {model.path}: LiteRT cannot load it: {str(exc).splitlines()[0][:200]}") from None
        self.calls = {}  # batch size → (call taking positional arrays, input details, output details)
        signatures = {name: _SIGNATURE.match(name) for name in interpreter.get_signature_list()}
        for name, match in signatures.items():
            if match:
                runner = interpreter.get_signature_runner(name)
                keys = list(interpreter.get_signature_list()[name]["inputs"])
                ins, outs = runner.get_input_details(), runner.get_output_details()
                self.calls[int(match.group(1))] = (lambda arrays, r=runner, k=keys: r(**dict(zip(k, arrays))),
                                                   [ins[k] for k in keys], list(outs.values()))
        if not self.calls:  # a user's own file: the shape it was saved with
            interpreter.allocate_tensors()
            ins, outs = interpreter.get_input_details(), interpreter.get_output_details()

            def call(arrays, it=interpreter):
                for detail, array in zip(ins, arrays):
                    it.set_tensor(detail["index"], array)
                it.invoke()
                return {d["name"]: it.get_tensor(d["index"]) for d in outs}

            self.calls[int(ins[0]["shape"][0])] = (call, ins, outs)
        self.input_names = tuple(input_names or ("input",))
        self.output_names = output_names_for(len(next(iter(self.calls.values()))[2]))

    def batch_sizes(self) -> list[int]:
        return list(self.calls)

    def run_batch(self, size: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        call, ins, outs = self.calls[size]
        got = call([_quantized(a, d) for a, d in zip(arrays, ins)])
        return [_dequantized(np.asarray(value), d) for value, d in zip(got.values(), outs)]


def _quantized(array: np.ndarray, detail: dict) -> np.ndarray:
    """Floats as the input takes them: INT8 (or UINT8) with its scale and zero point, or as they are."""
    kind = detail["dtype"]
    if kind in (np.int8, np.uint8) and array.dtype.kind == "f":
        scale, zero = detail["quantization"]
        info = np.iinfo(kind)
        return np.clip(np.round(array / scale + zero), info.min, info.max).astype(kind)
    return np.ascontiguousarray(array, dtype=kind)


def _dequantized(array: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero = detail["quantization"]
        return ((array.astype(np.float32) - zero) * scale).astype(np.float32)
    return array
