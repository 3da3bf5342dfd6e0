"""A spec without passes is planned for the machine the run lands on (planning/auto_plan.py): what
each kind of model gets, what was left out and why, `kompress plan`, and a run that plans itself."""

from __future__ import annotations

import sys

import pytest
import yaml

from kompress_jobs.errors import SpecError
from kompress_jobs.measurement import hardware
from kompress_jobs.planning.auto_plan import plan_for, planned
from kompress_jobs.spec.specfile import resource_from_dict

from .conftest import resource_dict

NATIVE_BF16, NO_BF16 = frozenset({"avx2", "avx512_bf16"}), frozenset({"avx2"})


def _resource(**spec):
    return resource_from_dict(resource_dict(passes=[], **spec))


@pytest.mark.unit
def test_a_classifier_is_exported_and_quantized_and_the_plan_says_whether_bf16_is_offered(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: NATIVE_BF16)
    plan = plan_for(_resource())
    assert plan.automatic and [(p["type"], p["input"]) for p in plan.passes] == [
        ("OnnxExport", "baseline"), ("AutoQuantize", "onnx-export")]
    assert plan.reasons[1].endswith("steered by the goal; BF16 offered: avx512_bf16")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: NO_BF16)
    assert plan_for(_resource()).reasons[1].endswith("no BF16 (this CPU does not compute it natively)")
    onnx = plan_for(_resource(model="models/m.onnx", model_format="ONNX"))
    assert [p["type"] for p in onnx.passes] == ["AutoQuantize"] and onnx.passes[0]["input"] == "baseline"


@pytest.mark.unit
def test_gpu_passes_are_planned_for_a_gpu_job_and_left_out_with_the_reason_where_there_is_none():
    import torch

    plan = plan_for(_resource(model="models/m.onnx", model_format="ONNX", job={"device": "GPU"}))
    considered = [r.split(" ", 1)[0] for r in plan.reasons]
    assert considered == ["auto-quantize", "ort-cuda", "tensorrt-fp16"]
    if not torch.cuda.is_available():
        assert [p["type"] for p in plan.passes] == ["AutoQuantize"]
        assert any(r.startswith("tensorrt-fp16 (TensorRT) left out: ") for r in plan.reasons), plan.reasons


@pytest.mark.unit
def test_the_gpu_plan_of_a_pytorch_model_is_valid_settings_of_its_passes():
    plan = plan_for(_resource(model="models/m.pt2", model_format="TorchExport", job={"device": "GPU"}))
    considered = [r.split(" ", 1)[0] for r in plan.reasons]
    assert considered == ["onnx-export", "auto-quantize", "torch-fp16-compiled", "ort-cuda", "tensorrt-fp16"]


@pytest.mark.unit
def test_a_gguf_language_model_gets_every_language_model_runtime_installed(monkeypatch):
    llm = {"model": "models/m.gguf", "model_format": "GGUF", "data": "/usr/share/common-licenses/GPL-3",
           "task": {"type": "LanguageModeling"}}
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as on an image without the llama extra
    plan = plan_for(_resource(**llm))
    left_out = [r for r in plan.reasons if " left out: " in r]
    assert {p["type"] for p in plan.passes} <= {"OnnxGenAI", "OpenVinoCausalLM"}
    assert [r.split(" ")[0] for r in left_out if "LlamaCpp" in r] == ["llama-cpp", "llama-cpp-auto"]
    assert all(r.endswith("llama-cpp-python is not installed (the job image's extra `llama`)") for r in left_out if "LlamaCpp" in r)


@pytest.mark.unit
def test_passes_written_by_hand_win_and_a_study_needs_them():
    written = resource_from_dict(resource_dict(passes=[{"type": "OnnxExport"}]))
    plan = plan_for(written)
    assert not plan.automatic and [p["type"] for p in plan.passes] == ["OnnxExport"] and planned(written)[0] is written
    with pytest.raises(SpecError, match="tuning: a study tunes the parameters of passes named in spec.passes"):
        resource_from_dict(resource_dict(passes=[], tuning={"trials": 2, "searchSpace": [
            {"pass": "x", "parameter": "amount", "low": 0.1, "high": 0.5}]}))


@pytest.mark.unit
def test_kompress_plan_prints_pasteable_passes_with_the_reasons(write_spec, capsys, monkeypatch):
    from kompress.cli import main

    monkeypatch.setattr(hardware, "cpu_flags", lambda: NO_BF16)
    assert main(["plan", str(write_spec(passes=[]))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# test-run: passes planned for this machine\n#   onnx-export (OnnxExport): ")
    assert yaml.safe_load(out)["passes"][1] == {"type": "AutoQuantize", "name": "auto-quantize", "input": "onnx-export"}


@pytest.mark.pipeline
def test_a_run_without_passes_runs_its_plan_and_reports_it(write_spec, tmp_path):
    import kompress

    report = kompress.optimize(write_spec(passes=[], goals={"maxAccuracyDrop": 2.0}), output=tmp_path / "runs")
    assert [c.name for c in report.candidates] == ["baseline", "onnx-export", "auto-quantize"]
    assert report.plan["automatic"] and [p["type"] for p in report.spec["passes"]] == ["OnnxExport", "AutoQuantize"]
    markdown = next((tmp_path / "runs").rglob("report.md")).read_text()
    assert "## Plan" in markdown and "- auto-quantize (AutoQuantize): INT8 on ONNX Runtime and OpenVINO" in markdown


@pytest.mark.unit
def test_a_model_without_yaml_gets_its_format_and_task_from_its_files(tmp_path):
    from kompress_jobs.api import spec_for_model
    from kompress_jobs.formats import format_for_path
    from kompress_jobs.spec.sources import ModelFormat

    gguf = tmp_path / "Tiny.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    made = spec_for_model(gguf, tmp_path / "text.txt", max_drop=5)
    assert made["metadata"]["name"] == "tiny-q8-0" and made["spec"]["model"]["format"] == "GGUF"
    assert made["spec"]["task"] == {"type": "LanguageModeling"} and made["spec"]["passes"] == []
    assert made["spec"]["goals"] == {"maxAccuracyDrop": 5, "accuracyDropMode": "Relative"}
    causal = tmp_path / "ckpt"
    causal.mkdir()
    (causal / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    assert spec_for_model(causal, tmp_path / "t.txt")["spec"]["task"] == {"type": "LanguageModeling"}
    genai = tmp_path / "genai"
    genai.mkdir()
    (genai / "config.json").write_text("{}")
    (genai / "genai_config.json").write_text("{}")
    assert format_for_path(genai) is ModelFormat.ONNX_GENAI  # its own marker before the config.json every folder has
    assert format_for_path(tmp_path / "m.pt2") is ModelFormat.TORCH_EXPORT and format_for_path(tmp_path / "m.bin") is None
    with pytest.raises(SpecError, match="--data: a model is judged on data"):
        spec_for_model(gguf, None)


@pytest.mark.pipeline
def test_kompress_optimize_with_a_model_and_no_yaml_keeps_the_spec_it_ran(workspace, tmp_path, capsys):
    """The run folder's spec.yaml names the planned passes, and validates as it is."""
    from kompress.cli import main

    out = tmp_path / "runs"
    assert main(["optimize", "--model", str(workspace / "models/digits-cnn.pt"), "--data", str(workspace / "data/digits.npz"),
                 "--max-drop", "2", "-o", str(out), "--run-id", "r1", "-q"]) == 0
    kept = next(out.rglob("r1/spec.yaml"))
    spec = yaml.safe_load(kept.read_text())
    assert spec["kind"] == "ModelOptimization" and spec["metadata"]["name"] == "digits-cnn"
    assert [p["type"] for p in spec["spec"]["passes"]] == ["OnnxExport", "AutoQuantize"]
    assert spec["spec"]["goals"]["maxAccuracyDrop"] == 2
    assert "spec.yaml" in (kept.parent / "manifest.json").read_text()
    capsys.readouterr()
    assert main(["validate", str(kept)]) == 0 and "valid ModelOptimization 'digits-cnn'" in capsys.readouterr().out


ENCODER = {"model": {"uri": "models/all-MiniLM-L6-v2", "format": "HuggingFace",
                     "huggingFace": {"head": "FeatureExtraction", "pooling": "Mean"}},
           "data": {"uri": "data/sentences.jsonl", "text": {"column": "text", "maxLength": 32}},
           "task": {"type": "Fidelity", "metric": "CosineSimilarity"}}


def _encoder(**spec):
    document = resource_dict(passes=[], **spec)
    document["spec"] |= ENCODER
    return resource_from_dict(document)


@pytest.mark.unit
def test_an_encoder_gets_structured_compression_only_when_the_goal_and_the_budget_leave_room(workspace):
    from kompress_jobs.spec.tuning_spec import Tuning

    roomy = plan_for(_encoder(goals={"maxAccuracyDrop": 2.0}, budget={"duration": "45m"}), workspace)
    assert [(p["name"], p["input"]) for p in roomy.passes] == [
        ("onnx-export", "baseline"), ("auto-quantize", "onnx-export"), ("compressed", "baseline"),
        ("compressed-quantized", "compressed")]
    study = Tuning.model_validate(roomy.tuning)  # judged after quantization: the two share the goal
    assert study.target == "compressed-quantized" and study.search_space[0].pass_name == "compressed"
    assert "within spec.budget 45m" in roomy.reasons[2]
    resource, _ = planned(_encoder(goals={"maxAccuracyDrop": 2.0}, budget={"duration": "1h"}), workspace)
    assert resource.spec.tuning.trials == 2 and [p.name for p in resource.spec.passes][-1] == "compressed-quantized"

    for spec, words in (({"goals": {"maxAccuracyDrop": 2.0}}, "spec.budget is unset: under 30m"),
                        ({"goals": {"maxAccuracyDrop": 2.0}, "budget": {"duration": "20m"}}, "spec.budget 20m is under 30m"),
                        ({"goals": {"maxAccuracyDrop": 0.5}, "budget": {"duration": "2h"}}, "goal leaves no room")):
        plan = plan_for(_encoder(**spec), workspace)
        assert [p["name"] for p in plan.passes] == ["onnx-export", "auto-quantize"] and plan.tuning is None
        assert any(r.startswith("compressed (TransformerCompress) left out: ") and words in r for r in plan.reasons), plan.reasons


@pytest.mark.unit
def test_a_budget_is_a_duration_shorter_than_the_jobs_deadline():
    from kompress_jobs.spec.schema import Budget

    assert Budget(duration="1h30m").seconds() == 5400 and Budget(duration="90s").seconds() == 90
    for duration, words in (("0s", "no time at all"), ("ten minutes", "budget.duration"), ("5d", "budget.duration")):
        with pytest.raises(SpecError, match=words):
            _resource(budget={"duration": duration})
    with pytest.raises(SpecError, match="budget.duration 2h is not shorter than job.activeDeadlineSeconds 3600"):
        _resource(budget={"duration": "2h"}, job={"activeDeadlineSeconds": 3600})


@pytest.mark.pipeline
def test_a_pass_past_the_budget_is_skipped_and_a_budget_spent_before_any_pass_fails_the_run(write_spec, tmp_path, monkeypatch):
    from kompress_jobs.api import optimize
    from kompress_jobs.errors import BudgetSpentError
    from kompress_jobs.pipeline import budget as clock

    spent_after = {"calls": 0}

    def spent(self):  # the budget runs out after the first pass is let through
        spent_after["calls"] += 1
        return spent_after["calls"] > 1

    from kompress_jobs.passes.export import OnnxExport

    monkeypatch.setattr(clock.BudgetClock, "spent", spent)
    seen, export = [], OnnxExport.run  # a pass sees what is left of the budget (TVM sizes its tuning to it)
    monkeypatch.setattr(OnnxExport, "run", lambda self, model, ctx: seen.append(ctx.seconds_left()) or export(self, model, ctx))
    spec = write_spec(passes=[{"type": "OnnxExport"}, {"type": "StaticInt8"}], budget={"duration": "10m"})
    report = optimize(spec, output=tmp_path / "out")
    assert len(seen) == 1 and 0 < seen[0] < 600
    skipped = next(c for c in report.candidates if c.name == "static-int8")
    assert skipped.outcome.value == "Skipped" and skipped.error.startswith("spec.budget.duration 10m was spent (")
    assert next(c for c in report.candidates if c.name == "onnx-export").measured

    monkeypatch.setattr(clock.BudgetClock, "spent", lambda self: True)
    with pytest.raises(BudgetSpentError, match="spec.budget.duration 10m was spent before any pass made a candidate"):
        optimize(spec, output=tmp_path / "out2")
