"""TensorRT engines: reported NotApplicable with the reason where no GPU or TensorRT is present;
built, measured on the GPU and selected like other candidates where one is (marker `gpu`)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from kompress_jobs.passes.tensorrt import gpu_unavailable_reason
from kompress_jobs.pipeline.run import run_optimization
from kompress_jobs.spec.specfile import load_resource_file

pytestmark = pytest.mark.pipeline

ENGINES = [{"type": "OnnxExport", "name": "onnx"},
           {"type": "TensorRT", "name": "trt-fp16"},
           {"type": "TensorRT", "name": "trt-int8", "precision": "INT8"},
           {"type": "StaticInt8", "name": "int8"}]


@pytest.fixture
def gpu_with_tensorrt():
    """Skips, naming what is missing (TensorRT, or a visible CUDA GPU), where engines cannot be built."""
    reason = gpu_unavailable_reason()
    if reason:
        pytest.skip(reason)


def run(spec, tmp_path):
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(tmp_path / "out"))
    return result.report, {c["name"]: c for c in result.report["candidates"]}


def test_without_tensorrt_the_engines_are_not_applicable_with_the_reason(write_spec, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real_find_spec(name, *a))
    report, candidates = run(write_spec(passes=ENGINES), tmp_path)
    for name in ("trt-fp16", "trt-int8"):
        assert candidates[name]["outcome"] == "NotApplicable"
        assert candidates[name]["error"] == "TensorRT is not installed (run on the GPU Job image: spec.job.device: GPU)"
    # The rest of the run stands: the pick is whichever measured candidate is fastest on this CPU (INT8
    # wins only where the CPU has VNNI or AMX), never an engine that could not be built.
    assert candidates["int8"]["outcome"] == "Measured" and report["best"] in {"onnx", "int8"}


def test_without_a_gpu_the_engines_are_not_applicable_with_the_reason(write_spec, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt" else real_find_spec(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, candidates = run(write_spec(passes=ENGINES), tmp_path)
    assert candidates["trt-fp16"]["outcome"] == "NotApplicable"
    assert "no CUDA GPU is visible" in candidates["trt-fp16"]["error"]


def test_tensorrt_needs_an_onnx_model(write_spec, capsys):
    from kompress.cli import main

    assert main(["validate", str(write_spec(passes=[{"type": "TensorRT"}]))]) == 2
    assert "TensorRT needs an ONNX model" in capsys.readouterr().err


@pytest.mark.gpu
def test_fp16_and_int8_engines_are_built_measured_on_the_gpu_and_selected(write_spec, tmp_path, gpu_with_tensorrt):
    report, candidates = run(write_spec(passes=ENGINES, goals={"maxAccuracyDrop": 1.0},
                                        benchmark={"batchSizes": [1, 64], "iterations": 50, "rounds": 3}), tmp_path)
    for name, precision in (("trt-fp16", "fp16"), ("trt-int8", "int8")):
        engine = candidates[name]
        assert engine["outcome"] == "Measured", engine
        assert engine["runtime"] == "tensorrt" and engine["device"] == "cuda" and engine["precision"] == precision
        assert engine["metric"]["drop"] <= 1.0
        assert engine["lineage"][-1]["pass"] == "TensorRT"
    assert {"trt-fp16", "trt-int8"} & set(report["paretoFront"])


@pytest.mark.gpu
def test_an_int8_engine_from_a_qdq_model_keeps_its_scales(write_spec, tmp_path, gpu_with_tensorrt):
    _, candidates = run(write_spec(passes=[{"type": "OnnxExport"}, {"type": "StaticInt8", "name": "qdq"},
                                           {"type": "TensorRT", "input": "qdq", "precision": "INT8"}]), tmp_path)
    assert candidates["tensorrt"]["outcome"] == "Measured", candidates["tensorrt"]
    assert candidates["tensorrt"]["metric"]["drop"] <= 1.0


@pytest.mark.gpu
def test_a_model_on_the_gpu_gets_a_profile_and_an_energy_reading(write_spec, tmp_path, gpu_with_tensorrt):
    """The pick is a TensorRT engine or an ONNX model on CUDA: its energy comes from NVML."""
    from kompress_jobs.data import batch_of, load_dataset
    from kompress_jobs.measurement.profiling import energy_per_call
    from kompress_jobs.runtimes import ModelFile, Processor, make_runner
    from kompress_jobs.spec.sources import ModelFormat

    path = write_spec(passes=ENGINES)
    report, candidates = run(path, tmp_path)
    assert set(report["profiles"]) == {"baseline", report["best"]}
    onnx = next((tmp_path / "out").rglob("candidates/onnx/*.onnx"))
    runner = make_runner(ModelFile(onnx, ModelFormat.ONNX), threads=1, device=Processor.CUDA)
    assert runner.device == "cuda"
    spec = load_resource_file(path).spec
    data = load_dataset(path.parent / spec.data.uri, spec.data, spec.task)
    energy = energy_per_call(runner, batch_of(data.evaluation.inputs, 8))
    assert energy["measurable"], energy
    assert energy["joulesPerCall"] > 0 and energy["source"].startswith("NVML")
