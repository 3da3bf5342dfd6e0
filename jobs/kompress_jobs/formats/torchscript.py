"""A TorchScript archive (torch.jit.save): TorchScript source under code/ and tensors, loaded by torch
without unpickling Python objects. But the source is the tenant's and may call operators that
touch files: `aten::from_file` reads any file on the node at inference time (the workload token,
/proc/self/environ), `aten::save` writes one. Such operators are refused by name, twice: in the
archive's source before torch compiles it (a `__setstate__` method runs during torch.jit.load),
and in every method's inlined graph after loading (what the compiler actually resolved)."""

from __future__ import annotations

import functools
import re
import zipfile
from pathlib import Path

from ..errors import UnsafeModelError
from ..spec.sources import ModelFormat
from .base import Format, register
from .files import refuse_duplicate_entries


@register
class TorchScript(Format):
    format = ModelFormat.TORCH_SCRIPT
    describe = "a torch.jit.save archive"
    suffixes = (".pt", ".pth", ".torchscript")

    @classmethod
    def signature_problem(cls, path: Path) -> str | None:
        if not zipfile.is_zipfile(path):
            return "not a zip archive"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        return None if any(n.endswith("/constants.pkl") or "/code/" in n for n in names) else "no TorchScript code in the archive"

    @classmethod
    def check(cls, path: Path, extra_files: tuple[Path, ...]) -> None:
        if path.is_file():
            refuse_duplicate_entries(path)


@functools.cache
def file_operators() -> frozenset[str]:
    """Every operator this torch registers that takes a file name (an argument of type str whose
    name says file or path): aten::from_file and aten::save in torch 2.13."""
    import torch

    return frozenset(schema.name for schema in torch._C._jit_get_all_schemas()
                     if any(str(a.type) == "str" and ("file" in a.name or "path" in a.name) for a in schema.arguments))


def check_archive_source(path: Path) -> None:
    """UnsafeModelError when the archive's TorchScript source calls a file operator."""
    names = sorted({name.split("::", 1)[1] for name in file_operators()})
    pattern = re.compile(r"\.\s*(" + "|".join(map(re.escape, names)) + r")\b")
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if "/code/" in f"/{info.filename}" and info.filename.endswith(".py"):
                    found = pattern.search(archive.read(info).decode("utf-8", errors="replace"))
                    if found:
                        raise _refused(path, f"aten::{found.group(1)}", info.filename)
    except zipfile.BadZipFile:
        return  # torch.jit.load says what the file is not


def check_loaded_module(module, path: Path) -> None:
    """UnsafeModelError when any method of the loaded module, inlined, calls a file operator."""
    import torch

    denied = file_operators()
    for name, submodule in module.named_modules():
        for method in submodule._c._method_names():
            graph = submodule._c._get_method(method).graph.copy()
            torch._C._jit_pass_inline(graph)
            kind = next((node.kind() for node in _nodes(graph.block()) if node.kind() in denied), None)
            if kind:
                raise _refused(path, kind, f"{name or 'the module'}.{method}")


def _nodes(block):
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def _refused(path: Path, operator: str, where: str) -> UnsafeModelError:
    return UnsafeModelError(f"model file {path}: {where} calls {operator}, which reads or writes files on the node; "
                            "kompress refuses TorchScript that touches files")
