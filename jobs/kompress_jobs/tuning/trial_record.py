"""What a study keeps of each trial beyond Optuna's own fields: its user attributes, named once
here (the study, the worker loop and the report read the same keys), and the model it saved,
typed (the study is shared between Pods and outlives the run: read it as untrusted)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field, model_validator

from ..modelfile import Execution, ModelFile, stored_as_spec_runs_it
from ..spec.sources import ModelFormat
from ..spec.wire import Record
from ..storage.layout import safe_key


class Attr(str, Enum):
    WORKER = "worker"  # the Pod (or process) that ran it
    ERROR = "error"  # why it failed; a trial failed without one was lost with its Pod, and is retried
    LINEAGE = "lineage"  # the chain it ran, with the values it tried
    VALIDATION = "validation"  # what it measured on the validation split
    MODEL = "model"  # the model it saved (SavedModel)
    REPEAT_OF = "repeatOf"  # the earlier trial with the same point, whose result it took


def attr(trial, key: Attr, default=None):
    return trial.user_attrs.get(key.value, default)


def has(trial, key: Attr) -> bool:
    return key.value in trial.user_attrs


def put(trial, key: Attr, value) -> None:
    trial.set_user_attr(key.value, value)


class SavedModel(Record):
    """A trial's model as the study records it: file names under the trial's store prefix."""

    file: str
    format: ModelFormat
    precision: str
    execution: Execution = Field(default_factory=Execution)
    extra_files: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _flat_execution(cls, data):
        """A record written before Execution had device and compile_mode beside the file."""
        return Execution.lifted(data)

    @classmethod
    def of(cls, model: ModelFile) -> "SavedModel":
        return cls(file=model.path.name, format=model.format, precision=model.precision, execution=model.execution,
                   extra_files=[p.name for p in model.extra_files])

    def restore(self, folder: Path, spec, input_names: tuple[str, ...], what: str) -> ModelFile:
        """The model from its files downloaded into `folder`; every name checked as a key."""
        return stored_as_spec_runs_it(folder / safe_key(self.file, what), self.format, self.precision, spec, input_names,
                                      tuple(folder / safe_key(name, what) for name in self.extra_files), self.execution)
