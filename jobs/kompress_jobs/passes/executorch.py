"""ExecuTorch (PyTorch Mobile's successor): a PyTorch model exported with torch.export, optionally
quantized to INT8 with the XNNPACK quantizer (PT2E: symmetric weights, per channel by default,
activations calibrated on the calibration split), lowered to XNNPACK and written as a .pte program,
then run by ExecuTorch's runtime like every other candidate. A Hugging Face checkpoint (an encoder
with its task head and pooling, as OnnxExport takes it) is exported the same way.

The program holds one static method per batch size the benchmark runs (and batch 1), sharing one
copy of the weights: XNNPACK's dynamic shapes in ExecuTorch 1.5 capped a batch dimension below
what was declared, and a phone or edge deployment runs a fixed batch anyway. A TorchScript
archive is turned into a torch.export program by PyTorch's converter first."""

from __future__ import annotations

import importlib.util
import inspect
from typing import Literal

from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, failing_as, register
from .edge import EdgePassSettings, EdgePrecision, batch_sizes, batches, calibration_rows


class ExecuTorchPass(EdgePassSettings):
    """A .pte program for ExecuTorch on XNNPACK, in FP32 or INT8 (the XNNPACK quantizer, calibrated)."""

    type: Literal["ExecuTorch"]


@register(ExecuTorchPass)
class ExecuTorch(OptimizationPass):
    technique = "executorch"
    accepts = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT, ModelFormat.HUGGING_FACE})
    output_format = ModelFormat.EXECUTORCH

    def not_applicable_reason(self) -> str | None:
        if importlib.util.find_spec("executorch") is None:
            return "executorch is not installed (the job image's extra `edge`)"
        return None

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from torch.export import export

        module = exportable(model, tensors(ctx.example_inputs, ctx), ctx.input_names)
        if self.spec.precision.quantized:
            module = self._quantized(module, ctx)
        ctx.log(f"exporting for batch sizes {batch_sizes(ctx)} and lowering to XNNPACK ({self.spec.precision.value})")
        with failing_as("ExecuTorch export and lowering to XNNPACK"):
            programs = {f"forward_b{size}": export(module, tensors(batch, ctx)) for size, batch in batches(ctx).items()}
            program = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()]).to_executorch()
        output = ctx.output_dir / "model.pte"
        output.write_bytes(program.buffer)
        return ModelFile(output, ModelFormat.EXECUTORCH, self.spec.precision.label)

    def _quantized(self, module, ctx: PassContext):
        """PT2E INT8 for XNNPACK: observers inserted on a graph of any batch size, calibrated (dynamic:
        the weights' observers need one batch), converted."""
        from ..data import row_count, rows
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        dynamic = self.spec.precision is EdgePrecision.INT8_DYNAMIC
        calibration = ctx.example_inputs if dynamic else calibration_rows(ctx, self.spec.calibration_samples)
        with failing_as("torch.export with a batch of any size"):
            graph = for_pt2e(module, tensors(ctx.example_inputs, ctx))
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=self.spec.per_channel,
                                                                                   is_dynamic=dynamic))
        prepared = prepare_pt2e(graph, quantizer)
        for start in range(0, row_count(calibration), 32):
            prepared(*tensors(rows(calibration, start, start + 32), ctx))
        return without_unused_tensors(convert_pt2e(prepared))


def exportable(model: ModelFile, example: tuple, input_names: tuple[str, ...]):
    """A module torch.export traces: a torch.export program's own, a TorchScript archive's converted
    on `example`, or a Hugging Face checkpoint with its task head taking `input_names` in order (each
    loaded through its format's door)."""
    from ..runtimes import load_torch_module

    if model.format is ModelFormat.HUGGING_FACE:
        from ..huggingface import load_task_model

        return load_task_model(model.path, model.options, input_names)

    module = load_torch_module(model)
    if model.format is ModelFormat.TORCH_SCRIPT:
        from torch._export.converter import TS2EPConverter

        with failing_as("Converting the TorchScript archive to a torch.export program"):
            module = TS2EPConverter(module, example).convert().module()
    return module


def for_pt2e(module, example: tuple):
    """The module exported with a batch of any size, ready for PT2E's prepare (the quantizers calibrate
    it on batches of their own size)."""
    from torch.export import Dim, export

    batch = Dim("batch", min=1, max=65_536)
    shapes = tuple({0: batch} for _ in example)
    if any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values()):
        shapes = (shapes,)  # forward(*tensors), as a checkpoint's task module takes them: one argument to export
    return without_zero_additions(export(module, example, dynamic_shapes=shapes).module())


def without_zero_additions(graph):
    """The graph without its additions of an integer 0. PT2E's prepare makes a scalar operand a float
    tensor constant, and a transformer's mask adds 0 to an arange that then indexes: the float sum
    fails the calibration ("tensors used as indices must be long"). Adding 0 changes nothing."""
    import torch

    for node in list(graph.graph.nodes):
        if (node.target in (torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor) and len(node.args) == 2
                and type(node.args[1]) is int and node.args[1] == 0):
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
    graph.recompile()
    return graph


def without_unused_tensors(graph):
    """The quantized graph without the FP32 weights its INT8 copies replaced: a converted TorchScript
    archive holds its weights as buffers, which export would keep in the program (4x its INT8 size)."""
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name, _ in [*graph.named_buffers(), *graph.named_parameters()]:
        if name not in used:
            path, _, attribute = name.rpartition(".")
            delattr(graph.get_submodule(path) if path else graph, attribute)
    return graph


def tensors(inputs: dict, ctx: PassContext) -> tuple:
    import numpy as np
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in ctx.input_names)
