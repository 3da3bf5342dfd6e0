"""ExecuTorch: a .pte program, the flatbuffer PyTorch Mobile's successor runs on phones and edge
CPUs. A user's own .pte is accepted: its loader reads a flatbuffer (checked for internal
consistency when loaded) whose operators name kernels compiled into the runtime and whose
delegated parts name backends compiled into it (XNNPACK here); nothing in the file is code the
runtime would run, unlike a pickle, a TorchScript archive's Python source or a shared library."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelLoadError
from ..spec.sources import ModelFormat
from .base import Format, head, register

IDENTIFIER = b"ET12"  # the flatbuffer's file identifier (bytes 4–8) of every program ExecuTorch 1.x writes


@register
class ExecuTorch(Format):
    format = ModelFormat.EXECUTORCH
    describe = "an ExecuTorch program (.pte)"
    suffixes = (".pte",)

    @classmethod
    def signature_problem(cls, path: Path) -> str | None:
        start = head(path, 8)
        if start[4:8] != IDENTIFIER:
            return f"it does not carry an ExecuTorch program's identifier ({IDENTIFIER.decode()} at byte 4)"
        return None

    @classmethod
    def check(cls, path: Path, extra_files: tuple[Path, ...]) -> None:
        """Only a program goes to the runtime: anything else (a shared library named model.pte, say) is refused first."""
        if not path.is_file():
            raise ModelLoadError(f"model file {path}: no such file")
        problem = cls.signature_problem(path)
        if problem:
            raise ModelLoadError(f"model file {path}: not an ExecuTorch program: {problem}")
