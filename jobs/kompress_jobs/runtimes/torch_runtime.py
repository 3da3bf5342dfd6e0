"""PyTorch: TorchScript archives, torch.export programs and Hugging Face checkpoints, on the CPU or
a CUDA GPU. Nothing here unpickles Python objects: TorchScript archives carry code in TorchScript's
own restricted format and torch.export programs are checked and loaded by formats/torch_export.py."""

from __future__ import annotations

import time

from ..errors import DataError, ModelLoadError
from ..modelfile import ModelFile
from pydantic import Field

from ..spec.sources import ModelFormat
from ..spec.wire import Model
from .base import (
    Inputs,
    Processor,
    ProfileRows,
    TraceEvents,
    Runner,
    first_line,
    output_names_for,
    quiet_logger,
)
from .registry import register


def torch_dtype(precision: str):
    """The torch dtype a candidate of this precision computes in, or None to leave the module as saved."""
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def compiled(module, mode: str):
    """The module through torch.compile in `mode` ("default", "reduce-overhead", "max-autotune"); it
    compiles on the first call of each input shape, which the benchmark's warm-up absorbs."""
    import torch

    return torch.compile(module, mode=mode)


def torch_input_names(module) -> tuple[str, ...]:
    """The argument names of a TorchScript module's forward, or the user inputs of a torch.export program."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:
        return tuple(a.name for a in schema.arguments[1:])  # [0] is self
    import inspect

    return tuple(p for p in inspect.signature(module.forward).parameters if p not in ("args", "kwargs"))


def load_torch_module(model: ModelFile):
    """The torch.nn.Module behind a TorchScript archive or a torch.export program, on the CPU."""
    import torch

    if not model.path.is_file():
        raise ModelLoadError(f"model file {model.path}: no such file")
    try:
        if model.format is ModelFormat.TORCH_SCRIPT:
            from ..formats.torchscript import check_archive_source, check_loaded_module

            check_archive_source(model.path)
            module = torch.jit.load(str(model.path), map_location="cpu")
            check_loaded_module(module, model.path)
        elif model.format is ModelFormat.TORCH_EXPORT:
            from ..formats.torch_export import load_exported_program

            with quiet_logger("torch.export"):  # it logs a traceback before raising on a foreign file
                module = load_exported_program(model.path).module()
        else:
            raise ModelLoadError(f"model file {model.path}: {model.format.value} is not a PyTorch format")
    except ModelLoadError:
        raise
    except Exception as exc:  # torch raises RuntimeError, ValueError, zipfile errors...
        raise ModelLoadError(
            f"model file {model.path}: not a readable {model.format.value} file "
            f"(kompress loads torch.jit.save archives and torch.export.save programs, never pickled modules): "
            f"{first_line(exc)}"
        ) from None
    if model.format is ModelFormat.TORCH_SCRIPT:
        module.eval()
    return module


class TorchOptions(Model):
    compile_mode: str | None = Field(None, max_length=64, description="torch.compile's mode (None: eager).")


@register
class TorchRunner(Runner):
    runtime = "pytorch"
    formats = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT})
    devices = (Processor.CPU, Processor.CUDA)
    profiler = "pytorch"
    Options = TorchOptions

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None, module=None):
        import torch

        self._torch = torch
        self.device = device
        module = module if module is not None else load_torch_module(model)
        self.input_names = tuple(input_names or torch_input_names(module))
        self.dtype = torch_dtype(model.precision)
        if self.dtype is not None:
            module = module.to(self.dtype)
        module = module.to(device.value) if device is not Processor.CPU else module
        self.compile_mode = self.options_of(model).compile_mode
        self.module = compiled(module, self.compile_mode) if self.compile_mode else module
        self.first_call_seconds = None  # timed on the first call (Runner.first_call_seconds)
        self.output_names = ("output",)

    def __call__(self, inputs: Inputs) -> Inputs:
        torch = self._torch
        started = time.perf_counter() if self.first_call_seconds is None else None
        with torch.inference_mode():
            output = self.module(*[self._tensor(inputs[name]) for name in self.input_names])
        tensors = list(output) if isinstance(output, (tuple, list)) else [output]
        self.output_names = self._name_outputs(len(tensors))  # known once the module has run
        # the copy back to the host waits for the device, so a timed call includes the whole GPU work
        result = {name: t.detach().float().cpu().numpy() for name, t in zip(self.output_names, tensors)}
        if started is not None:
            self.first_call_seconds = time.perf_counter() - started
        return result

    def _tensor(self, array):
        """The array on the model's device; floating inputs in the model's precision (token ids stay integers)."""
        tensor = self._torch.from_numpy(array)
        if self.dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        return tensor.to(self.device.value)

    def _name_outputs(self, count: int) -> tuple[str, ...]:
        return output_names_for(count)

    def synchronize(self) -> None:
        if self.device is Processor.CUDA:
            self._torch.cuda.synchronize()

    def profile(self, model: ModelFile, batch: Inputs, threads: int, calls: int, trace: TraceEvents | None = None) -> ProfileRows:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device is Processor.CUDA else [])
        with profile(activities=activities) as recorded:
            for _ in range(calls):
                self(batch)
            self.synchronize()
        # self time, so an aten::linear and the aten::addmm inside it are not counted twice; on a
        # GPU, the device's self time (the host only launches kernels there)
        on_gpu = self.device is Processor.CUDA
        if trace is not None:  # every recorded operator, nested as it ran (aten::addmm inside aten::linear)
            trace += [{"name": e.name, "cat": "kernel" if e.device_type.name == "CUDA" else "cpu_op", "ph": "X",
                       "ts": e.time_range.start, "dur": e.time_range.elapsed_us(), "pid": 0, "tid": e.thread}
                      for e in recorded.events()]
        return [(e.key, e.key, float(e.self_device_time_total if on_gpu else e.self_cpu_time_total), e.count)
                for e in recorded.key_averages() if (e.self_device_time_total if on_gpu else e.self_cpu_time_total) > 0]


@register
class HuggingFaceRunner(TorchRunner):
    """A checkpoint directory run in PyTorch eager with its task head (`huggingface.TaskModel`)."""

    formats = frozenset({ModelFormat.HUGGING_FACE})

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None):
        from ..huggingface import load_task_model

        names = tuple(input_names or model.input_names)
        super().__init__(model, threads=threads, device=device, input_names=names,
                         module=load_task_model(model.path, model.options, names))
        self.output_names = self._name_outputs(1)

    def __call__(self, inputs: Inputs) -> Inputs:
        from ..huggingface import check_inputs

        problem = check_inputs(self.input_names, inputs, self.module.max_positions)
        if problem:
            raise DataError(problem)
        return super().__call__(inputs)

    def _name_outputs(self, count: int) -> tuple[str, ...]:
        return (self.module.output_name,)  # the task head gives one tensor
