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
    from .planning.plan import plan_passes
    from .planning.preflight import check_existing_models, check_local_inputs

    try:
        plan_passes(resource.spec)
    except SpecError:
        if files:
            check_existing_models(resource.spec, folder)
        raise
    if files:
        check_local_inputs(resource.spec, folder)
    return resource


def optimize(spec: SpecLike, *, output: str | Path | None = None, run_id: str | None = None,
             progress: Callable[[str], None] | None = None, library_log: Path | None = None) -> Report:
    """Run the whole pipeline here: baseline, passes, measurement, selection, report, artifacts.

    `output`: where the run's folder goes (a local folder or s3://bucket/prefix); by default the
    spec's `artifacts.uri`, else ./kompress-runs. `progress` gets each step's line (default: the
    "kompress" logger at INFO); `library_log`, a file the run publishes as library.log (what the
    libraries printed: library_output.py). Raises a KompressError subclass with a one-line message (SpecError,
    DataError, ModelLoadError, StoreError...)."""
    from .pipeline.run import run_optimization

    resource, folder = load(spec)
    result = run_optimization(resource, base_dir=folder, artifacts_uri=str(output) if output is not None else None,
                              run_id=run_id, progress=progress or log.info, library_log=library_log)
    return result.results
