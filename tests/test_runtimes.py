"""OpenVINO and INT4 weight-only passes on the digits models and a small BERT, and their clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kompress_jobs.errors import ModelLoadError
from kompress_jobs.modelfile import ModelFile
from kompress_jobs.pipeline.run import run_optimization
from kompress_jobs.runtimes import make_runner
from kompress_jobs.spec.sources import ModelFormat
from kompress_jobs.spec.specfile import load_resource_file

from .transformer_fixtures import tiny_bert, write_sentences

pytestmark = pytest.mark.pipeline

OPENVINO_PASSES = [{"type": "OnnxExport"}, {"type": "OpenVinoConvert"}, {"type": "OpenVinoInt8"},
                   {"type": "OpenVinoWeightCompression", "bits": "INT8"}]


def run(spec: Path, tmp_path: Path):
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(tmp_path / "out"))
    return {c["name"]: c for c in result.report["candidates"]}, result


@pytest.fixture(scope="module")
def openvino_run(tmp_path_factory):
    import yaml

    from .conftest import copy_examples, resource_dict

    workspace = copy_examples(tmp_path_factory.mktemp("ov"))
    spec = workspace / "ov.yaml"
    spec.write_text(yaml.safe_dump(resource_dict(passes=OPENVINO_PASSES, goals={"maxAccuracyDrop": 1.0})))
    return run(spec, workspace)


def test_openvino_candidates_are_measured_like_every_other(openvino_run):
    candidates, _ = openvino_run
    for name, precision in (("openvino-convert", "fp32"), ("openvino-int8", "int8"), ("openvino-weight-compression", "int8")):
        assert candidates[name]["outcome"] == "Measured", candidates[name]
        assert candidates[name]["runtime"] == "openvino" and candidates[name]["precision"] == precision
        assert candidates[name]["metric"]["drop"] <= 1.0
    assert candidates["openvino-int8"]["sizeBytes"] < candidates["openvino-convert"]["sizeBytes"] / 3


def test_an_ir_is_one_candidate_of_two_files_everywhere(openvino_run, tmp_path):
    import hashlib
    import json

    candidates, result = openvino_run
    run_dir = Path(result.run_uri)
    ir = candidates["openvino-int8"]
    assert ir["artifact"] == "candidates/openvino-int8/model.xml"
    assert ir["artifactFiles"] == ["candidates/openvino-int8/model.bin", "candidates/openvino-int8/model.xml"]
    manifest = {f["path"]: f for f in json.loads((run_dir / "manifest.json").read_text())["files"]}
    for key in ir["artifactFiles"]:
        assert manifest[key]["sha256"] == hashlib.sha256((run_dir / key).read_bytes()).hexdigest()
    assert ir["sizeBytes"] == sum((run_dir / key).stat().st_size for key in ir["artifactFiles"])


def test_an_ir_whose_weights_are_missing_or_do_not_match(openvino_run, tmp_path):
    _, result = openvino_run
    source = Path(result.run_uri) / "candidates" / "openvino-int8"
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(source / "model.xml", lonely / "model.xml")
    with pytest.raises(ModelLoadError, match="its weights model.bin are missing"):
        make_runner(ModelFile(lonely / "model.xml", ModelFormat.OPENVINO), threads=1)
    truncated = tmp_path / "truncated"
    shutil.copytree(source, truncated)
    (truncated / "model.bin").write_bytes((source / "model.bin").read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="OpenVINO cannot load it"):
        make_runner(ModelFile(truncated / "model.xml", ModelFormat.OPENVINO), threads=1)


def test_an_ignored_scope_naming_no_node_fails_clearly(write_spec, tmp_path):
    spec = write_spec(passes=[{"type": "OnnxExport"}, {"type": "OpenVinoInt8", "ignoredScope": {"names": ["no-such-node"]}}])
    candidates, _ = run(spec, tmp_path)
    assert candidates["openvino-int8"]["outcome"] == "Failed"
    assert "NNCF INT8 quantization failed" in candidates["openvino-int8"]["error"]
    assert "no-such-node" in candidates["openvino-int8"]["error"]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("encoder")
    return tiny_bert(folder / "tiny"), write_sentences(folder / "sentences.jsonl")


def _encoder_spec(tmp_path: Path, tiny_encoder, passes: list) -> Path:
    import yaml

    from .conftest import resource_dict

    model, sentences = tiny_encoder
    resource = resource_dict(passes=passes, model={"uri": str(model), "format": "HuggingFace"},
                             data={"uri": str(sentences), "text": {"maxLength": 24}}, task={"type": "Fidelity"},
                             benchmark={"batchSizes": [1], "warmup": 2, "iterations": 5, "rounds": 2, "threads": 1})
    path = tmp_path / "encoder.yaml"
    path.write_text(yaml.safe_dump(resource))
    return path


def test_int4_weight_only_in_both_runtimes(tmp_path, tiny_encoder):
    spec = _encoder_spec(tmp_path, tiny_encoder, [
        {"type": "OnnxExport"}, {"type": "Int4WeightOnly", "blockSize": 32},
        {"type": "OpenVinoWeightCompression", "bits": "INT4", "blockSize": 32}])
    candidates, _ = run(spec, tmp_path)
    for name in ("int4-weight-only", "openvino-weight-compression"):
        assert candidates[name]["outcome"] == "Measured", candidates[name]
        assert candidates[name]["precision"] == "int4"
        assert candidates[name]["metric"]["value"] > 0.9  # cosine to the FP32 embeddings


@pytest.mark.parametrize("passes, message", [
    ([{"type": "Int4WeightOnly", "blockSize": 256}], "block size 256 does not divide layer"),
    ([{"type": "OpenVinoWeightCompression", "bits": "INT4", "blockSize": 48}], "block size 48 does not divide layer"),
])
def test_an_int4_block_size_that_does_not_divide_the_layers(tmp_path, tiny_encoder, passes, message):
    candidates, _ = run(_encoder_spec(tmp_path, tiny_encoder, [{"type": "OnnxExport"}] + passes), tmp_path)
    failed = candidates[next(iter(c for c in candidates if c not in ("baseline", "onnx-export")))]
    assert failed["outcome"] == "Failed" and message in failed["error"], failed


def test_structured_compression_distils_a_smaller_encoder(tmp_path, tiny_encoder):
    spec = _encoder_spec(tmp_path, tiny_encoder, [
        {"type": "TransformerCompress", "headAmount": 0.5, "ffnAmount": 0.5, "keepLayers": 1,
         "training": {"epochs": 2, "learningRate": 0.001, "batchSize": 32}}, {"type": "DynamicInt8"}])
    candidates, _ = run(spec, tmp_path)
    compressed = candidates["transformer-compress"]
    assert compressed["outcome"] == "Measured", compressed
    assert compressed["format"] == "ONNX" and compressed["lineage"][0]["pass"] == "TransformerCompress"
    assert compressed["sizeBytes"] < candidates["baseline"]["sizeBytes"]
    assert candidates["dynamic-int8"]["outcome"] == "Measured"


def test_a_pruning_amount_that_removes_every_head_is_refused(tmp_path, tiny_encoder):
    spec = _encoder_spec(tmp_path, tiny_encoder, [{"type": "TransformerCompress", "headAmount": 0.9}])
    candidates, _ = run(spec, tmp_path)
    assert candidates["transformer-compress"]["outcome"] == "Failed"
    assert "headAmount 0.9 would remove every one of the 4 attention heads" in candidates["transformer-compress"]["error"]


def test_a_study_searches_the_compression_amounts_against_the_fidelity_goal(tmp_path, tiny_encoder):
    import yaml

    spec = _encoder_spec(tmp_path, tiny_encoder, [
        {"type": "TransformerCompress", "name": "compress", "training": {"epochs": 1, "learningRate": 0.001}},
        {"type": "AutoQuantize", "methods": ["Dynamic"], "runtimes": ["OnnxRuntime"], "maxTrials": 1}])
    resource = yaml.safe_load(spec.read_text())
    resource["spec"]["goals"] = {"maxAccuracyDrop": 5.0}
    resource["spec"]["tuning"] = {"trials": 2, "objectives": ["Latency"], "keepBest": 1, "searchSpace": [
        {"pass": "compress", "parameter": "ffnAmount", "choices": [0.25, 0.75]},
        {"pass": "compress", "parameter": "keepLayers", "choices": [1, 2]}]}
    spec.write_text(yaml.safe_dump(resource))
    candidates, result = run(spec, tmp_path)
    tuning = result.report["tuning"]
    assert tuning["target"] == "auto-quantize" and tuning["finishedTrials"] == 2
    assert all(t["state"] == "Complete" for t in tuning["trials"]), tuning["trials"]
    (tuned,) = [c for c in candidates.values() if "-trial-" in c["name"]]
    assert tuned["outcome"] == "Measured" and tuned["lineage"][0]["pass"] == "TransformerCompress"


def test_hidden_state_matching_pairs_each_kept_layer_with_the_teacher_layer_it_stands_for(tiny_encoder):
    import copy

    import torch
    from kompress_jobs.huggingface import load_task_model
    from kompress_jobs.passes.transformer_compress import (
        encoder_layers,
        with_hidden_states,
    )

    names = ("input_ids", "attention_mask")
    teacher = load_task_model(tiny_encoder[0], None, names)
    student = copy.deepcopy(teacher)
    inputs = [torch.randint(0, 100, (3, 8)), torch.ones(3, 8, dtype=torch.int64)]
    no_output_term = lambda module, batch, labels: module(*batch).sum() * 0  # noqa: E731 - runs the student only
    layers = list(range(len(encoder_layers(student.model))))

    def loss_with(mapping):
        loss, hooks = with_hidden_states(lambda m, b, y: no_output_term(teacher, b, y) + no_output_term(m, b, y),
                                         teacher, student, mapping, names, weight=1.0)
        try:
            return loss(student, inputs, None).item()
        finally:
            for hook in hooks:
                hook.remove()

    assert loss_with(layers) == pytest.approx(0.0, abs=1e-6)  # an unchanged student matches its teacher exactly
    assert loss_with(layers[::-1]) > 1e-4  # paired with the wrong teacher layers, it does not
    with torch.no_grad():
        encoder_layers(student.model)[-1].output.dense.weight.mul_(0.5)
    assert loss_with(layers) > 0
    assert not teacher.model.encoder.layer[0]._forward_hooks and not student.model.encoder.layer[0]._forward_hooks


def test_a_trial_that_repeats_finished_parameters_reuses_their_result(tmp_path, tiny_encoder, monkeypatch):
    import yaml

    import kompress_jobs.planning.search_space as search_space

    spec = _encoder_spec(tmp_path, tiny_encoder, [
        {"type": "TransformerCompress", "name": "compress", "training": {"epochs": 1, "learningRate": 0.001}}])
    resource = yaml.safe_load(spec.read_text())
    resource["spec"]["tuning"] = {"trials": 3, "objectives": ["Latency"], "keepBest": 3, "searchSpace": [
        {"pass": "compress", "parameter": "keepLayers", "choices": [1]}]}  # one point: every trial after the first repeats it
    spec.write_text(yaml.safe_dump(resource))
    # a space too large to list (here: listing turned off) can still repeat a point: its result is reused
    monkeypatch.setattr(search_space, "MAX_LISTED_POINTS", 0)
    candidates, result = run(spec, tmp_path / "unlisted")
    trials = result.report["tuning"]["trials"]
    assert [t.get("repeatOf") for t in trials] == [None, 0, 0] and len({str(t["values"]) for t in trials}) == 1
    assert [c for c in candidates if "-trial-" in c] == ["compress-trial-0"]  # the repeats are not candidates again
    assert result.report["tuning"]["finishedTrials"] == 1, "repeats measured nothing: they do not count as trials"
    # listed, the one point is measured once and the study stops there
    monkeypatch.undo()
    candidates, result = run(spec, tmp_path / "listed")
    assert [t.get("repeatOf") for t in result.report["tuning"]["trials"]] == [None]
    assert result.report["tuning"]["stoppedBecause"] == "every point of the search space is measured (1)"
