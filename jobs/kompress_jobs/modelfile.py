"""A model on disk and what it is. Kept free of numpy and the runtimes, so the operator (which plans
passes but never runs them) imports it without the job's heavy dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .sources import HuggingFaceOptions, ModelFormat


class Processor(str, Enum):
    """Where a runner computes: part of a candidate's identity in the report (`device`)."""

    CPU = "cpu"
    CUDA = "cuda"


# What a folder format's size counts: its graph and weights, not its tokenizer or configuration
_WEIGHT_SUFFIXES = {ModelFormat.ONNX_GENAI: (".onnx", ".data"), ModelFormat.OPENVINO_CAUSAL_LM: (".xml", ".bin")}


@dataclass(frozen=True)
class ModelFile:
    path: Path  # a file, or a folder for the formats that are folders (ModelFormat.is_folder)
    format: ModelFormat
    precision: str = "fp32"
    # Files the model needs beside itself (e.g. ONNX external data); counted in its size.
    extra_files: tuple[Path, ...] = field(default_factory=tuple)
    options: HuggingFaceOptions | None = None  # HuggingFace: the task head
    input_names: tuple[str, ...] = ()  # HuggingFace: what the tokenizer feeds (files of other formats name their own)
    generative: bool = False  # a causal language model, run token by token (task LanguageModeling)
    # How the model is to be run, where its file alone does not say (TorchRuntime, OnnxRuntimeGpu): the
    # device (None: where its runtime runs by default), the torch.compile mode (None: eager) and ONNX
    # Runtime's execution provider (None: the device's own).
    device: Processor | None = None
    compile_mode: str | None = None
    execution_provider: str | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the model is stored as (uploaded together, one candidate): an IR's .xml and
        .bin, a checkpoint directory's files, a model and its external data."""
        if self.path.is_dir():
            return tuple(sorted(p for p in self.path.rglob("*") if p.is_file()))
        if self.format is ModelFormat.OPENVINO:
            return (self.path, self.path.with_suffix(".bin"), *self.extra_files)
        return (self.path, *self.extra_files)

    def relative_files(self) -> dict[str, Path]:
        """`files` by the names they are stored under together: a folder's files below the folder's
        name, the others by their own (an IR's .bin and external data sit beside the model)."""
        if self.path.is_dir():
            return {f"{self.path.name}/{p.relative_to(self.path).as_posix()}": p for p in self.files}
        return {p.name: p for p in self.files}

    @property
    def size_bytes(self) -> int:
        """The model's size: a checkpoint counts its config and weights, not its tokenizer."""
        weights = _WEIGHT_SUFFIXES.get(self.format)
        if self.path.is_dir() and weights:
            return sum(p.stat().st_size for p in self.path.iterdir() if p.suffix in weights)
        if self.path.is_dir():
            return sum(p.stat().st_size for p in [self.path / "config.json", *self.path.glob("*.safetensors")])
        return sum(p.stat().st_size for p in self.files)



def runs_on(model: ModelFile) -> dict[str, str]:
    """How a stored model is to be run, by ModelFile's field names and only what is set: for a record
    that outlives the run (a tuning study's trial, current.json) and comes back through runs_on_from."""
    return {key: value for key, value in (("device", model.device.value if model.device else None),
                                          ("compile_mode", model.compile_mode),
                                          ("execution_provider", model.execution_provider)) if value}


def runs_on_from(record) -> dict:
    """ModelFile's keyword arguments back from runs_on's record (a dict, or a model with those attributes)."""
    get = record.get if isinstance(record, dict) else lambda key: getattr(record, key, None)
    device = get("device")
    return {"device": Processor(device) if device else None, "compile_mode": get("compile_mode") or None,
            "execution_provider": get("execution_provider") or None}


def stored_as_spec_runs_it(path: Path, model_format: ModelFormat, precision: str, spec, input_names: tuple[str, ...],
                           extra_files: tuple[Path, ...] = (), record=None) -> ModelFile:
    """A model that comes back from the store (a promoted release, a tuning trial's) with what its files
    do not say, taken from the spec as for the input model: a checkpoint's head and pooling and the
    tokenizer's input names, whether it generates; and where it runs, from its record (runs_on)."""
    checkpoint = model_format is ModelFormat.HUGGING_FACE and not spec.task.generative
    return ModelFile(path, model_format, precision=precision, extra_files=extra_files,
                     options=spec.model.hugging_face if checkpoint else None,
                     input_names=input_names if checkpoint else (), generative=spec.task.generative,
                     **runs_on_from(record or {}))
