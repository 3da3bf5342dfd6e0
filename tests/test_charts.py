"""report.md's conclusion and the charts: the front over what a user may choose, units on every
axis, one label for points that tie, only the axes that vary, the pick marked, the speedup's range."""

from __future__ import annotations

import pytest

from kompress_jobs.reporting.charts import pareto_figure, plot_comparison, plot_pareto
from kompress_jobs.reporting.report import render_markdown
from kompress_jobs.reporting.results import Report

pytestmark = pytest.mark.unit


def _latency(p50, noisy=False):
    return {"batch_size": 1, "p50_ms": p50, "p95_ms": p50, "p99_ms": p50, "mean_ms": p50, "throughput_per_second": 1000 / p50,
            "round_medians_ms": [p50], "samples": 10, "noisy": noisy}


def _candidate(name, p50, size, drop, *, parent="onnx-export", accepted=True, front=False, reasons=(), rank=None):
    return {"name": name, "parent": parent, "outcome": "Measured", "technique": "quantization", "runtime": "onnxruntime",
            "precision": "int8", "metric": {"value": 0.98 - drop / 100, "drop": drop}, "latency": {"1": _latency(p50)},
            "sizeBytes": size, "accepted": accepted, "paretoOptimal": front, "rejectedReasons": list(reasons), "rank": rank,
            "vsBaseline": {"reference": "baseline", "batchSize": 1, "speedupP50": 1.0 / p50, "sizeReduction": 900_000 / size}}


def digits_report() -> Report:
    """A digits run: the baseline, the pick, a copy that ties with it, and a rejected candidate."""
    return Report.model_validate({
        "run": {"id": "r", "name": "digits", "startedAt": "t0", "finishedAt": "t1", "kompressVersion": "0"},
        "spec": {"goals": {"accuracyDropMode": "Absolute"}}, "benchmark": {"batchSizes": [1]}, "inputs": {},
        "fingerprint": {"cpu": {"model": "cpu", "flags": [], "logicalCores": 2, "usableCores": 2}, "gpu": None, "os": "Linux",
                        "python": "3.11", "libraries": {}},
        "primaryBatchSize": 1, "metric": "Accuracy", "best": "static-int8", "paretoFront": ["baseline", "static-int8"],
        "candidates": [
            _candidate("baseline", 1.0, 900_000, 0.0, parent=None, accepted=False, front=True),
            _candidate("static-int8", 0.3, 240_000, 0.0, front=True, rank=1),
            _candidate("static-int8-copy", 0.3, 240_000, 0.0, rank=2),  # ties with the pick: one label
            _candidate("dynamic-int8", 1.4, 230_000, 0.0, accepted=False,
                       reasons=["slower than the baseline: p50 1.400 ms vs 1.000 ms at batch 1"])]})


@pytest.fixture
def report():
    return digits_report()


def test_the_conclusion_lists_the_front_over_accepted_candidates_and_the_rejected_apart(report):
    text = render_markdown(report)
    conclusion = next(line for line in text.splitlines() if line.startswith("**Best"))
    assert "over the accepted candidates and the baseline): baseline, static-int8." in conclusion
    assert "Rejected, so on no front: dynamic-int8 (slower than the baseline: p50 1.400 ms" in conclusion
    assert "![Pareto front per pair of axes](pareto.png)" in text and "(comparison.png)" in text


def _with_drops(report, *drops):
    wire = report.to_wire()
    for candidate, drop in zip(wire["candidates"], drops):
        candidate["metric"]["drop"] = drop
    return Report.model_validate(wire)


def test_the_pareto_chart_has_a_panel_per_pair_of_axes_with_units_and_one_label_per_tie(report):
    fig = pareto_figure(_with_drops(report, 0.0, 0.5, 0.5, 1.5))
    panels = fig.axes
    assert [(ax.get_xlabel().split(" (")[0], ax.get_ylabel().split(" (")[0]) for ax in panels] == [
        ("p50 latency at batch 1", "Accuracy drop vs baseline"), ("size", "Accuracy drop vs baseline"),
        ("p50 latency at batch 1", "size")]
    assert all("(" in ax.get_xlabel() and "(" in ax.get_ylabel() for ax in panels)
    assert "(ms, log scale)" in panels[0].get_xlabel() and panels[1].get_xlabel() == "size (KiB)"
    assert "(points; lower is better)" in panels[0].get_ylabel()
    for ax in panels:  # every point numbered once; the pick and its copy share a point, so one label
        labels = [t.get_text() for t in ax.texts]
        assert sorted(n for label in labels for n in label.split(",")) == ["1", "2", "3", "4"], labels
        assert any(label.startswith("2,3") for label in labels), labels
    assert sorted(t.get_text() for t in panels[0].texts) == ["1", "2,3", "4"]  # apart on latency
    key = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert key == ["1 baseline", "2 static-int8 (pick)", "3 static-int8-copy", "4 dynamic-int8 (rejected)"]


def test_an_axis_every_candidate_shares_is_named_not_drawn_and_each_candidate_has_its_colour_and_shape(report):
    """Every drop is 0 (the fixture's): one panel, latency against size; the title says the drop is 0
    for all. The rejected cross and the pick's star are drawn over the accepted circles."""
    fig = pareto_figure(report)
    assert [(ax.get_xlabel().split(" (")[0], ax.get_ylabel()) for ax in fig.axes] == [("p50 latency at batch 1", "size (KiB)")]
    assert "not drawn: Accuracy drop 0 for every candidate" in fig._suptitle.get_text()
    points = fig.axes[0].collections
    colours = {tuple(p.get_facecolor()[0]) for p in points}
    assert len(colours) == 4  # a colour per candidate, not one green for every accepted one
    rejected, pick, accepted = points[3], points[1], points[2]
    assert rejected.get_zorder() > accepted.get_zorder() and pick.get_zorder() > accepted.get_zorder()


def test_the_comparison_chart_marks_the_pick_and_draws_the_speedups_range(report, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    wire = report.to_wire()
    wire["candidates"][1]["vsBaseline"]["speedupRange"] = [2.9, 3.6]
    wire["candidates"][1]["latency"]["1"]["noisy"] = True
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    assert plot_comparison(Report.model_validate(wire), tmp_path / "comparison.png")
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["static-int8 (pick, noisy)", "static-int8-copy", "dynamic-int8 (rejected)"]
    assert ax.get_yticklabels()[0].get_fontweight() == "bold"
    from matplotlib.container import ErrorbarContainer

    speed = next(c for c in ax.containers if isinstance(c, ErrorbarContainer))
    low, high = speed.lines[2][0].get_segments()[0][:, 0]
    assert (round(low, 6), round(high, 6)) == (2.9, 3.6)


def test_both_charts_are_written_as_png(report, tmp_path):
    plot_pareto(report, tmp_path / "pareto.png")
    plot_comparison(report, tmp_path / "comparison.png")
    for name in ("pareto.png", "comparison.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_with_nothing_to_compare_no_comparison_chart_is_drawn_or_linked(report, tmp_path):
    alone = report.model_copy(update={"candidates": report.candidates[:1], "best_name": None, "pareto_front_names": ["baseline"]})
    plot_comparison(alone, tmp_path / "comparison.png")
    assert not (tmp_path / "comparison.png").exists() and "comparison.png" not in render_markdown(alone)


def test_a_gpu_candidates_energy_and_compile_time_reach_report_md_and_the_status(report):
    """What only a GPU run writes (tests/test_gpu_runtimes.py makes it for real), rendered from the types."""
    from kompress_jobs.reporting.summary import run_summary

    wire = report.to_wire() | {"runUri": "s3://b/runs/r", "manifestSha256": "ab" * 32}
    wire["candidates"][1] |= {
        "device": "cuda", "precision": "fp16", "pass": "TorchRuntime",
        "energy": {"measurable": True, "source": "NVML NVIDIA H200", "joulesPerCall": 0.0123, "watts": 312.0, "calls": 50},
        "details": {"compileMode": "reduce-overhead", "firstCallSeconds": 41.5}}
    wire["candidates"][2] |= {"energy": {"measurable": False, "reason": "NVML gives no energy counter here"}}
    gpu_report = Report.model_validate(wire)
    text = render_markdown(gpu_report)
    assert "| static-int8 | onnxruntime (fp16, cuda) |" in text
    assert "## Energy" in text and "| static-int8 | 0.0123 | 312 | NVML NVIDIA H200 |" in text
    assert "| static-int8-copy | – | – | not measurable: NVML gives no energy counter here |" in text
    assert "Run through torch.compile (mode reduce-overhead); its first call, which compiles, took 41.50 s" in text
    assert run_summary(gpu_report).best.joules_per_call == 0.0123
