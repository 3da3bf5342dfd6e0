"""A model file never runs code and never reads outside itself (docs/security.md, "Loaders").

Each crafted file carries a payload that writes a marker file when unpickled. The tests first show
that plain torch.export.load runs it (so the attack is real), then that kompress refuses the file
with one line and the marker is never written.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from kompress_jobs.errors import ModelLoadError, StoreError
from kompress_jobs.modelfile import ModelFile
from kompress_jobs.runtimes import check_onnx, load_torch_module
from kompress_jobs.errors import UnsafeModelError
from kompress_jobs.formats.torch_export import check_export_archive
from kompress_jobs.spec.sources import ModelFormat
from kompress_jobs.storage.store import LocalStore

pytestmark = pytest.mark.unit


class _Payload:
    """Unpickled, it writes the marker: what an attacker's archive would do with a shell command."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.register_buffer("offset", torch.ones(3))

    def forward(self, x):
        return self.linear(x) + self.offset + torch.tensor([1.0, 2.0, 3.0])


TINY = Tiny().eval()


@pytest.fixture(scope="module")
def clean_archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    torch.export.save(torch.export.export(TINY, (torch.randn(2, 4),)), str(path))
    return path


def rewrite(source: Path, target: Path, change) -> Path:
    """A copy of the archive with change(name, data) -> data | None (None drops the entry) applied."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = change(info.filename.split("/", 1)[1], old.read(info))
            if data is not None:
                new.writestr(info.filename, data)
    return target


def pickled_weight(clean: Path, target: Path, marker: Path) -> Path:
    def change(name, data):
        if name == "data/weights/model_weights_config.json":
            config = json.loads(data)
            config["config"]["linear.weight"]["use_pickle"] = True
            return json.dumps(config).encode()
        if name == "data/weights/" + _weight_file(clean, "linear.weight"):
            return _torch_pickle(_Payload(marker))
        return data
    return rewrite(clean, target, change)


def opaque_constant(clean: Path, target: Path, marker: Path) -> Path:
    def change(name, data):
        if name == "data/constants/model_constants_config.json":
            config = json.loads(data)
            entry = next(iter(config["config"].values()))
            entry |= {"path_name": "opaque_obj_0", "use_pickle": True, "tensor_meta": None}  # as torch writes one
            return json.dumps(config).encode()
        if name.startswith("data/constants/tensor_"):
            return None
        return data
    archive = rewrite(clean, target, change)
    with zipfile.ZipFile(archive, "a") as extra:
        root = zipfile.ZipFile(clean).namelist()[0].split("/")[0]
        extra.writestr(f"{root}/data/constants/opaque_obj_0", pickle.dumps(_Payload(marker)))
    return archive


def pickled_sample_inputs(clean: Path, target: Path, marker: Path) -> Path:
    """torch reads sample inputs with weights_only=True and falls back to a full unpickle."""
    return rewrite(clean, target, lambda name, data: _torch_pickle(_Payload(marker)) if name.startswith("data/sample_inputs/") else data)


def _weight_file(clean: Path, fqn: str) -> str:
    with zipfile.ZipFile(clean) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data/weights/model_weights_config.json"))
        return json.loads(archive.read(name))["config"][fqn]["path_name"]


def _torch_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


CRAFTED = {"a pickled weight": (pickled_weight, "stored as a pickle"),
           "an opaque constant": (opaque_constant, "custom or opaque object"),
           "pickled sample inputs": (pickled_sample_inputs, "need a full unpickle")}


@pytest.mark.parametrize("attack", sorted(CRAFTED))
def test_a_crafted_export_archive_runs_code_in_torch_but_is_refused_by_kompress(clean_archive, tmp_path, attack):
    craft, reason = CRAFTED[attack]
    marker = tmp_path / "pwned"
    archive = craft(clean_archive, tmp_path / "crafted.pt2", marker)

    # The attack is real: torch's own loader runs the payload (in a child process, to keep this one clean).
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(archive)!r})"], capture_output=True)
    assert marker.exists(), f"{attack}: the crafted archive did not run its payload in torch.export.load"
    marker.unlink()

    with pytest.raises(UnsafeModelError, match=reason) as refused:
        load_torch_module(ModelFile(archive, ModelFormat.TORCH_EXPORT))
    assert not marker.exists()
    assert "\n" not in str(refused.value) and str(archive) in str(refused.value)


def test_compiled_code_and_legacy_layouts_are_refused_before_torch_reads_them(clean_archive, tmp_path):
    def add(name: str, data: bytes) -> Path:
        target = tmp_path / f"{name.replace('/', '_')}.pt2"
        target.write_bytes(clean_archive.read_bytes())
        with zipfile.ZipFile(target, "a") as archive:
            archive.writestr(f"tiny/{name}", data)
        return target
    with pytest.raises(UnsafeModelError, match="AOTInductor"):
        check_export_archive(add("data/aotinductor/model/model.so", b"\x7fELF"))
    with pytest.raises(UnsafeModelError, match="legacy layout"):
        check_export_archive(add("data/weights/model.pt", b"not a tensor"))
    legacy = rewrite(clean_archive, tmp_path / "old.pt2", lambda name, data: None if name == "archive_version" else data)
    with pytest.raises(UnsafeModelError, match="cannot check"):
        check_export_archive(legacy)


def test_a_clean_export_archive_loads_and_runs(clean_archive):
    module = load_torch_module(ModelFile(clean_archive, ModelFormat.TORCH_EXPORT))
    x = torch.randn(2, 4)
    assert torch.allclose(module(x), TINY(x))


def test_the_cli_refuses_a_crafted_archive_and_nothing_runs(clean_archive, tmp_path, write_spec):
    marker = tmp_path / "pwned"
    archive = pickled_weight(clean_archive, tmp_path / "crafted.pt2", marker)
    spec = write_spec(model=str(archive), model_format="TorchExport", passes=[{"type": "OnnxExport"}])
    answer = subprocess.run([str(Path(sys.executable).parent / "kompress"), "optimize", str(spec), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert answer.returncode == 1, answer.stderr
    assert "stored as a pickle" in answer.stderr and "kompress never unpickles a model" in answer.stderr, answer.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any(p.name == "manifest.json" for p in (tmp_path / "out").rglob("*"))


def _onnx_with_external_data(folder: Path, location: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 0.0, 0.0, 1.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], initializer=[weight])
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "/dev/zero", "sub/../../secret.bin"])
def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        check_onnx(_onnx_with_external_data(folder, location))


def test_onnx_external_data_beside_the_model_is_read(tmp_path):
    import numpy as np

    (tmp_path / "weights.bin").write_bytes(np.eye(2, dtype=np.float32).tobytes())
    check_onnx(_onnx_with_external_data(tmp_path, "weights.bin"))


@pytest.mark.parametrize("key", ["../other-team/current.json", "/etc/passwd", "a/../../b", "runs//x"])
def test_store_keys_never_leave_the_store(tmp_path, key):
    store = LocalStore(tmp_path / "store")
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="leaves its folder"):
        store.put(tmp_path / "f", key)
    assert not (tmp_path / "other-team").exists()


def test_a_pointer_naming_a_path_outside_its_release_is_refused(tmp_path):
    from kompress_jobs.storage.promoted import (
        POINTER,
        PromotedPointer,
        PromotionError,
        download_release,
        read_pointer,
    )

    store = LocalStore(tmp_path / "promoted")
    document = {"run": {"id": "r1"}, "promotedAt": "2026-01-01T00:00:00Z", "candidate": "int8", "digest": "0",
                "release": "releases/r1/", "model": {"path": "releases/r1/model.onnx", "format": "ONNX"},
                "files": [{"path": "releases/r1/../../../victim/current.json", "sha256": "0"}]}
    with pytest.raises(PromotionError, match="outside its release"):
        download_release(store, PromotedPointer.model_validate(document), tmp_path / "fetched")
    document["files"] = [{"path": "releases/r2/model.onnx", "sha256": "0"}]
    with pytest.raises(PromotionError, match="not in its release"):
        download_release(store, PromotedPointer.model_validate(document), tmp_path / "fetched")
    # A pointer of the wrong shape is refused as one, naming the field, before any file is fetched.
    (tmp_path / "promoted").mkdir(exist_ok=True)
    (tmp_path / "promoted" / POINTER).write_text(json.dumps(document | {"files": "releases/r1/model.onnx"}))
    with pytest.raises(PromotionError, match=r"current.json is not a promotion pointer \(files: "):
        read_pointer(store, tmp_path / "read")
    assert issubclass(UnsafeModelError, ModelLoadError)  # the CLI and the Job report it as a model that cannot load
