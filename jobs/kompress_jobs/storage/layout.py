"""Where a resource's files live in a store: the namespace and the name are path segments of their own.

    <root>/<namespace>/<name>/runs/<run id>/…        a run's report, manifest and candidate models
    <root>/<namespace>/<name>/studies/<digest>/…     a single-Pod tuning study (journal, trial models)
    <root>/<namespace>/<name>/current.json, current/, releases/<run id>/   promotion (promoted.py)
    <root>/<namespace>/<name>/kept/…                 what passes keep between runs (TVM's tuning records)

So everything a team's runs write lies under <root>/<namespace>/, which an S3 (IAM or MinIO) policy
can grant to that team's credentials alone. Kubernetes names cannot hold '/', so `team/a-model` and
`team-a/model` never share a folder. Free of numpy and the runtimes: the operator imports it.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ..errors import StoreError

DEFAULT_ARTIFACTS = "./kompress-runs"  # where a laptop run publishes when neither the spec nor --output names a place

RUNS, STUDIES, KEPT = "runs", "studies", "kept"
DEFAULT_NAMESPACE = "default"  # the CLI's, for a spec without metadata.namespace
_SEGMENT = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # DNS-1123, as Kubernetes names


def resource_prefix(namespace: str | None, name: str) -> str:
    for what, segment in (("namespace", namespace or DEFAULT_NAMESPACE), ("name", name)):
        if not _SEGMENT.match(segment) or segment in (".", ".."):
            raise StoreError(f"metadata.{what} {segment!r} cannot name a folder (lowercase letters, digits, '-' and '.')")
    return f"{namespace or DEFAULT_NAMESPACE}/{name}"


def run_prefix(namespace: str | None, name: str, run_id: str) -> str:
    return f"{resource_prefix(namespace, name)}/{RUNS}/{safe_key(run_id, 'run id')}"


def study_prefix(namespace: str | None, name: str, digest: str) -> str:
    """Also the study's name in a shared database: two namespaces never open each other's study."""
    return f"{resource_prefix(namespace, name)}/{STUDIES}/{safe_key(digest, 'study')}"


def kept_prefix(namespace: str | None, name: str) -> str:
    return f"{resource_prefix(namespace, name)}/{KEPT}"


def safe_key(key: str, what: str = "key") -> str:
    """A relative key that stays inside its folder: no empty, '.' or '..' segment, no leading '/',
    no backslash. StoreError otherwise, naming what the key was for."""
    parts = PurePosixPath(key).parts if key else ()
    if not key or key.startswith("/") or "\\" in key or "\0" in key or any(p in (".", "..") for p in parts) \
            or "//" in key.rstrip("/"):
        raise StoreError(f"{what} {key!r} leaves its folder (keys are relative paths without '..')")
    return key


def local_path(folder: Path, key: str, what: str = "key") -> Path:
    """Where a key (an S3 object under a prefix, a pointer's or a trial's file) lands under `folder`:
    the one way a download names its local file. Refused (StoreError) when the key leaves the folder
    (safe_key) or when any part of the way already exists as a symbolic link, which would carry the
    write elsewhere on the node."""
    relative = safe_key(key, what).rstrip("/")
    path = folder
    for part in PurePosixPath(relative).parts:
        path = path / part
        if path.is_symlink():
            raise StoreError(f"{what} {key!r} would be written through the symbolic link {path}")
    return path
