"""The checked door of each model format a tenant can hand kompress: what must hold of the file or
folder before any library reads it. `check_model_files` is called by every runner's construction
(runtimes.make_runner) and by `kompress validate`, so a model is checked the same way as the
baseline, a promoted contender, a tuning trial restored from the store, or in the memory probe."""

from __future__ import annotations

from pathlib import Path

from ..sources import ModelFormat
from .files import refuse_duplicate_entries, refuse_links

_ZIPPED = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT})


def check_model_files(path: Path, model_format: ModelFormat, extra_files: tuple[Path, ...] = ()) -> None:
    """UnsafeModelError (a ModelLoadError) naming the file when the model is not one kompress may open."""
    refuse_links(path)
    for item in extra_files:
        refuse_links(item, named=False)
    if model_format in _ZIPPED and path.is_file():
        refuse_duplicate_entries(path)
    if model_format is ModelFormat.GGUF and path.is_file():
        from .gguf import architecture

        architecture(path)
    if model_format is ModelFormat.ONNX_GENAI and path.is_dir():
        from .onnx_genai import read_genai_config

        read_genai_config(path)
