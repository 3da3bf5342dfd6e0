"""What a model format is, declared once per format by a `Format` subclass in a module of this
package: one file or a folder (and the file that marks the folder), the files that belong to it and
what its size counts, the signature `kompress validate` reads without loading it, and the checks
that hold before any library opens it (the door: `check_model_files`)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import ClassVar

from ..spec.sources import ModelFormat

_FORMATS: dict[ModelFormat, type["Format"]] = {}
_discovered = False


class Format:
    format: ClassVar[ModelFormat]
    describe: ClassVar[str]  # what a user should have named: "an .onnx file"
    marker: ClassVar[str | None] = None  # a folder format: the file inside that says what the folder is
    suffixes: ClassVar[tuple[str, ...]] = ()  # a file format: the names it is usually saved under
    generative_only: ClassVar[bool] = False  # only ever a causal language model (task LanguageModeling)
    weights: ClassVar[tuple[str, ...] | None] = None  # a folder format: the suffixes its size counts

    @classmethod
    def folder(cls) -> bool:
        return cls.marker is not None

    @classmethod
    def files(cls, path: Path, extra_files: tuple[Path, ...]) -> tuple[Path, ...]:
        """Every file the model is stored as (uploaded together, one candidate)."""
        if path.is_dir():
            return tuple(sorted(p for p in path.rglob("*") if p.is_file()))
        return (path, *extra_files)

    @classmethod
    def size_bytes(cls, path: Path, extra_files: tuple[Path, ...]) -> int:
        """What the model weighs: a folder's graph and weights, not its tokenizer or configuration."""
        if path.is_dir() and cls.weights:
            return sum(p.stat().st_size for p in path.iterdir() if p.suffix in cls.weights)
        return sum(p.stat().st_size for p in cls.files(path, extra_files))

    @classmethod
    def signature_problem(cls, path: Path) -> str | None:
        """Why the file is not of this format, read from its first bytes or its listing; None if it is."""
        return None

    @classmethod
    def check(cls, path: Path, extra_files: tuple[Path, ...]) -> None:
        """UnsafeModelError (or ModelLoadError) when the model is not one kompress may open; links
        are refused for every format before this (check_model_files)."""


class FlatbufferFormat(Format):
    """One flatbuffer file, known by its file identifier (bytes 4–8): checked before any runtime reads it,
    so that anything else under its name (a shared library, say) never reaches the runtime."""

    identifier: ClassVar[bytes]
    kind: ClassVar[str]  # "an ExecuTorch program"

    @classmethod
    def signature_problem(cls, path: Path) -> str | None:
        if head(path, 8)[4:8] != cls.identifier:
            return f"it does not carry {cls.kind}'s identifier ({cls.identifier.decode()} at byte 4)"
        return None

    @classmethod
    def check(cls, path: Path, extra_files: tuple[Path, ...]) -> None:
        from ..errors import ModelLoadError

        if not path.is_file():
            raise ModelLoadError(f"model file {path}: no such file")
        problem = cls.signature_problem(path)
        if problem:
            raise ModelLoadError(f"model file {path}: not {cls.kind}: {problem}")


def register(cls: type[Format]) -> type[Format]:
    if cls.format in _FORMATS and _FORMATS[cls.format] is not cls:
        raise ValueError(f"{cls.__name__} and {_FORMATS[cls.format].__name__} both declare {cls.format.value}")
    _FORMATS[cls.format] = cls
    return cls


def format_of(model_format: ModelFormat) -> type[Format]:
    """The declaration of a format; the first call imports each module of this package (they import
    their libraries only when a model is checked, so this is cheap)."""
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
            importlib.import_module(f"{__package__}.{module.name}")
        _discovered = True
    return _FORMATS[model_format]


def format_for_path(path: Path) -> ModelFormat | None:
    """The format a file or folder is saved as, by its folder's marker or its file's suffix (a guess
    for `kompress optimize --model`: validate then checks the signature)."""
    format_of(ModelFormat.ONNX)  # every declaration imported
    declared = list(_FORMATS.values())
    if path.is_dir():  # the most specific marker first: a GenAI or OpenVINO folder holds a config.json too
        for cls in sorted((c for c in declared if c.marker), key=lambda c: c.marker == "config.json"):
            if (path / cls.marker).is_file():
                return cls.format
        return None
    return next((cls.format for cls in declared if path.suffix.lower() in cls.suffixes), None)


def head(path: Path, size: int = 512) -> bytes:
    with path.open("rb") as file:
        return file.read(size)
