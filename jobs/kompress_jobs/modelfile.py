"""A model on disk and what it is. Kept free of numpy and the runtimes, so the operator (which plans
passes but never runs them) imports it without the job's heavy dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .schema import ModelFormat


@dataclass(frozen=True)
class ModelFile:
    path: Path
    format: ModelFormat
    precision: str = "fp32"
    # Files the model needs beside itself (e.g. ONNX external data); counted in its size.
    extra_files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, *self.extra_files))
