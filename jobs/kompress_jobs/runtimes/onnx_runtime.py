"""ONNX Runtime: ONNX models on the CPU, or on a CUDA GPU where onnxruntime-gpu is installed. ONNX
is protobuf, so loading runs no code; its external data must lie beside it (formats/onnx.py)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError, ModelLoadError
from ..modelfile import ModelFile
from ..formats.onnx import check_onnx
from pydantic import Field

from ..spec.sources import ModelFormat
from ..spec.wire import Model
from .base import Inputs, Processor, ProfileRows, Runner, TraceEvents, first_line
from .registry import register

_ORT_TYPES: dict[str, Callable] = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                                   "tensor(int64)": np.int64, "tensor(int32)": np.int32}
_PROVIDERS = {Processor.CPU: "CPUExecutionProvider", Processor.CUDA: "CUDAExecutionProvider"}


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def provider_chain(provider: str, model: ModelFile) -> list:
    """ONNX Runtime's providers for a session: TensorRT's takes the nodes it can and leaves the rest to
    CUDA's (as ONNX Runtime documents); its FP16 is the candidate's precision, its engines cached
    beside the model so a second session does not rebuild them."""
    if provider != "TensorrtExecutionProvider":
        return [provider]
    options = {"trt_fp16_enable": model.precision == "fp16", "trt_engine_cache_enable": True,
               "trt_engine_cache_path": str(model.path.parent / "trt-cache")}
    return [(provider, options), "CUDAExecutionProvider"]


class OrtOptions(Model):
    execution_provider: str | None = Field(None, max_length=64, description="ONNX Runtime's execution provider "
                                           "(None: the device's own: CPUExecutionProvider, CUDAExecutionProvider).")


@register
class OrtRunner(Runner):
    runtime = "onnxruntime"
    formats = frozenset({ModelFormat.ONNX})
    devices = (Processor.CPU, Processor.CUDA)
    profiler = "onnxruntime"
    Options = OrtOptions

    @classmethod
    def unavailable(cls, device: Processor) -> str | None:
        import onnxruntime as ort

        if _PROVIDERS[device] not in ort.get_available_providers():
            return f"this ONNX Runtime build has no {_PROVIDERS[device]} (onnxruntime-gpu provides it)"
        return None

    def __init__(self, model: ModelFile, *, threads: int, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None):
        import onnxruntime as ort

        check_onnx(model.path)
        provider = self.options_of(model).execution_provider or _PROVIDERS[device]
        try:
            self.session = ort.InferenceSession(str(model.path), session_options(threads),
                                                providers=provider_chain(provider, model))
        except Exception as exc:
            raise ModelLoadError(f"model file {model.path}: ONNX Runtime cannot load it: {first_line(exc)}") from None
        if provider not in self.session.get_providers():  # ONNX Runtime falls back to the CPU quietly
            raise ModelLoadError(f"model file {model.path}: ONNX Runtime could not start {provider}")
        self.device = device
        self.inputs = {i.name: (i.shape, _ORT_TYPES.get(i.type, np.float32)) for i in self.session.get_inputs()}
        self.input_names = tuple(self.inputs)
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def __call__(self, inputs: Inputs) -> Inputs:
        outputs = self.session.run(None, self._feed(inputs))
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.output_names, outputs)}

    def _feed(self, inputs: Inputs) -> Inputs:
        return {name: inputs[name].astype(dtype, copy=False) for name, (_, dtype) in self.inputs.items()}

    def check_input(self, inputs: Inputs) -> None:
        for name, (shape, dtype) in self.inputs.items():
            array = inputs[name]
            if np.issubdtype(array.dtype, np.integer) != np.issubdtype(dtype, np.integer):
                raise DataError(f"input {name!r} holds {array.dtype} but the model takes {np.dtype(dtype).name}")
            expected, actual = shape[1:], array.shape[1:]
            fits = len(expected) == len(actual) and all(
                not isinstance(want, int) or want == got for want, got in zip(expected, actual))
            if not fits:
                shown = tuple(d if isinstance(d, int) else "?" for d in expected)
                raise DataError(f"input {name!r} has shape {tuple(actual)} per sample but the model expects {shown}")
        super().check_input(inputs)

    def profile(self, model: ModelFile, batch: Inputs, threads: int, calls: int, trace: TraceEvents | None = None,
                warm: int = 2) -> ProfileRows:
        """Session profiling: kernel time per node, of the timed calls only."""
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as folder:
            options = session_options(threads)
            options.enable_profiling, options.profile_file_prefix = True, str(Path(folder) / "ort")
            session = ort.InferenceSession(str(model.path), options, providers=self.session.get_providers())
            feed = self._feed(batch)
            for _ in range(warm + calls):
                session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        # Kernel events of the timed calls only: those inside a model_run after the warm-up ones.
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
        timed = runs[warm:]
        if len(timed) != calls:
            raise RuntimeError(f"ONNX Runtime's profile shows {len(runs)} runs, not {warm + calls}")
        first = timed[0][0]
        kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= first]
        if trace is not None:  # ONNX Runtime's own trace, of the timed calls, named by operator type
            trace += [{"name": "model_run", "cat": "user_annotation", "ph": "X", "ts": start, "dur": end - start,
                       "pid": 0, "tid": 0} for start, end in timed]
            trace += [{"name": e.get("args", {}).get("op_name", "?"), "cat": "cpu_op", "ph": "X", "ts": e["ts"],
                       "dur": e["dur"], "pid": 0, "tid": 0, "args": {"node": e["name"].removesuffix("_kernel_time")}}
                      for e in kernels]
        return [(e["name"].removesuffix("_kernel_time"), e.get("args", {}).get("op_name", "?"), float(e["dur"])) for e in kernels]
