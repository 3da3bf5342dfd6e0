"""Models as users keep them: Hugging Face checkpoints with named inputs, text data, label-free
fidelity, and quantization steered by the goal. The real pretrained all-MiniLM-L6-v2 runs once;
the other tests use a small random BERT with the same tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from kompress.cli import main
from kompress_jobs.measurement.hardware import cpu_lacks

from .conftest import EXAMPLES, resource_dict, run_folder
from .transformer_fixtures import minilm_dir, tiny_bert, write_sentences

pytestmark = pytest.mark.pipeline

TEXT = {"column": "text", "maxLength": 32}
QUICK = {"batchSizes": [1], "warmup": 2, "iterations": 5, "rounds": 2, "threads": 1, "evaluationBatchSize": 64}


def optimize(tmp_path: Path, name: str, **spec) -> tuple[dict, dict]:
    path = tmp_path / f"{name}.yaml"
    resource = resource_dict(name=name)
    resource["spec"].update(spec)
    path.write_text(yaml.safe_dump(resource, sort_keys=False))
    out = tmp_path / "runs"
    assert main(["optimize", "-q", str(path), "--output", str(out), "--run-id", name]) == 0
    report = json.loads((run_folder(out, name, name) / "report.json").read_text())
    return report, {c["name"]: c for c in report["candidates"]}


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny-bert")


@pytest.fixture
def sentences(tmp_path) -> Path:
    return write_sentences(tmp_path / "sentences.jsonl")


@pytest.mark.slow
def test_the_real_pretrained_minilm_keeps_cosine_and_gets_faster(tmp_path):
    """The sentence-embeddings example on all-MiniLM-L6-v2, with a shorter benchmark and the search
    narrowed to ONNX Runtime's dynamic recipes (four trials, one of which breaks the goal): the
    whole search takes eight minutes on 2 cores; static and OpenVINO trials run in test_runtimes."""
    example = yaml.safe_load((EXAMPLES / "sentence-embeddings.yaml").read_text())
    passes = [p | {"methods": ["Dynamic"], "runtimes": ["OnnxRuntime"]} if p["type"] == "AutoQuantize" else p
              for p in example["spec"]["passes"]]
    spec = example["spec"] | {"model": example["spec"]["model"] | {"uri": str(minilm_dir())},
                              "data": example["spec"]["data"] | {"uri": str(EXAMPLES / "data" / "sentences.jsonl")},
                              "passes": passes, "benchmark": QUICK}
    report, candidates = optimize(tmp_path, "minilm", **spec)
    assert report["inputs"]["inputNames"] == ["input_ids", "attention_mask"]
    assert candidates["baseline"]["runtime"] == "pytorch" and candidates["baseline"]["format"] == "HuggingFace"

    exported = onnx.load(str(run_folder(tmp_path / "runs", "minilm", "minilm") / candidates["onnx-export"]["artifact"]), load_external_data=False)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in exported.graph.input}
    assert dims == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}

    best = candidates[report["best"]]
    assert best["name"] == "auto-quantize" and best["precision"] == "int8"
    assert best["metric"]["value"] >= 0.99 and best["metric"]["fidelity"]["cosineSimilarity"] >= 0.99
    search = best["details"]
    assert search["validationSplit"] == "calibration" and len(search["trials"]) >= 2
    chosen = next(t for t in search["trials"] if t["number"] == search["chosenTrial"])
    assert chosen["verdict"] == "meets the goal" and chosen["drop"] <= 1.0
    assert any(t["verdict"].startswith("breaks the goal") for t in search["trials"])  # the defaults lose too much
    markdown = (run_folder(tmp_path / "runs", "minilm", "minilm") / "report.md").read_text()
    assert "## Steered quantization `auto-quantize`" in markdown and "(chosen)" in markdown

    # Where the time goes: the PyTorch profiler for the checkpoint, the pick's runtime's own for the pick.
    profiles = report["profiles"]
    assert set(profiles) == {"baseline", "auto-quantize"}
    assert profiles["baseline"]["profiler"] == "pytorch" and profiles["auto-quantize"]["profiler"] == best["runtime"]
    assert profiles["baseline"]["byType"][0]["type"] == "aten::addmm"  # a transformer's time is in its linear layers
    kinds = {t["type"] for t in profiles["auto-quantize"]["byType"]}
    assert kinds & {"MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "MatMul", "FullyConnected"}, kinds
    assert abs(sum(t["share"] for t in profiles["auto-quantize"]["byType"]) - 1) < 1e-6
    assert all(c["latency"]["1"]["cpu_ms_per_call"] > 0 for c in candidates.values() if c["outcome"] == "Measured")
    assert "### auto-quantize" in markdown and (run_folder(tmp_path / "runs", "minilm", "minilm") / "profile.png").is_file()


def test_a_labelled_classifier_checkpoint_with_text_rows(tmp_path, sentences):
    model = tiny_bert(tmp_path / "classifier", head="SequenceClassification")
    report, candidates = optimize(
        tmp_path, "classifier", model={"uri": str(model), "format": "HuggingFace"},
        data={"uri": str(sentences), "text": TEXT | {"labelColumn": "label"}},
        passes=[{"type": "OnnxExport"}, {"type": "DynamicInt8", "perChannel": True}], benchmark=QUICK)
    assert report["metric"] == "Accuracy"
    quantized = candidates["dynamic-int8"]
    assert quantized["outcome"] == "Measured", quantized
    # A labelled task reports its fidelity to the baseline as well.
    assert {"cosineSimilarity", "top1Agreement", "klDivergence"} <= set(quantized["metric"]["fidelity"])
    assert candidates["onnx-export"]["metric"]["fidelity"]["top1Agreement"] == 1.0


def test_the_fallback_keeps_the_most_sensitive_nodes_in_fp32_one_at_a_time(tmp_path, tiny_encoder, sentences):
    report, candidates = optimize(
        tmp_path, "fallback", model={"uri": str(tiny_encoder), "format": "HuggingFace"},
        data={"uri": str(sentences), "text": TEXT}, task={"type": "Fidelity", "metric": "CosineSimilarity"},
        passes=[{"type": "OnnxExport"}, {"type": "AutoQuantize", "methods": ["Dynamic"], "maxTrials": 7,
                                          "maxFallbackNodes": 3, "validationSamples": 32}],
        goals={"maxAccuracyDrop": 0.0001}, benchmark=QUICK)
    search = candidates["auto-quantize"]["details"]
    trials = search["trials"]
    assert [len(t["fallbackNodes"]) for t in trials] == [0, 0, 0, 0, 1, 2, 3][:len(trials)] and len(trials) <= 7
    ranked = [e["node"] for e in search["sensitivity"]]
    for trial in trials[4:]:
        assert trial["fallbackNodes"] == ranked[:len(trial["fallbackNodes"])]  # worst first, cumulatively
        assert trial["settings"] == trials[0]["settings"] or trial["settings"] in [t["settings"] for t in trials[:4]]
    assert search["stoppedBecause"]
    # No configuration meets a goal this strict: the closest one is still measured and judged.
    assert candidates["auto-quantize"]["outcome"] == "Measured"


def test_the_default_search_tries_dynamic_and_static_recipes_in_both_runtimes(tmp_path, tiny_encoder, sentences):
    """Every kind of trial the full search makes, on a tiny encoder (the MiniLM test narrows it)."""
    report, candidates = optimize(
        tmp_path, "search", model={"uri": str(tiny_encoder), "format": "HuggingFace"},
        data={"uri": str(sentences), "text": TEXT}, task={"type": "Fidelity", "metric": "CosineSimilarity"},
        passes=[{"type": "OnnxExport"}, {"type": "AutoQuantize", "validationSamples": 32, "calibrationSamples": 16,
                                          "maxFallbackNodes": 0}],
        goals={"maxAccuracyDrop": 1.0}, benchmark=QUICK)
    trials = candidates["auto-quantize"]["details"]["trials"]
    kinds = {(t["runtime"], t["method"]) for t in trials}
    bf16 = set() if cpu_lacks("bf16") else {("OpenVINO", "BF16")}  # offered on CPUs that compute it natively
    assert kinds == {("OnnxRuntime", "Dynamic"), ("OnnxRuntime", "Static"), ("OpenVINO", "Static")} | bf16, kinds
    assert {t["settings"].get("quantFormat") for t in trials if t["runtime"] == "OnnxRuntime"} == {None, "QDQ", "QOperator"}
    assert all(t["verdict"] and t["p50Ms"] > 0 and t["drop"] is not None for t in trials)


def test_named_npz_inputs_feed_a_two_input_model_and_every_pass(tmp_path, tiny_encoder, sentences):
    """x_<split>/<input> arrays, no labels: a label-free task on an ONNX export with two inputs."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder), local_files_only=True)
    rows = [json.loads(line) for line in sentences.read_text().splitlines()]
    arrays = {}
    for split in ("calibration", "evaluation"):
        encoded = tokenizer([r["text"] for r in rows if r["split"] == split], padding="max_length", max_length=24,
                            truncation=True, return_tensors="np")
        arrays[f"x_{split}/input_ids"], arrays[f"x_{split}/attention_mask"] = encoded["input_ids"], encoded["attention_mask"]
    np.savez(tmp_path / "tokens.npz", **arrays)
    report, candidates = optimize(
        tmp_path, "named", model={"uri": str(tiny_encoder), "format": "HuggingFace"}, data={"uri": str(tmp_path / "tokens.npz")},
        task={"type": "Fidelity", "metric": "RelativeError"},
        passes=[{"type": "OnnxExport"}, {"type": "StaticInt8", "opTypes": ["MatMul"]}, {"type": "DynamicInt8"}],
        benchmark=QUICK)
    assert report["inputs"]["inputNames"] == ["input_ids", "attention_mask"]
    for name in ("onnx-export", "static-int8", "dynamic-int8"):
        assert candidates[name]["outcome"] == "Measured", candidates[name]
    assert candidates["baseline"]["metric"]["value"] == 0.0 and candidates["static-int8"]["metric"]["value"] > 0


def test_a_checkpoint_directory_in_s3(tmp_path, tiny_encoder, sentences, s3_endpoint):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for path in tiny_encoder.iterdir():
        client.upload_file(str(path), "models", f"checkpoints/tiny/{path.name}")
    report, candidates = optimize(
        tmp_path, "from-s3", model={"uri": "s3://models/checkpoints/tiny", "format": "HuggingFace"},
        data={"uri": str(sentences), "text": TEXT}, task={"type": "Fidelity"}, passes=[{"type": "OnnxExport"}],
        benchmark=QUICK, artifacts={"endpointUrl": s3_endpoint})
    assert candidates["onnx-export"]["metric"]["value"] > 0.999
    assert len(report["inputs"]["model"]["sha256"]) == 64


def test_mean_pooling_matches_a_hand_computed_embedding(tiny_encoder):
    import torch
    from kompress_jobs.modelfile import ModelFile
    from kompress_jobs.runtimes import make_runner
    from kompress_jobs.spec.sources import ModelFormat
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder), local_files_only=True)
    encoded = tokenizer(["a short one", "a somewhat longer sentence than that"], padding=True, return_tensors="np")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    runner = make_runner(ModelFile(tiny_encoder, ModelFormat.HUGGING_FACE), threads=1, input_names=tuple(inputs))
    (name, embeddings), = runner(inputs).items()
    model = AutoModel.from_pretrained(str(tiny_encoder), local_files_only=True).eval()
    with torch.no_grad():
        states = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state.numpy()
    mask = inputs["attention_mask"][..., None]
    assert name == "embeddings"
    np.testing.assert_allclose(embeddings, (states * mask).sum(1) / mask.sum(1), atol=1e-5)
