"""ONNX export of a PyTorch model with a dynamic batch dimension."""

from __future__ import annotations

import contextlib
import io
import warnings

from ..errors import PassError
from ..modelfile import ModelFile
from ..schema import Exporter, ModelFormat
from .base import OptimizationPass, PassContext, register


# The Dynamo exporter builds opset-18 graphs; converting them down fails on common ops (ReduceMean).
DYNAMO_MIN_OPSET = 18


@register
class OnnxExport(OptimizationPass):
    type = "OnnxExport"
    technique = "export"
    accepts = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT})
    output_format = ModelFormat.ONNX
    moves_head = True

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import torch

        from ..runtimes import load_torch_module, quiet_logger

        exporter = self.spec.exporter
        if exporter is Exporter.AUTO:
            exporter = Exporter.DYNAMO if model.format is ModelFormat.TORCH_EXPORT else Exporter.TORCH_SCRIPT
        if exporter is Exporter.DYNAMO and model.format is ModelFormat.TORCH_SCRIPT:
            raise PassError("the Dynamo exporter cannot take a TorchScript archive; use exporter: TorchScript")
        output = ctx.output_dir / "model.onnx"
        example = (torch.from_numpy(ctx.example_inputs),)
        # Both exporters talk a lot on stdout/stderr; the CLI shows its own progress instead.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            try:
                if exporter is Exporter.DYNAMO:
                    torch.onnx.export(
                        torch.export.load(str(model.path)), example, str(output), dynamo=True, external_data=False,
                        opset_version=max(self.spec.opset, DYNAMO_MIN_OPSET), input_names=["input"], output_names=["output"],
                    )
                else:
                    torch.onnx.export(
                        load_torch_module(model), example, str(output), dynamo=False,
                        opset_version=self.spec.opset, input_names=["input"], output_names=["output"],
                        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                    )
            except Exception as exc:
                raise PassError(f"ONNX export failed: {str(exc).strip().splitlines()[0][:300]}") from None
        return ModelFile(output, ModelFormat.ONNX, model.precision)
