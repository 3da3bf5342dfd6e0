"""Low-rank factorization of an ONNX model's large MatMul / Gemm weights by truncated SVD.

y = x·W (W: n×m) becomes y = (x·U)·V with U = U_r·diag(s_r) (n×r) and V = V_rᵀ (r×m): fewer
multiply-adds and weights whenever r < n·m / (n + m). Accuracy is whatever the dropped singular
values carried; the benchmark and goals decide whether the trade is worth it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, register
from .settings import PassSettings


class LowRankPass(PassSettings):
    """Factor each large MatMul / Gemm weight W (n×m) of an ONNX model into U (n×r) · V (r×m) by SVD.
    Faster and smaller only when r < n·m / (n + m); layers where it would not pay stay as they are."""

    type: Literal["LowRank"]
    energy: float | None = Field(None, gt=0, le=1, description="Keep the smallest rank whose singular values hold "
                                 "this share of the squared spectrum (default 0.9 when no other choice is set).")
    rank_ratio: float | None = Field(None, gt=0, le=1, description="Keep this fraction of each layer's full rank.")
    rank: int | None = Field(None, ge=1, description="The same rank for every factored layer; must not exceed any of them.")
    min_weights: int = Field(16_384, ge=1, description="Leave layers with fewer weights alone.")

    @model_validator(mode="after")
    def _one_rank_rule(self) -> "LowRankPass":
        chosen = [n for n, v in (("energy", self.energy), ("rankRatio", self.rank_ratio), ("rank", self.rank)) if v is not None]
        if len(chosen) > 1:
            raise ValueError(f"set one of energy, rankRatio, rank (got {', '.join(chosen)})")
        if not chosen:
            self.energy = 0.9
        return self



@dataclass
class Layer:
    node: object  # onnx NodeProto
    weight: object  # numpy array, oriented n×m as in y = x·W
    transposed: bool  # Gemm with transB=1 stores Wᵀ


def rank_for(singular_values, spec) -> int:
    import numpy as np

    full = len(singular_values)
    if spec.rank is not None:
        return spec.rank
    if spec.rank_ratio is not None:
        return max(1, int(round(spec.rank_ratio * full)))
    energy = np.cumsum(singular_values.astype(np.float64) ** 2)
    return int(np.searchsorted(energy / energy[-1], spec.energy) + 1)


@register(LowRankPass)
class LowRank(OptimizationPass):
    technique = "low-rank factorization"
    moves_head = True

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper

        graph_model = onnx.load(str(model.path))
        graph = graph_model.graph
        layers = self._layers(graph)
        if not layers:
            raise PassError(f"no MatMul or Gemm weight with at least {self.spec.min_weights} values to factor")
        too_small = [f"{layer.node.name or layer.node.op_type} ({layer.weight.shape[0]}×{layer.weight.shape[1]}, "
                     f"full rank {min(layer.weight.shape)})" for layer in layers
                     if self.spec.rank is not None and self.spec.rank > min(layer.weight.shape)]
        if too_small:
            raise PassError(f"rank {self.spec.rank} is larger than layer {too_small[0]}")

        initializers = {init.name: init for init in graph.initializer}
        factored = 0
        for layer in layers:
            n, m = layer.weight.shape
            u, s, vt = np.linalg.svd(layer.weight.astype(np.float64), full_matrices=False)
            r = rank_for(s, self.spec)
            if r * (n + m) >= n * m:
                ctx.log(f"{layer.node.name}: rank {r} of {min(n, m)} would not save work; left as is")
                continue
            name = layer.node.input[1]
            left = numpy_helper.from_array((u[:, :r] * s[:r]).astype(np.float32), f"{name}_lowrank_u")
            right_array = vt[:r].astype(np.float32)
            if layer.transposed:
                right_array = right_array.T.copy()  # Gemm keeps transB=1: store Vᵀ (m×r)
            right = numpy_helper.from_array(right_array, f"{name}_lowrank_v")
            graph.initializer.remove(initializers[name])
            graph.initializer.extend([left, right])
            middle = f"{layer.node.output[0]}_lowrank"
            index = list(graph.node).index(layer.node)
            graph.node.insert(index, helper.make_node("MatMul", [layer.node.input[0], left.name], [middle],
                                                      name=f"{layer.node.name}_lowrank_u"))
            layer.node.input[0], layer.node.input[1] = middle, right.name
            ctx.log(f"{layer.node.name}: {n}×{m} → rank {r} ({r * (n + m) / (n * m):.0%} of the weights)")
            factored += 1
        if factored == 0:
            raise PassError("no layer was worth factoring at this rank setting (each would need as many weights as before)")
        output = ctx.output_dir / "model.onnx"
        try:
            onnx.checker.check_model(graph_model)
        except onnx.checker.ValidationError as exc:
            raise PassError(f"the factored model is not valid ONNX: {str(exc).splitlines()[0][:300]}") from None
        onnx.save(graph_model, str(output))
        return ModelFile(output, ModelFormat.ONNX, model.precision)

    def _layers(self, graph) -> list[Layer]:
        """MatMul / Gemm nodes whose second input is a 2-D float initializer used by that node only."""
        import numpy as np
        from onnx import numpy_helper

        initializers = {init.name: init for init in graph.initializer}
        uses: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                uses[name] = uses.get(name, 0) + 1
        layers = []
        for node in graph.node:
            if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
                continue
            init = initializers.get(node.input[1])
            if init is None or uses.get(node.input[1]) != 1 or len(init.dims) != 2:
                continue
            attributes = {a.name: a.i for a in node.attribute if a.type == 2}  # INT attributes
            if node.op_type == "Gemm" and attributes.get("transA", 0):
                continue
            weight = numpy_helper.to_array(init)
            if weight.dtype != np.float32 or weight.size < self.spec.min_weights:
                continue
            transposed = node.op_type == "Gemm" and bool(attributes.get("transB", 0))
            layers.append(Layer(node, weight.T if transposed else weight, transposed))
        return layers
