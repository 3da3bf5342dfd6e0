"""Reading what is promoted: the pointer's layout, and a copy of the current release for a serving
Pod (`kompress fetch-promoted`, an init container's command). Free of numpy and the runtimes, so
the operator's slim image runs it too.

Under the promotion root: releases/<run id>/… (never rewritten), current/… (a mirror), and
current.json (the pointer, written last)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .digest import sha256
from ..errors import KompressError, StoreError
from .layout import local_path, safe_key
from ..modelfile import Execution
from .store import ArtifactStore

POINTER = "current.json"
MIRROR = "current"
RELEASES = "releases"


class PromotionError(KompressError):
    reason = "PromotionFailed"


class _Wire(BaseModel):
    # Unknown fields kept: a pointer written by a newer release still reads, and writes back whole.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class PointerRun(_Wire):
    id: str
    name: str | None = None
    namespace: str | None = None
    finished_at: str | None = None


class PointerModel(_Wire):
    path: str  # under the release: the model file, or a checkpoint's directory
    format: str
    precision: str = "fp32"
    extra_files: list[str] = Field(default_factory=list)  # e.g. an OpenVINO IR's model.bin
    execution: Execution = Field(default_factory=Execution)  # how it was measured to run

    @model_validator(mode="before")
    @classmethod
    def _flat_execution(cls, data: Any) -> Any:
        """A pointer written before Execution had device, compileMode and executionProvider here."""
        return Execution.lifted(data)


class PointerFile(_Wire):
    path: str
    sha256: str
    size_bytes: int | None = None


class PromotedPointer(_Wire):
    """current.json: the promoted release, each of its files with its digest, and how the model
    measured. Written last, in one PUT or rename (promotion.py); read by a later run's gate and
    by `kompress fetch-promoted`."""

    api_version: str = "kompress.io/v1alpha1"
    kind: str = "PromotedModel"
    run: PointerRun
    promoted_at: str
    candidate: str
    technique: str | None = None
    lineage: list[dict[str, Any]] = Field(default_factory=list)
    digest: str
    release: str
    model: PointerModel
    files: list[PointerFile]
    metrics: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)


def read_pointer(store: ArtifactStore, folder: Path) -> PromotedPointer | None:
    """current.json, downloaded into `folder` and parsed; None when nothing is promoted there."""
    if not store.get(POINTER, folder / POINTER):
        return None
    try:
        return PromotedPointer.model_validate_json((folder / POINTER).read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        raise PromotionError(f"{store.uri(POINTER)} is not a promotion pointer ({where}: {first['msg']})") from None


def download_release(store: ArtifactStore, pointer: PromotedPointer, folder: Path) -> None:
    """The files the pointer names into `folder` (paths relative to the release), each checked
    against its digest; PromotionError naming the first missing or changed file."""
    for entry in pointer.files:
        local = local_path(folder, release_relative(pointer, entry.path, store), "pointer file")
        if not store.get(entry.path, local):
            raise PromotionError(f"{store.uri(POINTER)} names {entry.path}, which is missing")
        if sha256(local) != entry.sha256:
            raise PromotionError(f"{store.uri(entry.path)} does not match the digest in {POINTER}")


def release_relative(pointer: PromotedPointer, path: str, store: ArtifactStore) -> str:
    """A pointer entry's path inside its release, refused (PromotionError) when it leaves the
    release's folder: a pointer is data another writer may have crafted."""
    release = pointer.release
    try:
        safe_key(release, "release")
        relative = safe_key(str(path), "file")
    except StoreError as exc:
        raise PromotionError(f"{store.uri(POINTER)} names a path outside its release: {exc}") from None
    if not release.startswith(f"{RELEASES}/") or not relative.startswith(release) or relative == release:
        raise PromotionError(f"{store.uri(POINTER)} names {path!r}, which is not in its release {release!r}")
    return relative.removeprefix(release)


def fetch_promoted(store: ArtifactStore, target: Path) -> PromotedPointer:
    """The current release's files into `target`, checked, then moved into place at once; returns
    the pointer. A pointer naming a missing or changed file fails (PromotionError) and leaves
    `target` as it was."""
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as folder:
        staging = Path(folder) / "release"
        pointer = read_pointer(store, staging)
        if pointer is None:
            raise PromotionError(f"{store.uri(POINTER)}: nothing is promoted there")
        download_release(store, pointer, staging)
        _swap(staging, target)
    return pointer


def _swap(staging: Path, target: Path) -> None:
    """Replace target by staging: a rename, with the old copy moved aside first."""
    if target.exists() and any(target.iterdir()):
        aside = staging.parent / "previous"
        os.replace(target, aside)
    elif target.exists():
        target.rmdir()
    os.replace(staging, target)
    shutil.rmtree(staging.parent / "previous", ignore_errors=True)
