"""ExecuTorch (PyTorch Mobile's successor) as a runtime with its pass: the digits CNN exported,
quantized to INT8 with the XNNPACK quantizer, lowered to XNNPACK and run as a .pte program in a
whole run; a batch size the program was not built for; a user's own program; a file that is not
one; a crash in the native runtime costing the candidate, not the run."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kompress_jobs.errors import ModelLoadError
from kompress_jobs.modelfile import ModelFile
from kompress_jobs.runtimes import make_runner
from kompress_jobs.spec.sources import ModelFormat

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """One run with both programs: (report, run folder)."""
    pytest.importorskip("executorch", reason="executorch is not installed: scripts/setup-venv job,edge installs it")
    import yaml

    from kompress_jobs.api import optimize

    from .conftest import copy_examples, resource_dict

    workspace = copy_examples(tmp_path_factory.mktemp("executorch"))
    spec = workspace / "spec.yaml"
    spec.write_text(yaml.safe_dump(resource_dict(name="edge", passes=[
        {"type": "ExecuTorch", "name": "et-fp32"}, {"type": "ExecuTorch", "name": "et-int8", "precision": "INT8"}],
        goals={"maxAccuracyDrop": 1.0})))
    report = optimize(spec, output=workspace / "out")
    return report, next((workspace / "out").rglob("manifest.json")).parent


def test_both_programs_are_measured_like_every_candidate_and_int8_keeps_the_accuracy(programs):
    report, _ = programs
    by = {c.name: c for c in report.candidates}
    for name, precision in (("et-fp32", "fp32"), ("et-int8", "int8")):
        candidate = by[name]
        assert candidate.measured and candidate.runtime.startswith("executorch"), candidate.error
        assert candidate.format is ModelFormat.EXECUTORCH and candidate.precision == precision
        assert candidate.accepted and abs(candidate.metric.drop) <= 1.0
        assert set(candidate.latency) == {1, 8}  # each benchmark batch size has its method
    assert by["et-int8"].size_bytes < by["et-fp32"].size_bytes / 3  # INT8 weights, no FP32 copy left behind


def test_a_batch_the_program_was_not_built_for_runs_in_chunks(programs):
    _, folder = programs
    program = next(folder.rglob("et-fp32/model.pte"))
    runner = make_runner(ModelFile(program, ModelFormat.EXECUTORCH), threads=1, input_names=("x",), contain=False)
    assert sorted(runner.methods) == [1, 8]
    rows = np.random.default_rng(0).random((11, 1, 8, 8), dtype=np.float32)
    whole = runner({"x": rows})["output"]
    assert whole.shape == (11, 10)
    assert np.allclose(whole, np.concatenate([runner({"x": rows[i: i + 1]})["output"] for i in range(11)]), atol=1e-5)


def test_a_users_own_program_runs_and_a_file_that_is_not_one_never_reaches_the_runtime(programs, tmp_path):
    _, folder = programs
    own = tmp_path / "mine.pte"  # a program the user exported themselves: a flatbuffer of kernel and delegate names
    shutil.copy(next(folder.rglob("et-int8/model.pte")), own)
    assert make_runner(ModelFile(own, ModelFormat.EXECUTORCH), threads=1, input_names=("x",))({"x": np.zeros((1, 1, 8, 8), np.float32)})
    library = tmp_path / "model.pte"  # a compiled library under a program's name is refused before anything opens it
    library.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 64)
    with pytest.raises(ModelLoadError, match="an ELF shared library or executable; kompress never loads native code"):
        make_runner(ModelFile(library, ModelFormat.EXECUTORCH), threads=1, input_names=("x",))
    other = tmp_path / "other.pte"  # any other file is known by the program's missing identifier
    other.write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadError, match="not an ExecuTorch program: it does not carry an ExecuTorch program's identifier"):
        make_runner(ModelFile(other, ModelFormat.EXECUTORCH), threads=1, input_names=("x",))


def test_programs_run_in_a_process_of_their_own_where_a_crash_costs_the_runner_not_the_caller(programs):
    from kompress_jobs.runtimes.contained import ContainedRunner

    from .contained_runners import ExecuTorchCrashing, crashes_at_its_third_call

    _, folder = programs
    program = ModelFile(next(folder.rglob("et-fp32/model.pte")), ModelFormat.EXECUTORCH)
    assert isinstance(make_runner(program, threads=1, input_names=("x",)), ContainedRunner)
    crashes_at_its_third_call(ExecuTorchCrashing, program, {"x": np.zeros((1, 1, 8, 8), np.float32)})


def test_a_program_that_crashes_while_it_is_timed_fails_its_candidate_and_the_run_goes_on(tmp_path, monkeypatch):
    pytest.importorskip("executorch", reason="executorch is not installed: scripts/setup-venv job,edge installs it")
    import yaml

    from kompress_jobs.api import optimize
    from kompress_jobs.runtimes import registry

    from .conftest import copy_examples, resource_dict
    from .contained_runners import ExecuTorchCrashingWhenTimed

    real = registry.runtime_for  # ExecuTorch's runner, as it is, but for a segfault when the benchmark times it
    monkeypatch.setattr(registry, "runtime_for", lambda model, device=None: (
        ExecuTorchCrashingWhenTimed if model.format is ModelFormat.EXECUTORCH else real(model, device)))
    workspace = copy_examples(tmp_path)
    spec = workspace / "spec.yaml"
    spec.write_text(yaml.safe_dump(resource_dict(name="edge-crash", passes=[
        {"type": "OnnxExport", "name": "onnx"}, {"type": "ExecuTorch", "name": "et-fp32", "input": "baseline"}],
        goals={"maxAccuracyDrop": 1.0})))
    report = optimize(spec, output=workspace / "out")
    by = {c.name: c for c in report.candidates}
    assert not by["et-fp32"].measured and by["et-fp32"].latency == {}
    assert by["et-fp32"].error.startswith("benchmark failed: model file ")
    assert "executorch was killed by signal 11 timing it, in a process of its own" in by["et-fp32"].error
    assert by["onnx"].measured and set(by["onnx"].latency) == {1, 8} and report.best is not None


def test_without_executorch_the_pass_says_why(monkeypatch):
    import importlib.util

    from kompress_jobs.passes import build_pass
    from kompress_jobs.passes.executorch import ExecuTorchPass

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    reason = build_pass(ExecuTorchPass(type="ExecuTorch")).not_applicable_reason()
    assert reason == "executorch is not installed (the job image's extra `edge`)"


def test_a_hugging_face_encoder_becomes_a_program_in_fp32_and_int8_keeping_its_embeddings(tmp_path):
    """A BERT-style checkpoint with its pooling, as OnnxExport takes it: traced by torch.export with
    its named inputs in order, lowered to XNNPACK, judged on the embeddings of the FP32 baseline."""
    pytest.importorskip("executorch", reason="executorch is not installed: scripts/setup-venv job,edge installs it")
    from .transformer_fixtures import optimize_tiny_encoder

    report = optimize_tiny_encoder(tmp_path, [
        {"type": "ExecuTorch", "name": "et-fp32"}, {"type": "ExecuTorch", "name": "et-int8", "precision": "INT8"},
        {"type": "ExecuTorch", "name": "et-dynamic", "precision": "INT8Dynamic"}])
    by = {c.name: c for c in report.candidates}
    assert by["et-fp32"].measured and by["et-fp32"].runtime.startswith("executorch"), by["et-fp32"].error
    assert by["et-fp32"].metric.fidelity["cosineSimilarity"] > 0.9999  # the same arithmetic
    assert by["et-int8"].measured, by["et-int8"].error
    assert by["et-int8"].metric.fidelity["cosineSimilarity"] > 0.95
    # dynamic INT8, what keeps a real encoder's accuracy (MiniLM: cosine 0.999 dynamic, 0.40 static)
    assert by["et-dynamic"].measured and by["et-dynamic"].precision == "int8-dynamic", by["et-dynamic"].error
    assert by["et-dynamic"].metric.fidelity["cosineSimilarity"] > 0.99
    # the Linear weights (about 280 KB in FP32) went to INT8; the 7.8 MB embedding table stays FP32
    assert by["et-fp32"].size_bytes - by["et-int8"].size_bytes > 150_000
