"""A GGUF file's header, read with bounds before any library parses the whole file.

gguf's GGUFReader maps the file and builds Python objects for every metadata entry and array item
(about 190 times the file's size in memory for a crafted file), and echoes what it read into its
errors. This reader walks the header (magic, version, counts, metadata, tensor infos) checking
every count and length against the bytes that remain, skips arrays without materializing them,
keeps scalars and short strings only, and cuts what it echoes. Layout: ggml's docs/gguf.md.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelLoadError, UnsafeModelError
from ..spec.sources import ModelFormat
from .base import Format, head, register

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 used 32-bit lengths; llama.cpp and transformers write 3
MAX_KEYS = 1 << 16
MAX_TENSORS = 1 << 20
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_STRING = 1 << 24  # 16 MiB: a chat template or a vocabulary entry is far smaller
MAX_KEPT_STRING = 1024  # longer metadata strings are skipped, not kept
# Strings in arrays, all arrays together: a vocabulary and its merges are well under a million each
# (256k tokens at most in the models of 2026); the bound keeps a crafted file's header to seconds.
MAX_ARRAY_STRINGS = 1 << 22
ECHO = 60  # characters of a file's own text an error may show

# value type -> struct format of a scalar (8: string, 9: array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass
class GgufHeader:
    version: int
    tensor_count: int
    metadata: dict[str, object] = field(default_factory=dict)  # scalars and strings up to MAX_KEPT_STRING

    def text(self, key: str) -> str | None:
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None


def shown(text: str) -> str:
    """A file's own text as an error may echo it: cut, control characters escaped."""
    cut = text[:ECHO] + ("…" if len(text) > ECHO else "")
    return cut.encode("unicode_escape").decode("ascii")


class _Reader:
    """A cursor over the mapped file (pages are read as they are touched: nothing is copied)."""

    def __init__(self, buffer, where: str):
        self.buffer, self.size, self.pos, self.where = buffer, len(buffer), 0, where
        self.strings_left = MAX_ARRAY_STRINGS

    def fail(self, what: str) -> UnsafeModelError:
        return UnsafeModelError(f"{self.where}: not a readable GGUF file ({what} at byte {self.pos})")

    def skip(self, count: int, what: str) -> int:
        """The position of `count` bytes, stepped over."""
        if count > self.size - self.pos:
            raise self.fail(f"{what} of {count} bytes runs past the end of the file")
        start, self.pos = self.pos, self.pos + count
        return start

    def take(self, count: int, what: str) -> bytes:
        start = self.skip(count, what)
        return bytes(self.buffer[start:self.pos])

    def unpack(self, fmt: str, what: str):
        return struct.unpack_from(fmt, self.buffer, self.skip(struct.calcsize(fmt), what))[0]

    def count(self, limit: int, least_bytes: int, what: str) -> int:
        """A count read from the file, no larger than `limit` nor than the items of `least_bytes`
        each that the rest of the file could hold."""
        value = self.unpack("<Q", what)
        if value > limit:
            raise self.fail(f"{what} {value} is over kompress's limit of {limit}")
        if value * least_bytes > self.size - self.pos:
            raise self.fail(f"{what} {value} is more than the file can hold")
        return value

    def string(self, what: str, keep: int = MAX_STRING) -> str | None:
        length = self.unpack("<Q", f"the length of {what}")
        if length > MAX_STRING:
            raise self.fail(f"{what} of {length} bytes is over the {MAX_STRING}-byte limit")
        if length > keep:
            self.skip(length, what)
            return None
        return self.take(length, what).decode("utf-8", errors="replace")

    def value(self, kind: int, what: str):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind], what)
        if kind == _STRING:
            return self.string(what, MAX_KEPT_STRING)
        if kind != _ARRAY:
            raise self.fail(f"{what} has value type {kind}, which GGUF does not define")
        item = self.unpack("<I", f"the item type of {what}")
        if item in _SCALARS:
            size = struct.calcsize(_SCALARS[item])
            self.skip(self.count(1 << 40, size, f"the length of array {what}") * size, f"array {what}")
        elif item == _STRING:  # the hot loop of a vocabulary: lengths read in place, each bounded
            count = self.count(self.strings_left, 8, f"the length of array {what}")
            self.strings_left -= count
            for _ in range(count):
                length = self.unpack("<Q", f"the length of an item of {what}")
                if length > MAX_STRING:
                    raise self.fail(f"an item of {what} of {length} bytes is over the {MAX_STRING}-byte limit")
                self.skip(length, f"an item of {what}")
        else:
            raise self.fail(f"array {what} has item type {item}, which GGUF does not define")
        return None


@register
class Gguf(Format):
    format = ModelFormat.GGUF
    describe = "a .gguf file"
    suffixes = (".gguf",)
    generative_only = True

    @classmethod
    def signature_problem(cls, path: Path) -> str | None:
        return None if head(path, 4) == MAGIC else "it does not start with the GGUF magic"

    @classmethod
    def check(cls, path: Path, extra_files: tuple[Path, ...]) -> None:
        if path.is_file():
            architecture(path)  # the whole header, read with bounds, before transformers parses it


def architecture(path: Path) -> str:
    """The architecture the header declares (what every reader of the file dispatches on);
    ModelLoadError when there is none, UnsafeModelError when the header breaks its bounds."""
    declared = read_header(path).text("general.architecture")
    if not declared:
        raise ModelLoadError(f"model file {path}: the GGUF file names no general.architecture (a short string)")
    return declared


def read_header(path: Path) -> GgufHeader:
    """The header of a GGUF file; UnsafeModelError naming what breaks the format or its bounds."""
    where = f"model file {path}"
    with path.open("rb") as file:
        if path.stat().st_size < 4 or file.read(4) != MAGIC:
            raise UnsafeModelError(f"{where}: not a readable GGUF file (it does not start with the GGUF magic)")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return _read(_Reader(buffer, where), where)


def _read(reader: _Reader, where: str) -> GgufHeader:
    reader.skip(4, "the magic")
    version = reader.unpack("<I", "the version")
    if version not in VERSIONS:
        raise UnsafeModelError(f"{where}: not a readable GGUF file: GGUF version {version} is not one kompress reads ({', '.join(map(str, VERSIONS))})")
    tensors = reader.count(MAX_TENSORS, 24, "the tensor count")  # name length, dims, type, offset: 24 bytes at least
    keys = reader.count(MAX_KEYS, 12, "the metadata key count")
    header = GgufHeader(version, tensors)
    for _ in range(keys):
        key = reader.string("a metadata key", keep=256)
        if key is None:
            raise reader.fail("a metadata key over 256 bytes")
        header.metadata[key] = reader.value(reader.unpack("<I", f"the type of {shown(key)}"), shown(key))
    for _ in range(tensors):
        name = reader.string("a tensor name", keep=256)
        dims = reader.unpack("<I", f"the dimension count of tensor {shown(name or '?')}")
        if dims > MAX_DIMS:
            raise reader.fail(f"tensor {shown(name or '?')} has {dims} dimensions (at most {MAX_DIMS})")
        reader.skip(8 * dims + 4 + 8, f"tensor {shown(name or '?')}'s shape, type and offset")
    return header
