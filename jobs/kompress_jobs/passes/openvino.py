"""OpenVINO: conversion to IR, INT8 post-training quantization and weight compression with NNCF.

Each pass takes an ONNX model (or an IR) and writes an IR, model.xml with its weights model.bin,
which the pipeline treats as one candidate (stored, hashed and reported together). `openvino` and
`nncf` are in the job image only; without them the passes say so and the run goes on.
"""

from __future__ import annotations

import importlib.util
from enum import Enum
from typing import Literal

from pydantic import Field

from ..errors import PassError
from ..measurement.hardware import cpu_lacks
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from ..spec.wire import MAX_ITEMS, Model
from .base import OptimizationPass, PassContext, failing_as, register
from .quantize import quiet_library
from .settings import ComputePrecision, PassSettings


class OpenVinoConvertPass(PassSettings):
    """The ONNX model converted to OpenVINO IR (model.xml + model.bin) and run by OpenVINO on the CPU
    (latency hint, benchmark.threads threads) in `inferencePrecision`."""

    type: Literal["OpenVinoConvert"]
    inference_precision: ComputePrecision = Field(
        ComputePrecision.FP32, description="FP32; BF16 (or FP16) computes in that type where the CPU has it natively "
        "(amx_bf16 or avx512_bf16; amx_fp16 or avx512_fp16), else the candidate is NotApplicable naming what is missing.")


class NncfModelType(str, Enum):
    DEFAULT = "Default"
    TRANSFORMER = "Transformer"  # NNCF's transformer preset: keeps the sensitive parts of attention blocks in FP32


class NncfPreset(str, Enum):
    PERFORMANCE = "Performance"  # symmetric weights and activations
    MIXED = "Mixed"  # symmetric weights, asymmetric activations (NNCF's default for transformers)


class IgnoredScope(Model):
    """Operators NNCF leaves in FP32, by OpenVINO name, name pattern (regex) or type; each must match one."""

    names: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    patterns: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    types: list[str] = Field(default_factory=list, max_length=256)


class OpenVinoInt8Pass(PassSettings):
    """INT8 post-training quantization of weights and activations with NNCF, calibrated on the
    calibration split; the result is an OpenVINO IR."""

    type: Literal["OpenVinoInt8"]
    model_type: NncfModelType = NncfModelType.DEFAULT
    preset: NncfPreset | None = Field(None, description="NNCF's choice for the model type when unset.")
    calibration_samples: int = Field(300, ge=1, le=100_000)
    fast_bias_correction: bool = True
    ignored_scope: IgnoredScope = Field(default_factory=IgnoredScope)


class WeightBits(str, Enum):
    INT8 = "INT8"
    INT4 = "INT4"


class OpenVinoWeightCompressionPass(PassSettings):
    """Weight-only compression with NNCF (MatMul / embedding weights to INT8 or INT4, activations stay
    FP32): mostly a size gain on CPU encoders; the benchmark says whether it is also faster."""

    type: Literal["OpenVinoWeightCompression"]
    bits: WeightBits = WeightBits.INT4
    symmetric: bool = True
    block_size: int | None = Field(128, ge=8, le=4096, description="INT4: weights per scale (group size); must divide every compressed layer's input width.")
    ratio: float = Field(1.0, gt=0, le=1, description="INT4: share of the layers in INT4; the rest INT8.")



def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"{' and '.join(absent)} not installed (the job image has them: pip install 'kompress[job]')" if absent else None


def read_model(model: ModelFile):
    """The model as an openvino.Model: an IR read, or an ONNX file converted in memory."""
    import openvino as ov

    from ..runtimes import check_ir

    if model.format is ModelFormat.OPENVINO:
        check_ir(model.path)
        return ov.Core().read_model(str(model.path))
    return ov.convert_model(str(model.path))


def save(ov_model, output, precision: str) -> ModelFile:
    """output: the .xml path; its .bin is written beside it."""
    import openvino as ov

    ov.save_model(ov_model, str(output), compress_to_fp16=False)  # FP16 weights would be a precision change
    return ModelFile(output, ModelFormat.OPENVINO, precision)


def calibration_dataset(ctx: PassContext, samples: int):
    """One calibration row per item, fed by input name, as NNCF's OpenVINO backend takes them."""
    import nncf

    from ..data import row_count, rows
    from .quantize import calibration_rows

    inputs, _ = calibration_rows(ctx, samples)
    return nncf.Dataset([rows(inputs, i, i + 1) for i in range(row_count(inputs))])


def matmul_widths(ov_model) -> dict[str, int]:
    """Input width (the reduced dimension) of every MatMul with a constant weight: what a block divides."""
    widths = {}
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        weight = op.input_value(1).get_node()
        while weight.get_type_name() in ("Convert", "Transpose", "Reshape") and weight.get_input_size():
            weight = weight.input_value(0).get_node()
        if weight.get_type_name() != "Constant":
            continue
        shape = list(op.input_value(1).get_partial_shape().to_shape())
        transposed = op.get_attributes().get("transpose_b", False)
        widths[op.get_friendly_name()] = shape[-1] if transposed else shape[-2]
    return widths


def check_block_size(widths: dict[str, int], block: int) -> None:
    bad = {name: width for name, width in widths.items() if width % block}
    if bad:
        name, width = next(iter(bad.items()))
        raise PassError(f"block size {block} does not divide layer {name!r} (input width {width}); "
                        f"{len(bad)} layer(s) affected: pick a block size that divides every MatMul's input width")


@register(OpenVinoConvertPass)
class OpenVinoConvert(OptimizationPass):
    technique = "runtime"
    output_format = ModelFormat.OPENVINO

    def __init__(self, spec: OpenVinoConvertPass):
        super().__init__(spec)
        if spec.inference_precision is not ComputePrecision.FP32:
            self.technique = "half-precision"

    def not_applicable_reason(self) -> str | None:
        precision = self.spec.inference_precision
        return _missing("openvino") or (cpu_lacks(precision.short) if precision is not ComputePrecision.FP32 else None)

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        precision = self.spec.inference_precision
        with failing_as("OpenVINO conversion"):
            # The IR keeps its FP32 weights: the runtime computes in `precision` (the candidate says which).
            return save(read_model(model), ctx.output_dir / "model.xml",
                        precision.short if precision is not ComputePrecision.FP32 else model.precision)


class NncfPass(OptimizationPass):
    """What the NNCF passes share: an ONNX model or an IR in, an IR variant out, both libraries needed."""

    accepts = frozenset({ModelFormat.ONNX, ModelFormat.OPENVINO})
    output_format = ModelFormat.OPENVINO

    def not_applicable_reason(self) -> str | None:
        return _missing("openvino", "nncf")


@register(OpenVinoInt8Pass)
class OpenVinoInt8(NncfPass):
    technique = "quantization"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        spec = self.spec
        quantized = nncf_int8(model, ctx, ctx.output_dir / "model.xml", model_type=spec.model_type.value,
                              preset=spec.preset.value if spec.preset else None, samples=spec.calibration_samples,
                              fast_bias_correction=spec.fast_bias_correction, ignored_scope=spec.ignored_scope)
        ctx.log(f"NNCF INT8 ({spec.model_type.value}) calibrated on up to {spec.calibration_samples} rows")
        return quantized


def nncf_int8(model: ModelFile, ctx: PassContext, output, *, model_type: str, preset: str | None, samples: int,
              fast_bias_correction: bool = True, ignored_scope=None) -> ModelFile:
    """NNCF post-training INT8 of an ONNX model or IR into `output` (.xml); PassError with NNCF's reason."""
    import nncf

    options = {}
    if model_type == "Transformer":
        options["model_type"] = nncf.ModelType.TRANSFORMER
    if preset is not None:
        options["preset"] = nncf.QuantizationPreset.PERFORMANCE if preset == "Performance" else nncf.QuantizationPreset.MIXED
    if ignored_scope is not None and (ignored_scope.names or ignored_scope.patterns or ignored_scope.types):
        options["ignored_scope"] = nncf.IgnoredScope(names=ignored_scope.names, patterns=ignored_scope.patterns,
                                                     types=ignored_scope.types)
    dataset = calibration_dataset(ctx, samples)
    with quiet_library("nncf"):
        try:
            quantized = nncf.quantize(read_model(model), dataset, subset_size=samples,
                                      fast_bias_correction=fast_bias_correction, **options)
        except Exception as exc:  # nncf.ValidationError names an ignored scope that matches nothing
            raise PassError(f"NNCF INT8 quantization failed: {' '.join(str(exc).split())[:400]}") from None
    return save(quantized, output, "int8")


@register(OpenVinoWeightCompressionPass)
class OpenVinoWeightCompression(NncfPass):
    technique = "weight-compression"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import nncf

        spec = self.spec
        ov_model = read_model(model)
        options: dict = {}
        if spec.bits is WeightBits.INT4:
            mode = nncf.CompressWeightsMode.INT4_SYM if spec.symmetric else nncf.CompressWeightsMode.INT4_ASYM
            if spec.block_size is not None:
                check_block_size(matmul_widths(ov_model), spec.block_size)
            options = {"group_size": spec.block_size or -1, "ratio": spec.ratio}
        else:
            mode = nncf.CompressWeightsMode.INT8_SYM if spec.symmetric else nncf.CompressWeightsMode.INT8_ASYM
        with quiet_library("nncf"):
            try:
                compressed = nncf.compress_weights(ov_model, mode=mode, **options)
            except Exception as exc:
                raise PassError(f"NNCF weight compression failed: {' '.join(str(exc).split())[:400]}") from None
        return save(compressed, ctx.output_dir / "model.xml", spec.bits.value.lower())
