"""LiteRT: a .tflite flatbuffer, TensorFlow Lite's successor. A user's own file is accepted: the
interpreter reads a flatbuffer whose operators name the builtin kernels compiled into it (XNNPACK
takes what it can); a custom or TensorFlow ("Flex") operator would need a library registered in
this process, and none is, so such a file fails to load instead of running code of its choosing."""

from __future__ import annotations

from ..spec.sources import ModelFormat
from .base import FlatbufferFormat, register


@register
class LiteRT(FlatbufferFormat):
    format = ModelFormat.LITERT
    describe = "a LiteRT (TensorFlow Lite) model (.tflite)"
    suffixes = (".tflite",)
    identifier = b"TFL3"  # the flatbuffer's file identifier of every .tflite model
    kind = "a LiteRT model"
