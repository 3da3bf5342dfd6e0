"""BF16 and the PyTorch runtime on the hardware the Job lands on. The CPU's answer is forced both ways
(hardware.cpu_flags), so every CI machine checks both: without native BF16 the candidates are
NotApplicable naming the missing feature; with it they are built, measured and judged like any other.
Whether OpenVINO really computes in BF16 is OpenVINO's own answer, never assumed: where it would fall
back to FP32, the candidate fails saying so instead of passing FP32 off as BF16."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kompress_jobs.measurement import hardware
from kompress.cli import main
from kompress_jobs.pipeline.run import run_optimization
from kompress_jobs.spec.specfile import load_resource_file

from .conftest import resource_dict
from .transformer_fixtures import tiny_bert, write_sentences

NO_BF16 = frozenset({"avx2", "fma", "f16c"})
NATIVE_BF16 = frozenset({"avx2", "avx512_bf16", "amx_tile", "amx_bf16"})
BF16_PASSES = [{"type": "TorchRuntime", "name": "torch-bf16", "device": "CPU", "precision": "BF16"},
               {"type": "OnnxExport", "name": "onnx"},
               {"type": "OpenVinoConvert", "name": "openvino-bf16", "inferencePrecision": "BF16"},
               {"type": "AutoQuantize", "name": "steered", "input": "onnx", "methods": ["BF16"], "runtimes": ["OpenVINO"]}]


def run(spec: Path, tmp_path: Path) -> tuple[dict, dict]:
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(tmp_path / "out"))
    return result.report, {c["name"]: c for c in result.report["candidates"]}


def openvino_computes_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.unit
def test_the_cpu_answer_names_the_feature_it_misses(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: NO_BF16)
    assert "neither amx_bf16 nor avx512_bf16" in hardware.cpu_lacks("bf16")
    assert "neither amx_fp16 nor avx512_fp16" in hardware.cpu_lacks("fp16")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: NATIVE_BF16)
    assert hardware.cpu_lacks("bf16") is None and hardware.cpu_lacks("fp16") is not None


@pytest.mark.pipeline
def test_without_native_bf16_every_bf16_candidate_is_not_applicable_with_the_reason(write_spec, tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: NO_BF16)
    report, candidates = run(write_spec(passes=BF16_PASSES), tmp_path)
    for name in ("torch-bf16", "openvino-bf16"):
        assert candidates[name]["outcome"] == "NotApplicable"
        assert "has neither amx_bf16 nor avx512_bf16" in candidates[name]["error"]
    # The steered search has nothing else to try: it says why, rather than a bare "no configuration".
    assert candidates["steered"]["outcome"] == "Failed"
    assert "no configuration could be tried here: BF16 skipped: this CPU" in candidates["steered"]["error"]
    assert report["best"] in {"baseline", "onnx"}


@pytest.mark.pipeline
def test_with_native_bf16_the_candidates_are_built_measured_and_judged(write_spec, tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: NATIVE_BF16)
    report, candidates = run(write_spec(passes=BF16_PASSES, goals={"maxAccuracyDrop": 2.0}), tmp_path)
    torch_bf16, baseline = candidates["torch-bf16"], candidates["baseline"]
    assert torch_bf16["outcome"] == "Measured", torch_bf16.get("error")
    assert (torch_bf16["runtime"], torch_bf16["precision"], torch_bf16["device"], torch_bf16["format"]) == \
        ("pytorch", "bf16", "cpu", "TorchScript")
    assert torch_bf16["technique"] == "half-precision"
    # Stored at the precision it computes in: the weights take half the bytes.
    assert torch_bf16["sizeBytes"] < 0.7 * baseline["sizeBytes"]
    assert abs(torch_bf16["metric"]["drop"]) <= 2.0 and torch_bf16["metric"]["fidelity"]["top1Agreement"] > 0.95
    for name in ("openvino-bf16", "steered"):
        if openvino_computes_bf16():
            assert candidates[name]["outcome"] == "Measured" and candidates[name]["precision"] == "bf16", candidates[name]
        else:  # this machine's OpenVINO would quietly compute in FP32: the candidate must not pass for BF16
            assert candidates[name]["outcome"] == "Failed"
            assert "OpenVINO computes in f32 on this CPU, not bf16" in candidates[name]["error"]


@pytest.mark.pipeline
def test_a_checkpoint_in_bf16_is_stored_as_safetensors_in_bf16_and_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: NATIVE_BF16)
    checkpoint, sentences = tiny_bert(tmp_path / "tiny"), write_sentences(tmp_path / "sentences.jsonl")
    spec = tmp_path / "spec.yaml"
    resource = resource_dict(name="bert-bf16", model={"uri": str(checkpoint), "format": "HuggingFace"},
                             data={"uri": str(sentences), "text": {"column": "text", "maxLength": 32}},
                             passes=[{"type": "TorchRuntime", "device": "CPU", "precision": "BF16"}],
                             task={"type": "Fidelity", "metric": "CosineSimilarity"})
    spec.write_text(yaml.safe_dump(resource))
    out = tmp_path / "runs"
    assert main(["optimize", "-q", str(spec), "--output", str(out), "--run-id", "r1"]) == 0
    report = json.loads(next(out.rglob("report.json")).read_text())
    candidate = next(c for c in report["candidates"] if c["name"] == "torch-runtime")
    assert candidate["outcome"] == "Measured" and candidate["precision"] == "bf16" and candidate["format"] == "HuggingFace"
    assert candidate["metric"]["fidelity"]["cosineSimilarity"] > 0.98
    stored = next(out.rglob("candidates/torch-runtime/checkpoint/config.json"))
    assert json.loads(stored.read_text())["dtype"] == "bfloat16"
    assert stored.with_name("tokenizer.json").is_file()  # the checkpoint still tokenizes on its own

    from safetensors import safe_open

    with safe_open(str(stored.with_name("model.safetensors")), "pt") as weights:
        assert {str(weights.get_tensor(k).dtype) for k in weights.keys()} <= {"torch.bfloat16", "torch.int64"}


def small_program(path: Path) -> Path:
    """A small MLP over the digits (1×8×8) as a torch.export program with a dynamic batch: seconds to compile."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).eval()
    program = torch.export.export(module, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, str(path))
    return path


@pytest.mark.pipeline
def test_torch_compile_on_the_cpu_reports_its_compilation_apart_from_latency(write_spec, tmp_path):
    spec = write_spec(model=str(small_program(tmp_path / "mlp.pt2")), model_format="TorchExport",
                      passes=[{"type": "TorchRuntime", "name": "compiled", "device": "CPU", "precision": "FP32",
                               "compile": "Default"}])
    report, candidates = run(spec, tmp_path)
    compiled = candidates["compiled"]
    assert compiled["outcome"] == "Measured", compiled.get("error")
    assert compiled["technique"] == "compilation" and compiled["details"]["compileMode"] == "default"
    assert compiled["details"]["firstCallSeconds"] > 0
    # torch.compile keeps FP32 numerics within rounding: the same predictions as eager.
    assert compiled["metric"]["fidelity"]["top1Agreement"] > 0.99
    markdown = next((tmp_path / "out").rglob("report.md")).read_text()
    assert "Run through torch.compile (mode default); its first call, which compiles, took" in markdown


@pytest.mark.unit
@pytest.mark.parametrize("pass_spec, message", [
    ({"type": "TorchRuntime", "device": "CPU", "precision": "FP32"}, "FP32 eager on the CPU is the model as PyTorch already runs it"),
    ({"type": "TorchRuntime", "compile": "ReduceOverhead"}, "TorchRuntime needs a HuggingFace or TorchExport model but 'baseline' is TorchScript"),
])
def test_runtime_settings_that_cannot_help_are_refused_at_validation(write_spec, capsys, pass_spec, message):
    assert main(["validate", str(write_spec(passes=[pass_spec]))]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.unit
def test_without_a_gpu_the_gpu_candidate_is_not_applicable_naming_what_is_missing(monkeypatch):
    import torch
    from kompress_jobs.passes import build_pass
    from kompress_jobs.passes.torch_runtime import TorchRuntimePass

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reason = build_pass(TorchRuntimePass(type="TorchRuntime")).not_applicable_reason()
    assert reason == "no CUDA GPU is visible to this Job (spec.job.device: GPU schedules it on a GPU node)"


@pytest.mark.unit
def test_onnx_runtime_without_its_gpu_build_is_not_applicable_naming_the_package(monkeypatch):
    import onnxruntime as ort
    from kompress_jobs.passes import build_pass
    from kompress_jobs.passes.ort_gpu import OnnxRuntimeGpuPass

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    cuda = build_pass(OnnxRuntimeGpuPass(type="OnnxRuntimeGpu")).not_applicable_reason()
    assert "has no CUDAExecutionProvider: the GPU Job image needs onnxruntime-gpu" in cuda
    tensorrt = build_pass(OnnxRuntimeGpuPass(type="OnnxRuntimeGpu", provider="TensorRT")).not_applicable_reason()
    assert "has no TensorrtExecutionProvider" in tensorrt and "TensorRT's libraries" in tensorrt


@pytest.mark.unit
@pytest.mark.parametrize("settings, message", [
    ({"precision": "FP16"}, "the CUDA provider computes in the model's own types"),
    ({"provider": "TensorRT", "precision": "BF16"}, "precision: BF16 is not offered here"),
])
def test_onnx_runtime_gpu_settings_that_cannot_hold_are_refused(write_spec, capsys, settings, message):
    spec = write_spec(passes=[{"type": "OnnxExport"}, {"type": "OnnxRuntimeGpu", **settings}])
    assert main(["validate", str(spec)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.pipeline
def test_a_checkpoint_quantized_by_torchao_is_stored_as_safetensors_and_measured_on_the_cpu(tmp_path):
    """INT8 weight-only by torchao on the CPU: stored by transformers as safetensors with the config
    that reads it back (never a pickle), the embeddings kept, the cosine to FP32 kept."""
    checkpoint, sentences = tiny_bert(tmp_path / "tiny"), write_sentences(tmp_path / "sentences.jsonl")
    resource = resource_dict(name="bert-ao", model={"uri": str(checkpoint), "format": "HuggingFace"},
                             data={"uri": str(sentences), "text": {"column": "text", "maxLength": 32}},
                             passes=[{"type": "TorchAoQuantize", "name": "ao-int8", "device": "CPU"}],
                             task={"type": "Fidelity", "metric": "CosineSimilarity"})
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(resource))
    out = tmp_path / "runs"
    assert main(["optimize", "-q", str(spec), "--output", str(out), "--run-id", "r1"]) == 0
    report = json.loads(next(out.rglob("report.json")).read_text())
    candidate = next(c for c in report["candidates"] if c["name"] == "ao-int8")
    assert candidate["outcome"] == "Measured", candidate.get("error")
    assert (candidate["format"], candidate["precision"], candidate["device"]) == ("HuggingFace", "int8", "cpu")
    assert candidate["metric"]["fidelity"]["cosineSimilarity"] > 0.99
    stored = next(out.rglob("candidates/ao-int8/checkpoint/config.json"))
    assert json.loads(stored.read_text())["quantization_config"]["quant_method"] == "torchao"
    assert {p.name for p in stored.parent.iterdir()} >= {"model.safetensors", "tokenizer.json"}
    assert not [p for p in stored.parent.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]


@pytest.mark.unit
def test_torchao_says_what_is_missing(monkeypatch):
    import importlib.util

    import torch
    from kompress_jobs.passes import build_pass
    from kompress_jobs.passes.torchao_quantize import TorchAoQuantizePass

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    assert build_pass(TorchAoQuantizePass(type="TorchAoQuantize")).not_applicable_reason() == \
        "torchao is not installed in this Job image (pip install torchao)"
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU is visible" in build_pass(TorchAoQuantizePass(type="TorchAoQuantize", scheme="Float8")).not_applicable_reason()


@pytest.mark.unit
def test_fp8_on_the_cpu_is_refused_at_validation(tmp_path, capsys):
    resource = resource_dict(name="x", model={"uri": "m", "format": "HuggingFace"},
                             passes=[{"type": "TorchAoQuantize", "scheme": "Float8", "device": "CPU"}])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(resource))
    assert main(["validate", str(spec)]) == 2
    assert "scheme: Float8 runs on NVIDIA GPUs only" in capsys.readouterr().err
