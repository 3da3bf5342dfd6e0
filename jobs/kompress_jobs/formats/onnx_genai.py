"""An ONNX Runtime GenAI folder: genai_config.json, the decoder's .onnx with its data, tokenizer
files. onnxruntime-genai acts on what the configuration says: `custom_ops_library` is dlopen'ed
(native code of the folder's choosing), `provider_options` and session configuration entries load
execution providers and write files (EP context caches, profiles). So the configuration is read
through an allowlist of what the model builder writes for a decoder on the CPU, and anything else
is refused with its path before onnxruntime-genai sees the folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelLoadError, UnsafeModelError
from ..spec.sources import ModelFormat
from .base import Format, register
from .onnx import check_onnx_external_data

CONFIG = "genai_config.json"

# Session options that tune threads, memory and logging; none names a file, a library or a provider.
_SESSION_OPTIONS = frozenset({
    "log_id", "log_severity_level", "log_verbosity_level", "intra_op_num_threads", "inter_op_num_threads",
    "enable_cpu_mem_arena", "enable_mem_pattern", "graph_optimization_level", "disable_cpu_ep_fallback",
    "disable_quant_qdq", "enable_quant_qdq_cleanup", "use_env_allocators", "provider_options"})
# Sections of plain values (names, sizes, token ids, search settings) the builder writes.
_PLAIN_SECTIONS = {("search",), ("model", "decoder", "inputs"), ("model", "decoder", "outputs"),
                   ("model", "decoder", "sliding_window")}


@register
class OnnxGenAI(Format):
    format = ModelFormat.ONNX_GENAI
    describe = "an ONNX Runtime GenAI folder"
    marker = CONFIG
    generative_only = True
    weights = (".onnx", ".data")

    @classmethod
    def check(cls, path: Path, extra_files: tuple[Path, ...]) -> None:
        if path.is_dir():
            read_genai_config(path)


def read_genai_config(folder: Path) -> dict:
    """The folder's configuration, checked; ModelLoadError (UnsafeModelError for what would load
    code or reach outside the folder) naming the key."""
    where = f"model folder {folder}"
    if not folder.is_dir():
        raise ModelLoadError(f"{where}: not a folder (an OnnxGenAI model is the folder its builder wrote)")
    try:
        config = json.loads((folder / CONFIG).read_text())
        decoder = config["model"]["decoder"]
    except FileNotFoundError:
        raise ModelLoadError(f"{where}: no {CONFIG} (not an ONNX Runtime GenAI model folder)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{where}: {CONFIG} is not a GenAI configuration ({type(exc).__name__})") from None
    if not isinstance(decoder, dict):
        raise ModelLoadError(f"{where}: {CONFIG} model.decoder is not a section")
    _check_section(config, (), f"{where}: {CONFIG}")
    filename = decoder.get("filename", "model.onnx")
    onnx_file = folder / filename if isinstance(filename, str) else folder
    if not isinstance(filename, str) or onnx_file.parent != folder or not onnx_file.is_file():
        raise UnsafeModelError(f"{where}: {CONFIG} names decoder file {str(filename)[:120]!r}, which is not in the folder")
    check_onnx_external_data(onnx_file)  # its data must lie beside it, never elsewhere on the node
    return config


def _check_section(section: dict, path: tuple[str, ...], where: str) -> None:
    for key, value in section.items():
        at = (*path, str(key))
        name = ".".join(at)
        if at[-1] == "session_options" and isinstance(value, dict):
            _check_session_options(value, name, where)
        elif isinstance(value, dict):
            if at not in _PLAIN_SECTIONS and at not in {("model",), ("model", "decoder")}:
                raise UnsafeModelError(f"{where}: section {name[:120]!r} is not one kompress runs (a decoder-only "
                                       "model on the CPU: model.decoder with its inputs and outputs, search)")
            if at in _PLAIN_SECTIONS:
                _check_plain(value, name, where)
            else:
                _check_section(value, at, where)
        elif not _plain(value):
            raise UnsafeModelError(f"{where}: {name[:120]} holds {type(value).__name__} values kompress does not read")


def _check_session_options(options: dict, name: str, where: str) -> None:
    for key, value in options.items():
        if key not in _SESSION_OPTIONS:
            raise UnsafeModelError(f"{where}: {name}.{str(key)[:80]} is not allowed: kompress runs a GenAI folder with no "
                                   "custom operator library, execution provider, session configuration entry or file "
                                   "of the folder's choosing")
        if key == "provider_options" and value != []:
            raise UnsafeModelError(f"{where}: {name}.provider_options names an execution provider; kompress runs GenAI "
                                   "folders on the CPU provider only")
        if key != "provider_options" and not _plain(value):
            raise UnsafeModelError(f"{where}: {name}.{key} is not a plain value")


def _check_plain(section: dict, name: str, where: str) -> None:
    for key, value in section.items():
        if not _plain(value):
            raise UnsafeModelError(f"{where}: {name}.{str(key)[:80]} is not a plain value")


def _plain(value) -> bool:
    """A number, a flag, a short string, or a list of those."""
    if isinstance(value, list):
        return all(_plain(item) and not isinstance(item, list) for item in value)
    return value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 4096)
