"""A model on disk and what it is. Kept free of numpy and the runtimes, so the operator (which plans
passes but never runs them) imports it without the job's heavy dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .sources import HuggingFaceOptions, ModelFormat


@dataclass(frozen=True)
class ModelFile:
    path: Path  # a file, or a folder for HuggingFace and OnnxGenAI
    format: ModelFormat
    precision: str = "fp32"
    # Files the model needs beside itself (e.g. ONNX external data); counted in its size.
    extra_files: tuple[Path, ...] = field(default_factory=tuple)
    options: HuggingFaceOptions | None = None  # HuggingFace: the task head
    input_names: tuple[str, ...] = ()  # HuggingFace: what the tokenizer feeds (files of other formats name their own)
    generative: bool = False  # a causal language model, run token by token (task LanguageModeling)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the model is stored as (uploaded together, one candidate): an IR's .xml and
        .bin, a checkpoint directory's files, a model and its external data."""
        if self.path.is_dir():
            return tuple(sorted(p for p in self.path.rglob("*") if p.is_file()))
        if self.format is ModelFormat.OPENVINO:
            return (self.path, self.path.with_suffix(".bin"), *self.extra_files)
        return (self.path, *self.extra_files)

    @property
    def size_bytes(self) -> int:
        """The model's size: a checkpoint counts its config and weights, not its tokenizer."""
        if self.path.is_dir() and self.format is ModelFormat.ONNX_GENAI:
            return sum(p.stat().st_size for p in self.path.iterdir() if p.suffix in (".onnx", ".data"))
        if self.path.is_dir():
            return sum(p.stat().st_size for p in [self.path / "config.json", *self.path.glob("*.safetensors")])
        return sum(p.stat().st_size for p in self.files)
