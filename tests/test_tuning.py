"""Optuna tuning (spec.tuning): the study's trials join the candidates, weak and failing trials are
handled, an interrupted study resumes from the artifact store, and bad search spaces are refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kompress.cli import main
from kompress_jobs.pipeline.run import run_optimization
from kompress_jobs.spec.specfile import load_resource_file

pytestmark = pytest.mark.pipeline

NARROW = {"type": "StructuredPrune", "name": "narrow", "architecture": "kompress_jobs.reference:digits_cnn",
          "amount": 0.5, "fineTuning": {"epochs": 1}}
AMOUNT = {"pass": "narrow", "parameter": "amount", "low": 0.3, "high": 0.8}
LEARNING_RATE = {"pass": "narrow", "parameter": "fineTuning.learningRate", "low": 1e-4, "high": 1e-2, "log": True}


def run(spec: Path, out: Path):
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(out))
    return result.report


def test_tuned_trials_join_a_pareto_front_across_techniques(write_spec, tmp_path):
    spec = write_spec(passes=[
        {"type": "Distill", "name": "student", "student": {"uri": "models/digits-cnn-student.pt", "format": "TorchScript"},
         "training": {"epochs": 30, "learningRate": 0.003}},
        {"type": "OnnxExport", "name": "student-onnx"},
        {"type": "StaticInt8", "name": "student-int8"},
        {**NARROW, "input": "baseline"},
        {"type": "OnnxExport", "name": "narrow-onnx"},
        {"type": "StaticInt8", "name": "narrow-int8"},
    ], tuning={"trials": 5, "searchSpace": [AMOUNT, LEARNING_RATE]}, goals={"maxAccuracyDrop": 3.0})
    report = run(spec, tmp_path / "out")
    tuning = report["tuning"]
    assert tuning["finishedTrials"] == 5 and tuning["target"] == "narrow-int8" and tuning["resumedWithTrials"] == 0
    assert tuning["objectives"] == ["Latency", "Size", "Accuracy"]
    trials = [t for t in tuning["trials"] if t["state"] == "Complete"]
    assert trials and all(set(t["values"]) == {"latencyMs", "sizeMiB", "drop"} for t in trials)
    assert len({t["parameters"]["narrow.amount"] for t in trials}) == len(trials)  # really searched

    candidates = {c["name"]: c for c in report["candidates"]}
    tuned = [candidates[name] for name in tuning["selected"]]
    assert tuned and all(c["outcome"] == "Measured" for c in tuned)
    lineage = tuned[0]["lineage"]
    assert [step.get("pass") for step in lineage[:-1]] == ["StructuredPrune", "OnnxExport", "StaticInt8"]
    assert lineage[-1]["study"] == tuning["study"]
    techniques = {step["pass"] for name in report["paretoFront"] if name != "baseline"
                  for step in candidates[name]["lineage"] if "pass" in step}
    assert {"Distill", "StructuredPrune"} <= techniques, report["paretoFront"]
    # The best model of the study is in the store even before the run's manifest is written.
    saved = list((tmp_path / "out" / tuning["study"] / "trials").glob("*/model.onnx"))
    assert saved


def test_failed_trials_stop_the_study_at_the_cap_and_the_run_goes_on(write_spec, tmp_path):
    spec = write_spec(model="models/digits-mlp.pt", passes=[
        {"type": "OnnxExport", "name": "onnx"}, {"type": "LowRank", "name": "factored", "rank": 8}],
        tuning={"trials": 10, "maxFailedTrials": 2, "searchSpace": [
            {"pass": "factored", "parameter": "rank", "low": 100, "high": 400}]})  # every layer has rank ≤ 64
    report = run(spec, tmp_path / "out")
    tuning = report["tuning"]
    assert [t["state"] for t in tuning["trials"]] == ["Fail", "Fail"]
    assert "larger than layer" in tuning["trials"][0]["error"]
    assert tuning["stoppedBecause"] == "2 trials failed (maxFailedTrials 2)"
    assert tuning["selected"] == []
    assert {c["name"]: c["outcome"] for c in report["candidates"]}["factored"] == "Measured"


def test_weak_trials_are_pruned_while_fine_tuning(write_spec, tmp_path):
    spec = write_spec(passes=[{**NARROW, "amount": 0.7, "fineTuning": {"epochs": 4}}], tuning={
        "trials": 8, "objectives": ["Accuracy"],
        "searchSpace": [{"pass": "narrow", "parameter": "fineTuning.learningRate", "low": 1e-6, "high": 1e-2, "log": True}]})
    tuning = run(spec, tmp_path / "out")["tuning"]
    states = [t["state"] for t in tuning["trials"]]
    assert len(states) == 8 and "Pruned" in states and "Complete" in states, states
    complete = {f"narrow-trial-{t['number']}": t["values"]["drop"] for t in tuning["trials"] if t["state"] == "Complete"}
    chosen = [complete[name] for name in tuning["selected"]]
    others = [drop for name, drop in complete.items() if name not in tuning["selected"]]
    assert len(chosen) == min(3, len(complete)) and max(chosen) <= min(others, default=float("inf"))  # keepBest: 3


def test_stop_when_acceptable_stops_at_the_first_trial_meeting_the_goals(write_spec, tmp_path):
    spec = write_spec(passes=[NARROW], goals={"maxAccuracyDrop": 50.0},
                      tuning={"trials": 6, "stopWhenAcceptable": True, "searchSpace": [AMOUNT]})
    tuning = run(spec, tmp_path / "out")["tuning"]
    assert tuning["finishedTrials"] == 1
    assert tuning["stoppedBecause"] == "trial 0 meets every goal (stopWhenAcceptable)"


def _completed_trials(journal: Path, scratch: Path) -> dict[int, dict]:
    """Read a copy of a study journal the way Optuna does (the writer may still be appending)."""
    import optuna

    copy = scratch / f"copy-{time.monotonic_ns()}.log"
    shutil.copyfile(journal, copy)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(copy)))
    studies = storage.get_all_studies()
    if not studies:
        return {}
    trials = storage.get_all_trials(studies[0]._study_id)
    return {t.number: t.params for t in trials if t.state.name == "COMPLETE"}


def test_a_study_killed_midway_resumes_where_it_stopped(write_spec, tmp_path):
    # The target is an OpenVINO IR: a model of two files (.xml and .bin), both kept for the resumed run.
    spec = write_spec(passes=[NARROW, {"type": "OnnxExport"}, {"type": "OpenVinoConvert"}],
                      tuning={"trials": 8, "searchSpace": [AMOUNT, LEARNING_RATE]})
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    command = [sys.executable, "-m", "kompress.cli", "optimize", str(spec), "--output", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        before: dict[int, dict] = {}
        while first.poll() is None and len(before) < 2:
            journals = list(out.glob("default/test-run/studies/*/journal.log"))  # <root>/<namespace>/<name>/studies/
            before = _completed_trials(journals[0], scratch) if journals else {}
            time.sleep(0.05)
        assert first.poll() is None, "the run finished before it could be interrupted"
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert not list(out.glob("**/manifest.json"))  # the killed attempt published nothing

    second = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert second.returncode == 0, second.stdout + second.stderr
    log = second.stdout + second.stderr
    report = json.loads(next(out.glob("default/test-run/runs/*/report.json")).read_text())
    tuning = report["tuning"]
    resumed = tuning["resumedWithTrials"]
    assert resumed >= len(before) >= 2 and f"resuming study {tuning['study']} with {resumed} finished trial(s)" in log
    assert tuning["finishedTrials"] == 8
    finished = {t["number"]: t for t in tuning["trials"]}
    for number, params in before.items():  # earlier trials kept as they were, not run again
        assert finished[number]["state"] == "Complete" and finished[number]["parameters"] == params
        assert f"tuning: trial {number}:" not in log
    rerun = [n for n in range(8) if f"tuning: trial {n}:" in log]
    assert rerun == list(range(resumed, 8))
    # Trials the first attempt ran can still become candidates: their models came from the store.
    assert all(c["outcome"] == "Measured" for c in report["candidates"]), [c.get("error") for c in report["candidates"]]

    # The same spec again: the study is over, so every kept trial comes back from the store (.xml and .bin).
    third = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "resuming study" in third.stdout + third.stderr and "tuning: trial " not in third.stdout + third.stderr  # none run or left out
    latest = max(out.glob("default/test-run/runs/*/report.json"), key=lambda p: p.stat().st_mtime)
    again = json.loads(latest.read_text())
    kept = [c for c in again["candidates"] if c["name"] in again["tuning"]["selected"]]
    assert kept and all(c["outcome"] == "Measured" and c["format"] == "OpenVINO" for c in kept), kept


@pytest.mark.parametrize("tuning, message", [
    ({"searchSpace": []}, "spec.tuning.searchSpace: the search space is empty"),
    ({}, "spec.tuning.searchSpace: is required"),
    ({"searchSpace": [{**AMOUNT, "pass": "nope"}]}, "spec.tuning.searchSpace[0].pass: no pass is named 'nope'"),
    ({"searchSpace": [{**AMOUNT, "parameter": "amout"}]}, "StructuredPrune has no parameter 'amout'"),
    ({"searchSpace": [{**AMOUNT, "high": 1.5}]}, "spec.tuning.searchSpace[0].high: narrow rejects amount=1.5"),
    ({"searchSpace": [{**AMOUNT, "low": 0.9}]}, "low (0.9) must be below high (0.8)"),
    ({"searchSpace": [{"pass": "narrow", "parameter": "fineTuning.epochs", "low": 1.5, "high": 3}]}, "must be whole numbers"),
    ({"searchSpace": [{"pass": "narrow", "parameter": "amount"}]}, "set either low and high, or choices"),
    ({"searchSpace": [AMOUNT], "target": "onnx"}, "'narrow' does not lead to the target 'onnx'"),
    ({"searchSpace": [AMOUNT], "pruneWeakTrials": True}, "pruneWeakTrials needs objectives: [Accuracy]"),
    ({"searchSpace": [AMOUNT], "validationSplit": "evaluation"}, "spec.tuning.validationSplit: must differ"),
])
def test_bad_search_spaces_are_refused_before_running(write_spec, capsys, tuning, message):
    spec = write_spec(passes=[{"type": "OnnxExport", "name": "onnx"}, {**NARROW, "input": "baseline"}], tuning=tuning)
    assert main(["validate", str(spec)]) == 2
    assert message in capsys.readouterr().err


def test_a_small_discrete_space_is_enumerated_and_no_point_is_measured_twice(write_spec, tmp_path):
    """Seen on a CPU with AMX: a study of 3 trials over 4 points measured one point twice and never
    tried another. A repeat now costs no trial of the budget and queues a point not yet taken; a
    study with more trials than points stops once every point is measured."""
    narrow = {**NARROW, "fineTuning": {"epochs": 1, "batchSize": 64}}
    four = [{"pass": "narrow", "parameter": "amount", "choices": [0.3, 0.5]},
            {"pass": "narrow", "parameter": "fineTuning.batchSize", "choices": [32, 64]}]
    tuning = run(write_spec(passes=[narrow], goals={"maxAccuracyDrop": 50.0}, tuning={"trials": 3, "searchSpace": four}),
                 tmp_path / "three")["tuning"]
    measured = [tuple(sorted(t["parameters"].items())) for t in tuning["trials"] if t["state"] == "Complete" and "repeatOf" not in t]
    assert tuning["finishedTrials"] == 3 and len(set(measured)) == len(measured) == 3, tuning["trials"]

    two = [{"pass": "narrow", "parameter": "amount", "choices": [0.3, 0.5]}]
    tuning = run(write_spec(passes=[narrow], goals={"maxAccuracyDrop": 50.0}, tuning={"trials": 5, "searchSpace": two}),
                 tmp_path / "five")["tuning"]
    assert tuning["stoppedBecause"] == "every point of the search space is measured (2)"
    measured = [t["parameters"]["narrow.amount"] for t in tuning["trials"] if t["state"] == "Complete" and "repeatOf" not in t]
    assert sorted(measured) == [0.3, 0.5] and tuning["finishedTrials"] == 2
