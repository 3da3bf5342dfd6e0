"""Model files and folders a tenant crafts, run through the real runtimes (docs/security.md,
"Findings"): each test shows what the library alone would do, then that kompress refuses first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.pipeline


def test_the_memory_probe_imports_nothing_planted_and_sees_no_credentials(tmp_path, monkeypatch):
    """Proof on the old code: a numpy.py in the working folder (or on PYTHONPATH) ran in the probe
    and read the storage secret."""
    import numpy as np

    from kompress_jobs.measurement.memory_probe import Probe, peak_memory
    from kompress_jobs.modelfile import ModelFile
    from kompress_jobs.spec.sources import ModelFormat

    planted, marker = tmp_path / "planted", tmp_path / "stolen.txt"
    planted.mkdir()
    (planted / "numpy.py").write_text(f"import os\nopen({str(marker)!r}, 'w').write(os.environ.get('AWS_SECRET_ACCESS_KEY', ''))\n"
                                      "raise ImportError('planted')\n")
    monkeypatch.chdir(planted)
    monkeypatch.setenv("PYTHONPATH", str(planted))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-teams-secret")
    monkeypatch.setenv("KOMPRESS_STUDY_STORAGE", "postgresql://user:password@db/studies")
    model = ModelFile(Path(__file__).parents[1] / "examples" / "models" / "digits-cnn.pt", ModelFormat.TORCH_SCRIPT)

    measured = peak_memory(model, Probe({"x": np.zeros((1, 1, 8, 8), np.float32)}, threads=1))
    assert not marker.exists(), "the planted module ran"
    assert measured["measurable"] and measured["peakBytes"] > 0, measured


_CONSTRUCTOR = """
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(getenv("KOMPRESS_TEST_MARKER"), "w");
    if (f) { fputs("ran", f); fclose(f); }
}
"""


@pytest.fixture(scope="module")
def genai_folder(tmp_path_factory) -> Path:
    """A real ONNX Runtime GenAI folder of a tiny Llama, written by the model builder."""
    from kompress_jobs.child_python import run_python

    from .llm_fixtures import tiny_llama

    root = tmp_path_factory.mktemp("genai")
    llama = tiny_llama(root / "llama")
    done = run_python(module="onnxruntime_genai.models.builder", env={"HF_HUB_OFFLINE": "1"},
                      args=["-i", str(llama), "-o", str(root / "built"), "-p", "fp32", "-e", "cpu", "-c", str(root / "cache")])
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "built"


def _crafted_genai(genai_folder: Path, tmp_path: Path, session_options: dict) -> Path:
    import json
    import shutil
    import subprocess

    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build the crafted library: apt-get install gcc")
    crafted = tmp_path / "crafted"
    shutil.copytree(genai_folder, crafted)
    (tmp_path / "planted.c").write_text(_CONSTRUCTOR)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(crafted / "libplanted.so"), str(tmp_path / "planted.c")], check=True)
    config = json.loads((crafted / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"].update(session_options)
    (crafted / "genai_config.json").write_text(json.dumps(config))
    return crafted


def test_a_genai_folder_with_a_custom_ops_library_is_refused_and_the_library_never_loads(genai_folder, tmp_path, monkeypatch):
    import onnxruntime_genai as og

    from kompress_jobs.modelfile import ModelFile
    from kompress_jobs.runtimes import make_runner
    from kompress_jobs.errors import UnsafeModelError
    from kompress_jobs.spec.sources import ModelFormat

    crafted = _crafted_genai(genai_folder, tmp_path, {"custom_ops_library": "libplanted.so"})
    marker = tmp_path / "ran"
    monkeypatch.setenv("KOMPRESS_TEST_MARKER", str(marker))
    monkeypatch.chdir(crafted)  # where a relative library name resolves, as in a Job's scratch folder
    model = ModelFile(crafted, ModelFormat.ONNX_GENAI, generative=True)
    with pytest.raises(UnsafeModelError, match=r"session_options.custom_ops_library is not allowed"):
        make_runner(model, threads=1)
    assert not marker.exists()

    # the attack is real: onnxruntime-genai itself dlopens the library the folder names
    try:
        og.Model(og.Config(str(crafted)))
    except Exception:  # noqa: BLE001 - the planted library registers no operators; it has run by then
        pass
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("options, refused", [
    ({"provider_options": [{"cuda": {}}]}, "names an execution provider"),
    ({"config_entries": {"session.load_model_format": "ORT"}}, "config_entries is not allowed"),
    ({"ep_context_file_path": "/tmp/x"}, "ep_context_file_path is not allowed"),
    ({"enable_profiling": "/tmp/profile"}, "enable_profiling is not allowed"),
])
def test_genai_session_options_beyond_the_allowlist_are_refused(genai_folder, tmp_path, options, refused):
    from kompress_jobs.formats.onnx_genai import read_genai_config
    from kompress_jobs.errors import UnsafeModelError

    read_genai_config(genai_folder)  # what the builder writes passes
    with pytest.raises(UnsafeModelError, match=refused):
        read_genai_config(_crafted_genai(genai_folder, tmp_path, options))


class _Reads(torch.nn.Module):
    """forward returns the bytes of a file on the node: what a crafted TorchScript model serves."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def forward(self, x):
        return torch.from_file(self.target, shared=False, size=8, dtype=torch.uint8)


def test_torchscript_that_reads_files_is_refused_at_load(tmp_path, capsys, write_spec):
    import torch

    from kompress.cli import main
    from kompress_jobs.modelfile import ModelFile
    from kompress_jobs.runtimes import make_runner
    from kompress_jobs.errors import UnsafeModelError
    from kompress_jobs.spec.sources import ModelFormat

    secret = tmp_path / "token"
    secret.write_bytes(b"sa-token")
    path = tmp_path / "reads.pt"
    torch.jit.save(torch.jit.script(_Reads(str(secret))), str(path))
    # the attack is real: torch runs it and hands back the file's bytes
    assert bytes(torch.jit.load(str(path))(torch.zeros(1)).tolist()) == b"sa-token"

    with pytest.raises(UnsafeModelError, match=r"calls aten::from_file, which reads or writes files on the node"):
        make_runner(ModelFile(path, ModelFormat.TORCH_SCRIPT), threads=1)
    assert main(["optimize", "-q", str(write_spec(model=str(path))), "-o", str(tmp_path / "runs")]) == 1
    assert "aten::from_file" in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("manifest.json")), "nothing published"


def test_a_file_operator_in_setstate_is_refused_before_torch_compiles_it(tmp_path):
    import torch

    from kompress_jobs.formats.torchscript import check_archive_source
    from kompress_jobs.errors import UnsafeModelError

    class Saves(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.where = str(tmp_path / "written")

        def forward(self, x):
            return x

        @torch.jit.export
        def __getstate__(self):
            return (self.where, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, bool]):
            self.where, self.training = state
            torch.save(torch.zeros(1), self.where)  # runs inside torch.jit.load

    path = tmp_path / "saves.pt"
    torch.jit.save(torch.jit.script(Saves()), str(path))
    torch.jit.load(str(path))
    assert (tmp_path / "written").exists(), "the attack is real: loading alone wrote a file"
    (tmp_path / "written").unlink()
    with pytest.raises(UnsafeModelError, match=r"calls aten::save"):
        check_archive_source(path)


@pytest.mark.parametrize("template, bound", [
    ("{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}", "did not finish within 10 s"),
    ("{{ 'x' * 4000000000 }}{% for m in messages %}{{ m['content'] }}{% endfor %}", "needed more than 1024 MiB"),
], ids=["never-ends", "gigabytes"])
def test_a_chat_template_that_would_hold_the_slot_is_stopped_naming_the_field(tmp_path, template, bound):
    """Proof on the old code: the first template rendered for ever in the Job's own process."""
    from kompress_jobs.errors import DataError
    from kompress_jobs.llm.loading import chat_frame

    from .llm_fixtures import train_tokenizer

    tokenizer = train_tokenizer(tmp_path / "tokenizer")
    tokenizer.chat_template = template
    with pytest.raises(DataError, match=rf"^benchmark.generation.chatTemplate: the model's chat template cannot be rendered \({bound}"):
        chat_frame(tokenizer)
