"""An ONNX model run by ONNX Runtime on the GPU, through its CUDA or its TensorRT execution provider:
the GPU path for ONNX models where the Job image has onnxruntime-gpu (TensorRT's provider also needs
TensorRT's libraries). The file is the input's; where and how it runs travel with it."""

from __future__ import annotations

import shutil
from enum import Enum
from typing import Literal

from pydantic import Field

from ..modelfile import Execution, ModelFile, Processor
from .base import OptimizationPass, PassContext, register
from .settings import ComputePrecision, PassSettings


class ExecutionProvider(str, Enum):
    CUDA = "CUDA"
    TENSOR_RT = "TensorRT"

    @property
    def onnxruntime_name(self) -> str:
        return {"CUDA": "CUDAExecutionProvider", "TensorRT": "TensorrtExecutionProvider"}[self.value]


class OnnxRuntimeGpuPass(PassSettings):
    """The ONNX model in ONNX Runtime on a CUDA GPU. CUDA computes in the model's own types (take an
    `Fp16` pass's model as input for FP16); TensorRT's provider builds engines for the nodes it can
    (the rest stays with CUDA) in `precision`, cached beside the model."""

    type: Literal["OnnxRuntimeGpu"]
    provider: ExecutionProvider = ExecutionProvider.CUDA
    precision: ComputePrecision = Field(ComputePrecision.FP32, description="TensorRT only: FP32 or FP16 engines.")


@register(OnnxRuntimeGpuPass)
class OnnxRuntimeGpu(OptimizationPass):
    technique = "runtime"

    def check(self, spec) -> str | None:
        mine = self.spec
        if mine.precision is ComputePrecision.BF16:
            return "precision: BF16 is not offered here; FP16 with provider: TensorRT, or TorchRuntime for BF16"
        if mine.precision is not ComputePrecision.FP32 and mine.provider is ExecutionProvider.CUDA:
            return ("precision: the CUDA provider computes in the model's own types; for FP16 take an Fp16 pass's "
                    "model as input, or use provider: TensorRT")
        return None

    def not_applicable_reason(self) -> str | None:
        import onnxruntime as ort

        from ..runtimes.base import cuda_missing

        wanted = self.spec.provider.onnxruntime_name
        if wanted not in ort.get_available_providers():
            return (f"this ONNX Runtime build ({ort.__version__}) has no {wanted}: the GPU Job image needs onnxruntime-gpu"
                    + (" and TensorRT's libraries" if self.spec.provider is ExecutionProvider.TENSOR_RT else ""))
        return cuda_missing()

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        copies = []
        for path in (model.path, *model.extra_files):
            shutil.copy2(path, ctx.output_dir / path.name)
            copies.append(ctx.output_dir / path.name)
        precision = "fp16" if self.spec.precision is ComputePrecision.FP16 else model.precision
        return ModelFile(copies[0], model.format, precision, extra_files=tuple(copies[1:]), execution=Execution(
            runtime="onnxruntime", device=Processor.CUDA, options={"executionProvider": self.spec.provider.onnxruntime_name}))
