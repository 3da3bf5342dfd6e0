"""SHA-256 of a model file or checkpoint directory, the digest every manifest and pointer names."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: Path) -> str:
    """A file's digest; a directory's covers each file's relative path and digest."""
    if path.is_dir():
        listing = "".join(f"{p.relative_to(path).as_posix()}\0{sha256(p)}\n" for p in sorted(path.rglob("*")) if p.is_file())
        return hashlib.sha256(listing.encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
