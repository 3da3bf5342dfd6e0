"""The run's inputs: the model and data as local paths (fetched from S3 when remote), the data bound
to the model's input names and checked against it, the baseline and its runner; and the stores the
run writes to (its own and, with spec.promotion, the promoted model's)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..data import Dataset, load_dataset, require_labels, rows
from ..errors import DataError
from ..formats import format_of
from ..measurement.candidates import Candidate
from ..measurement.quality import scored
from ..planning.plan import BASELINE
from ..runtimes import ModelFile, Runner, make_runner
from ..spec.schema import ModelOptimization, ModelOptimizationSpec
from ..spec.sources import ModelFormat
from ..spec.specfile import resolve_path
from ..spec.tasks import TaskType
from ..spec.uris import is_s3
from ..storage.layout import DEFAULT_ARTIFACTS
from ..storage.promotion import Promoter, check_writable, promotion_store
from ..storage.store import ArtifactStore, fetch_directory, fetch_input, open_store
from . import language_model

Progress = Callable[[str], None]


def open_run_store(spec: ModelOptimizationSpec, base_dir: Path, override: str | None) -> ArtifactStore:
    if override:
        uri = override
    elif spec.artifacts.uri:
        uri = spec.artifacts.uri if is_s3(spec.artifacts.uri) else str(resolve_path(spec.artifacts.uri, base_dir))
    else:
        uri = DEFAULT_ARTIFACTS
    return open_store(uri, spec.artifacts.endpoint_url, spec.artifacts.region)


def promoter(resource: ModelOptimization, store: ArtifactStore, base_dir: Path) -> Promoter | None:
    spec = resource.spec
    if spec.promotion is None:
        return None
    local = lambda uri: uri if is_s3(uri) else str(resolve_path(uri, base_dir))  # noqa: E731
    promoted = promotion_store(store, spec, resource.metadata.namespace or "default", resource.metadata.name,
                               lambda uri: open_store(local(uri), spec.artifacts.endpoint_url, spec.artifacts.region))
    check_writable(promoted)  # before any work, as the run's own store
    return Promoter(promoted)


def local_input(uri: str, spec: ModelOptimizationSpec, base_dir: Path, scratch: Path, directory: bool = False) -> Path:
    if is_s3(uri):
        fetch = fetch_directory if directory else fetch_input
        return fetch(uri, scratch, spec.artifacts.endpoint_url, spec.artifacts.region)
    return resolve_path(uri, base_dir)


def is_checkpoint(model_format: ModelFormat) -> bool:
    return format_of(model_format).folder()


def fetch_and_load(spec: ModelOptimizationSpec, base_dir: Path, scratch: Path, progress: Progress):
    """The model and data as local paths (fetched from S3 when remote), threads pinned, and
    what load_inputs makes of them."""
    model_path = local_input(spec.model.uri, spec, base_dir, scratch, directory=is_checkpoint(spec.model.format))
    data_path = local_input(spec.data.uri, spec, base_dir, scratch)
    pin_threads(spec.benchmark.threads)
    return model_path, data_path, load_inputs(spec, model_path, data_path, base_dir, scratch, progress)


def load_inputs(spec: ModelOptimizationSpec, model_path: Path, data_path: Path, base_dir: Path, scratch: Path,
                 progress: Progress) -> tuple[Dataset, Candidate, dict[str, Runner]]:
    """The data bound to the model's input names, the baseline candidate and its runner."""
    if spec.task.generative:
        dataset, model, runner = language_model.load(spec, model_path, data_path, progress)
        baseline = Candidate(name=BASELINE, technique="baseline", pass_type=None, parent=None, lineage=[], model=model)
        return dataset, baseline, {BASELINE: runner}
    tokenizer_dir = None
    if spec.data.text is not None:
        tokenizer_dir = (local_input(spec.data.text.tokenizer, spec, base_dir, scratch, directory=True)
                         if spec.data.text.tokenizer else model_path)
    progress(f"loading data {data_path}")
    dataset = load_dataset(data_path, spec.data, spec.task, extra_splits=spec.judging_splits(), tokenizer_dir=tokenizer_dir)
    if is_checkpoint(spec.model.format) and not dataset.named:
        raise DataError(f"data file {data_path}: a HuggingFace model takes named inputs (input_ids, attention_mask, ...): "
                        "store x_<split>/<input name> arrays, or use text rows (data.text)")
    progress(f"loading model {model_path} ({spec.model.format.value})")
    model = ModelFile(model_path, spec.model.format, options=spec.model.hugging_face,
                      input_names=dataset.input_names if is_checkpoint(spec.model.format) else ())
    runner = make_runner(model, threads=spec.benchmark.threads)
    dataset = dataset.bind(runner.input_names, f"data file {data_path}")
    require_labels(dataset, spec.task, f"data file {data_path}")
    check_fit(runner, dataset, data_path, spec)
    baseline = Candidate(name=BASELINE, technique="baseline", pass_type=None, parent=None, lineage=[], model=model)
    return dataset, baseline, {BASELINE: runner}


def check_fit(runner: Runner, dataset: Dataset, data_path: Path, spec: ModelOptimizationSpec) -> None:
    """Fail early, naming the data file, when the data cannot feed the model or its labels cannot match."""
    sample = rows(dataset.evaluation.inputs, 0, 2)
    try:
        runner.check_input(sample)
    except DataError as exc:
        raise DataError(f"data file {data_path}: evaluation {exc}") from None
    output = scored(runner(sample), spec.task)
    if spec.task.type is TaskType.CLASSIFICATION:  # one output per class
        classes = output.shape[-1]
        highest = int(dataset.evaluation.labels.max())
        if highest >= classes or int(dataset.evaluation.labels.min()) < 0:
            raise DataError(f"data file {data_path}: labels reach {highest} but the model has {classes} outputs")


def pin_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
