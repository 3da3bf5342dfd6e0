"""The CLI's display: a live view at a terminal, timestamped lines elsewhere, the results table."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from kompress_jobs.reporting.console import ProgressDisplay, print_results

pytestmark = pytest.mark.unit

STEPS = ["loading data d.npz", "pass 1/2 onnx-export (OnnxExport) on baseline", "  onnx-export: epoch 1/2: loss 0.1",
         "benchmarking 2 model(s) at batch sizes [1], 3 interleaved rounds", "batch 1: round 1/3 done"]


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_off_a_terminal_every_line_is_printed_with_a_utc_timestamp_and_the_elapsed_time():
    out = Pipe()
    with ProgressDisplay(stream=out) as progress:
        for step in STEPS:
            progress(step)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(STEPS)
    for line, step in zip(lines, STEPS):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[ *\d+\.\d+s\] " + re.escape(step), line), line


def test_at_a_terminal_each_finished_step_stays_as_one_line_with_its_duration():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with ProgressDisplay(console=console) as progress:
        for step in STEPS:
            progress(step)
        progress("  onnx-export: failed: boom")
    text = screen.getvalue()
    for step in ("loading data d.npz", "pass 1/2 onnx-export (OnnxExport) on baseline", "benchmarking 2 model(s)"):
        assert re.search(r"✓ " + re.escape(step) + r".*  \d+\.\ds", text), text
    assert "onnx-export: failed: boom" in text  # failures stay in the scrollback


def test_quiet_prints_nothing():
    out = Pipe()
    with ProgressDisplay(stream=out, quiet=True) as progress:
        progress("loading data")
    assert out.getvalue() == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _report():
    from kompress_jobs.reporting.results import Report

    latency = {"batch_size": 1, "p50_ms": 0.5, "p95_ms": 0.6, "p99_ms": 0.7, "mean_ms": 0.5, "throughput_per_second": 2000,
               "round_medians_ms": [0.5], "samples": 10}
    measured = {"outcome": "Measured", "technique": "quantization", "runtime": "onnxruntime", "precision": "int8",
                "metric": {"value": 0.97, "drop": 0.4}, "latency": {"1": latency}, "sizeBytes": 2048,
                "vsBaseline": {"reference": "baseline", "batchSize": 1, "speedupP50": 2.5, "sizeReduction": 3.9}}
    return Report.model_validate({
        "run": {"id": "r", "name": "n", "startedAt": "t0", "finishedAt": "t1", "kompressVersion": "0"}, "spec": {},
        "fingerprint": {"cpu": {"model": "cpu", "flags": [], "logicalCores": 2, "usableCores": 2}, "gpu": None, "os": "Linux",
                        "python": "3.11", "libraries": {}}, "benchmark": {}, "inputs": {}, "primaryBatchSize": 1, "metric": "accuracy", "best": "static-int8",
        "candidates": [
            {**measured, "name": "baseline", "parent": None, "runtime": "pytorch", "precision": "fp32"},
            {**measured, "name": "static-int8", "parent": "onnx-export", "rank": 1, "accepted": True},
            {"name": "tensorrt", "technique": "runtime", "outcome": "NotApplicable", "error": "no GPU | none visible"}]})


def test_at_a_terminal_the_results_table_shows_every_candidate_and_the_pick(monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    screen = Terminal()
    print_results(_report(), screen)
    text = screen.getvalue()
    assert "static-int8" in text and "BEST" in text and "2.50x" in text and "NotApplicable: no GPU" in text
    assert "Best: static-int8" in text


def test_off_a_terminal_the_results_are_a_plain_markdown_table():
    out = Pipe()
    print_results(_report(), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "accuracy and latency at batch 1, against the baseline"
    table = [line for line in lines if line.startswith("|")]
    assert table[0].split(" | ")[:3] == ["| candidate", "runtime", "accuracy"] and set(table[1]) <= set("|-:")
    assert len(table) == 2 + 3 and all(line.count("|") - line.count("\\|") == table[0].count("|") for line in table)
    assert "| static-int8 | onnxruntime int8 | 0.9700 | +0.40 | 0.500 | 2.50x | 2.0 | 3.90x | BEST |" in lines
    assert "NotApplicable: no GPU \\| none visible |" in table[-1]  # a | in a cell does not split it
    assert not any(ch in out.getvalue() for ch in "━│┃─") and max(map(len, lines)) < 120  # no box drawing, no padding
    assert lines[-1] == "Best: static-int8 (speedup: the baseline's p50 latency / the candidate's)"
