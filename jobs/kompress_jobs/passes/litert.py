"""LiteRT (TensorFlow Lite's successor): a PyTorch model converted by litert-torch to a .tflite
model, optionally quantized to INT8 (PT2E with litert-torch's quantizer: symmetric weights, per
channel by default, activations calibrated on the calibration split; INT8 inputs and outputs) or to
dynamic INT8 (ai-edge-quantizer's recipe on the FP32 model: INT8 weights, activations quantized at
run time), and run by LiteRT's interpreter on XNNPACK like every other candidate.

The model holds one signature per batch size the benchmark runs and batch 1 (`b<N>`): its reshapes
are traced static. The converter pins an older pydantic than the job runs, so it is installed in a
folder of its own (requirements/litert-converter.txt) and runs in a process that puts that folder on
its path; torch, torchao and numpy are the job's own. A TorchScript archive is turned into a
torch.export program first, as for ExecuTorch."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Literal

from ..child_python import last_line, run_python
from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import HuggingFaceOptions, ModelFormat
from .base import OptimizationPass, PassContext, register
from .edge import EdgePassSettings, EdgePrecision, batch_sizes, batches, calibration_rows

CONVERTER_ENV = "KOMPRESS_LITERT_CONVERTER"
_CONVERT = """
import json, sys
from kompress_jobs.passes.litert import convert
convert(json.loads(sys.argv[1]))
print("ok")
"""


class LiteRtPass(EdgePassSettings):
    """A .tflite model for LiteRT on XNNPACK, in FP32 or INT8 (litert-torch's quantizer, calibrated;
    INT8 inputs and outputs)."""

    type: Literal["LiteRT"]


def converter_path() -> Path:
    """Where litert-torch is installed: $KOMPRESS_LITERT_CONVERTER, else `litert-converter` in the
    job's Python environment (scripts/setup-venv and the job image put it there)."""
    return Path(os.environ.get(CONVERTER_ENV) or Path(sys.prefix) / "litert-converter")


@register(LiteRtPass)
class LiteRt(OptimizationPass):
    technique = "litert"
    accepts = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT, ModelFormat.HUGGING_FACE})
    output_format = ModelFormat.LITERT

    def not_applicable_reason(self) -> str | None:
        if importlib.util.find_spec("ai_edge_litert") is None:
            return "ai-edge-litert is not installed (the job image's extra `edge`)"
        if not (converter_path() / "litert_torch").is_dir():
            return (f"litert-torch is not installed in {converter_path()} (it pins an older pydantic: pip install --no-deps "
                    f"--target {converter_path()} -r requirements/litert-converter.txt, or set {CONVERTER_ENV})")
        return None

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import numpy as np

        sizes = batch_sizes(ctx)
        arrays = {f"b{size}/{name}": array for size, batch in batches(ctx).items() for name, array in batch.items()}
        arrays |= {f"example/{name}": array for name, array in ctx.example_inputs.items()}  # two rows: no batch-1 specialising
        if self.spec.precision is EdgePrecision.INT8:  # dynamic INT8 calibrates nothing
            arrays |= {f"calibration/{name}": a for name, a in calibration_rows(ctx, self.spec.calibration_samples).items()}
        data = ctx.output_dir / "_inputs.npz"
        np.savez(data, **arrays)
        output = ctx.output_dir / "model.tflite"
        job = {"model": str(model.path.resolve()), "format": model.format.value, "output": str(output.resolve()), "data": str(data.resolve()),
               "inputNames": list(ctx.input_names), "sizes": sizes, "precision": self.spec.precision.value,
               "perChannel": self.spec.per_channel,
               "options": model.options.model_dump(mode="json", by_alias=True) if model.options else None}
        ctx.log(f"converting for batch sizes {sizes} ({self.spec.precision.value}) with litert-torch, in a process of its own")
        done = run_python(code=_CONVERT, args=[json.dumps(job)], paths=[converter_path()])
        data.unlink(missing_ok=True)
        if done.returncode != 0 or not output.is_file():
            raise PassError(f"litert-torch could not convert the model: {last_line(done)}")
        return ModelFile(output, ModelFormat.LITERT, self.spec.precision.label)


def convert(job: dict) -> None:
    """In the converter's process: the model through its format's door, one signature per batch size."""
    import litert_torch
    import numpy as np
    import torch

    from .executorch import exportable

    data = np.load(job["data"])
    names = job["inputNames"]
    tensors = lambda prefix: tuple(torch.from_numpy(data[f"{prefix}/{n}"]) for n in names)  # noqa: E731
    options = HuggingFaceOptions.model_validate(job["options"]) if job["options"] else None
    model = ModelFile(Path(job["model"]), ModelFormat(job["format"]), options=options)
    module = exportable(model, tensors("example"), tuple(names))
    precision, options = EdgePrecision(job["precision"]), {}
    if precision is EdgePrecision.INT8:
        module, options = _quantized(module, tensors, job)
    converter = None
    for size in job["sizes"]:
        add = litert_torch.signature if converter is None else converter.signature
        converter = add(f"b{size}", module, tensors(f"b{size}"))
    converted = converter.convert(**options)
    if precision is EdgePrecision.INT8_DYNAMIC:
        _dynamically_quantized(converted, Path(job["output"]), job["perChannel"])
    else:
        converted.export(job["output"])


def _dynamically_quantized(converted, output: Path, per_channel: bool) -> None:
    """Dynamic INT8 by ai-edge-quantizer's recipe on the FP32 model: INT8 weights for every op it
    supports, the embedding lookup included (symmetric, as LiteRT's kernel requires: PT2E's dynamic
    INT8 left the table asymmetric, and a transformer encoder then failed to load, "zero_point == 0")."""
    from ai_edge_quantizer import qtyping, quantizer

    fp32 = output.with_suffix(".fp32.tflite")
    converted.export(str(fp32))
    try:
        weights = quantizer.Quantizer(str(fp32))
        weights.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=8,
                                   granularity=qtyping.QuantGranularity.CHANNELWISE if per_channel
                                   else qtyping.QuantGranularity.TENSORWISE)
        weights.quantize().export_model(str(output), overwrite=True)
    finally:
        fp32.unlink()


def _quantized(module, tensors, job: dict):
    """Static INT8 by PT2E with litert-torch's quantizer, calibrated on the calibration rows."""
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .executorch import for_pt2e

    graph = for_pt2e(module, tensors("example"))
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=job["perChannel"]))
    prepared = prepare_pt2e(graph, quantizer)
    calibration = tensors("calibration")
    for start in range(0, len(calibration[0]), 32):
        prepared(*(t[start: start + 32] for t in calibration))
    return convert_pt2e(prepared, fold_quantize=False), {"quant_config": quant_config.QuantConfig(pt2e_quantizer=quantizer)}
