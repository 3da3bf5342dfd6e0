"""Honest numbers: a noisy measurement is measured again (more interleaved rounds, up to
benchmark.maxRounds) and, still noisy, flagged in report.md, the console, the status and its
condition; the speedup carries its range from round to round."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from kompress_jobs.measurement.benchmark import measure_latency, median_interval, spread_of
from kompress_jobs.runtimes import Runner
from kompress_jobs.spec.goals import Benchmark
from kompress_jobs.reporting.report import paired_range

pytestmark = pytest.mark.unit


class Sleeper(Runner):
    """A runner whose call takes `seconds(round)`: the round is counted from its calls."""

    def __init__(self, seconds, iterations: int, warmup: int):
        self.seconds, self.iterations, self.warmup, self.calls = seconds, iterations, warmup, 0

    def __call__(self, batch):
        timed = max(self.calls - self.warmup, 0)
        self.calls += 1
        time.sleep(self.seconds(timed // self.iterations))
        return batch


def test_the_median_interval_is_the_extremes_up_to_seven_rounds_and_narrows_after():
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)  # 93.75 % with 5 values
    assert median_interval([1.0, 9.0]) == (1.0, 9.0)  # too few for 90 %: the extremes
    assert median_interval([float(v) for v in range(1, 9)]) == (2.0, 7.0)  # 8 values: one dropped at each end
    assert median_interval([float(v) for v in range(1, 16)]) == (4.0, 12.0)  # 15 values: 96.5 %
    assert spread_of([1.0, 1.0, 2.0]) == 1.0 and spread_of([]) == 0.0


def test_a_forced_noisy_measurement_is_measured_again_up_to_the_cap_and_flagged():
    """One runner takes 1 ms in even rounds and 6 ms in odd ones; the other 2 ms always. After the 3
    rounds asked for, the noisy one makes every runner measure more (interleaved), up to maxRounds 6;
    only the noisy one is flagged. At a batch size not judged at, no round is added."""
    settings = Benchmark(batch_sizes=[1, 2], warmup=1, iterations=3, rounds=3, max_rounds=6, tie_tolerance=0.5)
    runners = {"noisy": Sleeper(lambda r: 0.001 if r % 2 == 0 else 0.006, 3, 1),
               "quiet": Sleeper(lambda r: 0.002, 3, 1)}
    inputs = {"x": np.zeros((4, 2), dtype=np.float32)}
    latency = measure_latency(runners, inputs, settings, judged_at=1)
    noisy, quiet = latency["noisy"][1], latency["quiet"][1]
    assert len(noisy.round_medians_ms) == len(quiet.round_medians_ms) == 6
    assert noisy.noisy and noisy.spread > 0.5
    assert not quiet.noisy and quiet.spread <= 0.5
    assert len(latency["noisy"][2].round_medians_ms) == 3


def test_a_quiet_measurement_takes_only_the_rounds_asked_for():
    settings = Benchmark(batch_sizes=[1], warmup=0, iterations=2, rounds=3, tie_tolerance=0.9)
    latency = measure_latency({"a": Sleeper(lambda r: 0.002, 2, 0)}, {"x": np.zeros((1, 1))}, settings, judged_at=1)
    assert len(latency["a"][1].round_medians_ms) == 3 and not latency["a"][1].noisy


def test_max_rounds_below_rounds_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"maxRounds \(2\) must be at least rounds \(5\)"):
        Benchmark(rounds=5, max_rounds=2)
    assert Benchmark(rounds=4).round_cap == 12


def test_the_speedup_range_comes_from_the_paired_rounds():
    # the baseline and the candidate slowed together in round 2: its ratio stays 2×
    assert paired_range([2.0, 4.0, 2.2], [1.0, 2.0, 1.0]) == [2.0, 2.2]
    assert paired_range([2.0, 4.0], [1.0]) is None  # not measured in the same rounds


@pytest.fixture
def noisy_report():
    from kompress_jobs.reporting.results import Report
    from tests.test_charts import digits_report

    wire = digits_report().to_wire()
    best = wire["candidates"][1]
    best["latency"]["1"] |= {"noisy": True, "spread": 1.05, "round_medians_ms": [0.2, 0.3, 0.5, 0.3, 0.25]}
    best["vsBaseline"]["speedupRange"] = [2.0, 5.0]
    return Report.model_validate(wire)


def test_a_noisy_pick_is_flagged_in_the_report_the_console_the_status_and_its_condition(noisy_report):
    from kompress_jobs.reporting.console import print_results
    from kompress_jobs.reporting.report import render_markdown
    from kompress_jobs.reporting.summary import run_summary
    from kompress_operator.decisions import finish_phase
    from kompress_operator.jobstate import JobOutcome

    text = render_markdown(noisy_report)
    assert "**105% noisy**" in text and "3.33× (2.00–5.00)" in text
    conclusion = next(line for line in text.splitlines() if line.startswith("**Best"))
    assert "**The pick is uncertain**: static-int8's latency spread 105% exceeds the tie tolerance 5% after 5 round(s)" in conclusion

    out = io.StringIO()
    print_results(noisy_report, out)
    assert "3.33x noisy" in out.getvalue() and "The pick is uncertain: static-int8's latency spread 105%" in out.getvalue()

    summary = run_summary(noisy_report.model_copy(update={"run_uri": "file:///runs/r", "manifest_sha256": "ab" * 32}))
    assert summary.best.noisy is True and summary.baseline.noisy is None
    assert summary.to_wire()["best"]["noisy"] is True
    message = finish_phase(JobOutcome(state="Succeeded", result=summary)).message
    assert message.endswith("; uncertain: the latency of static-int8 stayed noisy (see report.md)")


def test_a_quiet_run_says_nothing_of_noise(noisy_report):
    from kompress_jobs.reporting.report import render_markdown

    wire = noisy_report.to_wire()
    wire["candidates"][1]["latency"]["1"]["noisy"] = False
    text = render_markdown(type(noisy_report).model_validate(wire))
    assert "noisy**" not in text and "uncertain" not in text
