"""What no model file or folder may hold, whatever its format: a symbolic link inside a model's
folder or beside its file (a link to ~/.aws/credentials in a checkpoint folder would be read, and
published with the artifacts) and, in a zip archive, two entries of one name (readers disagree on
which one counts, so a check can read one and the loader the other). The path a spec names may
itself be a link (scripts/setup-venv links the example models): where it may point is the storage
policy's to say, and what lies there is checked here."""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from pathlib import Path

from ..errors import UnsafeModelError


def refuse_links(path: Path, *, named: bool = True) -> None:
    """UnsafeModelError when anything inside a model folder is a symbolic link, or the path itself
    when the spec does not name it (a file found beside the model, such as an IR's weights)."""
    if not named and path.is_symlink():
        raise UnsafeModelError(f"model file {path}: a symbolic link; kompress reads models only as regular files and folders")
    if not path.is_dir():
        return
    for folder, folders, files in os.walk(path):  # os.walk does not follow links
        for name in (*folders, *files):
            item = Path(folder) / name
            if item.is_symlink():
                raise UnsafeModelError(f"model folder {path}: {item.relative_to(path)} is a symbolic link; kompress "
                                       "reads models only as regular files and folders")


# What a compiled library starts with: ELF (Linux), Mach-O (both byte orders, fat), PE (Windows: MZ,
# then PE\0\0 where the header at 0x3c points)
_NATIVE = {b"\x7fELF": "an ELF shared library or executable", b"\xcf\xfa\xed\xfe": "a Mach-O library",
           b"\xce\xfa\xed\xfe": "a Mach-O library", b"\xfe\xed\xfa\xcf": "a Mach-O library",
           b"\xca\xfe\xba\xbe": "a Mach-O universal library"}


def refuse_native_code(path: Path) -> None:
    """UnsafeModelError when the model file a spec names is compiled code, whatever its name or
    declared format: kompress runs native code only from its own packages, never from a tenant's
    model (a TVM library, a custom-operator library, a plugin). Only the named file: the weight blobs
    beside a model (an IR's .bin, ONNX external data) are raw numbers that may start with any bytes."""
    if not path.is_file():
        return
    with path.open("rb") as file:
        start = file.read(64)
        kind = _NATIVE.get(start[:4])
        if kind is None and start[:2] == b"MZ" and len(start) == 64:
            file.seek(int.from_bytes(start[0x3C:0x40], "little"))
            kind = "a Windows PE library or executable" if file.read(4) == b"PE\0\0" else None
    if kind:
        raise UnsafeModelError(f"model file {path}: {kind}; kompress never loads native code from a model, "
                               "only from its own packages")


def refuse_duplicate_entries(path: Path) -> None:
    """UnsafeModelError when a zip archive names one entry twice."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = Counter(info.filename for info in archive.infolist())
    except zipfile.BadZipFile:
        return  # not an archive: the format's own loader says so
    twice = sorted(name for name, count in names.items() if count > 1)
    if twice:
        raise UnsafeModelError(f"model file {path}: its archive holds {twice[0][:120]!r} more than once; "
                               "kompress refuses archives whose entries are ambiguous")
