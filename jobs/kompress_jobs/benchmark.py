"""Latency and throughput of every candidate, measured the same way in the same process.

Candidates are measured interleaved: each round runs every candidate in turn (the order rotates
between rounds), so a noisy neighbour or a frequency change hits all of them alike. Percentiles
are over all timed calls; the spread of the per-round medians says how much to trust a difference.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict

from .data import Inputs, batch_of
from .goals import Benchmark
from .runtimes import Runner


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
    spread: float = 0.0  # (max - min) / median of the per-round medians: the run-to-run noise
    # A causal language model (llm/benchmark.py): a call is one decode step, the throughput is tokens
    # per second, and the prefill of the prompt is timed apart.
    time_to_first_token_ms: float | None = None

    @classmethod
    def of_rounds(cls, round_medians_ms: list[float], **figures) -> "Latency":
        medians = round_medians_ms
        spread = (max(medians) - min(medians)) / statistics.median(medians) if medians else 0.0
        return cls(round_medians_ms=medians, spread=spread, **figures)

    def percentile_ms(self, name: str) -> float:
        return {"P50": self.p50_ms, "P95": self.p95_ms, "P99": self.p99_ms}[name]

    def to_wire(self) -> dict:
        return self.model_dump(mode="json", exclude={"time_to_first_token_ms"} if self.time_to_first_token_ms is None else None)


def measure_latency(
    runners: dict[str, Runner],
    inputs: Inputs,
    settings: Benchmark,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[int, Latency]]:
    names = list(runners)
    results: dict[str, dict[int, Latency]] = {name: {} for name in names}
    for batch_size in settings.batch_sizes:
        batch = batch_of(inputs, batch_size)
        for name in names:
            for _ in range(settings.warmup):
                runners[name](batch)
        samples: dict[str, list[int]] = {name: [] for name in names}
        medians: dict[str, list[float]] = {name: [] for name in names}
        cpu_ns: dict[str, int] = {name: 0 for name in names}
        for round_index in range(settings.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                run = runners[name]
                timings, cpu_start = [], time.process_time_ns()
                for _ in range(settings.iterations):
                    start = time.perf_counter_ns()
                    run(batch)
                    timings.append(time.perf_counter_ns() - start)
                cpu_ns[name] += time.process_time_ns() - cpu_start
                samples[name].extend(timings)
                medians[name].append(statistics.median(timings) / 1e6)
            progress(f"batch {batch_size}: round {round_index + 1}/{settings.rounds} done")
        for name in names:
            results[name][batch_size] = summarize(batch_size, samples[name], medians[name], cpu_ns[name])
    return results


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
