"""OpenVINO IR: model.xml with its weights in model.bin beside it."""

from __future__ import annotations

from pathlib import Path

from ..spec.sources import ModelFormat
from .base import Format, head, register


@register
class OpenVino(Format):
    format = ModelFormat.OPENVINO
    describe = "an OpenVINO model.xml"
    suffixes = (".xml",)

    @classmethod
    def files(cls, path: Path, extra_files: tuple[Path, ...]) -> tuple[Path, ...]:
        return (path, path.with_suffix(".bin"), *extra_files)

    @classmethod
    def signature_problem(cls, path: Path) -> str | None:
        if not head(path).lstrip().startswith(b"<"):
            return "not XML"
        if not path.with_suffix(".bin").is_file():
            return f"its weights {path.with_suffix('.bin').name} are not beside it"
        return None
