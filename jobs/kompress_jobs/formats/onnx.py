"""ONNX: one protobuf file, its external data (if any) beside it. A model names its external data by
a path: it must stay inside the model's folder and be a regular file, or a model could make kompress
read /etc/shadow or /dev/zero."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import ModelLoadError, UnsafeModelError, first_line
from ..spec.sources import ModelFormat
from .base import Format, head, register

# A serialized ModelProto starts with the tag of one of its fields (ir_version, field 1, comes first
# from every writer: 0x08); text, XML, zip archives and pickles start with other bytes.
_MODEL_PROTO_TAGS = {0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA}


@register
class Onnx(Format):
    format = ModelFormat.ONNX
    describe = "an .onnx file"
    suffixes = (".onnx",)

    @classmethod
    def signature_problem(cls, path: Path) -> str | None:
        return None if head(path, 1)[0] in _MODEL_PROTO_TAGS else "it does not start as an ONNX protobuf"


def check_onnx(path: Path) -> None:
    """ModelLoadError unless path is a well-formed ONNX model whose external data lies beside it."""
    import onnx

    if not path.is_file():
        raise ModelLoadError(f"model file {path}: no such file")
    try:
        check_onnx_external_data(path)  # first: the checker would read what the model names
        onnx.checker.check_model(str(path))  # by path, so models with external data work
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"model file {path}: not a valid ONNX model: {first_line(exc)}") from None


def onnx_input_names(path: Path) -> tuple[str, ...]:
    """The graph's inputs, read without running it (initializers listed as inputs left out)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    return tuple(i.name for i in graph.input if i.name not in constants)


def check_onnx_external_data(path: Path) -> None:
    """Every external data file an ONNX model names is a regular file inside the model's folder."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    folder = path.parent.resolve()
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = (folder / location).resolve()
        if PurePosixPath(location).is_absolute() or os.path.isabs(location) or not target.is_relative_to(folder):
            raise UnsafeModelError(f"model file {path}: tensor {tensor.name!r} names external data outside the model's "
                                   f"folder ({location!r}); kompress reads external data only beside the model")
        if target.exists() and not target.is_file():
            raise UnsafeModelError(f"model file {path}: tensor {tensor.name!r} names external data {location!r}, "
                                   "which is not a regular file")
