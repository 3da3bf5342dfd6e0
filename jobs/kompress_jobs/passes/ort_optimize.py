"""ONNX Runtime offline graph optimization (constant folding, fusions) saved to a new model file."""

from __future__ import annotations

from ..modelfile import ModelFile
from ..schema import ModelFormat, OptimizationLevel, OrtOptimizePass
from .base import OptimizationPass, PassContext, register


@register(OrtOptimizePass)
class OrtOptimize(OptimizationPass):
    technique = "graph-optimization"
    accepts = frozenset({ModelFormat.ONNX})
    output_format = ModelFormat.ONNX
    # Extended/All levels emit fused, hardware-specific ops that quantizers do not know:
    # the optimized graph is a variant to measure, not an input for later passes.
    moves_head = False

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
