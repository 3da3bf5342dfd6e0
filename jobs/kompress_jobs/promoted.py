"""Reading what is promoted: the pointer's layout, and a copy of the current release for a serving
Pod (`kompress fetch-promoted`, an init container's command). Free of numpy and the runtimes, so
the operator's slim image runs it too.

Under the promotion root: releases/<run id>/… (never rewritten), current/… (a mirror), and
current.json (the pointer, written last)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .digest import sha256
from .errors import KompressError
from .store import ArtifactStore

POINTER = "current.json"
MIRROR = "current"
RELEASES = "releases"


class PromotionError(KompressError):
    reason = "PromotionFailed"


def fetch_promoted(store: ArtifactStore, target: Path) -> dict:
    """The current release's files into `target` (paths relative to the release), each checked
    against the pointer's digest, then moved into place at once; returns the pointer. A pointer
    naming a missing or changed file fails (PromotionError) and leaves `target` as it was."""
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as folder:
        staging = Path(folder) / "release"
        if not store.get(POINTER, staging / POINTER):
            raise PromotionError(f"{store.uri(POINTER)}: nothing is promoted there")
        try:
            pointer = json.loads((staging / POINTER).read_text())
            release, files = pointer["release"], pointer["files"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PromotionError(f"{store.uri(POINTER)} is not a promotion pointer ({exc})") from None
        for entry in files:
            local = staging / entry["path"].removeprefix(release)
            if not store.get(entry["path"], local):
                raise PromotionError(f"{store.uri(POINTER)} names {entry['path']}, which is missing")
            if sha256(local) != entry["sha256"]:
                raise PromotionError(f"{store.uri(entry['path'])} does not match the digest in {POINTER}")
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
