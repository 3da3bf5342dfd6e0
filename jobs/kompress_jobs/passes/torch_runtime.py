"""The model in PyTorch on the device, precision and compile mode the spec names: FP16 / BF16 on a
CUDA GPU (with torch.compile if asked), BF16 on a CPU that computes it natively (AMX, AVX-512 BF16).

The candidate's file is the model stored at that precision (half the bytes of FP32), in the format
it came in; where it runs and whether it is compiled travel with it (ModelFile.device, compile_mode)
and are reported. No TensorRT or onnxruntime-gpu is needed: this is the GPU path every CUDA image has.
"""

from __future__ import annotations

import json
import shutil
from enum import Enum
from typing import Literal

from pydantic import Field

from ..errors import PassError
from ..measurement.hardware import cpu_lacks
from ..modelfile import Execution, ModelFile, Processor
from ..spec.sources import Device, ModelFormat
from .base import OptimizationPass, PassContext, failing_as, register
from .settings import ComputePrecision, PassSettings


class CompileMode(str, Enum):
    """torch.compile's modes: Default; ReduceOverhead (CUDA graphs: fewer launches at small batches);
    MaxAutotune (searches kernel configurations: a longer compile)."""

    DEFAULT = "Default"
    REDUCE_OVERHEAD = "ReduceOverhead"
    MAX_AUTOTUNE = "MaxAutotune"

    @property
    def torch_mode(self) -> str:
        return {"Default": "default", "ReduceOverhead": "reduce-overhead", "MaxAutotune": "max-autotune"}[self.value]


class TorchRuntimePass(PassSettings):
    """The model run by PyTorch on `device` in `precision`, optionally through torch.compile. Weights
    are stored at that precision; floating inputs are cast to it and outputs returned as FP32. On a
    GPU the timed call includes the copies to and from the device, as a serving call would."""

    type: Literal["TorchRuntime"]
    device: Device = Field(Device.GPU, description="GPU: CUDA (needs spec.job.device: GPU); CPU: BF16 only where "
                                                   "the CPU computes it natively (amx_bf16 or avx512_bf16).")
    precision: ComputePrecision = ComputePrecision.FP16
    compile: CompileMode | None = Field(None, description="torch.compile mode; eager when unset. Compilation time "
                                                          "is reported apart from latency (details.firstCallSeconds).")


COMPILABLE = frozenset({ModelFormat.TORCH_EXPORT, ModelFormat.HUGGING_FACE})  # TorchScript runs in its own interpreter


@register(TorchRuntimePass)
class TorchRuntime(OptimizationPass):
    accepts = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT, ModelFormat.HUGGING_FACE})

    def __init__(self, spec: TorchRuntimePass):
        super().__init__(spec)
        if spec.compile is not None:
            self.accepts = COMPILABLE
        self.technique = "half-precision" if spec.precision is not ComputePrecision.FP32 else (
            "compilation" if spec.compile else "runtime")

    @classmethod
    def report_section(cls, name: str, details: dict) -> list[str]:
        if "firstCallSeconds" not in details:
            return []
        return [f"### {name}", "", f"Run through torch.compile (mode {details['compileMode']}); its first call, "
                f"which compiles, took {details['firstCallSeconds']:.2f} s and is not in the latency figures.", ""]

    def output_format_for(self, source: ModelFormat) -> ModelFormat:
        return source

    def check(self, spec) -> str | None:
        mine = self.spec
        if mine.device is Device.CPU and mine.precision is ComputePrecision.FP32 and mine.compile is None:
            return "precision: FP32 eager on the CPU is the model as PyTorch already runs it; set precision: BF16 or compile"
        return None

    def not_applicable_reason(self) -> str | None:
        mine = self.spec
        if mine.device is Device.GPU:
            reason = gpu_lacks(mine.precision)
        else:
            reason = cpu_lacks(mine.precision.short) if mine.precision is not ComputePrecision.FP32 else None
        if reason is None and mine.compile is not None:
            reason = compiler_missing()
        return reason

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        precision = self.spec.precision.short
        output = ctx.output_dir / (model.path.name if model.format is not ModelFormat.HUGGING_FACE else "checkpoint")
        with failing_as(f"storing the model in {self.spec.precision.value}"):
            if self.spec.precision is ComputePrecision.FP32:
                copy_model(model, output)
            elif model.format is ModelFormat.HUGGING_FACE:
                cast_checkpoint(model.path, output, precision)
            elif model.format is ModelFormat.TORCH_SCRIPT:
                cast_torchscript(model, output, precision)
            else:
                cast_exported(model, output, precision, ctx)
        ctx.log(f"{model.format.value} stored in {self.spec.precision.value}, to run on "
                f"{self.spec.device.value}{f' through torch.compile ({self.spec.compile.torch_mode})' if self.spec.compile else ''}")
        return ModelFile(output, model.format, precision if precision != "fp32" else model.precision,
                         options=model.options, input_names=model.input_names,
                         execution=Execution(runtime="pytorch", device=Processor.CUDA if self.spec.device is Device.GPU
                                             else Processor.CPU, options={"compileMode": self.spec.compile.torch_mode}
                                             if self.spec.compile else {}))


def gpu_lacks(precision: ComputePrecision) -> str | None:
    """Why this Job cannot compute in `precision` on a CUDA GPU, or None."""
    from ..runtimes.base import cuda_missing

    reason = cuda_missing()
    if reason is None and precision is ComputePrecision.BF16:
        import torch

        if not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name(0)} computes no BF16 (it needs an NVIDIA Ampere GPU or later)"
    return reason


def compiler_missing() -> str | None:
    """torch.compile's backend (Inductor) builds its kernels with a C compiler, on the CPU and for
    Triton's GPU launchers alike."""
    if any(shutil.which(name) for name in ("cc", "gcc", "clang")):
        return None
    return "torch.compile needs a C compiler (Inductor builds its kernels with one) and none is on PATH in this image"


def copy_model(model: ModelFile, output) -> None:
    if model.path.is_dir():
        shutil.copytree(model.path, output)
    else:
        shutil.copy2(model.path, output)


def cast_torchscript(model: ModelFile, output, precision: str) -> None:
    import torch

    from ..runtimes import load_torch_module
    from ..runtimes.torch_runtime import torch_dtype

    torch.jit.save(load_torch_module(model).to(torch_dtype(precision)), str(output))


def cast_exported(model: ModelFile, output, precision: str, ctx: PassContext) -> None:
    """A torch.export program re-exported at `precision`, batch still dynamic."""
    import torch

    from ..runtimes.torch_runtime import torch_dtype
    from ..formats.torch_export import load_exported_program

    dtype = torch_dtype(precision)
    module = load_exported_program(model.path).module().to(dtype)
    example = tuple(_cast(torch.from_numpy(ctx.example_inputs[name]), dtype) for name in ctx.input_names)
    batch = tuple({0: torch.export.Dim.AUTO} for _ in example)
    torch.export.save(torch.export.export(module, example, dynamic_shapes=batch), str(output))


def cast_checkpoint(source, output, precision: str) -> None:
    """A Hugging Face checkpoint with its floating weights in `precision`, read and written as
    safetensors (no pickles), its config saying the new dtype; tokenizer files copied as they are."""
    import torch
    from safetensors.torch import load_file, save_file

    from ..runtimes.torch_runtime import torch_dtype

    dtype = torch_dtype(precision)
    output.mkdir(parents=True)
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise PassError(f"checkpoint {source} has no .safetensors weights")
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copy2(path, output / path.name)
    for path in weights:
        tensors = {name: _cast(tensor, dtype) for name, tensor in load_file(str(path)).items()}
        save_file(tensors, str(output / path.name), metadata={"format": "pt"})
    config = json.loads((output / "config.json").read_text())
    name = {torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
    config |= {"dtype": name, "torch_dtype": name}
    (output / "config.json").write_text(json.dumps(config, indent=2))


def _cast(tensor, dtype):
    return tensor.to(dtype) if tensor.is_floating_point() else tensor

