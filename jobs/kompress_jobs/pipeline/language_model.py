"""The pipeline's load, evaluate and benchmark stages for task LanguageModeling; pipeline.py calls
these in place of its own for a causal language model, and everything after them (selection,
report, store, promotion, status) is the same for every task."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..measurement.candidates import Candidate, fail_benchmarked, score_each
from ..data import Dataset, Split, rows
from ..errors import DataError
from ..modelfile import ModelFile
from ..planning.plan import BASELINE
from ..runtimes import Runner, make_runner
from ..spec.schema import ModelOptimizationSpec
from ..measurement.selection import primary_batch_size
from ..llm.benchmark import continuation_agreement, measure_generation
from ..llm.corpus import INPUT, PROMPTS, load_corpus, prompts
from ..llm.loading import chat_frame, load_tokenizer
from ..llm.quality import LanguageModelScorer


def load(spec: ModelOptimizationSpec, model_path: Path, data_path: Path,
         progress: Callable[[str], None]) -> tuple[Dataset, ModelFile, Runner]:
    """The text as windows of token ids, the model and its runner; DataError naming the field when
    the text or the prompt do not fit the model."""
    model = ModelFile(model_path, spec.model.format, generative=True)
    progress(f"loading tokenizer and model {model_path} ({spec.model.format.value})")
    tokenizer = load_tokenizer(model)
    runner = make_runner(model, threads=spec.benchmark.threads)
    progress(f"loading text {data_path}")
    dataset = load_corpus(data_path, spec.data, spec.task, tokenizer)
    limit = runner.max_positions
    if limit and spec.task.context_length > limit:
        raise DataError(f"task.contextLength {spec.task.context_length} is longer than the model's context ({limit} positions)")
    generation = spec.benchmark.generation
    if limit and generation.prompt_tokens + generation.new_tokens > limit:
        raise DataError(f"benchmark.generation.promptTokens + newTokens ({generation.prompt_tokens} + "
                        f"{generation.new_tokens}) is longer than the model's context ({limit} positions)")
    runner.check_input(rows(dataset.evaluation.inputs, 0, 1))
    frame = chat_frame(tokenizer) if generation.chat_template else None
    dataset.splits[PROMPTS] = Split({INPUT: prompts(dataset, max(spec.benchmark.batch_sizes), generation.prompt_tokens, frame)})
    return dataset, model, runner


def evaluate(measured: list[Candidate], runners: dict[str, Runner], dataset: Dataset, spec: ModelOptimizationSpec) -> None:
    scorer = LanguageModelScorer(spec.task, spec.goals.accuracy_drop_mode, dataset.evaluation, runners[BASELINE])
    score_each(measured, runners, lambda c: scorer.baseline() if c.is_baseline else scorer.judge(runners[c.name]))


def benchmark(measured: list[Candidate], runners: dict[str, Runner], dataset: Dataset, spec: ModelOptimizationSpec,
              progress: Callable[[str], None]) -> list[Candidate]:
    """Time every candidate's generation; returns those that did not fail while timed."""
    failures: dict[str, str] = {}
    latencies, continuations = measure_generation({c.name: runners[c.name] for c in measured}, dataset, spec.benchmark,
                                                  progress, judged_at=primary_batch_size(spec.goals, spec.benchmark),
                                                  failures=failures)
    measured = fail_benchmarked(measured, runners, failures)
    reference = continuations[BASELINE]
    for c in measured:
        c.latency = latencies[c.name]
        c.fidelity["greedyAgreement"] = continuation_agreement(continuations[c.name], reference)
    return measured
