"""TorchExport: a `torch.export.save` program (.pt2), opened without running code from it.

A `torch.export.save` archive (.pt2) is a zip of JSON graphs and raw tensor bytes, but torch 2.13's
loader also accepts entries it reads with `torch.load(weights_only=False)` or `pickle.loads`: a
weight or tensor constant marked `use_pickle`, custom and opaque objects among the constants,
legacy `.pt` weight files, sample inputs it falls back to unpickling, and AOTInductor shared
libraries. Each of those runs code chosen by whoever wrote the file. So the archive is inspected
first and refused, with one line naming the entry, unless every payload is one kompress can check;
then it is loaded with unpickling switched off, in case a torch release adds a path this check
does not know (defence in depth, not the check).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import ModelLoadError, UnsafeModelError
from ..spec.sources import ModelFormat
from .base import Format, register
from .files import refuse_duplicate_entries

# What a .pt2 archive may hold besides its payload folders (torch's own layout constants name those).
_KNOWN_FILES = ("archive_format", "archive_version", "byteorder")


@register
class TorchExport(Format):
    format = ModelFormat.TORCH_EXPORT
    describe = "a torch.export .pt2 archive"
    suffixes = (".pt2",)

    @classmethod
    def signature_problem(cls, path: Path) -> str | None:
        return None if zipfile.is_zipfile(path) else "not a zip archive"

    @classmethod
    def check(cls, path: Path, extra_files: tuple[Path, ...]) -> None:
        if path.is_file():
            refuse_duplicate_entries(path)


def check_export_archive(path: Path) -> None:
    """Raise UnsafeModelError unless the .pt2 archive loads without unpickling anything."""
    where = f"model file {path}"
    try:
        with zipfile.ZipFile(path) as archive:
            entries = _archive_entries(archive, where)
            for model in _models(entries, where):
                for kind in ("weights", "constants"):
                    _check_payload_config(entries, model, kind, where)
                _check_sample_inputs(entries, model, where)
    except zipfile.BadZipFile:
        raise ModelLoadError(f"{where}: not a readable TorchExport file (not a zip archive written by torch.export.save)") from None


def _archive_entries(archive: zipfile.ZipFile, where: str) -> dict[str, "_Entry"]:
    """Entries by their path under the archive's root folder (torch names the root freely)."""
    from torch.export.pt2_archive import constants as pt2

    infos = [i for i in archive.infolist() if not i.is_dir()]
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise UnsafeModelError(f"{where}: not a readable TorchExport file (its files are not under one root folder, as "
                               "torch.export.save writes them)")
    entries = {i.filename.split("/", 1)[1]: i for i in infos}
    if pt2.ARCHIVE_VERSION_PATH not in entries or pt2.ARCHIVE_FORMAT_PATH not in entries:
        raise UnsafeModelError(f"{where}: not a readable TorchExport file (no {pt2.ARCHIVE_VERSION_PATH}: not written by "
                               "torch.export.save, or an older format that keeps weights as pickles, a layout kompress cannot "
                               "check): save it again with torch.export.save of torch 2.6 or newer")
    known = (pt2.MODELS_DIR, pt2.WEIGHTS_DIR, pt2.CONSTANTS_DIR, pt2.SAMPLE_INPUTS_DIR, pt2.EXTRA_DIR, ".data/")
    unknown = sorted(n for n in entries if n not in _KNOWN_FILES and not n.startswith(known))
    if unknown:
        what = "compiled AOTInductor code, which would run as native code" if any(
            n.startswith(pt2.AOTINDUCTOR_DIR) for n in unknown) else "files kompress does not know how torch reads"
        raise UnsafeModelError(f"{where}: holds {what} ({unknown[0]}); kompress loads only the exported program and its tensors")
    return {n: _Entry(archive, i) for n, i in entries.items()}


class _Entry:
    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo):
        self.archive, self.info = archive, info

    def read(self) -> bytes:
        return self.archive.read(self.info)


def _models(entries: dict, where: str) -> list[str]:
    models = [PurePosixPath(n).stem for n in entries if n.startswith("models/") and n.endswith(".json") and n.count("/") == 1]
    if not models:
        raise UnsafeModelError(f"{where}: holds no exported program (models/*.json)")
    return models


def _check_payload_config(entries: dict, model: str, kind: str, where: str) -> None:
    """Every weight (or constant) must be raw tensor bytes described by its tensor metadata."""
    from torch.export.pt2_archive import constants as pt2

    folder, config_format = {"weights": (pt2.WEIGHTS_DIR, pt2.WEIGHTS_CONFIG_FILENAME_FORMAT),
                             "constants": (pt2.CONSTANTS_DIR, pt2.CONSTANTS_CONFIG_FILENAME_FORMAT)}[kind]
    if f"{folder}{model}.pt" in entries:
        raise UnsafeModelError(f"{where}: keeps its {kind} in a pickled file ({folder}{model}.pt, the legacy layout); "
                               "save it again with a current torch.export.save")
    config_name = config_format.format(model)
    if config_name not in entries:
        raise UnsafeModelError(f"{where}: no {config_name}: an archive layout kompress cannot check")
    try:
        config = json.loads(entries[config_name].read())["config"]
        items = config.items()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UnsafeModelError(f"{where}: {config_name} is not a payload config kompress can check") from None
    for fqn, meta in items:
        path_name = str((meta or {}).get("path_name", ""))
        if kind == "constants" and not path_name.startswith(pt2.TENSOR_CONSTANT_FILENAME_PREFIX):
            raise UnsafeModelError(f"{where}: constant {fqn!r} is a custom or opaque object ({path_name}), which torch "
                                   "would unpickle and could run code; kompress loads tensor constants only")
        if (meta or {}).get("use_pickle"):
            raise UnsafeModelError(f"{where}: {kind[:-1]} {fqn!r} is stored as a pickle ({path_name}), which torch would "
                                   "load with weights_only=False and could run code; kompress never unpickles a model")
        if (meta or {}).get("tensor_meta") is None:
            raise UnsafeModelError(f"{where}: {kind[:-1]} {fqn!r} has no tensor metadata: not raw tensor bytes")


def _check_sample_inputs(entries: dict, model: str, where: str) -> None:
    """torch reads sample inputs with weights_only=True and falls back to a full unpickle on failure:
    they must load with the restricted unpickler."""
    import torch
    from torch.export.pt2_archive import constants as pt2

    name = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
    if name not in entries:
        return

    try:
        torch.load(io.BytesIO(entries[name].read()), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means torch would fall back to unpickling
        raise UnsafeModelError(f"{where}: its sample inputs ({name}) need a full unpickle to load "
                               f"({str(exc).splitlines()[0][:120]}); kompress never unpickles a model") from None


@contextlib.contextmanager
def no_unpickling():
    """While loading: torch.load honours only weights_only=True (torch's documented switch), and
    pickle.loads in the archive reader refuses."""
    import torch.export.pt2_archive._package as package

    class _Refuse:
        def __getattr__(self, name):
            raise UnsafeModelError("the model file asked torch to unpickle an object; kompress never unpickles a model")

    saved_env, saved_pickle = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD"), package.pickle
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    package.pickle = _Refuse()
    try:
        yield
    finally:
        package.pickle = saved_pickle
        if saved_env is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = saved_env


def load_exported_program(path: Path):
    """torch.export.load of a checked archive, with unpickling off: the one way kompress opens a .pt2."""
    import torch

    check_export_archive(path)
    with no_unpickling():
        return torch.export.load(str(path))
