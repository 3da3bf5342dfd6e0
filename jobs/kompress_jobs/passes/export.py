"""ONNX export of a PyTorch model with a dynamic batch dimension."""

from __future__ import annotations

import contextlib
import io
import warnings
from enum import Enum
from typing import Literal

from pydantic import Field

from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, failing_as, register
from .settings import PassSettings


class Exporter(str, Enum):
    AUTO = "Auto"
    TORCH_SCRIPT = "TorchScript"
    DYNAMO = "Dynamo"


class OnnxExportPass(PassSettings):
    type: Literal["OnnxExport"]
    opset: int = Field(17, ge=13, le=23)
    exporter: Exporter = Field(Exporter.AUTO, description="Auto: TorchScript archives use the TorchScript exporter, torch.export programs the Dynamo one.")



# The Dynamo exporter builds opset-18 graphs; converting them down fails on common ops (ReduceMean).
DYNAMO_MIN_OPSET = 18


def dynamic_axes(inputs: dict, output_names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """Batch is dynamic everywhere; so is the sequence axis of token inputs (integer, 2-D)."""
    import numpy as np

    axes = {}
    for name, array in inputs.items():
        axes[name] = {0: "batch"}
        if array.ndim == 2 and np.issubdtype(array.dtype, np.integer):
            axes[name][1] = "sequence"
    return axes | {name: {0: "batch"} for name in output_names}


@register(OnnxExportPass)
class OnnxExport(OptimizationPass):
    technique = "export"
    accepts = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT, ModelFormat.HUGGING_FACE})
    moves_head = True

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        exporter = self.spec.exporter
        if exporter is Exporter.AUTO:
            exporter = Exporter.DYNAMO if model.format is ModelFormat.TORCH_EXPORT else Exporter.TORCH_SCRIPT
        if exporter is Exporter.DYNAMO and model.format is not ModelFormat.TORCH_EXPORT:
            raise PassError(f"the Dynamo exporter takes torch.export programs, not {model.format.value}; use exporter: TorchScript")
        output = ctx.output_dir / "model.onnx"
        if exporter is Exporter.DYNAMO:
            import torch

            from ..formats.torch_export import load_exported_program

            _exporting(lambda example, names, outputs: torch.onnx.export(
                load_exported_program(model.path), example, str(output), dynamo=True, external_data=False,
                opset_version=max(self.spec.opset, DYNAMO_MIN_OPSET), input_names=names, output_names=outputs), ctx, None)
        else:
            export_module(self._module(model, ctx.input_names), ctx, output, self.spec.opset)
        return ModelFile(output, ModelFormat.ONNX, model.precision)

    @staticmethod
    def _module(model: ModelFile, names: tuple[str, ...]):
        from ..runtimes import load_torch_module

        if model.format is ModelFormat.HUGGING_FACE:
            from ..huggingface import load_task_model

            return load_task_model(model.path, model.options, names)
        return load_torch_module(model)


def export_module(module, ctx: PassContext, output, opset: int = 17) -> None:
    """An eager or TorchScript module to ONNX with the data's input names, the module's output names,
    and dynamic batch (and sequence) axes."""
    import torch

    _exporting(lambda example, names, outputs: torch.onnx.export(
        module, example, str(output), dynamo=False, opset_version=opset, input_names=names, output_names=outputs,
        dynamic_axes=dynamic_axes(ctx.example_inputs, tuple(outputs))), ctx, module)


def _exporting(export, ctx: PassContext, module) -> None:
    import torch

    from ..runtimes import output_names_for, quiet_logger

    names = ctx.input_names
    example = tuple(torch.from_numpy(ctx.example_inputs[name]) for name in names)
    if module is None:
        outputs = output_names_for(1)
    elif hasattr(module, "output_name"):
        outputs = (module.output_name,)
    else:
        with torch.no_grad():
            result = module(*example)
        outputs = output_names_for(len(result) if isinstance(result, (tuple, list)) else 1)
    # Both exporters talk a lot on stdout/stderr; the CLI shows its own progress instead.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()), quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        with failing_as("ONNX export"):
            export(example, list(names), list(outputs))
