"""Evaluation, calibration and training data from an .npz file (never unpickled)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .schema import DataSource, TaskType


@dataclass(frozen=True)
class Split:
    inputs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, count: int) -> "Split":
        return Split(self.inputs[:count], self.labels[:count])


@dataclass(frozen=True)
class Dataset:
    train: Split | None
    calibration: Split | None
    evaluation: Split
    validation: Split | None = None  # what a tuning study judges trials on


def load_dataset(path: Path, source: DataSource, task: TaskType, validation_split: str | None = None) -> Dataset:
    """Load x_<split>/y_<split> arrays; only the evaluation split (and a tuning study's validation
    split) is mandatory."""
    if not path.is_file():
        raise DataError(f"data file {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"data file {path}: not a readable .npz archive ({exc})") from None

    def split(name: str, required: bool) -> Split | None:
        x_key, y_key = f"x_{name}", f"y_{name}"
        if x_key not in arrays or y_key not in arrays:
            if required:
                raise DataError(
                    f"data file {path}: needs arrays {x_key!r} and {y_key!r}; it holds {sorted(arrays)}"
                )
            return None
        inputs, labels = arrays[x_key], arrays[y_key]
        if len(inputs) != len(labels) or len(inputs) == 0:
            raise DataError(f"data file {path}: {x_key} has {len(inputs)} rows but {y_key} has {len(labels)}")
        if not np.issubdtype(inputs.dtype, np.number):
            raise DataError(f"data file {path}: {x_key} must be numeric, not {inputs.dtype}")
        if task is TaskType.CLASSIFICATION and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"data file {path}: {y_key} must hold integer class labels for classification")
        if np.issubdtype(inputs.dtype, np.floating):
            inputs = inputs.astype(np.float32, copy=False)
        return Split(np.ascontiguousarray(inputs), labels)

    return Dataset(
        train=split(source.train_split, required=False),
        calibration=split(source.calibration_split, required=False),
        evaluation=split(source.evaluation_split, required=True),
        validation=split(validation_split, required=True) if validation_split else None,
    )
