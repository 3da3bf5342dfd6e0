"""FP16 weights and compute. Made for GPUs; measured on the CPU all the same, where it is usually
slower (the selection then rejects it, with the reason, rather than hiding it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, failing_as, register
from .settings import PassSettings


class Fp16Pass(PassSettings):
    type: Literal["Fp16"]
    keep_io_types: bool = Field(True, description="Keep FP32 inputs and outputs so callers need not change.")



@register(Fp16Pass)
class Fp16(OptimizationPass):
    technique = "half-precision"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import onnx
        from onnxruntime.transformers.onnx_model import OnnxModel

        output = ctx.output_dir / "model.onnx"
        with failing_as("FP16 conversion"):
            converted = OnnxModel(onnx.load(str(model.path)))
            converted.convert_float_to_float16(keep_io_types=self.spec.keep_io_types)
            converted.topological_sort()  # the converter appends its input casts at the end of the graph
            converted.save_model_to_file(str(output))
        return ModelFile(output, ModelFormat.ONNX, "fp16")
