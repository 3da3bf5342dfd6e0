"""What the edge passes (ExecuTorch, LiteRT) share: FP32, INT8 through a PT2E quantizer calibrated
on the calibration split, or dynamic INT8 (INT8 weights, activations quantized as they come), and
a model with one fixed batch size per benchmark batch size."""

from __future__ import annotations

from enum import Enum

from pydantic import Field

from ..errors import PassError
from .base import PassContext
from .settings import PassSettings


class EdgePrecision(str, Enum):
    FP32 = "FP32"
    INT8 = "INT8"  # static: every activation's range calibrated beforehand
    INT8_DYNAMIC = "INT8Dynamic"  # INT8 weights; each activation's range taken at run time

    @property
    def quantized(self) -> bool:
        return self is not EdgePrecision.FP32

    @property
    def label(self) -> str:
        """The candidate's precision as the report shows it."""
        return {EdgePrecision.FP32: "fp32", EdgePrecision.INT8: "int8", EdgePrecision.INT8_DYNAMIC: "int8-dynamic"}[self]


class EdgePassSettings(PassSettings):
    precision: EdgePrecision = Field(EdgePrecision.FP32, description="FP32; INT8 through the runtime's PT2E "
                                     "quantizer (symmetric weights), every activation calibrated on the calibration "
                                     "split; or INT8Dynamic: INT8 weights, activations quantized at run time (no "
                                     "calibration; what keeps a transformer's accuracy).")
    per_channel: bool = Field(True, description="INT8: one scale per output channel of each weight.")
    calibration_samples: int = Field(256, ge=1, le=100_000, description="INT8: calibration rows run through the model.")


def batch_sizes(ctx: PassContext) -> list[int]:
    """The fixed batch sizes an edge model is built for: the benchmark's, and 1 (any other runs in chunks)."""
    return sorted({1, *ctx.batch_sizes})


def batches(ctx: PassContext) -> dict[int, dict]:
    """A real batch of each size the model is built for (the evaluation rows, repeated when fewer)."""
    from ..data import batch_of  # numpy: never at import, the operator reads the settings above

    return {size: batch_of(ctx.dataset.evaluation.inputs, size) for size in batch_sizes(ctx)}


def calibration_rows(ctx: PassContext, samples: int) -> dict:
    """The calibration rows INT8 is calibrated on; PassError without a calibration split."""
    from ..data import row_count, rows

    calibration = ctx.dataset.calibration
    if calibration is None:
        raise PassError(f"INT8 calibration needs a calibration split ({ctx.dataset.source.calibration_split!r})")
    count = min(row_count(calibration.inputs), samples)
    ctx.log(f"calibrating INT8 on {count} samples")
    return rows(calibration.inputs, 0, count)
