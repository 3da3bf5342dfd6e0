"""Measuring every candidate alike: the task's metric, latency interleaved, the costs beyond latency
(energy on a GPU, a compiled model's first call, peak memory), and per-operator profiles with traces."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..data import Dataset, batch_of
from ..measurement.benchmark import measure_latency
from ..measurement.candidates import Candidate, fail_benchmarked, score_each
from ..measurement.memory_probe import Probe, peak_memory
from ..measurement.profiling import energy_per_call, profile_model, trace_key
from ..measurement.quality import Scorer, predict
from ..measurement.selection import primary_batch_size
from ..planning.plan import BASELINE
from ..runtimes import Processor, Runner
from ..spec.schema import ModelOptimizationSpec
from . import language_model

Progress = Callable[[str], None]


def measure(candidates: list[Candidate], runners: dict[str, Runner], dataset: Dataset, spec: ModelOptimizationSpec,
            progress: Progress) -> list[Candidate]:
    """Score, time and cost every candidate that has a model; returns those measured (a candidate
    may fail at inference)."""
    generative = spec.task.generative
    measured = [c for c in candidates if c.measured]
    progress(f"evaluating {len(measured)} model(s) on {len(dataset.evaluation)} "
             f"{'windows of text' if generative else 'samples'}")
    (language_model.evaluate if generative else evaluate)(measured, runners, dataset, spec)
    measured = [c for c in candidates if c.measured]
    batch = primary_batch_size(spec.goals, spec.benchmark)
    progress(f"benchmarking {len(measured)} model(s) at batch sizes {spec.benchmark.batch_sizes}, "
             f"{spec.benchmark.rounds} interleaved rounds (up to {spec.benchmark.round_cap} at batch {batch} if noisy)")
    if generative:
        measured = language_model.benchmark(measured, runners, dataset, spec, progress)
    else:
        failures: dict[str, str] = {}
        latencies = measure_latency({c.name: runners[c.name] for c in measured}, dataset.evaluation.inputs,
                                    spec.benchmark, progress, judged_at=batch, failures=failures)
        measured = fail_benchmarked(measured, runners, failures)
        for c in measured:
            c.latency = latencies[c.name]
        device_figures(measured, runners, dataset, batch, progress)
    if spec.benchmark.peak_memory or spec.goals.max_memory is not None:
        peak_memories(measured, dataset, spec, batch, generative, progress)
    return measured


def evaluate(measured: list[Candidate], runners: dict[str, Runner], dataset: Dataset, spec: ModelOptimizationSpec) -> None:
    split = dataset.evaluation
    reference = predict(runners[BASELINE], split, spec.benchmark.evaluation_batch_size)
    scorer = Scorer(spec.task, spec.goals.accuracy_drop_mode, split, reference)
    score_each(measured, runners, lambda c: scorer.judge(
        reference if c.is_baseline else predict(runners[c.name], split, spec.benchmark.evaluation_batch_size)))


def device_figures(measured: list[Candidate], runners: dict[str, Runner], dataset: Dataset, batch: int,
                    progress: Progress) -> None:
    """What a candidate costs beyond its latency: the energy per call of every one on a GPU (NVML), and
    a compiled model's first call (its compilation), reported apart from the latency it buys."""
    sample = None
    for c in measured:
        runner = runners[c.name]
        if runner.compile_mode and runner.first_call_seconds is not None:
            c.details = (c.details or {}) | {"compileMode": runner.compile_mode,
                                             "firstCallSeconds": round(runner.first_call_seconds, 3)}
        if runner.device is Processor.CUDA:
            sample = sample if sample is not None else batch_of(dataset.evaluation.inputs, batch)
            progress(f"energy of {c.name} on the GPU at batch {batch}")
            c.energy = energy_per_call(runner, sample)


def peak_memories(measured: list[Candidate], dataset: Dataset, spec: ModelOptimizationSpec, batch: int, generative: bool,
                 progress: Progress) -> None:
    """Each candidate's peak resident memory, in a process of its own (memory_probe.py)."""
    if generative:
        from ..llm.corpus import INPUT, PROMPTS

        probe = Probe({INPUT: dataset.split(PROMPTS).inputs[INPUT][:batch]}, spec.benchmark.threads,
                      spec.benchmark.generation.new_tokens)
    else:
        probe = Probe(batch_of(dataset.evaluation.inputs, batch), spec.benchmark.threads)
    for c in measured:
        progress(f"peak memory of {c.name}, in a process of its own")
        c.memory = peak_memory(c.model, probe)


def profiles(models: list[Candidate], runners: dict[str, Runner], dataset: Dataset, spec: ModelOptimizationSpec,
              batch: int, progress: Progress, scratch: Path) -> dict:
    """Where the time goes, for the baseline and the pick: operators (a trace file each, published
    under the key of `trace`) and energy per call."""
    sample = batch_of(dataset.evaluation.inputs, batch)
    profiles = {}
    for c in models:
        progress(f"profiling {c.name} at batch {batch}")
        key = trace_key(c.name)
        profile = profile_model(c.model, runners[c.name], sample, spec.benchmark.threads, trace_path=scratch / key)
        profiles[c.name] = profile | ({"trace": key} if profile.pop("traced", False) else {}) | {
            "energy": energy_per_call(runners[c.name], sample)}
    return profiles
