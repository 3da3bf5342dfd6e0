"""Latency and throughput of every candidate, measured the same way in the same process.

Candidates are measured interleaved: each round runs every candidate in turn (the order rotates
between rounds), so a noisy neighbour or a frequency change hits all of them alike. Percentiles
are over all timed calls; the spread of the per-round medians says how much to trust a difference.
A measurement whose spread exceeds the tie tolerance is noisy: at the batch size the pick is judged
at, more rounds are measured (all candidates, still interleaved) until none is noisy or
benchmark.maxRounds is reached, and one still noisy is flagged in the report and the status.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..data import Inputs, batch_of
from ..errors import first_line
from ..spec.goals import Benchmark
from ..runtimes import Runner


class Latency(BaseModel):
    """One candidate's latency at one batch size, as report.json holds it (snake_case, as it always has)."""

    model_config = ConfigDict(extra="allow")

    batch_size: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_second: float
    round_medians_ms: list[float]
    samples: int
    # The process's CPU time (every thread: a runtime's pool included) per call over the timed calls:
    # above the latency when a call keeps several cores busy, below it when it waits.
    cpu_ms_per_call: float | None = None
    # The width of a ≥ 90 % confidence interval of the median round (median_interval) over that median:
    # (max − min) / median up to 7 rounds, narrower as rounds are added.
    spread: float = 0.0
    noisy: bool = Field(False, description="Its spread exceeded benchmark.tieTolerance after every round allowed: "
                        "a difference against it is uncertain.")
    # A causal language model (llm/benchmark.py): a call is one decode step, the throughput is tokens
    # per second, and the prefill of the prompt is timed apart.
    time_to_first_token_ms: float | None = None

    @classmethod
    def of_rounds(cls, round_medians_ms: list[float], **figures) -> "Latency":
        return cls(round_medians_ms=round_medians_ms, spread=spread_of(round_medians_ms), **figures)

    def percentile_ms(self, name: str) -> float:
        return {"P50": self.p50_ms, "P95": self.p95_ms, "P99": self.p99_ms}[name]

    def to_wire(self) -> dict:
        return self.model_dump(mode="json", exclude={"time_to_first_token_ms"} if self.time_to_first_token_ms is None else None)


def median_interval(values: list[float], confidence: float = 0.9) -> tuple[float, float]:
    """An interval that holds the median of the distribution `values` come from with at least
    `confidence` (order statistics: no assumption on the distribution), or the extremes where too
    few values reach it. [min, max] up to 7 values (93.75 % at 5); from 8 on, inner values."""
    ordered, n = sorted(values), len(values)
    tail = (1 - confidence) / 2
    cut = 0  # values dropped at each end: the interval covers the median unless ≥ n − cut fall on one side
    while 2 * (cut + 1) < n and sum(math.comb(n, k) for k in range(cut + 2)) / 2 ** n <= tail:
        cut += 1
    return ordered[cut], ordered[n - 1 - cut]


def spread_of(round_medians: list[float]) -> float:
    """The relative width of the median round's confidence interval: the noise a difference must beat."""
    if not round_medians:
        return 0.0
    low, high = median_interval(round_medians)
    return (high - low) / statistics.median(round_medians)


def rounds(settings: Benchmark, medians: dict[str, list[float]], extend: bool) -> Iterator[int]:
    """Round indices: benchmark.rounds, then with `extend` more while any candidate's round medians
    are noisy, up to benchmark.maxRounds."""
    index = 0
    while index < settings.rounds or (extend and index < settings.round_cap and any(
            spread_of(m) > settings.tie_tolerance for m in medians.values())):
        yield index
        index += 1


def flag_noise(latency: Latency, settings: Benchmark) -> Latency:
    return latency.model_copy(update={"noisy": latency.spread > settings.tie_tolerance})


def measure_latency(
    runners: dict[str, Runner],
    inputs: Inputs,
    settings: Benchmark,
    progress: Callable[[str], None] = lambda _: None,
    judged_at: int | None = None,
    failures: dict[str, str] | None = None,
) -> dict[str, dict[int, Latency]]:
    """Every runner at every batch size; at `judged_at` (the batch size the selection judges at),
    more rounds while a measurement is noisy. With `failures`, a runner that fails (a contained
    runtime that crashed) is left out of the later rounds and of the result, its error recorded
    there by name; without, its error ends the benchmark."""
    names = list(runners)
    results: dict[str, dict[int, Latency]] = {name: {} for name in names}
    for batch_size in settings.batch_sizes:
        batch = batch_of(inputs, batch_size)

        def warm(name: str) -> None:
            for _ in range(settings.warmup):
                runners[name](batch)

        def timed(name: str) -> None:
            timings, cpu = runners[name].time_calls(batch, settings.iterations)
            cpu_ns[name] += cpu
            samples[name].extend(timings)
            medians[name].append(statistics.median(timings) / 1e6)

        each(names, failures, warm)
        samples: dict[str, list[int]] = {name: [] for name in names}
        medians: dict[str, list[float]] = {name: [] for name in names}
        cpu_ns: dict[str, int] = {name: 0 for name in names}
        for round_index in rounds(settings, medians, extend=batch_size == judged_at):
            if not names:
                break
            shift = round_index % len(names)
            each(names, failures, timed, order=names[shift:] + names[:shift])
            for gone in set(medians) - set(names):
                del medians[gone]
            progress(f"batch {batch_size}: round {round_index + 1}/{max(settings.rounds, round_index + 1)} done")
        for name in names:
            results[name][batch_size] = flag_noise(summarize(batch_size, samples[name], medians[name], cpu_ns[name]), settings)
    return {name: results[name] for name in names}


def each(names: list[str], failures: dict[str, str] | None, action: Callable[[str], None],
         order: list[str] | None = None) -> None:
    """`action(name)` for each of `names` (in `order`); with `failures`, one that raises is recorded
    there and removed from `names`, and the others go on; without, its error ends the benchmark."""
    for name in list(names if order is None else order):
        try:
            action(name)
        except Exception as exc:
            if failures is None:
                raise
            failures[name] = first_line(exc)
            names.remove(name)
def summarize(batch_size: int, timings_ns: list[int], round_medians_ms: list[float], cpu_ns: int | None = None) -> Latency:
    ms = np.asarray(timings_ns, dtype=np.float64) / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    mean = float(ms.mean())
    return Latency.of_rounds(
        [round(m, 6) for m in round_medians_ms],
        batch_size=batch_size,
        p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99), mean_ms=mean,
        throughput_per_second=batch_size / (mean / 1e3),
        samples=len(ms),
        cpu_ms_per_call=None if cpu_ns is None else cpu_ns / len(ms) / 1e6,
    )
