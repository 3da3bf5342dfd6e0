"""INT4 weight-only quantization with ONNX Runtime: MatMul weights in 4 bits with a scale per block
of `blockSize` weights (MatMulNBits); activations stay FP32. On CPU encoders this buys size (about
7× smaller MatMul weights) more than speed; the benchmark reports which."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, failing_as, register
from .openvino import check_block_size
from .settings import PassSettings


class Int4WeightOnlyPass(PassSettings):
    """ONNX Runtime's INT4 weight-only quantization of MatMul weights (MatMulNBits, block-wise scales)."""

    type: Literal["Int4WeightOnly"]
    block_size: int = Field(32, ge=16, le=1024, description="Weights per scale, a power of two that divides every MatMul's input width.")
    symmetric: bool = True
    accuracy_level: int | None = Field(None, ge=0, le=4, description="ONNX Runtime's compute type for the activations (4: INT8, fastest on CPU).")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        if size & (size - 1):
            raise ValueError(f"must be a power of two, not {size}")
        return size



def matmul_widths(graph) -> dict[str, int]:
    """Input width (rows of the weight) of every MatMul whose weight is a 2-D initializer."""
    initializers = {init.name: init for init in graph.initializer}
    widths = {}
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if weight is not None and len(weight.dims) == 2:
            widths[node.name or node.output[0]] = weight.dims[0]
    return widths


@register(Int4WeightOnlyPass)
class Int4WeightOnly(OptimizationPass):
    technique = "weight-compression"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        from .quantize import in_scratch, quiet_library

        graph_model = onnx.load(str(model.path))
        widths = matmul_widths(graph_model.graph)
        if not widths:
            raise PassError("no MatMul with a constant 2-D weight to quantize (MatMulNBits covers MatMul, not Gemm or Conv)")
        check_block_size(widths, self.spec.block_size)
        output = ctx.output_dir / "model.onnx"
        with failing_as("INT4 weight-only quantization"), quiet_library(), in_scratch(ctx.output_dir):
            quantizer = MatMulNBitsQuantizer(graph_model, bits=4, block_size=self.spec.block_size,
                                             is_symmetric=self.spec.symmetric, accuracy_level=self.spec.accuracy_level)
            quantizer.process()
            quantizer.model.save_model_to_file(str(output.resolve()), use_external_data_format=False)
        ctx.log(f"{len(widths)} MatMul weights in INT4, blocks of {self.spec.block_size}")
        return ModelFile(output, ModelFormat.ONNX, "int4")
