"""The Python API behind `import kompress`: the pipeline `kompress optimize` runs, called from a
notebook or a script, returning the report as types (results.py). The CLI calls these too."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union

from .errors import SpecError
from .reporting.results import Report
from .spec.schema import ModelOptimization

SpecLike = Union[str, Path, Mapping[str, Any], ModelOptimization]
log = logging.getLogger("kompress")


def load(spec: SpecLike) -> tuple[ModelOptimization, Path]:
    """The resource, and the folder its relative paths (model, data, artifacts) are read from:
    a file's own folder, or the working directory for a mapping or a resource."""
    from .spec.specfile import load_resource_file, resource_from_dict

    if isinstance(spec, ModelOptimization):
        return spec, Path.cwd()
    if isinstance(spec, Mapping):
        return resource_from_dict(dict(spec)), Path.cwd()
    path = Path(spec)
    return load_resource_file(path), path.parent


def validate(spec: SpecLike) -> ModelOptimization:
    """The checked resource, or SpecError naming the field: the schema, the chain of passes (each
    pass's input must be a model it takes), and the local files it names (preflight.py: they exist,
    have their format's signature, and the data holds the splits the run reads). Runs no model."""
    resource, folder = load(spec)
    return validate_resource(resource, folder)


def validate_resource(resource: ModelOptimization, folder: Path, *, files: bool = True) -> ModelOptimization:
    """validate() of a loaded resource whose relative paths are read from `folder`: the chain of
    passes, then its local files; a chain refused while a model file that exists is not of its
    declared format blames the file (format: ONNX on a TorchScript archive is the format's fault,
    not the chain's). `files=False` checks everything but the local files (GitOps CI, where they
    exist only in the job image)."""
    from .planning.auto_plan import planned
    from .planning.plan import plan_passes
    from .planning.preflight import check_existing_models, check_local_inputs

    resource = planned(resource, folder)[0] if files else resource  # an empty pass list: checked as this machine would plan it
    try:
        plan_passes(resource.spec)
    except SpecError:
        if files:
            check_existing_models(resource.spec, folder)
        raise
    if files:
        check_local_inputs(resource.spec, folder)
    return resource


def spec_for_model(model: str | Path, data: str | Path | None, *, task: str | None = None,
                   max_drop: float | None = None, name: str | None = None) -> dict[str, Any]:
    """A ModelOptimization for a model file with no YAML (`kompress optimize --model`): its format from
    the file, its task from the format (a causal LM where only one can be), no passes (planned for
    the machine), the paths absolute so the same YAML runs from anywhere."""
    import json
    import re

    from .formats import format_for_path, format_of

    path = Path(model).resolve()
    if not path.exists():
        raise SpecError(f"--model: {path}: no such file or folder")
    model_format = format_for_path(path)
    if model_format is None:
        raise SpecError(f"--model: {path}: kompress cannot tell its format from its name (write a spec with model.format)")
    if data is None:
        raise SpecError("--data: a model is judged on data: give its evaluation and calibration data (.npz, JSONL, "
                        "CSV, Parquet, or a text for a language model)")
    causal = format_of(model_format).generative_only or (path.is_dir() and (path / "config.json").is_file() and any(
        a.endswith("ForCausalLM") for a in json.loads((path / "config.json").read_text()).get("architectures") or []))
    chosen = task or ("LanguageModeling" if causal else "Classification")
    goals: dict[str, Any] = {} if max_drop is None else {"maxAccuracyDrop": max_drop}
    if chosen == "LanguageModeling" and max_drop is not None:
        goals["accuracyDropMode"] = "Relative"
    stem = re.sub(r"[^a-z0-9-]+", "-", (name or path.stem).lower()).strip("-")[:63] or "model"
    return {"apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization", "metadata": {"name": stem},
            "spec": {"model": {"uri": str(path), "format": model_format.value}, "data": {"uri": str(Path(data).resolve())},
                     "task": {"type": chosen}, "passes": [], "goals": goals}}


def for_target(resource: ModelOptimization, target: str | None) -> ModelOptimization:
    """The resource as target `target` runs it; unchanged without targets. SpecError for a name the
    spec does not have, or no name where it has several."""
    targets = resource.spec.targets
    if target is None:
        if len(targets) > 1:
            raise SpecError(f"spec.targets names {len(targets)} targets ({', '.join(t.name for t in targets)}): "
                            f"run one at a time (target=NAME; `kompress optimize` runs each in a process of its own)")
        return resource
    try:
        spec = resource.spec.for_target(target)
    except ValueError as exc:
        raise SpecError(f"--target: {exc}") from None
    return resource.model_copy(update={"spec": spec})


def optimize(spec: SpecLike, *, output: str | Path | None = None, run_id: str | None = None,
             progress: Callable[[str], None] | None = None, library_log: Path | None = None,
             target: str | None = None) -> Report:
    """Run the whole pipeline here: baseline, passes, measurement, selection, report, artifacts.

    `output`: where the run's folder goes (a local folder or s3://bucket/prefix); by default the
    spec's `artifacts.uri`, else ./kompress-runs. `progress` gets each step's line (default: the
    "kompress" logger at INFO); `library_log`, a file the run publishes as library.log (what the
    libraries printed: library_output.py). Raises a KompressError subclass with a one-line message (SpecError,
    DataError, ModelLoadError, StoreError...). A spec with several `targets` runs one of them per
    call (`target`): a target's instruction-set cap holds for a whole process (`kompress optimize`
    starts one per target)."""
    from .pipeline.run import run_optimization

    resource, folder = load(spec)
    resource = for_target(resource, target)
    result = run_optimization(resource, base_dir=folder, artifacts_uri=str(output) if output is not None else None,
                              run_id=run_id, progress=progress or log.info, library_log=library_log)
    return result.results
