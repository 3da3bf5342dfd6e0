"""FP16 weights and compute. Made for GPUs; measured on the CPU all the same, where it is usually
slower (the selection then rejects it, with the reason, rather than hiding it)."""

from __future__ import annotations

from ..errors import PassError
from ..modelfile import ModelFile
from ..schema import Fp16Pass, ModelFormat
from .base import OptimizationPass, PassContext, register


@register(Fp16Pass)
class Fp16(OptimizationPass):
    technique = "half-precision"
    accepts = frozenset({ModelFormat.ONNX})
    output_format = ModelFormat.ONNX
    moves_head = False

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import onnx
        from onnxruntime.transformers.onnx_model import OnnxModel

        output = ctx.output_dir / "model.onnx"
        try:
            converted = OnnxModel(onnx.load(str(model.path)))
            converted.convert_float_to_float16(keep_io_types=self.spec.keep_io_types)
            converted.topological_sort()  # the converter appends its input casts at the end of the graph
            converted.save_model_to_file(str(output))
        except Exception as exc:
            raise PassError(f"FP16 conversion failed: {str(exc).splitlines()[0][:300]}") from None
        return ModelFile(output, ModelFormat.ONNX, "fp16")
