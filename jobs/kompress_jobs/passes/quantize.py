"""INT8 quantization with ONNX Runtime: dynamic (weights only, activations at run time) and
static (weights and activations, ranges calibrated on the calibration split, QDQ by default)."""

from __future__ import annotations

import contextlib
import io
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, failing_as, register
from .settings import PassSettings


class QuantType(str, Enum):
    QINT8 = "QInt8"
    QUINT8 = "QUInt8"


class DynamicInt8Pass(PassSettings):
    type: Literal["DynamicInt8"]
    per_channel: bool = False
    reduce_range: bool = Field(False, description="7-bit weights, for CPUs without VNNI.")
    weight_type: QuantType = QuantType.QINT8
    op_types: list[str] | None = Field(None, max_length=256, description="Operator types to quantize; all supported when unset.")


class CalibrationMethod(str, Enum):
    MIN_MAX = "MinMax"
    ENTROPY = "Entropy"
    PERCENTILE = "Percentile"


class QuantFormat(str, Enum):
    QDQ = "QDQ"
    QOPERATOR = "QOperator"


class StaticInt8Pass(PassSettings):
    type: Literal["StaticInt8"]
    per_channel: bool = True
    reduce_range: bool = False
    quant_format: QuantFormat = QuantFormat.QDQ
    calibration_method: CalibrationMethod = CalibrationMethod.MIN_MAX
    calibration_samples: int = Field(256, ge=1, le=100_000)
    activation_type: QuantType = QuantType.QUINT8
    weight_type: QuantType = QuantType.QINT8
    op_types: list[str] | None = Field(None, max_length=256)


if TYPE_CHECKING:
    from ..data import Inputs


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"QInt8": QuantType.QInt8, "QUInt8": QuantType.QUInt8}[name]


@contextlib.contextmanager
def in_scratch(folder):
    """ONNX Runtime's shape inference writes temporary files (sym_shape_infer_temp.onnx, <uuid>.data
    external weights) into the working directory: run it from the pass's own folder, with absolute paths."""
    with contextlib.chdir(folder):
        yield


@contextlib.contextmanager
def quiet_library(logger_name: str = ""):
    """Quantizers talk: ONNX Runtime's warns on the root logger and prints calibration progress,
    NNCF logs INFO lines and draws progress bars. Failures still surface as exceptions; the passes
    log their own summaries."""
    from ..runtimes import quiet_logger

    with quiet_logger(logger_name), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def preprocess(model: ModelFile, ctx: PassContext):
    """Shape inference and basic folding, as ONNX Runtime recommends before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = ctx.output_dir / "preprocessed.onnx"
    try:
        with contextlib.redirect_stdout(io.StringIO()), in_scratch(ctx.output_dir):
            quant_pre_process(str(model.path.resolve()), str(prepared.resolve()), skip_symbolic_shape=False)
    except Exception as exc:  # symbolic shape inference gives up on some graphs: quantize as given
        ctx.log(f"pre-processing skipped ({str(exc).splitlines()[0][:120]})")
        return model.path, None
    return prepared, prepared


@contextlib.contextmanager
def preprocessed(model: ModelFile, ctx: PassContext):
    """The model to quantize (pre-processed when ONNX Runtime could), its scratch copy removed after."""
    source, scratch = preprocess(model, ctx)
    try:
        yield source
    finally:
        if scratch is not None:
            scratch.unlink(missing_ok=True)


def dynamic_int8(source, output, *, per_channel: bool, reduce_range: bool, weight_type: str = "QInt8",
                 op_types: list[str] | None = None, nodes_to_exclude: list[str] | None = None) -> None:
    """ONNX Runtime's quantize_dynamic; PassError with its first line when it fails."""
    from onnxruntime.quantization import quantize_dynamic

    with failing_as("dynamic INT8 quantization"), quiet_library(), in_scratch(Path(output).resolve().parent):
        quantize_dynamic(str(Path(source).resolve()), str(Path(output).resolve()), weight_type=_quant_type(weight_type), per_channel=per_channel,
                         reduce_range=reduce_range, op_types_to_quantize=op_types, nodes_to_exclude=nodes_to_exclude or [])


def static_int8(source, output, reader, *, quant_format: str, per_channel: bool, reduce_range: bool,
                activation_type: str, weight_type: str, calibration_method: str, op_types: list[str] | None = None,
                nodes_to_exclude: list[str] | None = None) -> None:
    """ONNX Runtime's quantize_static over a calibration reader; PassError with its first line when it fails."""
    from onnxruntime.quantization import CalibrationMethod as OrtCalibrationMethod
    from onnxruntime.quantization import QuantFormat as OrtQuantFormat
    from onnxruntime.quantization import quantize_static

    methods = {"MinMax": OrtCalibrationMethod.MinMax, "Entropy": OrtCalibrationMethod.Entropy,
               "Percentile": OrtCalibrationMethod.Percentile}
    with failing_as("static INT8 quantization"), quiet_library(), in_scratch(Path(output).resolve().parent):
        quantize_static(
            str(Path(source).resolve()), str(Path(output).resolve()), reader,
            quant_format=OrtQuantFormat.QDQ if quant_format == "QDQ" else OrtQuantFormat.QOperator,
            per_channel=per_channel, reduce_range=reduce_range,
            activation_type=_quant_type(activation_type), weight_type=_quant_type(weight_type),
            calibrate_method=methods[calibration_method], op_types_to_quantize=op_types,
            nodes_to_exclude=nodes_to_exclude or [],
        )


@register(DynamicInt8Pass)
class DynamicInt8(OptimizationPass):
    technique = "quantization"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        output = ctx.output_dir / "model.onnx"
        with preprocessed(model, ctx) as source:
            dynamic_int8(source, output, per_channel=self.spec.per_channel, reduce_range=self.spec.reduce_range,
                         weight_type=self.spec.weight_type.value, op_types=self.spec.op_types)
        return ModelFile(output, ModelFormat.ONNX, "int8")


def calibration_reader(inputs: Inputs, batch_size: int):
    """Feeds named calibration rows to ONNX Runtime's calibrator in equal batches (the histogram
    calibrators stack batches, so a short last batch breaks them). Integer inputs (token ids,
    masks) are fed as they are; only the float activations they produce are calibrated."""
    from onnxruntime.quantization import CalibrationDataReader

    from ..data import row_count, rows

    usable = row_count(inputs) - row_count(inputs) % batch_size

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([rows(inputs, i, i + batch_size) for i in range(0, usable, batch_size)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()


def calibration_rows(ctx: PassContext, samples: int) -> tuple[Inputs, int]:
    """Up to `samples` calibration rows (the train split when there is no calibration split) and a batch size."""
    from ..data import row_count, rows

    calibration = ctx.dataset.calibration or ctx.dataset.train
    if calibration is None:
        raise PassError(f"static INT8 needs a calibration split ({ctx.dataset.source.calibration_split!r}) or a train split")
    inputs = rows(calibration.inputs, 0, samples)
    return inputs, min(16, row_count(inputs))


@register(StaticInt8Pass)
class StaticInt8(OptimizationPass):
    technique = "quantization"

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        from ..data import row_count

        samples, batch_size = calibration_rows(ctx, self.spec.calibration_samples)
        output = ctx.output_dir / "model.onnx"
        spec = self.spec
        with preprocessed(model, ctx) as source:
            static_int8(source, output, calibration_reader(samples, batch_size), quant_format=spec.quant_format.value,
                        per_channel=spec.per_channel, reduce_range=spec.reduce_range,
                        activation_type=spec.activation_type.value, weight_type=spec.weight_type.value,
                        calibration_method=spec.calibration_method.value, op_types=spec.op_types)
        ctx.log(f"calibrated on {batch_size * (row_count(samples) // batch_size)} samples ({spec.calibration_method.value})")
        return ModelFile(output, ModelFormat.ONNX, "int8")
