"""TensorRT engines (FP16, INT8) built from an ONNX candidate with the `tensorrt` Python API.

The engine is built for the batch sizes the benchmark runs (one optimization profile spanning
them) and measured on the GPU by the same harness as every other candidate. INT8 uses entropy
calibration over the calibration split; a QDQ model from StaticInt8 carries its own scales.
"""

from __future__ import annotations

import importlib.util
from enum import Enum
from typing import Literal

from pydantic import Field

from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, register
from .settings import PassSettings


class TensorRtPrecision(str, Enum):
    FP16 = "FP16"
    INT8 = "INT8"


class TensorRtPass(PassSettings):
    """A TensorRT engine built from the ONNX model on the Job's GPU, benchmarked there like every
    other candidate. Without a GPU or TensorRT the pass is reported NotApplicable with the reason."""

    type: Literal["TensorRT"]
    precision: TensorRtPrecision = Field(TensorRtPrecision.FP16, description="FP16, or INT8 calibrated on the "
                                         "calibration split (FP16 kernels where INT8 has none). A QDQ model keeps its own scales.")
    workspace_mi_b: int = Field(1024, ge=16, le=1_048_576, alias="workspaceMiB", description="Builder scratch memory.")
    calibration_batch_size: int = Field(32, ge=1, le=4096)



def gpu_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None. Checked before any work, so the report says why."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (run on the GPU Job image: spec.job.device: GPU)"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to this Job (spec.job.device: GPU schedules it on a GPU node)"
    return None


def _calibrator(trt, inputs: dict, batch_size: int):
    """An entropy calibrator feeding the named calibration rows through device buffers."""
    import torch

    from ..data import row_count, rows

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            count = row_count(inputs)
            usable = count - count % batch_size or count
            self.batches = [rows(inputs, i, i + batch_size) for i in range(0, usable, batch_size)]
            self.size = row_count(self.batches[0])
            self.device = {}
            self.cache = None

        def get_batch_size(self):
            return self.size

        def get_batch(self, names):
            if not self.batches:
                return None
            batch = self.batches.pop(0)
            self.device = {name: torch.from_numpy(batch[name]).cuda().contiguous() for name in names}
            return [int(self.device[name].data_ptr()) for name in names]

        def read_calibration_cache(self):
            return self.cache

        def write_calibration_cache(self, cache):
            self.cache = bytes(cache)

    return Calibrator()


@register(TensorRtPass)
class TensorRt(OptimizationPass):
    technique = "tensorrt"
    output_format = ModelFormat.TENSORRT

    def not_applicable_reason(self) -> str | None:
        return gpu_unavailable_reason()

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch: the only mode TensorRT 10 has
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(model.path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise PassError(f"TensorRT cannot parse the ONNX model: {errors[:400]}")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.spec.workspace_mi_b * 2**20)
        profile = builder.create_optimization_profile()
        data = ctx.dataset.evaluation.inputs
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            if tensor.name not in data:
                raise PassError(f"the ONNX model's input {tensor.name!r} is not in the data ({', '.join(data)})")
            # Dynamic axes beyond the batch (a sequence) take the data's length, which every call uses.
            sample = tuple(d if d >= 0 else data[tensor.name].shape[axis + 1] for axis, d in enumerate(tensor.shape[1:]))
            low, high = min(ctx.batch_sizes), max(ctx.batch_sizes)
            profile.set_shape(tensor.name, (low, *sample), (ctx.batch_sizes[0], *sample), (high, *sample))
        config.add_optimization_profile(profile)
        config.set_flag(trt.BuilderFlag.FP16)  # also the fallback for layers without INT8 kernels
        if self.spec.precision is TensorRtPrecision.INT8:
            config.set_flag(trt.BuilderFlag.INT8)
            if not _has_qdq(network):
                calibration = ctx.dataset.calibration
                if calibration is None:
                    raise PassError(f"INT8 calibration needs a calibration split ({ctx.dataset.source.calibration_split!r})")
                config.int8_calibrator = _calibrator(trt, calibration.inputs, self.spec.calibration_batch_size)
                config.set_calibration_profile(profile)
                ctx.log(f"calibrating INT8 on {len(calibration)} samples")

        ctx.log(f"building a {self.spec.precision.value} engine for batch sizes {min(ctx.batch_sizes)}–{max(ctx.batch_sizes)}")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise PassError("TensorRT could not build an engine for this model (see the builder's log above)")
        output = ctx.output_dir / "model.engine"
        output.write_bytes(bytes(serialized))
        return ModelFile(output, ModelFormat.TENSORRT, self.spec.precision.value.lower())


def _has_qdq(network) -> bool:
    """A StaticInt8 (QDQ) model brings its own scales: explicit quantization, no calibration."""
    import tensorrt as trt

    return any(network.get_layer(i).type in (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
               for i in range(network.num_layers))
