"""Judge candidates against the goals, keep the Pareto front, and rank the accepted ones.

Differences inside the benchmark's tie tolerance are treated as ties and broken by the next
criterion, so the pick does not hang on timing noise.
"""

from __future__ import annotations

from typing import Callable

from .candidates import Candidate
from ..spec.goals import Benchmark, Goals, Objective
from .quality import drop_unit
from ..spec.tasks import Metric
from .ties import SIZE_TIE, Criterion, T, pick_within_ties


def primary_batch_size(goals: Goals, benchmark: Benchmark) -> int:
    if goals.latency and goals.latency.batch_size:
        return goals.latency.batch_size
    return benchmark.batch_sizes[0]


def judge(candidates: list[Candidate], goals: Goals, benchmark: Benchmark, metric: Metric) -> None:
    """Fill in each measured candidate's rejected_reasons (empty means accepted)."""
    baseline = next(c for c in candidates if c.is_baseline)
    batch = primary_batch_size(goals, benchmark)
    base_p50 = baseline.latency[batch].p50_ms
    unit = drop_unit(metric, goals.accuracy_drop_mode)
    unit = f" {unit}" if unit else ""
    for candidate in candidates:
        if candidate.is_baseline or candidate.contender or not candidate.measured:
            continue
        reasons = []
        if goals.max_accuracy_drop is not None and candidate.metric_drop > goals.max_accuracy_drop:
            reasons.append(f"{metric.value} drop {candidate.metric_drop:.3g}{unit} exceeds {goals.max_accuracy_drop:g}{unit}")
        if goals.latency:
            value = candidate.latency[batch].percentile_ms(goals.latency.percentile.value)
            if value > goals.latency.max_milliseconds:
                reasons.append(f"{goals.latency.percentile.value} latency {value:.3f} ms at batch {batch} "
                               f"exceeds {goals.latency.max_milliseconds:g} ms")
        reasons += _generation_reasons(candidate.latency[batch], goals, batch)
        if goals.max_size_bytes is not None and candidate.size_bytes > goals.max_size_bytes:
            reasons.append(f"size {candidate.size_bytes} B exceeds {goals.max_size_bytes} B")
        reasons += _memory_reasons(candidate, goals)
        p50 = candidate.latency[batch].p50_ms
        if p50 > base_p50 * (1 + benchmark.tie_tolerance):
            reasons.append(f"slower than the baseline: p50 {p50:.3f} ms vs {base_p50:.3f} ms at batch {batch}")
        candidate.rejected_reasons = reasons


def _memory_reasons(candidate: Candidate, goals: Goals) -> list[str]:
    limit = goals.max_memory_bytes
    if limit is None:
        return []
    memory = candidate.memory or {}
    if not memory.get("measurable"):  # a goal that cannot be checked is not met
        return [f"peak memory not measured ({memory.get('reason', 'no probe ran')}), so maxMemory cannot be checked"]
    if memory["peakBytes"] > limit:
        return [f"peak memory {memory['peakBytes'] / 2**20:.0f} MiB exceeds {limit / 2**20:.0f} MiB"]
    return []


def _generation_reasons(stats, goals: Goals, batch: int) -> list[str]:
    """A language model's goals on decode speed and time to first token (llm/benchmark.py)."""
    reasons = []
    if goals.min_tokens_per_second is not None and stats.throughput_per_second < goals.min_tokens_per_second:
        reasons.append(f"{stats.throughput_per_second:.1f} decode tokens/s at batch {batch} is below {goals.min_tokens_per_second:g}")
    first = stats.time_to_first_token_ms
    if goals.max_time_to_first_token_ms is not None and first is not None and first > goals.max_time_to_first_token_ms:
        reasons.append(f"time to first token {first:.0f} ms at batch {batch} exceeds {goals.max_time_to_first_token_ms:g} ms")
    return reasons


def mark_pareto_front(candidates: list[Candidate], batch: int) -> list[Candidate]:
    """The candidates a user may choose between (the accepted ones and the baseline) that none of
    them beats on all of latency p50, size and metric drop. A rejected candidate is never on the
    front, however small or fast: it broke a goal (judge first)."""
    eligible = [c for c in candidates if c.accepted or (c.is_baseline and c.measured)]
    front = non_dominated(eligible, lambda c: (c.latency[batch].p50_ms, float(c.size_bytes), c.metric_drop))
    for candidate in candidates:
        candidate.pareto_optimal = any(candidate is c for c in front)
    return front


def non_dominated(items: list[T], point: Callable[[T], tuple[float, ...]]) -> list[T]:
    """The items no other item beats: at most as large on every axis of `point` and smaller on one
    (every axis minimized). The front report.json keeps, and charts.py's per pair of axes."""
    points = [(item, point(item)) for item in items]

    def beats(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return [item for item, mine in points if not any(beats(other, mine) for o, other in points if o is not item)]


def rank(candidates: list[Candidate], goals: Goals, benchmark: Benchmark) -> list[Candidate]:
    """Accepted candidates best first; sets each one's rank. Empty when none met the goals."""
    batch = primary_batch_size(goals, benchmark)
    latency: Criterion = (lambda c: c.latency[batch].p50_ms, lambda best: best * benchmark.tie_tolerance)
    size: Criterion = (lambda c: float(c.size_bytes), lambda best: best * SIZE_TIE)
    quality: Criterion = (lambda c: c.metric_drop, lambda best: 0.0)
    order = {
        Objective.LATENCY: [latency, size, quality],
        Objective.SIZE: [size, latency, quality],
        Objective.ACCURACY: [quality, latency, size],
    }[goals.optimize_for]

    pool = [c for c in candidates if c.accepted]
    ranked = []
    while pool:
        best = pick_within_ties(pool, order)
        ranked.append(best)
        pool.remove(best)
    for position, candidate in enumerate(ranked, start=1):
        candidate.rank = position
    return ranked
