"""The generation benchmark: every candidate generates the same greedy continuation of the same
prompts from the evaluation text (in the chat template with benchmark.generation.chatTemplate), interleaved round after round (the order rotates) as every other
benchmark in kompress. A decode step is one timed call: its percentiles are the latency figures and
the batch divided by its mean is the decode throughput in tokens per second; the prefill of the
prompt and the choice of the first token is the time to first token, its median over the rounds."""

from __future__ import annotations

import statistics
from typing import Callable

import numpy as np

from ..measurement.benchmark import Latency, each, flag_noise, rounds, summarize
from ..data import Dataset
from ..spec.goals import Benchmark
from ..runtimes.generative import GenerativeRunner
from .corpus import INPUT, PROMPTS


def measure_generation(runners: dict[str, GenerativeRunner], dataset: Dataset, settings: Benchmark,
                       progress: Callable[[str], None] = lambda _: None, judged_at: int | None = None,
                       failures: dict[str, str] | None = None,
                       ) -> tuple[dict[str, dict[int, Latency]], dict[str, np.ndarray]]:
    """(latencies by candidate and batch size, each candidate's tokens at the first batch size); at
    `judged_at`, more rounds while a measurement is noisy (benchmark.rounds). With `failures`, a
    runner that fails is left out and its error recorded there, as measure_latency does."""
    generation, names = settings.generation, list(runners)
    results: dict[str, dict[int, Latency]] = {name: {} for name in names}
    continuations: dict[str, np.ndarray] = {}
    for batch_size in settings.batch_sizes:
        batch = dataset.split(PROMPTS).inputs[INPUT][:batch_size]  # made once by stages.load

        def generated(name: str) -> None:
            done = runners[name].generate(batch, generation.new_tokens)  # timed where the model runs
            cpu_ns[name] += done.cpu_ns
            steps[name].extend(done.step_ns)
            medians[name].append(statistics.median(done.step_ns) / 1e6)
            first[name].append(done.first_token_ns / 1e6)
            continuations.setdefault(name, done.tokens)

        if settings.warmup:
            each(names, failures, lambda name: runners[name].generate(batch, min(8, generation.new_tokens)))
        steps = {name: [] for name in names}
        medians = {name: [] for name in names}
        first = {name: [] for name in names}
        cpu_ns = dict.fromkeys(names, 0)
        for round_index in rounds(settings, medians, extend=batch_size == judged_at):
            if not names:
                break
            shift = round_index % len(names)
            each(names, failures, generated, order=names[shift:] + names[:shift])
            for gone in set(medians) - set(names):
                del medians[gone]
            progress(f"generation at batch {batch_size}: round {round_index + 1}/{max(settings.rounds, round_index + 1)} done")
        for name in names:
            latency = summarize(batch_size, steps[name], medians[name])
            # CPU time of the whole generation over its decode steps would overstate a step: spread it
            # over every token generated, the first included
            calls = len(medians[name]) * generation.new_tokens
            results[name][batch_size] = flag_noise(latency, settings).model_copy(update={
                "time_to_first_token_ms": statistics.median(first[name]),
                "cpu_ms_per_call": cpu_ns[name] / calls / 1e6})
    return {name: results[name] for name in names}, {name: continuations[name] for name in names}


def continuation_agreement(tokens: np.ndarray, reference: np.ndarray) -> float:
    """Share of generated tokens before the first that differs from the reference's, over all rows:
    1.0 when the greedy continuation is the same."""
    same = 0
    for mine, theirs in zip(tokens, reference):
        differs = np.flatnonzero(mine != theirs)
        same += int(differs[0]) if len(differs) else len(mine)
    return same / tokens.size
