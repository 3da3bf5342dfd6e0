"""LiteRT (TensorFlow Lite's successor) as a runtime with its pass: the digits CNN converted by
litert-torch (in a process of its own, from a folder of its own), quantized to INT8 with INT8 inputs
and outputs, run by LiteRT's interpreter in a whole run; a batch size the model was not built for; a
user's own .tflite; a file that is not one; a crash costing the candidate, not the run."""

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
def models(tmp_path_factory):
    """One run with both models: (report, run folder)."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed: scripts/setup-venv job,edge installs it")
    import yaml

    from kompress_jobs.api import optimize
    from kompress_jobs.passes.litert import converter_path

    if not (converter_path() / "litert_torch").is_dir():
        pytest.skip(f"litert-torch is not installed in {converter_path()}: scripts/setup-venv job,edge installs it")
    from .conftest import copy_examples, resource_dict

    workspace = copy_examples(tmp_path_factory.mktemp("litert"))
    spec = workspace / "spec.yaml"
    spec.write_text(yaml.safe_dump(resource_dict(name="edge", passes=[
        {"type": "LiteRT", "name": "lt-fp32"}, {"type": "LiteRT", "name": "lt-int8", "precision": "INT8"},
        {"type": "LiteRT", "name": "lt-dynamic", "precision": "INT8Dynamic"}],
        goals={"maxAccuracyDrop": 1.0})))
    report = optimize(spec, output=workspace / "out")
    return report, next((workspace / "out").rglob("manifest.json")).parent


def runner_for(path, contain: bool = True):
    return make_runner(ModelFile(path, ModelFormat.LITERT), threads=1, input_names=("x",), contain=contain)


def test_every_model_is_measured_like_every_candidate_and_int8_keeps_the_accuracy(models):
    report, _ = models
    by = {c.name: c for c in report.candidates}
    for name, precision in (("lt-fp32", "fp32"), ("lt-int8", "int8"), ("lt-dynamic", "int8-dynamic")):
        candidate = by[name]
        assert candidate.measured and candidate.runtime.startswith("litert"), candidate.error
        assert candidate.format is ModelFormat.LITERT and candidate.precision == precision
        assert candidate.accepted and abs(candidate.metric.drop) <= 1.0
        assert set(candidate.latency) == {1, 8}
    assert by["lt-int8"].size_bytes < by["lt-fp32"].size_bytes / 3
    assert by["lt-dynamic"].size_bytes < by["lt-fp32"].size_bytes / 3  # INT8 weights, activations quantized as they come


def test_int8_inputs_and_outputs_are_quantized_on_the_way_and_batches_run_in_chunks(models):
    _, folder = models
    # in this process, to see the signatures the runner found
    fp32, int8 = (runner_for(next(folder.rglob(f"{name}/model.tflite")), contain=False) for name in ("lt-fp32", "lt-int8"))
    assert sorted(fp32.calls) == [1, 8] and int8.calls[1][1][0]["dtype"] == np.int8  # INT8 in, as litert-torch wrote it
    digits = np.load(_digits())["x_evaluation"][:11]
    exact, quantized = fp32({"x": digits})["output"], int8({"x": digits})["output"]
    assert exact.shape == quantized.shape == (11, 10) and quantized.dtype == np.float32
    assert (exact.argmax(1) == quantized.argmax(1)).mean() >= 0.9
    assert np.allclose(exact, np.concatenate([fp32({"x": digits[i: i + 1]})["output"] for i in range(11)]), atol=1e-4)


def _digits():
    from .conftest import EXAMPLES

    return EXAMPLES / "data" / "digits.npz"


def test_a_users_own_model_runs_and_a_file_that_is_not_one_never_reaches_the_runtime(models, tmp_path):
    _, folder = models
    own = tmp_path / "mine.tflite"
    shutil.copy(next(folder.rglob("lt-fp32/model.tflite")), own)
    assert runner_for(own)({"x": np.zeros((1, 1, 8, 8), np.float32)})["output"].shape == (1, 10)
    library = tmp_path / "model.tflite"
    library.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 64)
    with pytest.raises(ModelLoadError, match="an ELF shared library or executable; kompress never loads native code"):
        runner_for(library)
    other = tmp_path / "other.tflite"
    other.write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadError, match="not a LiteRT model: it does not carry a LiteRT model's identifier"):
        runner_for(other)


def test_models_run_in_a_process_of_their_own_where_a_crash_costs_the_runner_not_the_caller(models):
    from kompress_jobs.runtimes.contained import ContainedRunner

    from .contained_runners import LiteRtCrashing, crashes_at_its_third_call

    _, folder = models
    path = next(folder.rglob("lt-fp32/model.tflite"))
    assert isinstance(runner_for(path), ContainedRunner)
    crashes_at_its_third_call(LiteRtCrashing, ModelFile(path, ModelFormat.LITERT), {"x": np.zeros((1, 1, 8, 8), np.float32)})


def test_without_the_converter_the_pass_says_where_it_looked_and_how_to_install_it(monkeypatch, tmp_path):
    from kompress_jobs.passes import build_pass
    from kompress_jobs.passes.litert import CONVERTER_ENV, LiteRtPass

    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed: its own absence is said first")
    monkeypatch.setenv(CONVERTER_ENV, str(tmp_path / "nowhere"))
    reason = build_pass(LiteRtPass(type="LiteRT")).not_applicable_reason()
    assert reason.startswith(f"litert-torch is not installed in {tmp_path / 'nowhere'}")
    assert "requirements/litert-converter.txt" in reason


def test_a_hugging_face_encoder_converts_in_fp32_and_int8_keeping_its_embeddings(tmp_path):
    """A BERT-style checkpoint with its pooling, loaded in the converter's process through the same
    door as OnnxExport's, converted with its named inputs in order, judged on the FP32 embeddings."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed: scripts/setup-venv job,edge installs it")
    from kompress_jobs.passes.litert import converter_path

    from .transformer_fixtures import optimize_tiny_encoder

    if not (converter_path() / "litert_torch").is_dir():
        pytest.skip(f"litert-torch is not installed in {converter_path()}: scripts/setup-venv job,edge installs it")
    report = optimize_tiny_encoder(tmp_path, [
        {"type": "LiteRT", "name": "lt-fp32"}, {"type": "LiteRT", "name": "lt-int8", "precision": "INT8"},
        {"type": "LiteRT", "name": "lt-dynamic", "precision": "INT8Dynamic"}])
    by = {c.name: c for c in report.candidates}
    assert by["lt-fp32"].measured and by["lt-fp32"].runtime.startswith("litert"), by["lt-fp32"].error
    assert by["lt-fp32"].metric.fidelity["cosineSimilarity"] > 0.9999
    assert by["lt-int8"].measured, by["lt-int8"].error
    assert by["lt-int8"].metric.fidelity["cosineSimilarity"] > 0.95
    assert by["lt-fp32"].size_bytes - by["lt-int8"].size_bytes > 150_000  # the Linear weights in INT8
    # dynamic INT8 quantizes the embedding table too, symmetric as LiteRT's lookup needs (with PT2E's
    # dynamic INT8, MiniLM failed to load: "zero_point == 0 was not true")
    assert by["lt-dynamic"].measured and by["lt-dynamic"].precision == "int8-dynamic", by["lt-dynamic"].error
    assert by["lt-dynamic"].metric.fidelity["cosineSimilarity"] > 0.99
    assert by["lt-dynamic"].size_bytes < by["lt-fp32"].size_bytes / 2.5  # 8.2 MB -> 2.9 MB: the 7.8 MB table is INT8
