"""The pipeline end to end on the reference models: what lands in the artifact store and why."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kompress_jobs.errors import StoreError
from kompress_jobs.pipeline.run import run_optimization
from kompress_jobs.spec.specfile import load_resource_file
from kompress_jobs.storage.store import LocalStore

from .conftest import copy_examples, resource_dict, run_folder

pytestmark = pytest.mark.pipeline

ALL_PASSES = [{"type": "OnnxExport"}, {"type": "OrtOptimize"}, {"type": "DynamicInt8"},
              {"type": "StaticInt8", "calibrationMethod": "Entropy"}, {"type": "Fp16"}]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cnn_workspace(tmp_path_factory):
    return copy_examples(tmp_path_factory.mktemp("cnn"))


@pytest.fixture(scope="module")
def cnn_run(cnn_workspace):
    """One full run over every pass, shared by the tests that read its results: `kompress optimize`
    as a user runs it, its output piped (kept in terminal.txt)."""
    workspace = cnn_workspace
    spec = workspace / "cnn.yaml"
    spec.write_text(yaml.safe_dump(resource_dict(name="cnn", passes=ALL_PASSES, goals={"maxAccuracyDrop": 1.0})))
    out = workspace / "runs"
    done = subprocess.run([sys.executable, "-m", "kompress.cli", "optimize", str(spec), "--output", str(out),
                           "--run-id", "r1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    run = run_folder(out, "r1", "cnn")
    workspace.joinpath("terminal.txt").write_text(done.stdout + done.stderr)
    return run, json.loads((run / "report.json").read_text()), json.loads((run / "manifest.json").read_text())


def test_the_terminal_shows_kompress_lines_and_a_plain_table_and_the_libraries_output_goes_to_the_run_folder(cnn_run, cnn_workspace):
    run, report, manifest = cnn_run
    shown = cnn_workspace.joinpath("terminal.txt").read_text()
    assert "USDT" not in shown and "profiler_start" not in shown  # PyTorch's profiler ran: the baseline's profile
    for line in shown.splitlines():
        assert (not line or line.startswith(("| ", "|---", "Artifacts: ", "Best: ", f"{report['metric']} and latency"))
                or re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[", line)), f"not kompress's own line: {line!r}"
    assert f"| {report['best']} |" in shown and not any(ch in shown for ch in "━│┃")
    assert "library.log" in {f["path"] for f in manifest["files"]} and (run / "library.log").is_file()


def test_run_folder_holds_models_reports_plot_and_manifest(cnn_run):
    run, report, _ = cnn_run
    names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert {"report.json", "report.md", "pareto.png", "manifest.json"} <= names
    for c in report["candidates"]:
        if c["parent"] is not None and c["outcome"] == "Measured":
            assert c["artifact"] in names
    assert (run / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [n for n in names if ".partial" in n]


def test_the_baseline_and_the_pick_carry_a_profile_and_cpu_time(cnn_run):
    run, report, _ = cnn_run
    profiles = report["profiles"]
    assert set(profiles) == {"baseline", report["best"]}
    baseline, pick = profiles["baseline"], profiles[report["best"]]
    assert baseline["profiler"] == "pytorch" and {"aten::conv2d", "aten::mkldnn_convolution", "aten::_convolution"} & {
        t["type"] for t in baseline["byType"]}
    assert pick["profiler"] == "onnxruntime" and pick["calls"] == 20 and pick["totalMs"] > 0
    assert abs(sum(t["share"] for t in pick["byType"]) - 1) < 1e-6 and len(pick["top"]) <= 10
    assert pick["top"][0]["ms"] == max(t["ms"] for t in pick["top"])
    energy = pick["energy"]
    assert energy["measurable"] or "powercap" in energy["reason"]  # this machine exposes no RAPL counter
    for c in report["candidates"]:
        if c["outcome"] == "Measured":
            assert all(stats["cpu_ms_per_call"] > 0 for stats in c["latency"].values())
    markdown = (run / "report.md").read_text()
    assert "## Where the time goes" in markdown and f"### {report['best']}" in markdown
    assert (run / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](profile.png)" in markdown


def test_each_profile_is_a_trace_file_in_the_run_linked_from_the_report(cnn_run):
    """Chrome's trace event format: complete events of the operators the profile sums, in µs."""
    run, report, manifest = cnn_run
    markdown = (run / "report.md").read_text()
    for name, profile in report["profiles"].items():
        key = profile["trace"]
        assert key == f"traces/{name}.pt.trace.json" and f"[{key}]({key})" in markdown
        assert key in {f["path"] for f in manifest["files"]}
        events = json.loads((run / key).read_text())["traceEvents"]
        spans = [e for e in events if e["ph"] == "X"]
        assert spans and all(e["dur"] >= 0 and e["ts"] >= 0 and {"name", "pid", "tid"} <= set(e) for e in spans)
        kinds = {t["type"] for t in profile["byType"]}
        assert kinds <= {e["name"] for e in spans}, kinds - {e["name"] for e in spans}


def test_manifest_hashes_every_file_and_records_lineage(cnn_run):
    run, report, manifest = cnn_run
    listed = {f["path"]: f for f in manifest["files"]}
    for path, entry in listed.items():
        assert sha256(run / path) == entry["sha256"]
        assert (run / path).stat().st_size == entry["sizeBytes"]
    assert {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()} == set(listed) | {"manifest.json"}
    static = next(c for c in manifest["candidates"] if c["name"] == "static-int8")
    assert [step["pass"] for step in static["lineage"]] == ["OnnxExport", "StaticInt8"]
    assert static["lineage"][1]["parameters"]["calibrationMethod"] == "Entropy"
    assert manifest["inputs"]["model"]["sha256"] == report["inputs"]["model"]["sha256"]


def test_every_candidate_is_measured_the_same_way(cnn_run):
    _, report, _ = cnn_run
    measured = [c for c in report["candidates"] if c["outcome"] == "Measured"]
    assert len(measured) == 6  # baseline + five passes, FP16 included
    judged_rounds = {len(c["latency"]["1"]["round_medians_ms"]) for c in measured}
    assert len(judged_rounds) == 1 and 2 <= judged_rounds.pop() <= 6  # at the judged batch, up to 3 × rounds if noisy
    for c in measured:
        assert set(c["latency"]) == {"1", "8"}
        assert c["latency"]["8"]["samples"] == 10 and len(c["latency"]["8"]["round_medians_ms"]) == 2
        for stats in c["latency"].values():
            assert stats["samples"] == 5 * len(stats["round_medians_ms"])
            assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
        assert 0.9 <= c["metric"]["value"] <= 1.0
    fingerprint = report["fingerprint"]
    assert fingerprint["cpu"]["model"] and "onnxruntime" in fingerprint["libraries"]


def test_quantized_models_report_both_shares_of_the_speedup(cnn_run):
    _, report, _ = cnn_run
    static = next(c for c in report["candidates"] if c["name"] == "static-int8")
    assert static["vsBaseline"]["reference"] == "baseline"
    assert static["vsParent"]["reference"] == "onnx-export"  # quantization's own share, vs ORT FP32
    assert static["precision"] == "int8" and static["sizeBytes"] * 3 < next(
        c for c in report["candidates"] if c["name"] == "onnx-export")["sizeBytes"]


def test_the_best_pick_meets_the_goals_and_is_not_slower_than_the_baseline(cnn_run):
    _, report, _ = cnn_run
    by_name = {c["name"]: c for c in report["candidates"]}
    for c in report["candidates"]:
        if c["outcome"] == "Measured" and c["parent"] is not None and not c["accepted"]:
            assert c["rejectedReasons"]
    # What the selection decided, whichever way this machine's timings make it decide.
    accepted = sorted((c for c in report["candidates"] if c["accepted"]), key=lambda c: c["rank"])
    assert [c["rank"] for c in accepted] == list(range(1, len(accepted) + 1))
    assert report["best"] == (accepted[0]["name"] if accepted else None)
    batch = str(report["primaryBatchSize"])
    tolerance = report["benchmark"]["tieTolerance"]
    for c in accepted:  # accepted means: within the goal and not slower than the baseline (within the tie tolerance)
        assert c["metric"]["drop"] <= 1.0
        assert c["latency"][batch]["p50_ms"] <= by_name["baseline"]["latency"][batch]["p50_ms"] * (1 + tolerance)
    assert report["paretoFront"] and set(report["paretoFront"]) <= set(by_name)


def test_markdown_report_names_the_best_and_the_machine(cnn_run):
    run, report, _ = cnn_run
    text = (run / "report.md").read_text()
    assert report["fingerprint"]["cpu"]["model"] in text
    assert ("**Best: " in text) == (report["best"] is not None)


def test_an_onnx_model_is_its_own_baseline(cnn_run, workspace, write_spec, tmp_path):
    run, _, _ = cnn_run
    onnx_model = run / "candidates" / "onnx-export" / "model.onnx"
    spec = write_spec(model=str(onnx_model), model_format="ONNX", passes=[{"type": "DynamicInt8"}])
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(tmp_path / "out"))
    baseline = result.report["candidates"][0]
    assert baseline["runtime"] == "onnxruntime" and baseline["format"] == "ONNX"


def test_torch_export_programs_go_through_the_dynamo_exporter(workspace, write_spec, tmp_path):
    from kompress_jobs.reference import build_encoder

    model, data, accuracy, _ = build_encoder(tmp_path / "enc")
    spec = write_spec(model=str(model), model_format="TorchExport", data=str(data),
                      passes=[{"type": "OnnxExport"}, {"type": "DynamicInt8"}], goals={"maxAccuracyDrop": 2})
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(tmp_path / "out"))
    by_name = {c["name"]: c for c in result.report["candidates"]}
    assert by_name["onnx-export"]["outcome"] == "Measured"
    assert by_name["dynamic-int8"]["metric"]["fidelity"]["top1Agreement"] > 0.95
    assert accuracy > 0.8  # the tiny encoder did learn the task (chance: 0.25)


def test_a_failing_pass_is_recorded_and_the_others_still_publish(workspace, write_spec, tmp_path):
    spec = write_spec(passes=[{"type": "OnnxExport", "exporter": "Dynamo"}, {"type": "StaticInt8"}])
    result = run_optimization(load_resource_file(spec), base_dir=spec.parent, artifacts_uri=str(tmp_path / "out"))
    outcomes = {c["name"]: (c["outcome"], c.get("error", "")) for c in result.report["candidates"]}
    assert outcomes["onnx-export"][0] == "Failed" and "use exporter: TorchScript" in outcomes["onnx-export"][1]
    assert outcomes["static-int8"] == ("Skipped", "its input 'onnx-export' did not produce a model")
    assert result.report["best"] is None


class FailingStore(LocalStore):
    """Fails on the n-th upload, like a store that goes away mid-run."""

    def __init__(self, root, fail_at, calls=None):
        super().__init__(root)
        self.calls, self.fail_at = calls if calls is not None else [0], fail_at

    def under(self, prefix):  # the run's folder fails the same way, on the same count
        return FailingStore(super().under(prefix).root, self.fail_at, self.calls)

    def put(self, local, key):
        self.calls[0] += 1
        if self.calls[0] == self.fail_at:
            raise StoreError(f"upload of {key} failed: connection reset")
        super().put(local, key)


@pytest.mark.parametrize("fail_at", [2, 4])  # a model file, the manifest (the 4th of 4 puts)
def test_a_failed_upload_leaves_no_partial_run(workspace, write_spec, tmp_path, monkeypatch, fail_at):
    import kompress_jobs.pipeline.run as pipeline

    store = FailingStore(tmp_path / "out", fail_at)
    monkeypatch.setattr(pipeline, "open_run_store", lambda *args: store)
    spec = write_spec(passes=[{"type": "OnnxExport"}])  # uploads: model, report.json, report.md, pareto.png, manifest
    with pytest.raises(StoreError, match="connection reset"):
        run_optimization(load_resource_file(spec), base_dir=spec.parent)
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
