"""Peak resident memory per candidate (benchmark.peakMemory, goals.maxMemory): each measured in a
fresh process that loads the model and runs it once, so what one runtime's libraries cost shows
(an ONNX Runtime process never imports PyTorch) and a goal on it rejects with the figure."""

from __future__ import annotations

from pathlib import Path

import pytest
from kompress_jobs.pipeline.run import run_optimization
from kompress_jobs.spec.schema import ModelOptimization
from kompress_jobs.spec.specfile import load_resource_file
from kompress_jobs.reporting.summary import run_summary

from .llm_fixtures import license_text, llm_resource, tiny_llama

pytestmark = pytest.mark.pipeline


def run(spec: Path, tmp_path: Path) -> tuple[object, dict]:
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(tmp_path / "out"))
    return result, {c["name"]: c for c in result.report["candidates"]}


def test_each_candidate_has_its_processs_peak_memory_and_a_memory_goal_rejects_with_the_figure(write_spec, tmp_path):
    passes = [{"type": "OnnxExport", "name": "onnx"}, {"type": "DynamicInt8", "name": "int8"}]
    result, candidates = run(write_spec(passes=passes, goals={"maxMemory": "64Mi"}), tmp_path)
    peaks = {name: c["memory"]["peakBytes"] for name, c in candidates.items()}
    assert all(c["memory"]["measurable"] for c in candidates.values())
    # A PyTorch process (the TorchScript baseline) carries torch; an ONNX Runtime one does not.
    assert peaks["onnx"] < peaks["baseline"] and peaks["int8"] < peaks["baseline"]
    for name in ("onnx", "int8"):  # no Python process runs a model in 64 MiB
        assert any(r.startswith("peak memory ") and r.endswith("exceeds 64 MiB") for r in candidates[name]["rejectedReasons"])
    assert result.report["best"] is None
    markdown = next((tmp_path / "out").rglob("report.md")).read_text()
    assert "## Memory" in markdown and "| onnx |" in markdown
    status = run_summary(result.results)  # what the Job hands the operator for status and metrics
    assert status.baseline.peak_memory_bytes == peaks["baseline"]


def test_without_the_setting_or_the_goal_no_probe_runs(write_spec, tmp_path):
    _, candidates = run(write_spec(passes=[{"type": "OnnxExport"}]), tmp_path)
    assert all("memory" not in c for c in candidates.values())


def test_a_language_models_peak_memory_covers_a_whole_generation(tmp_path):
    llama = tiny_llama(tmp_path / "llama")
    resource = ModelOptimization.model_validate(llm_resource(str(llama), str(license_text()), passes=[
        {"type": "OnnxGenAI", "name": "genai-int8", "precision": "Int8", "input": "baseline"}],
        benchmark={"batchSizes": [1], "warmup": 1, "rounds": 2, "threads": 1, "peakMemory": True,
                   "generation": {"promptTokens": 16, "newTokens": 8}}))
    result = run_optimization(resource, artifacts_uri=str(tmp_path / "runs"), run_id="r1")
    by_name = {c.name: c for c in result.results.candidates}
    for name in ("baseline", "genai-int8"):
        assert by_name[name].memory.measurable and by_name[name].memory.peak_bytes > 0, by_name[name].memory
