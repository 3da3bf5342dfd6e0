"""TensorRT: a serialized engine, which runs only on the GPU model and TensorRT version that built it."""

from __future__ import annotations

from ..spec.sources import ModelFormat
from .base import Format, register


@register
class TensorRT(Format):
    format = ModelFormat.TENSORRT
    describe = "a serialized TensorRT engine"
    suffixes = (".engine", ".plan", ".trt")
