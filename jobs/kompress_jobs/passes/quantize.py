"""INT8 quantization with ONNX Runtime: dynamic (weights only, activations at run time) and
static (weights and activations, ranges calibrated on the calibration split, QDQ by default)."""

from __future__ import annotations

import contextlib
import io
import logging
from typing import TYPE_CHECKING

from ..errors import PassError
from ..modelfile import ModelFile
from ..schema import ModelFormat
from .base import OptimizationPass, PassContext, register

if TYPE_CHECKING:
    import numpy as np


def _quant_type(value):
    from onnxruntime.quantization import QuantType

    return {"QInt8": QuantType.QInt8, "QUInt8": QuantType.QUInt8}[value.value]


def _preprocess(model: ModelFile, ctx: PassContext):
    """Shape inference and basic folding, as ONNX Runtime recommends before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = ctx.output_dir / "preprocessed.onnx"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(model.path), str(prepared), skip_symbolic_shape=False)
    except Exception as exc:  # symbolic shape inference gives up on some graphs: quantize as given
        ctx.log(f"pre-processing skipped ({str(exc).splitlines()[0][:120]})")
        return model.path, None
    return prepared, prepared


@register
class DynamicInt8(OptimizationPass):
    type = "DynamicInt8"
    technique = "quantization"
    accepts = frozenset({ModelFormat.ONNX})
    output_format = ModelFormat.ONNX
    moves_head = False

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        from onnxruntime.quantization import quantize_dynamic

        source, scratch = _preprocess(model, ctx)
        output = ctx.output_dir / "model.onnx"
        try:
            quantize_dynamic(
                str(source), str(output),
                weight_type=_quant_type(self.spec.weight_type),
                per_channel=self.spec.per_channel,
                reduce_range=self.spec.reduce_range,
                op_types_to_quantize=self.spec.op_types,
            )
        except Exception as exc:
            raise PassError(f"dynamic INT8 quantization failed: {str(exc).splitlines()[0][:300]}") from None
        finally:
            if scratch is not None:
                scratch.unlink(missing_ok=True)
        return ModelFile(output, ModelFormat.ONNX, "int8")


def _calibration_reader(input_name: str, inputs: np.ndarray, batch_size: int):
    """Feeds the calibration split to ONNX Runtime's calibrator in equal batches
    (the histogram calibrators stack batches, so a short last batch breaks them)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{input_name: inputs[i : i + batch_size]} for i in range(0, len(inputs), batch_size)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()


@register
class StaticInt8(OptimizationPass):
    type = "StaticInt8"
    technique = "quantization"
    accepts = frozenset({ModelFormat.ONNX})
    output_format = ModelFormat.ONNX
    moves_head = False

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        calibration = ctx.dataset.calibration or ctx.dataset.train
        if calibration is None:
            raise PassError("static INT8 needs a calibration split (x_calibration / y_calibration) or a train split")
        samples = calibration.inputs[: self.spec.calibration_samples]
        batch_size = min(16, len(samples))
        samples = samples[: len(samples) - len(samples) % batch_size]
        input_name = onnx.load(str(model.path), load_external_data=False).graph.input[0].name

        reader = _calibration_reader(input_name, samples, batch_size)
        source, scratch = _preprocess(model, ctx)
        output = ctx.output_dir / "model.onnx"
        methods = {"MinMax": CalibrationMethod.MinMax, "Entropy": CalibrationMethod.Entropy,
                   "Percentile": CalibrationMethod.Percentile}
        logging.getLogger("root").setLevel(logging.WARNING)  # the calibrator logs every tensor at INFO
        try:
            quantize_static(
                str(source), str(output), reader,
                quant_format=QuantFormat.QDQ if self.spec.quant_format.value == "QDQ" else QuantFormat.QOperator,
                per_channel=self.spec.per_channel,
                reduce_range=self.spec.reduce_range,
                activation_type=_quant_type(self.spec.activation_type),
                weight_type=_quant_type(self.spec.weight_type),
                calibrate_method=methods[self.spec.calibration_method.value],
                op_types_to_quantize=self.spec.op_types,
            )
        except Exception as exc:
            raise PassError(f"static INT8 quantization failed: {str(exc).splitlines()[0][:300]}") from None
        finally:
            if scratch is not None:
                scratch.unlink(missing_ok=True)
        ctx.log(f"calibrated on {len(samples)} samples ({self.spec.calibration_method.value})")
        return ModelFile(output, ModelFormat.ONNX, "int8")
