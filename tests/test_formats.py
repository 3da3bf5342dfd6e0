"""Each model format is declared once, in its module of `kompress_jobs/formats/`: file or folder,
its files and size, its signature, its door. Adding a format is its module, its test and the
generated manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kompress_jobs.formats import format_of
from kompress_jobs.formats.base import Format
from kompress_jobs.spec.sources import ModelFormat

pytestmark = pytest.mark.unit


def test_every_format_of_the_schema_is_declared_once_in_a_module_of_its_own():
    declared = {f: format_of(f) for f in ModelFormat}
    assert all(issubclass(cls, Format) and cls.format is f for f, cls in declared.items())
    modules = {cls.__module__ for cls in declared.values()}
    assert len(modules) == len(ModelFormat)  # one module each
    assert {f for f, cls in declared.items() if cls.folder()} == {
        ModelFormat.HUGGING_FACE, ModelFormat.ONNX_GENAI, ModelFormat.OPENVINO_CAUSAL_LM, ModelFormat.TVM}
    assert all(cls.describe.startswith(("a ", "an ")) for cls in declared.values())


@pytest.mark.parametrize("model_format, content, problem", [
    (ModelFormat.ONNX, b"<?xml version='1.0'?>", "it does not start as an ONNX protobuf"),
    (ModelFormat.GGUF, b"\x08\x07random", "it does not start with the GGUF magic"),
    (ModelFormat.OPENVINO, b"\x08\x07", "not XML"),
    (ModelFormat.OPENVINO, b"<net/>", "its weights model.bin are not beside it"),
    (ModelFormat.TORCH_SCRIPT, b"GGUF", "not a zip archive"),
    (ModelFormat.TORCH_EXPORT, b"GGUF", "not a zip archive"),
])
def test_a_file_of_another_format_is_named_by_its_signature(tmp_path, model_format, content, problem):
    path = tmp_path / "model.xml"
    path.write_bytes(content)
    assert format_of(model_format).signature_problem(path) == problem


def test_what_a_model_weighs_and_is_stored_as_comes_from_its_format(tmp_path):
    from kompress_jobs.modelfile import ModelFile

    ir = tmp_path / "m.xml"
    ir.write_text("<net/>")
    ir.with_suffix(".bin").write_bytes(b"\0" * 100)
    assert ModelFile(ir, ModelFormat.OPENVINO).files == (ir, ir.with_suffix(".bin"))
    assert ModelFile(ir, ModelFormat.OPENVINO).size_bytes == 106
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for name, size in (("config.json", 10), ("model.safetensors", 1000), ("tokenizer.json", 5000)):
        (checkpoint / name).write_bytes(b"x" * size)
    model = ModelFile(checkpoint, ModelFormat.HUGGING_FACE)
    assert model.size_bytes == 1010 and len(model.files) == 3  # the tokenizer travels, but weighs nothing
    genai = tmp_path / "genai"
    genai.mkdir()
    for name, size in (("genai_config.json", 10), ("model.onnx", 300), ("model.onnx.data", 700)):
        (genai / name).write_bytes(b"x" * size)
    assert ModelFile(genai, ModelFormat.ONNX_GENAI).size_bytes == 1000


def test_two_declarations_of_one_format_are_refused():
    from kompress_jobs.formats.base import register

    class Another(Format):
        format = ModelFormat.ONNX
        describe = "another"

    with pytest.raises(ValueError, match="Another and Onnx both declare ONNX"):
        register(Another)
    assert format_of(ModelFormat.ONNX).__name__ == "Onnx"


def test_the_formats_package_stays_light_for_the_operator():
    """The operator reads whether a format is a folder: the declarations import no model library."""
    import subprocess
    import sys

    code = ("import sys; from kompress_jobs.formats import format_of; from kompress_jobs.spec.sources import ModelFormat; "
            "format_of(ModelFormat.ONNX).folder(); "
            "print(sorted(m for m in ('onnx', 'torch', 'openvino', 'numpy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 57
PE = b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 32


@pytest.mark.parametrize("model_format, name, content, kind", [
    (ModelFormat.ONNX, "model.onnx", ELF, "an ELF shared library"),
    (ModelFormat.TORCH_SCRIPT, "model.pt", b"\xcf\xfa\xed\xfe" + b"\0" * 60, "a Mach-O library"),
    (ModelFormat.EXECUTORCH, "model.pte", PE, "a Windows PE library"),
    (ModelFormat.GGUF, "libtvm_model.so", ELF, "an ELF shared library"),
])
def test_a_compiled_library_given_as_a_model_is_refused_whatever_its_name_or_format(tmp_path, model_format, name, content, kind):
    from kompress_jobs.errors import UnsafeModelError
    from kompress_jobs.formats import check_model_files

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnsafeModelError, match=f"{kind}.*; kompress never loads native code from a model"):
        check_model_files(path, model_format)


def test_a_file_that_merely_starts_with_mz_is_not_taken_for_a_library(tmp_path):
    from kompress_jobs.formats.files import refuse_native_code

    path = tmp_path / "weights.pte"
    path.write_bytes(b"MZ" + b"\x01" * 200)  # no PE header where 0x3c points
    refuse_native_code(path)
