"""Model formats, one module each (a `Format` subclass: file or folder, its files and size, its
signature, its checks). `check_model_files` is the checked door of every format a tenant can hand
kompress, called by every runner's construction (runtimes.make_runner) and by `kompress validate`,
so a model is checked the same way as the baseline, a promoted contender, a tuning trial restored
from the store, or in the memory probe."""

from __future__ import annotations

from pathlib import Path

from ..spec.sources import ModelFormat
from .base import Format, format_for_path, format_of
from .files import refuse_links, refuse_native_code

__all__ = ["Format", "check_model_files", "format_for_path", "format_of"]


def check_model_files(path: Path, model_format: ModelFormat, extra_files: tuple[Path, ...] = ()) -> None:
    """UnsafeModelError (a ModelLoadError) naming the file when the model is not one kompress may open."""
    refuse_links(path)
    for item in extra_files:
        refuse_links(item, named=False)
    refuse_native_code(path)
    format_of(model_format).check(path, extra_files)
