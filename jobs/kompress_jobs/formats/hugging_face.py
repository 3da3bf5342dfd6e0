"""A Hugging Face checkpoint: a folder of config.json, *.safetensors and the tokenizer's files (loaded
by huggingface.py and llm/loading.py: local files only, safetensors only, no remote code)."""

from __future__ import annotations

from pathlib import Path

from ..spec.sources import ModelFormat
from .base import Format, register


@register
class HuggingFace(Format):
    format = ModelFormat.HUGGING_FACE
    describe = "a Hugging Face checkpoint folder"
    marker = "config.json"

    @classmethod
    def size_bytes(cls, path: Path, extra_files: tuple[Path, ...]) -> int:
        """Its configuration and weights, not its tokenizer."""
        if not path.is_dir():
            return super().size_bytes(path, extra_files)
        return sum(p.stat().st_size for p in [path / "config.json", *path.glob("*.safetensors")])
