"""Passes that change the network — pruning, distillation, low-rank factorization — and their
clear errors on bad input. Speed figures live in benchmarks/techniques.py, not here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kompress.cli import main
from kompress_jobs.pipeline.run import run_optimization
from kompress_jobs.spec.specfile import load_resource_file

pytestmark = pytest.mark.pipeline

STUDENT = {"uri": "models/digits-cnn-student.pt", "format": "TorchScript"}


def run(spec, tmp_path):
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(tmp_path / "out"))
    return {c["name"]: c for c in result.report["candidates"]}, result


def metric(candidate) -> float:
    return candidate["metric"]["value"] if isinstance(candidate["metric"], dict) else candidate["metric"]


def test_pruned_then_int8_candidates_keep_accuracy_and_record_lineage(write_spec, tmp_path):
    spec = write_spec(passes=[
        {"type": "Prune", "name": "pruned", "amount": 0.6, "fineTuning": {"epochs": 2, "learningRate": 0.0005}},
        {"type": "OnnxExport", "name": "pruned-onnx"},
        {"type": "StaticInt8", "name": "pruned-int8"},
    ], goals={"maxAccuracyDrop": 1.0})
    candidates, result = run(spec, tmp_path)
    assert all(c["outcome"] == "Measured" for c in candidates.values()), candidates
    pruned = torch.jit.load(str(Path(result.run_uri) / "candidates" / "pruned" / "model.pt"))
    weights = torch.cat([p.flatten() for n, p in pruned.named_parameters() if n.endswith("weight")])
    assert (weights == 0).float().mean().item() == pytest.approx(0.6, abs=0.01)
    assert metric(candidates["baseline"]) - metric(candidates["pruned-int8"]) <= 0.01
    assert [step["pass"] for step in candidates["pruned-int8"]["lineage"]] == ["Prune", "OnnxExport", "StaticInt8"]


CNN_ARCHITECTURE = "kompress_jobs.reference:digits_cnn"


def test_structured_pruning_then_int8_is_smaller_than_int8_alone_within_one_point(write_spec, tmp_path):
    spec = write_spec(passes=[
        {"type": "OnnxExport", "name": "onnx"},
        {"type": "StaticInt8", "name": "int8"},
        {"type": "StructuredPrune", "name": "narrow", "input": "baseline", "architecture": CNN_ARCHITECTURE,
         "amount": 0.5, "fineTuning": {"epochs": 6, "learningRate": 0.001}},
        {"type": "OnnxExport", "name": "narrow-onnx"},
        {"type": "StaticInt8", "name": "narrow-int8"},
    ], goals={"maxAccuracyDrop": 1.0})
    candidates, result = run(spec, tmp_path)
    assert all(c["outcome"] == "Measured" for c in candidates.values()), candidates
    narrow = torch.jit.load(str(Path(result.run_uri) / "candidates" / "narrow" / "model.pt"))
    assert narrow.state_dict()["0.weight"].shape[0] == 16  # half of the first conv's 32 filters are gone
    assert narrow.state_dict()["12.weight"].shape[0] == 10  # the output layer keeps its width
    int8, narrow_int8 = candidates["int8"], candidates["narrow-int8"]
    assert narrow_int8["sizeBytes"] < 0.5 * int8["sizeBytes"]
    assert metric(candidates["baseline"]) - metric(narrow_int8) <= 0.01
    assert [step["pass"] for step in narrow_int8["lineage"]] == ["StructuredPrune", "OnnxExport", "StaticInt8"]


def test_structured_pruning_can_distill_from_the_unpruned_model(write_spec, tmp_path):
    spec = write_spec(passes=[{"type": "StructuredPrune", "architecture": CNN_ARCHITECTURE, "amount": 0.7, "roundTo": 4,
                               "fineTuning": {"epochs": 10}, "distillation": {"temperature": 2, "alpha": 0.5}}])
    candidates, _ = run(spec, tmp_path)
    narrow = candidates["structured-prune"]
    assert narrow["outcome"] == "Measured", narrow
    assert metric(candidates["baseline"]) - metric(narrow) <= 0.02
    assert candidates["baseline"]["sizeBytes"] / narrow["sizeBytes"] > 5


@pytest.mark.parametrize("change, message", [
    ({"architecture": "kompress_jobs.reference:digits_mlp"}, "the input's weights do not fit the architecture"),
    ({"architecture": "kompress_jobs.nowhere:model"}, "cannot import 'kompress_jobs.nowhere'"),
    ({"architecture": "kompress_jobs.reference:nothing"}, "has no 'nothing'"),
    ({"ignoredLayers": ["7", "99"]}, "ignoredLayers: no module named '99'"),
])
def test_structured_pruning_with_a_wrong_architecture_fails_clearly(write_spec, tmp_path, change, message):
    spec = write_spec(passes=[{"type": "StructuredPrune", "architecture": CNN_ARCHITECTURE, **change}])
    candidates, _ = run(spec, tmp_path)
    assert candidates["structured-prune"]["outcome"] == "Failed"
    assert message in candidates["structured-prune"]["error"]


def test_distilled_student_stays_within_two_points_and_is_much_smaller(write_spec, tmp_path):
    spec = write_spec(passes=[{"type": "Distill", "student": STUDENT, "training": {"epochs": 40, "learningRate": 0.003}}])
    candidates, _ = run(spec, tmp_path)
    student, baseline = candidates["distill"], candidates["baseline"]
    assert student["outcome"] == "Measured", student
    assert round(metric(baseline) - metric(student), 9) <= 0.02  # 8 of 400 samples is two points, not 2.0000000000000018
    assert baseline["sizeBytes"] / student["sizeBytes"] > 20


def test_low_rank_factors_the_mlp_and_records_the_trade(write_spec, tmp_path):
    spec = write_spec(model="models/digits-mlp.pt", passes=[
        {"type": "OnnxExport"}, {"type": "LowRank", "name": "rank-half", "rankRatio": 0.25}])
    candidates, _ = run(spec, tmp_path)
    low, onnx = candidates["rank-half"], candidates["onnx-export"]
    assert low["outcome"] == "Measured", low
    assert low["sizeBytes"] < 0.7 * onnx["sizeBytes"]
    assert metric(low) > 0.5  # recorded either way; the goals decide whether it is kept


@pytest.mark.parametrize("student_code, message", [
    ("torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))", "does not match the teacher's (2, 10)"),
    ("torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())", "does not take the teacher's inputs (input (2, 1, 8, 8))"),
])
def test_a_student_that_does_not_fit_the_teacher_fails_clearly(write_spec, workspace, tmp_path, student_code, message):
    torch.jit.save(torch.jit.script(eval(student_code)), str(workspace / "models" / "bad-student.pt"))
    spec = write_spec(passes=[{"type": "Distill", "student": {"uri": "models/bad-student.pt", "format": "TorchScript"}}])
    candidates, result = run(spec, tmp_path)
    assert candidates["distill"]["outcome"] == "Failed" and message in candidates["distill"]["error"]
    assert result.report["best"] is None


def test_a_rank_larger_than_the_layer_fails_clearly(write_spec, tmp_path):
    spec = write_spec(model="models/digits-mlp.pt", passes=[{"type": "OnnxExport"}, {"type": "LowRank", "rank": 600}])
    candidates, _ = run(spec, tmp_path)
    assert candidates["low-rank"]["outcome"] == "Failed"
    assert "rank 600 is larger than layer" in candidates["low-rank"]["error"] and "full rank 64" in candidates["low-rank"]["error"]
    assert candidates["onnx-export"]["outcome"] == "Measured"  # the rest of the run still stands


@pytest.mark.parametrize("bad_pass, message", [
    ({"type": "Prune", "amount": 1.0}, "spec.passes[0].amount: must be < 1"),
    ({"type": "Prune", "amount": 0}, "spec.passes[0].amount: must be > 0"),
    ({"type": "LowRank", "rank": 8, "energy": 0.9}, "set one of energy, rankRatio, rank"),
    ({"type": "StructuredPrune", "architecture": CNN_ARCHITECTURE, "amount": 1.5}, "spec.passes[0].amount: must be < 1"),
    ({"type": "StructuredPrune", "architecture": "not a module path"}, "spec.passes[0].architecture"),
    ({"type": "Distill"}, "spec.passes[0].student"),
    ({"type": "Distill", "student": STUDENT, "temperature": 0}, "spec.passes[0].temperature"),
])
def test_bad_pass_parameters_are_rejected_before_running(write_spec, capsys, bad_pass, message):
    assert main(["validate", str(write_spec(passes=[bad_pass]))]) == 2
    assert message in capsys.readouterr().err


def test_training_passes_need_a_train_split(write_spec, workspace, tmp_path):
    import numpy as np

    with np.load(workspace / "data" / "digits.npz") as archive:
        arrays = {k: archive[k] for k in archive.files if not k.endswith("_train")}
    np.savez(workspace / "data" / "no-train.npz", **arrays)
    spec = write_spec(data="data/no-train.npz", passes=[{"type": "Prune", "amount": 0.3}])
    candidates, _ = run(spec, tmp_path)
    assert candidates["prune"]["outcome"] == "Failed" and "needs a train split" in candidates["prune"]["error"]


class _TwoInputs(torch.nn.Module):
    """Features and a per-row mask: two named inputs of different dtypes."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def forward(self, pixels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.body(pixels * keep.unsqueeze(-1).to(pixels.dtype))


def _two_input_workspace(workspace):
    import numpy as np

    digits = np.load(workspace / "data" / "digits.npz")
    arrays = {}
    for split in ("train", "calibration", "evaluation"):
        pixels = digits[f"x_{split}"].reshape(len(digits[f"x_{split}"]), -1)
        arrays[f"x_{split}/pixels"], arrays[f"x_{split}/keep"] = pixels, np.ones(len(pixels), np.int64)
        arrays[f"y_{split}"] = digits[f"y_{split}"]
    np.savez(workspace / "data" / "two-inputs.npz", **arrays)
    for name, hidden in (("two-inputs", 64), ("two-inputs-student", 16)):
        torch.manual_seed(0)
        torch.jit.save(torch.jit.script(_TwoInputs(hidden)), str(workspace / "models" / f"{name}.pt"))


def test_training_passes_take_named_inputs(write_spec, workspace, tmp_path):
    _two_input_workspace(workspace)
    spec = write_spec(model="models/two-inputs.pt", data="data/two-inputs.npz", passes=[
        {"type": "Prune", "amount": 0.5, "fineTuning": {"epochs": 1}},
        {"type": "Distill", "input": "baseline", "student": {"uri": "models/two-inputs-student.pt", "format": "TorchScript"},
         "training": {"epochs": 1}},
        {"type": "OnnxExport", "input": "distill"},
        {"type": "StaticInt8"},
    ])
    candidates, result = run(spec, tmp_path)
    assert all(c["outcome"] == "Measured" for c in candidates.values()), candidates
    import onnx

    exported = onnx.load(str(Path(result.run_uri) / candidates["onnx-export"]["artifact"]))
    assert [i.name for i in exported.graph.input] == ["pixels", "keep"]
    assert result.report["inputs"]["inputNames"] == ["pixels", "keep"]


def test_a_label_free_task_fine_tunes_towards_the_unpruned_model(write_spec, workspace, tmp_path):
    import numpy as np

    digits = dict(np.load(workspace / "data" / "digits.npz"))
    np.savez(workspace / "data" / "unlabelled.npz", **{k: v for k, v in digits.items() if k.startswith("x_")})
    spec = write_spec(data="data/unlabelled.npz", task={"type": "Fidelity", "metric": "Top1Agreement"},
                      passes=[{"type": "Prune", "amount": 0.7, "fineTuning": {"epochs": 2, "learningRate": 0.0005}}])
    candidates, _ = run(spec, tmp_path)
    assert candidates["prune"]["outcome"] == "Measured", candidates["prune"]
    assert candidates["prune"]["metric"]["value"] > 0.9  # follows the unpruned model without any label
