"""The GPU runtimes: PyTorch (TorchRuntime with device: GPU: FP16, BF16 and torch.compile on CUDA; needs
only PyTorch with CUDA) and ONNX Runtime's CUDA and TensorRT execution providers (OnnxRuntimeGpu; needs
onnxruntime-gpu), with the energy of every GPU candidate from NVML. Marker `gpu`, skipped elsewhere
naming what is missing. The CPU-side answers (NotApplicable with the reason) are in
test_hardware_precision.py and run everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kompress_jobs.pipeline.run import run_optimization
from kompress_jobs.spec.specfile import load_resource_file, resource_from_dict

from .conftest import resource_dict
from .transformer_fixtures import tiny_bert, write_sentences

pytestmark = [pytest.mark.pipeline, pytest.mark.gpu]
GPU_BENCHMARK = {"batchSizes": [1, 64], "warmup": 10, "iterations": 50, "rounds": 3, "threads": 1, "evaluationBatchSize": 64}


@pytest.fixture
def cuda():
    """Skips, naming what is missing (PyTorch, or a visible CUDA GPU)."""
    from kompress_jobs.runtimes.base import cuda_missing

    reason = cuda_missing()
    if reason:
        pytest.skip(reason)


def run(spec: Path, tmp_path: Path) -> tuple[dict, dict]:
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(tmp_path / "out"))
    return result.report, {c["name"]: c for c in result.report["candidates"]}


def assert_on_the_gpu_with_energy(candidate: dict, precision: str) -> None:
    assert candidate["outcome"] == "Measured", candidate.get("error")
    assert (candidate["runtime"], candidate["device"], candidate["precision"]) == ("pytorch", "cuda", precision)
    energy = candidate["energy"]
    if energy["measurable"]:
        assert energy["joulesPerCall"] > 0 and energy["source"].startswith("NVML")
    else:  # a GPU whose driver exposes no energy counter (before Volta, some virtual GPUs) says so
        assert energy["reason"]


def test_fp16_and_bf16_candidates_run_on_the_gpu_with_their_energy(write_spec, tmp_path, cuda):
    import torch

    passes = [{"type": "TorchRuntime", "name": "cuda-fp32", "precision": "FP32"},
              {"type": "TorchRuntime", "name": "cuda-fp16", "precision": "FP16"},
              {"type": "TorchRuntime", "name": "cuda-bf16", "precision": "BF16"}]
    report, candidates = run(write_spec(passes=passes, goals={"maxAccuracyDrop": 1.0}, benchmark=GPU_BENCHMARK), tmp_path)
    assert_on_the_gpu_with_energy(candidates["cuda-fp32"], "fp32")
    assert_on_the_gpu_with_energy(candidates["cuda-fp16"], "fp16")
    if torch.cuda.is_bf16_supported():
        assert_on_the_gpu_with_energy(candidates["cuda-bf16"], "bf16")
    else:
        assert candidates["cuda-bf16"]["outcome"] == "NotApplicable" and "computes no BF16" in candidates["cuda-bf16"]["error"]
    assert candidates["cuda-fp16"]["metric"]["drop"] <= 1.0
    assert candidates["cuda-fp16"]["sizeBytes"] < 0.7 * candidates["baseline"]["sizeBytes"]
    markdown = next((tmp_path / "out").rglob("report.md")).read_text()
    assert "## Energy" in markdown and "| cuda-fp16 |" in markdown


def test_a_program_compiled_for_the_gpu_reports_compilation_apart_and_keeps_its_predictions(write_spec, tmp_path, cuda):
    from kompress_jobs.reference import build_encoder

    model, data, _, _ = build_encoder(tmp_path / "enc")
    spec = write_spec(model=str(model), model_format="TorchExport", data=str(data), benchmark=GPU_BENCHMARK,
                      passes=[{"type": "TorchRuntime", "name": "eager-fp16", "precision": "FP16"},
                              {"type": "TorchRuntime", "name": "compiled-fp16", "precision": "FP16", "compile": "Default"},
                              {"type": "TorchRuntime", "name": "graphs-fp16", "precision": "FP16", "compile": "ReduceOverhead"}])
    report, candidates = run(spec, tmp_path)
    for name, mode in (("compiled-fp16", "default"), ("graphs-fp16", "reduce-overhead")):
        assert_on_the_gpu_with_energy(candidates[name], "fp16")
        assert candidates[name]["details"]["compileMode"] == mode and candidates[name]["details"]["firstCallSeconds"] > 0
        assert candidates[name]["metric"]["fidelity"]["top1Agreement"] > 0.97
    assert_on_the_gpu_with_energy(candidates["eager-fp16"], "fp16")


def test_a_checkpoint_in_fp16_on_the_gpu_keeps_its_embeddings(tmp_path, cuda):
    checkpoint, sentences = tiny_bert(tmp_path / "tiny"), write_sentences(tmp_path / "sentences.jsonl")
    resource = resource_dict(name="bert-gpu", model={"uri": str(checkpoint), "format": "HuggingFace"},
                             data={"uri": str(sentences), "text": {"column": "text", "maxLength": 32}},
                             passes=[{"type": "TorchRuntime", "name": "fp16"},
                                     {"type": "TorchRuntime", "name": "fp16-compiled", "compile": "Default"}],
                             task={"type": "Fidelity", "metric": "CosineSimilarity"}, benchmark=GPU_BENCHMARK)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(resource))
    result = run_optimization(resource_from_dict(resource), base_dir=tmp_path, artifacts_uri=str(tmp_path / "out"))
    candidates = {c["name"]: c for c in result.report["candidates"]}
    for name in ("fp16", "fp16-compiled"):
        assert_on_the_gpu_with_energy(candidates[name], "fp16")
        assert candidates[name]["metric"]["fidelity"]["cosineSimilarity"] > 0.99


@pytest.fixture
def onnxruntime_gpu(cuda):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider (onnxruntime-gpu provides it)")


def test_onnx_runtime_on_the_gpu_through_cuda_and_tensorrt_providers(write_spec, tmp_path, onnxruntime_gpu):
    import onnxruntime as ort

    passes = [{"type": "OnnxExport", "name": "onnx"}, {"type": "Fp16", "name": "fp16", "input": "onnx"},
              {"type": "OnnxRuntimeGpu", "name": "ort-cuda", "input": "onnx"},
              {"type": "OnnxRuntimeGpu", "name": "ort-cuda-fp16", "input": "fp16"},
              {"type": "OnnxRuntimeGpu", "name": "ort-tensorrt-fp16", "input": "onnx", "provider": "TensorRT", "precision": "FP16"}]
    _, candidates = run(write_spec(passes=passes, goals={"maxAccuracyDrop": 1.0}, benchmark=GPU_BENCHMARK), tmp_path)
    for name, precision in (("ort-cuda", "fp32"), ("ort-cuda-fp16", "fp16")):
        c = candidates[name]
        assert c["outcome"] == "Measured", c.get("error")
        assert (c["runtime"], c["device"], c["precision"]) == ("onnxruntime", "cuda", precision) and c["energy"]
        assert c["metric"]["drop"] <= 1.0
    tensorrt = candidates["ort-tensorrt-fp16"]
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        assert tensorrt["outcome"] == "Measured" and tensorrt["device"] == "cuda", tensorrt.get("error")
    else:
        assert tensorrt["outcome"] == "NotApplicable" and "has no TensorrtExecutionProvider" in tensorrt["error"]


def test_torchao_fp8_and_int8_checkpoints_run_on_the_gpu(tmp_path, cuda):
    import importlib.util

    import torch

    if importlib.util.find_spec("torchao") is None:
        pytest.skip("torchao is not installed here")
    checkpoint, sentences = tiny_bert(tmp_path / "tiny"), write_sentences(tmp_path / "sentences.jsonl")
    resource = resource_dict(name="bert-ao-gpu", model={"uri": str(checkpoint), "format": "HuggingFace"},
                             data={"uri": str(sentences), "text": {"column": "text", "maxLength": 32}},
                             passes=[{"type": "TorchAoQuantize", "name": "ao-int8"},
                                     {"type": "TorchAoQuantize", "name": "ao-fp8", "scheme": "Float8"}],
                             task={"type": "Fidelity", "metric": "CosineSimilarity"}, benchmark=GPU_BENCHMARK)
    result = run_optimization(resource_from_dict(resource), base_dir=tmp_path, artifacts_uri=str(tmp_path / "out"))
    candidates = {c["name"]: c for c in result.report["candidates"]}
    assert_on_the_gpu_with_energy(candidates["ao-int8"], "int8")
    if torch.cuda.get_device_capability(0) >= (8, 9):
        assert_on_the_gpu_with_energy(candidates["ao-fp8"], "fp8")
        assert candidates["ao-fp8"]["metric"]["fidelity"]["cosineSimilarity"] > 0.98
    else:
        assert candidates["ao-fp8"]["outcome"] == "NotApplicable" and "has no FP8 tensor cores" in candidates["ao-fp8"]["error"]
