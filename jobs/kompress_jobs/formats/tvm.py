"""Apache TVM: a folder kompress writes, never one a user hands it. It holds a library compiled by
TVM for one CPU (`model.so`: native code), the weights it takes (`params.npz`) and a manifest
(`kompress-tvm.json`) naming the LLVM target, a function per batch size and the inputs' rows.

A compiled library runs whatever code it holds once loaded, so the door opens only for a library
this process built (the TVM pass vouches for each digest after it compiles): a folder from a
tenant, a store or an earlier run is refused, whatever its manifest says. `spec.model.format`
cannot name it (spec/sources.py), and refuse_native_code keeps a library out under any other name."""

from __future__ import annotations

import json
from pathlib import Path

from ..spec.sources import ModelFormat
from .base import Format, register

MANIFEST = "kompress-tvm.json"
LIBRARY, PARAMS = "model.so", "params.npz"
_BUILT_HERE: set[str] = set()  # digests of the libraries this process compiled


def vouch(folder: Path) -> None:
    """Record that this process built the library in `folder` (the TVM pass, after compiling)."""
    from ..storage.digest import sha256

    _BUILT_HERE.add(sha256(folder / LIBRARY))


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


@register
class TVM(Format):
    format = ModelFormat.TVM
    describe = "a folder the TVM pass wrote (kompress-tvm.json, model.so, params.npz)"
    marker = MANIFEST

    @classmethod
    def size_bytes(cls, path: Path, extra_files: tuple[Path, ...]) -> int:
        """What a server deploys: the library (its kernels) and the weights, not the manifest."""
        return sum(p.stat().st_size for p in (path / LIBRARY, path / PARAMS) if p.is_file())

    @classmethod
    def check(cls, path: Path, extra_files: tuple[Path, ...]) -> None:
        from ..errors import ModelLoadError, UnsafeModelError
        from ..storage.digest import sha256

        if not (path / MANIFEST).is_file() or not (path / LIBRARY).is_file():
            raise ModelLoadError(f"model folder {path}: not {cls.describe}")
        if sha256(path / LIBRARY) not in _BUILT_HERE:
            raise UnsafeModelError(f"model folder {path}: a compiled TVM library runs native code, and kompress loads "
                                   "one only when this run built it; give the ONNX model and a TVM pass instead")
