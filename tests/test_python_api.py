"""`import kompress`: the pipeline from Python, its report as types, and every output of a run
(report.json, the Job's summary, the manifest) derived from the same report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import kompress
from kompress_jobs.spec.contract import RunSummary
from kompress_jobs.reporting.summary import run_summary

from .conftest import resource_dict

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    from .conftest import copy_examples

    workspace = copy_examples(tmp_path_factory.mktemp("api"))
    document = resource_dict(name="from-python", model=str(workspace / "models/digits-cnn.pt"),
                             data=str(workspace / "data/digits.npz"),
                             passes=[{"type": "OnnxExport"}, {"type": "DynamicInt8"}, {"type": "Fp16"}],
                             goals={"maxAccuracyDrop": 2.0}, promotion={})
    lines: list[str] = []
    report = kompress.optimize(document, output=workspace / "runs", progress=lines.append)
    return report, lines


def test_optimize_takes_a_mapping_and_returns_the_report_as_types(api_run):
    report, lines = api_run
    assert isinstance(report, kompress.Report) and report.run.name == "from-python"
    assert {c.name for c in report.candidates} == {"baseline", "onnx-export", "dynamic-int8", "fp16"}
    assert all(c.measured for c in report.candidates), [(c.name, c.error) for c in report.candidates]
    best = report.best
    assert best is not None and best.name == report.best_name and best.rank == 1 and best.accepted
    assert best.metric.drop <= 2.0 and best.latency[report.primary_batch_size].p50_ms > 0
    assert best.vs_baseline.reference == "baseline" and best.vs_baseline.speedup_p50 > 0
    assert report.baseline.parent is None and (best in report.pareto_front) == best.pareto_optimal
    assert any(line.startswith("benchmarking") for line in lines)  # progress went to the callable
    with pytest.raises(KeyError, match=r"no candidate 'nope' in run from-python-.*\(candidates: baseline, onnx-export"):
        report.candidate("nope")


def test_report_json_summary_and_manifest_are_the_same_report(api_run):
    report, _ = api_run
    folder = Path(report.run_uri)
    written = json.loads((folder / "report.json").read_text())
    assert written == report.to_wire()  # report.json is the typed report, field for field
    assert kompress.Report.read(folder).to_wire() == written  # and reads back unchanged
    read = kompress.Report.read(folder / "report.json")  # where it is and which manifest it has, as the run knew them
    assert (read.run_uri, read.manifest_sha256) == (str(folder.resolve()), report.manifest_sha256)
    assert "run_uri" not in written and "runUri" not in written  # where it went is not in the file
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["best"] == report.best.name and manifest["paretoFront"] == report.pareto_front_names
    assert {c["name"]: c["sizeBytes"] for c in manifest["candidates"]} == {c.name: c.size_bytes for c in report.candidates}
    summary: RunSummary = run_summary(kompress.Report.read(folder).model_copy(
        update={"run_uri": report.run_uri, "manifest_sha256": report.manifest_sha256}))  # from the file, as a Job's would be
    assert summary.best.name == report.best.name and summary.run_id == report.run.id
    assert summary.best.latency_p50_ms == round(report.best.latency[report.primary_batch_size].p50_ms, 4)
    assert summary.baseline.size_bytes == report.baseline.size_bytes


def test_the_promotion_pointer_and_status_come_from_the_same_typed_report(api_run):
    """The decision is made once (report.json's `promotion`), carried out once (the summary's
    status.promotion), and the pointer a serving Pod reads names the typed report's pick."""
    report, _ = api_run
    plan, promoted = report.promotion, report.promotion_status
    assert plan is not None and plan.promote and plan.reason == "FirstPromotion" and plan.previous_run is None
    assert promoted.decision.value == "Promoted" and promoted.reason == plan.reason and promoted.run_id == report.run.id
    pointer = json.loads(Path(plan.pointer).read_text())
    best = report.best
    assert pointer["candidate"] == best.name == promoted.candidate and pointer["digest"] == best.sha256 == promoted.digest
    assert pointer["metrics"]["sizeBytes"] == best.size_bytes and pointer["metrics"]["metric"] == best.metric.to_wire()
    assert pointer["metrics"]["latencyP50Ms"] == {str(b): s.p50_ms for b, s in best.latency.items()}
    assert pointer["inputs"] == report.inputs and pointer["run"]["finishedAt"] == report.run.finished_at
    summary = run_summary(report)
    assert summary.promotion == promoted and summary.best.name == best.name
    written = json.loads((Path(report.run_uri) / "report.json").read_text())
    assert written["promotion"] == plan.to_wire() and written["promotion"]["decision"] == "Promote"


def test_a_report_round_trips_through_the_types_with_nothing_left_untyped(api_run):
    """A field the pipeline writes but the types do not name would still round-trip (extra="allow"):
    this names any such field, so results.py stays the report's schema."""
    report, _ = api_run
    untyped = [(c.name, sorted(c.model_extra)) for c in report.candidates if c.model_extra]
    assert not report.model_extra and not untyped, (report.model_extra, untyped)
    for c in report.candidates:
        assert all(not stats.model_extra for stats in c.latency.values())


def test_validate_checks_the_schema_the_chain_and_the_files(tmp_path):
    from .conftest import copy_examples

    workspace = copy_examples(tmp_path / "ws")
    document = resource_dict(model=str(workspace / "models/digits-cnn.pt"), data=str(workspace / "data/digits.npz"))
    assert kompress.validate(document).metadata.name == "test-run"
    with pytest.raises(kompress.SpecError, match=r"spec.model.uri: .*no-such-model.pt: no such file or folder"):
        kompress.validate(resource_dict(model=str(tmp_path / "no-such-model.pt"), data=str(workspace / "data/digits.npz")))
    broken = resource_dict(passes=[{"type": "StaticInt8"}])  # takes ONNX; nothing exports one
    with pytest.raises(kompress.SpecError, match="StaticInt8"):
        kompress.validate(broken)
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: kompress.io/v1alpha1\nkind: ModelOptimization\nmetadata: {name: x}\nspec: {passes: 3}\n")
    with pytest.raises(kompress.SpecError, match=r"bad.yaml: .*spec.model"):
        kompress.validate(path)


def test_progress_goes_to_the_kompress_logger_by_default(tmp_path, caplog, monkeypatch):
    import kompress_jobs.pipeline.run as pipeline

    def fake_run(resource, *, progress, **_):
        progress("loading model")
        raise kompress.ModelLoadError("stop here")

    monkeypatch.setattr(pipeline, "run_optimization", fake_run)
    with caplog.at_level(logging.INFO, logger="kompress"), pytest.raises(kompress.ModelLoadError):
        kompress.optimize(resource_dict())
    assert [r.getMessage() for r in caplog.records if r.name == "kompress"] == ["loading model"]
