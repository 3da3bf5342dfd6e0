"""ExecuTorch: a .pte program, the flatbuffer PyTorch Mobile's successor runs on phones and edge
CPUs. A user's own .pte is accepted: its loader reads a flatbuffer (checked for internal
consistency when loaded) whose operators name kernels compiled into the runtime and whose
delegated parts name backends compiled into it (XNNPACK here); nothing in the file is code the
runtime would run, unlike a pickle, a TorchScript archive's Python source or a shared library."""

from __future__ import annotations

from ..spec.sources import ModelFormat
from .base import FlatbufferFormat, register


@register
class ExecuTorch(FlatbufferFormat):
    format = ModelFormat.EXECUTORCH
    describe = "an ExecuTorch program (.pte)"
    suffixes = (".pte",)
    identifier = b"ET12"  # the flatbuffer's file identifier of every program ExecuTorch 1.x writes
    kind = "an ExecuTorch program"
