"""OpenVINO: IR models (a .xml and the .bin beside it) on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import Inputs, Processor, ProfileRows, Runner, TraceEvents, first_line
from .registry import register


def check_ir(path: Path) -> None:
    """An IR is two files: fail with ModelLoadError, naming the missing one, before OpenVINO does."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path}: no such file")
    if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise ModelLoadError(f"model file {path}: its weights {path.with_suffix('.bin').name} are missing "
                             "(an OpenVINO IR is a .xml and the .bin beside it)")


def compile_config(model: ModelFile, threads: int) -> dict:
    """Fixed thread count, latency hint, one stream, and the inference precision the candidate names:
    f32 for FP32 models (the CPU plugin would otherwise pick bf16 on CPUs that have it, which is a
    precision change, not a runtime's merit), bf16 / f16 for a candidate made to compute in them."""
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    hint = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}.get(model.precision)
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    return config


def check_precision(compiled, model: ModelFile) -> None:
    """OpenVINO falls back to f32 without a word where the CPU lacks the type asked for: a candidate
    that says BF16 must compute in BF16, or fail saying why."""
    asked = compile_config(model, 1).get("INFERENCE_PRECISION_HINT")
    if asked in (None, "f32"):
        return
    got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "bf16", "f16", "f32"
    if got != asked:
        raise ModelLoadError(f"model file {model.path}: OpenVINO computes in {got} on this CPU, not {asked} "
                             "(it has no native support for it); the candidate would be FP32 under another name")


@register
class OpenVinoRunner(Runner):
    runtime = "openvino"
    formats = frozenset({ModelFormat.OPENVINO})
    devices = (Processor.CPU,)
    profiler = "openvino"

    def __init__(self, model: ModelFile, *, threads: int, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None):
        import openvino as ov

        check_ir(model.path)
        try:
            self.compiled = ov.Core().compile_model(str(model.path), "CPU", compile_config(model, threads))
        except Exception as exc:
            raise ModelLoadError(f"model file {model.path}: OpenVINO cannot load it: {first_line(exc)}") from None
        check_precision(self.compiled, model)
        self.request = self.compiled.create_infer_request()
        self.input_names = tuple(port.get_any_name() for port in self.compiled.inputs)
        self.output_names = tuple(port.get_any_name() for port in self.compiled.outputs)
        self.input_types = {port.get_any_name(): port.get_element_type().to_dtype() for port in self.compiled.inputs}

    def __call__(self, inputs: Inputs) -> Inputs:
        results = self.request.infer(self._feed(inputs))
        return {name: np.asarray(results[port], dtype=np.float32) for name, port in zip(self.output_names, self.compiled.outputs)}

    def _feed(self, inputs: Inputs) -> Inputs:
        return {name: inputs[name].astype(dtype, copy=False) for name, dtype in self.input_types.items()}

    def profile(self, model: ModelFile, batch: Inputs, threads: int, calls: int, trace: TraceEvents | None = None) -> ProfileRows:
        """The per-layer performance counters (PERF_COUNT) of a request compiled for it. The counters
        have durations, no start times: the trace lays a call's layers end to end, in execution order."""
        import openvino as ov

        config = {**compile_config(model, threads), "PERF_COUNT": True}
        request = ov.Core().compile_model(str(model.path), "CPU", config).create_infer_request()
        feed, rows, clock = self._feed(batch), [], 0.0
        for _ in range(calls):
            request.infer(feed)
            executed = [(info.node_name, info.node_type, info.real_time.total_seconds() * 1e6)
                        for info in request.profiling_info if info.status == info.Status.EXECUTED]
            rows += executed
            if trace is not None:
                for name, kind, us in executed:
                    trace.append({"name": kind, "cat": "cpu_op", "ph": "X", "ts": clock, "dur": us, "pid": 0, "tid": 0,
                                  "args": {"node": name, "timing": "laid end to end: OpenVINO's counters have no start times"}})
                    clock += us
                clock += 10.0  # a gap between calls
        return rows
