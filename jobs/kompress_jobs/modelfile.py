"""A model on disk and what it is. Kept free of numpy and the runtimes, so the operator (which plans
passes but never runs them) imports it without the job's heavy dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from .formats import format_of
from .spec.sources import HuggingFaceOptions, ModelFormat
from .spec.wire import Model


class Processor(str, Enum):
    """Where a runner computes: part of a candidate's identity in the report (`device`)."""

    CPU = "cpu"
    CUDA = "cuda"


# How records before Execution said how a model runs, in either spelling
_FLAT_FIELDS = ("device", "compile_mode", "compileMode", "execution_provider", "executionProvider")


class Execution(Model):
    """How a model is run, where its files alone do not say: by which runtime (None: the registry's
    default for its format and device), on which device (None: where that runtime runs by
    default), with that runtime's own options (its `Options` class checks them: registry.make_runner).
    Stored as it is wherever a model outlives the run: the report, current.json, a trial's record."""

    model_config = ConfigDict(extra="allow", frozen=True)  # a record from a newer release reads, and writes back whole

    runtime: str | None = Field(None, max_length=64)
    device: Processor | None = None
    options: dict[str, Any] = Field(default_factory=dict, max_length=64)

    def __hash__(self) -> int:  # the options are a dict: hash what names the execution
        return hash((self.runtime, self.device))

    @classmethod
    def lifted(cls, data):
        """A record written before Execution (a pointer's model, a trial's saved model): its flat fields
        moved under `execution`; anything else as it is (a pydantic before-validator)."""
        if isinstance(data, dict) and "execution" not in data and any(key in data for key in _FLAT_FIELDS):
            return {key: value for key, value in data.items() if key not in _FLAT_FIELDS} | {"execution": cls.of_record(data)}
        return data

    @classmethod
    def of_record(cls, record: dict | None) -> "Execution":
        """From a stored record: its `execution`, or the flat fields of records written before it
        existed (device; compile_mode and execution_provider, in either spelling)."""
        record = record or {}
        if record.get("execution") is not None:
            return cls.model_validate(record["execution"])
        old = {key: record.get(snake) or record.get(camel) for key, snake, camel in (
            ("compileMode", "compile_mode", "compileMode"), ("executionProvider", "execution_provider", "executionProvider"))}
        runtime = "pytorch" if old["compileMode"] else "onnxruntime" if old["executionProvider"] else None
        return cls(runtime=runtime, device=Processor(record["device"]) if record.get("device") else None,
                   options={key: value for key, value in old.items() if value})


@dataclass(frozen=True)
class ModelFile:
    path: Path  # a file, or a folder for the formats that are folders (formats/: Format.marker)
    format: ModelFormat
    precision: str = "fp32"
    # Files the model needs beside itself (e.g. ONNX external data); counted in its size.
    extra_files: tuple[Path, ...] = field(default_factory=tuple)
    options: HuggingFaceOptions | None = None  # HuggingFace: the task head
    input_names: tuple[str, ...] = ()  # HuggingFace: what the tokenizer feeds (files of other formats name their own)
    generative: bool = False  # a causal language model, run token by token (task LanguageModeling)
    execution: Execution = field(default_factory=Execution)  # how it is to be run (TorchRuntime, OnnxRuntimeGpu…)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the model is stored as (uploaded together, one candidate): an IR's .xml and
        .bin, a checkpoint directory's files, a model and its external data (formats/)."""
        return format_of(self.format).files(self.path, self.extra_files)

    def relative_files(self) -> dict[str, Path]:
        """`files` by the names they are stored under together: a folder's files below the folder's
        name, the others by their own (an IR's .bin and external data sit beside the model)."""
        if self.path.is_dir():
            return {f"{self.path.name}/{p.relative_to(self.path).as_posix()}": p for p in self.files}
        return {p.name: p for p in self.files}

    @property
    def size_bytes(self) -> int:
        """The model's size: a checkpoint counts its config and weights, not its tokenizer."""
        return format_of(self.format).size_bytes(self.path, self.extra_files)

    def to_record(self) -> dict:
        """As JSON, for a process of kompress's own that runs it (memory_probe.py, contained.py)."""
        return {"path": str(self.path), "format": self.format.value, "precision": self.precision,
                "extraFiles": [str(p) for p in self.extra_files], "inputNames": list(self.input_names),
                "options": self.options.to_wire() if self.options else None, "generative": self.generative,
                "execution": self.execution.to_wire()}

    @classmethod
    def of_record(cls, record: dict) -> "ModelFile":
        return cls(Path(record["path"]), ModelFormat(record["format"]), record["precision"],
                   extra_files=tuple(Path(p) for p in record["extraFiles"]),
                   options=HuggingFaceOptions.model_validate(record["options"]) if record["options"] else None,
                   input_names=tuple(record["inputNames"]), generative=record["generative"],
                   execution=Execution.model_validate(record["execution"]))



def stored_as_spec_runs_it(path: Path, model_format: ModelFormat, precision: str, spec, input_names: tuple[str, ...],
                           extra_files: tuple[Path, ...] = (), execution: Execution | None = None) -> ModelFile:
    """A model that comes back from the store (a promoted release, a tuning trial's) with what its files
    do not say, taken from the spec as for the input model: a checkpoint's head and pooling and the
    tokenizer's input names, whether it generates; and how it runs, as its record says."""
    checkpoint = model_format is ModelFormat.HUGGING_FACE and not spec.task.generative
    return ModelFile(path, model_format, precision=precision, extra_files=extra_files,
                     options=spec.model.hugging_face if checkpoint else None,
                     input_names=input_names if checkpoint else (), generative=spec.task.generative,
                     execution=execution or Execution())
