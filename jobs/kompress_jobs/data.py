"""Evaluation, calibration and training data with named inputs: an .npz file (never unpickled) or
text rows tokenized with the checkpoint's tokenizer (`textdata.py`).

Inputs are an ordered mapping of input name → array whose first axis is the row. The .npz holds
either one unnamed input per split (`x_<split>`, bound to a single-input model) or one array per
input and split (`x_<split>/<input name>`); labels are `y_<split>` and optional for label-free tasks.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import DataError
from .spec.sources import DataSource
from .spec.tasks import Task, TaskType

Inputs = dict[str, np.ndarray]
UNNAMED = "x"  # the key of the single input of an `x_<split>` file until it is bound to the model


def rows(inputs: Inputs, start: int, stop: int) -> Inputs:
    return {name: array[start:stop] for name, array in inputs.items()}


def row_count(inputs: Inputs) -> int:
    return len(next(iter(inputs.values())))


def batch_of(inputs: Inputs, size: int) -> Inputs:
    """The first `size` rows of every input, repeated if the split is smaller than the batch."""
    count = row_count(inputs)
    if count >= size:
        return {name: np.ascontiguousarray(array[:size]) for name, array in inputs.items()}
    repeats = -(-size // count)
    return {name: np.ascontiguousarray(np.concatenate([array] * repeats)[:size]) for name, array in inputs.items()}


@dataclass(frozen=True)
class Split:
    inputs: Inputs
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return row_count(self.inputs)

    def take(self, count: int) -> "Split":
        return Split(rows(self.inputs, 0, count), None if self.labels is None else self.labels[:count])


@dataclass(frozen=True)
class Dataset:
    splits: dict[str, Split]
    source: DataSource  # which split plays which role
    named: bool = True  # False: one `x_<split>` input per split, not yet bound to the model's input name

    @property
    def train(self) -> Split | None:
        return self.splits.get(self.source.train_split)

    @property
    def calibration(self) -> Split | None:
        return self.splits.get(self.source.calibration_split)

    @property
    def evaluation(self) -> Split:
        return self.splits[self.source.evaluation_split]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.evaluation.inputs)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise DataError(f"the data has no {name!r} split (it has {', '.join(sorted(self.splits))})")
        return self.splits[name]

    def bind(self, model_inputs: tuple[str, ...], where: str) -> "Dataset":
        """The same data keyed and ordered by the model's input names; a clear error when they differ."""
        if not self.named:
            if len(model_inputs) != 1:
                raise DataError(f"{where}: holds one unnamed input per split (x_<split>) but the model takes "
                                f"{len(model_inputs)}: {', '.join(model_inputs)}; store them as x_<split>/<input name>")
            return replace(self, named=True, splits={name: Split({model_inputs[0]: s.inputs[UNNAMED]}, s.labels)
                                                     for name, s in self.splits.items()})
        missing = [n for n in model_inputs if n not in self.input_names]
        if missing:
            raise DataError(f"{where}: the model's input {', '.join(map(repr, missing))} is missing from the data "
                            f"(the model takes {', '.join(model_inputs)}; the data holds {', '.join(self.input_names)})")
        extra = [n for n in self.input_names if n not in model_inputs]
        if extra:
            raise DataError(f"{where}: the model takes no input {', '.join(map(repr, extra))} "
                            f"(it takes {', '.join(model_inputs)})")
        return replace(self, splits={name: Split({n: s.inputs[n] for n in model_inputs}, s.labels)
                                     for name, s in self.splits.items()})


def load_dataset(path: Path, source: DataSource, task: Task, extra_splits: tuple[str, ...] = (),
                 tokenizer_dir: Path | None = None) -> Dataset:
    """Every split the file holds; the evaluation split and `extra_splits` (what a tuning study or a
    steered pass is judged on) must be there."""
    if not path.is_file():
        raise DataError(f"data file {path}: no such file")
    if source.text is not None:
        from .textdata import load_text_splits

        raw, named = load_text_splits(path, source.text, tokenizer_dir), True
    else:
        raw, named = _load_npz(path)
    for required in (source.evaluation_split, *extra_splits):
        if required not in raw:
            layout = "rows whose split column says" if source.text else "arrays for"
            raise DataError(f"data file {path}: no {layout} the {required!r} split (it has {', '.join(sorted(raw)) or 'none'})")
    splits = {name: _checked(path, name, inputs, labels, task) for name, (inputs, labels) in raw.items()}
    return Dataset(splits, source, named)


def _load_npz(path: Path) -> tuple[dict[str, tuple[Inputs, np.ndarray | None]], bool]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"data file {path}: not a readable .npz archive ({exc})") from None
    unnamed = {k[2:]: {UNNAMED: v} for k, v in arrays.items() if k.startswith("x_") and "/" not in k}
    named: dict[str, Inputs] = {}
    for key, value in arrays.items():
        if key.startswith("x_") and "/" in key:
            split, _, input_name = key[2:].partition("/")
            named.setdefault(split, {})[input_name] = value
    both = sorted(set(unnamed) & set(named))
    if both:
        raise DataError(f"data file {path}: split {both[0]!r} has both x_{both[0]} and x_{both[0]}/<input> arrays; keep one form")
    if unnamed and named:
        raise DataError(f"data file {path}: mixes unnamed (x_<split>) and named (x_<split>/<input>) splits; keep one form")
    by_split = unnamed or named
    if not by_split:
        raise DataError(f"data file {path}: needs x_<split> or x_<split>/<input name> arrays; it holds {sorted(arrays)}")
    return {split: (inputs, arrays.get(f"y_{split}")) for split, inputs in by_split.items()}, bool(named)


def _checked(path: Path, split: str, inputs: Inputs, labels: np.ndarray | None, task: Task) -> Split:
    counts = {name: len(array) for name, array in inputs.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        shown = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise DataError(f"data file {path}: the {split!r} split's inputs need the same, non-zero number of rows ({shown})")
    size = next(iter(counts.values()))
    checked = {}
    for name, array in inputs.items():
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise DataError(f"data file {path}: input {name!r} of split {split!r} must be numeric, not {array.dtype}")
        checked[name] = np.ascontiguousarray(array.astype(np.float32, copy=False) if np.issubdtype(array.dtype, np.floating) else array)
    if labels is not None:
        if len(labels) != size:
            raise DataError(f"data file {path}: split {split!r} has {size} rows of inputs but {len(labels)} labels")
        if task.type is TaskType.CLASSIFICATION and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"data file {path}: the {split!r} labels must be integer classes for classification, not {labels.dtype}")
    return Split(checked, labels)


def require_labels(dataset: Dataset, task: Task, where: str) -> None:
    """Labelled tasks need labels on the evaluation split; label-free ones ignore any."""
    if task.needs_labels and dataset.evaluation.labels is None:
        raise DataError(f"{where}: a {task.type.value} task needs labels for the evaluation split "
                        f"(y_{dataset.source.evaluation_split}, or data.text.labelColumn); without labels use task.type: Fidelity")
