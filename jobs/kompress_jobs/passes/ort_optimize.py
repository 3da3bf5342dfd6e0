"""ONNX Runtime offline graph optimization (constant folding, fusions) saved to a new model file."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, register
from .settings import PassSettings


class OptimizationLevel(str, Enum):
    BASIC = "Basic"
    EXTENDED = "Extended"
    ALL = "All"


class OrtOptimizePass(PassSettings):
    type: Literal["OrtOptimize"]
    level: OptimizationLevel = OptimizationLevel.EXTENDED



@register(OrtOptimizePass)
class OrtOptimize(OptimizationPass):
    technique = "graph-optimization"
    # Extended/All levels emit fused, hardware-specific ops that quantizers do not know:
    # the optimized graph is a variant to measure, not an input for later passes.

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import onnxruntime as ort

        levels = {
            OptimizationLevel.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            OptimizationLevel.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            OptimizationLevel.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        output = ctx.output_dir / "model.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[self.spec.level]
        options.optimized_model_filepath = str(output)
        options.intra_op_num_threads = ctx.threads
        options.log_severity_level = 3
        ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
        return ModelFile(output, ModelFormat.ONNX, model.precision)
