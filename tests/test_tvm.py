"""Apache TVM as a runtime with its pass: the digits CNN exported to ONNX, tuned by MetaSchedule for
this CPU (a few trials per task), compiled into a library and run by Relax's virtual machine in a
whole run; a second run of the resource compiling from the tuning records the first one kept;
the refusals (trials 0 with nothing kept, a library this process did not build, TVM as a user's
format) and a crash costing the candidate, not the run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from kompress_jobs.errors import UnsafeModelError
from kompress_jobs.modelfile import ModelFile
from kompress_jobs.runtimes import make_runner
from kompress_jobs.spec.sources import ModelFormat

pytestmark = pytest.mark.pipeline


def _run(workspace, name: str, trials: int):
    from kompress_jobs.api import optimize

    from .conftest import resource_dict

    spec = workspace / f"{name}-{trials}.yaml"
    spec.write_text(yaml.safe_dump(resource_dict(name=name, passes=[
        {"type": "OnnxExport", "name": "onnx"},
        {"type": "TVM", "name": "tvm", "input": "onnx", "trials": trials, "batchSizes": [1]}],
        goals={"maxAccuracyDrop": 1.0})))
    return optimize(spec, output=workspace / "out")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(first run tuning 2 trials per task, second run from its kept records, workspace)."""
    from kompress_jobs.passes import build_pass
    from kompress_jobs.passes.tvm import TvmPass

    missing = build_pass(TvmPass(type="TVM")).not_applicable_reason()  # apache-tvm, or a C++ compiler to link with
    if missing:
        pytest.skip(f"{missing}: scripts/setup-venv job,edge installs apache-tvm")
    from .conftest import copy_examples

    workspace = copy_examples(tmp_path_factory.mktemp("tvm"))
    return _run(workspace, "tvm", 2), _run(workspace, "tvm", 0), workspace


def _tvm(report):
    return next(c for c in report.candidates if c.name == "tvm")


def test_the_library_is_measured_like_every_candidate_and_keeps_the_accuracy(runs):
    first, _, _ = runs
    tvm = _tvm(first)
    assert tvm.measured and tvm.runtime.startswith("tvm"), tvm.error
    assert tvm.format is ModelFormat.TVM and abs(tvm.metric.drop) <= 1.0
    # two trials a task rarely beat PyTorch: speed is the only reason it may be turned down
    assert all(reason.startswith("slower than the baseline") for reason in tvm.rejected_reasons)
    assert set(tvm.latency) == {1, 8}  # batch 8 runs in chunks of the batch-1 function
    details = tvm.details
    assert details["tasks"] >= 5 and details["tuned"] == details["tasks"] and details["trials"] > 0 and not details["recordsReused"]


def test_a_later_run_compiles_from_the_records_the_first_kept_in_the_store(runs):
    first, second, workspace = runs
    kept = list((workspace / "out").rglob("kept/tvm/*/database_tuning_record.json"))
    assert len(kept) == 1 and kept[0].read_text().strip()
    tvm = _tvm(second)
    assert tvm.measured and abs(tvm.metric.drop) <= 1.0, tvm.error
    assert tvm.details["recordsReused"] and tvm.details["tuned"] == tvm.details["trials"] == 0
    assert tvm.details["records"] == _tvm(first).details["records"]


def test_trials_0_with_nothing_kept_is_a_clear_message_not_a_crash(runs):
    _, _, workspace = runs
    report = _run(workspace, "never-tuned", 0)
    assert "trials is 0, so this pass compiles from kept tuning records only" in _tvm(report).error
    assert report.best is not None  # the run goes on: ONNX Runtime's candidate is still measured


def test_a_library_this_process_did_not_build_never_loads(runs, tmp_path, monkeypatch):
    from kompress_jobs.formats import tvm as tvm_format

    _, _, workspace = runs
    built = next((workspace / "out").rglob("tvm/model.tvm"))
    copy = tmp_path / "model.tvm"
    shutil.copytree(built, copy)
    runner = make_runner(ModelFile(copy, ModelFormat.TVM), threads=1, input_names=("x",))  # its digest was vouched
    assert runner({"x": np.zeros((3, 1, 8, 8), np.float32)})["output"].shape == (3, 10)
    monkeypatch.setattr(tvm_format, "_BUILT_HERE", set())  # a later process, or a folder from a store
    with pytest.raises(UnsafeModelError, match="kompress loads one only when this run built it"):
        make_runner(ModelFile(copy, ModelFormat.TVM), threads=1, input_names=("x",))
    forged = tmp_path / "forged.tvm"  # another folder: the loaded library's file must stay as it is (it is mapped)
    shutil.copytree(built, forged)
    manifest = json.loads((forged / "kompress-tvm.json").read_text())
    (forged / "model.so").write_bytes(b"\x7fELF" + b"\0" * 60)  # a manifest does not vouch for a library either
    manifest["sha256"] = "0" * 64
    (forged / "kompress-tvm.json").write_text(json.dumps(manifest))
    with pytest.raises(UnsafeModelError):
        make_runner(ModelFile(forged, ModelFormat.TVM), threads=1, input_names=("x",))


def test_libraries_run_in_a_process_of_their_own_where_a_crash_costs_the_runner_not_the_caller(runs):
    from kompress_jobs.runtimes.contained import ContainedRunner

    from .contained_runners import TvmCrashing, crashes_at_its_third_call

    _, _, workspace = runs
    library = ModelFile(next((workspace / "out").rglob("tvm/model.tvm")), ModelFormat.TVM)
    assert isinstance(make_runner(library, threads=1, input_names=("x",)), ContainedRunner)
    crashes_at_its_third_call(TvmCrashing, library, {"x": np.zeros((1, 1, 8, 8), np.float32)})


def test_a_user_cannot_name_tvm_as_the_models_format():
    from pydantic import ValidationError

    from kompress_jobs.spec.sources import ModelSource

    with pytest.raises(ValidationError, match="format TVM is a compiled library only kompress builds in a run"):
        ModelSource(uri="model.tvm", format="TVM")


def test_a_capped_target_compiles_for_its_level_and_keeps_records_of_its_own():
    from kompress_jobs.passes.tvm import llvm_target, records_folder
    from kompress_jobs.spec.targets import CpuIsa

    host, avx2 = llvm_target("znver4", None, 1), llvm_target("znver4", CpuIsa.AVX2, 1)
    assert host["mcpu"] == "znver4" and avx2["mcpu"] == "x86-64-v3" and "mattr" not in avx2
    assert llvm_target("sapphirerapids", CpuIsa.AVX512_CORE_VNNI, 2)["mattr"] == ["+avx512vnni"]
    assert llvm_target("sapphirerapids", CpuIsa.AVX512_CORE_AMX, 2)["mcpu"] == "sapphirerapids"  # the top cap hides nothing
    assert records_folder("AMD EPYC", host) != records_folder("AMD EPYC", avx2)
    assert records_folder("AMD EPYC 9R14 96-Core", host).startswith("tvm/amd-epyc-9r14-96-core-")


def test_under_a_spent_budget_tuning_stops_after_one_round_and_the_library_still_compiles(runs, tmp_path, monkeypatch):
    """spec.budget as the pass sees it (PassContext.deadline): with nothing left, tuning runs one round
    (here one trial a task) instead of all its trials, says how far short it stopped, and compiles."""
    import time

    from kompress_jobs.data import load_dataset
    from kompress_jobs.passes import build_pass, tvm
    from kompress_jobs.passes.base import PassContext
    from kompress_jobs.passes.export import OnnxExportPass
    from kompress_jobs.spec.sources import DataSource
    from kompress_jobs.spec.tasks import Task

    _, _, workspace = runs
    dataset = load_dataset(workspace / "data" / "digits.npz", DataSource(uri="digits.npz"), Task())
    model = ModelFile(workspace / "models" / "digits-cnn.pt", ModelFormat.TORCH_SCRIPT)
    (tmp_path / "onnx").mkdir()
    onnx = build_pass(OnnxExportPass(type="OnnxExport")).run(model, PassContext(tmp_path / "onnx", dataset, lambda m: None))
    monkeypatch.setattr(tvm, "ROUND_TRIALS", 1)
    said = []
    (tmp_path / "tvm").mkdir()
    step = build_pass(tvm.TvmPass(type="TVM", trials=3, batchSizes=[1]))
    library = step.run(onnx, PassContext(tmp_path / "tvm", dataset, said.append, deadline=time.monotonic()))
    assert step.details["budgetStop"] == {"seconds": 0.0, "trialsShort": 2}, step.details
    assert 0 < step.details["trials"] <= step.details["tasks"]  # one round: at most one trial a task
    assert any("tuning stopped at its share of spec.budget (0 s), 2 trials a task short of 3" in line for line in said), said
    from kompress_jobs.data import rows

    outputs = make_runner(library, threads=1, input_names=dataset.input_names)(rows(dataset.evaluation.inputs, 0, 1))
    assert np.isfinite(next(iter(outputs.values())) if isinstance(outputs, dict) else outputs).all()


def test_a_graph_tvm_cannot_import_fails_saying_why_not_with_the_warning_logged_after(tmp_path):
    """Relax's ONNX frontend refuses operators it lacks (seen: MiniLM's export); the child's last line is
    that refusal, not the warning TVM's destructors log as the process ends."""
    from onnx import TensorProto, helper, save

    from kompress_jobs.child_python import last_line, run_python
    from kompress_jobs.passes import build_pass, tvm

    missing = build_pass(tvm.TvmPass(type="TVM")).not_applicable_reason()
    if missing:
        pytest.skip(missing)
    graph = helper.make_graph([helper.make_node("Foo", ["x"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
         tmp_path / "foo.onnx")
    (tmp_path / "records").mkdir()
    job = {"model": str(tmp_path / "foo.onnx"), "shapes": {"x": [4]}, "sizes": [1], "target": {"kind": "llvm"}, "trials": 1,
           "records": str(tmp_path / "records"), "seconds": None, "roundTrials": 16, "library": str(tmp_path / "m.so"),
           "params": str(tmp_path / "p.npz")}
    done = run_python(code=tvm._BUILD, args=[json.dumps(job)])
    assert done.returncode == 3
    assert last_line(done) == "OpNotImplemented: The following operators are not supported for frontend ONNX: Foo"
