"""What `kompress validate` checks of the local files a spec names, without running the model: that
each exists, is a file or a folder as its format needs, carries that format's signature, that an
.npz data file loads with the splits the run will read, and (for an ONNX model, whose graph names
its inputs) that the data holds exactly the inputs the graph takes. Every error names the spec field
(SpecError, exit 2), so a CI gate on `validate` stops a spec that `optimize` would fail on.
S3 locations are not fetched here: the Job checks them when it downloads them.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, ModelLoadError, SpecError
from ..formats import check_model_files, format_of
from ..formats.base import head
from ..formats.onnx import onnx_input_names
from ..spec.schema import ModelOptimizationSpec
from ..spec.sources import ModelFormat
from ..spec.specfile import resolve_path
from ..spec.uris import is_s3

def check_local_inputs(spec: ModelOptimizationSpec, base_dir: Path) -> None:
    """SpecError naming the field when a local model or data file would fail the run."""
    model_path = None if is_s3(spec.model.uri) else resolve_path(spec.model.uri, base_dir)
    if model_path is not None:
        _check_model("spec.model.uri", model_path, spec.model.format, spec.model.uri)
    for index, settings in enumerate(spec.passes):
        for field, source in settings.model_sources():
            if not is_s3(source.uri):
                _check_model(f"spec.passes[{index}].{field}.uri", resolve_path(source.uri, base_dir), source.format, source.uri)
    if is_s3(spec.data.uri):
        return
    data_path = resolve_path(spec.data.uri, base_dir)
    dataset = _check_data(spec, data_path)
    if dataset is not None and model_path is not None and spec.model.format is ModelFormat.ONNX:
        try:  # the graph's declared inputs, read without running it: the data must feed exactly those
            names = onnx_input_names(model_path)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and onnx's own: a file that only starts right
            raise SpecError(f"spec.model.uri: {model_path} is not a valid ONNX model ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); is format: ONNX right?") from None
        try:
            dataset.bind(names, f"data file {data_path}")
        except DataError as exc:
            raise SpecError(f"spec.data.uri: {exc}") from None


def check_existing_models(spec: ModelOptimizationSpec, base_dir: Path) -> None:
    """SpecError for a local model file that exists but is not of its declared format."""
    sources = [("spec.model.uri", spec.model.uri, spec.model.format)] + [
        (f"spec.passes[{index}].{field}.uri", source.uri, source.format)
        for index, settings in enumerate(spec.passes) for field, source in settings.model_sources()]
    for field, uri, model_format in sources:
        if not is_s3(uri) and resolve_path(uri, base_dir).exists():
            _check_model(field, resolve_path(uri, base_dir), model_format, uri)


def _check_model(field: str, path: Path, model_format: ModelFormat, written: str = "") -> None:
    declared = format_of(model_format)
    if not path.exists():
        raise SpecError(f"{field}: {path}: no such file or folder{_image_hint(written)}")
    if declared.folder():
        if not path.is_dir() or not (path / declared.marker).is_file():
            raise SpecError(f"{field}: {path} is not {declared.describe} (a folder with {declared.marker})")
    elif path.is_dir():
        raise SpecError(f"{field}: {path} is a folder; format: {model_format.value} expects {declared.describe}")
    else:
        problem = "the file is empty" if not head(path, 1) else declared.signature_problem(path)
        if problem:
            raise SpecError(f"{field}: {path} is not {declared.describe} ({problem}); is format: {model_format.value} right?")
    try:
        check_model_files(path, model_format)  # the door the Job's loader opens first: links, archives, headers
    except ModelLoadError as exc:
        raise SpecError(f"{field}: {exc}") from None


def _check_data(spec: ModelOptimizationSpec, path: Path):
    """The loaded .npz dataset (None for text rows, checked when the run tokenizes them)."""
    if not path.exists():
        raise SpecError(f"spec.data.uri: {path}: no such file{_image_hint(spec.data.uri)}")
    if path.is_dir():
        raise SpecError(f"spec.data.uri: {path} is a folder; data is one .npz, .jsonl, .csv, .parquet or text file")
    if spec.task.generative:
        from ..llm.corpus import read_text

        try:
            text = read_text(path)  # tokenized with the model's tokenizer when the run loads it
        except DataError as exc:
            raise SpecError(f"spec.data.uri: {exc}") from None
        _check_text_length(spec, path, len(text.encode("utf-8")))
        return None
    if spec.data.text is not None:
        return None  # text rows are tokenized with the checkpoint's tokenizer: checked when the run loads them
    from ..data import load_dataset

    try:
        return load_dataset(path, spec.data, spec.task, extra_splits=spec.judging_splits())
    except DataError as exc:
        raise SpecError(f"spec.data.uri: {exc}") from None


def _check_text_length(spec: ModelOptimizationSpec, path: Path, size: int) -> None:
    """A token is at least one byte, so a text of fewer bytes than the windows the run reads cannot
    hold them, whatever the tokenizer (the run counts the tokens themselves)."""
    task = spec.task
    calibrated = spec.data.calibration_split in spec.judging_splits()
    need = task.evaluation_tokens + task.context_length if calibrated else task.context_length
    if size < need:
        what = (f"the evaluation text (task.evaluationTokens {task.evaluation_tokens}) and a calibration window "
                f"(task.contextLength {task.context_length}), which the passes judge on" if calibrated
                else f"one window (task.contextLength {task.context_length})")
        raise SpecError(f"spec.data.uri: data file {path} is {size} bytes, fewer than the {need} tokens of {what} "
                        "could take (a token is at least one byte)")


def _image_hint(written: str) -> str:
    """A path the spec writes as absolute may be a file of the job image, not of this machine: say how to skip it."""
    return " (a file of the job image? `kompress validate --no-files` checks all but the local files)" if written.startswith("/") else ""
