"""The pass chain: each step runs on an earlier candidate; a pass that fails is recorded on its
candidate and the others go on."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Callable

from ..data import Dataset
from ..errors import KompressError
from ..measurement.candidates import Candidate, Outcome
from ..passes import PassContext
from ..planning.plan import BASELINE, Step
from ..runtimes import Runner, make_runner
from ..spec.schema import ModelOptimizationSpec
from ..storage.store import ArtifactStore
from .budget import BudgetClock

Progress = Callable[[str], None]


def ancestry(steps: list[Step], name: str) -> set[str]:
    """`name` and the passes it is made from (what a tuned chain starting there needs)."""
    by_name, names = {step.name: step for step in steps}, set()
    while name in by_name:
        names.add(name)
        name = by_name[name].input
    return names


def run_passes(steps: list[Step], known: dict[str, Candidate], folder: Path, *, dataset: Dataset,
                spec: ModelOptimizationSpec, runners: dict[str, Runner] | None, progress: Progress, fetch,
                on_epoch=None, quiet: bool = False, budget: BudgetClock | None = None,
                kept: ArtifactStore | None = None) -> list[Candidate]:
    """Run steps in order, each on an earlier candidate (from `known` or this call); a pass that
    fails is recorded on its candidate and the others go on. Runners for the new models go into
    `runners` (None: a tuning trial, which measures its one model itself). A pass that would
    start after `budget` is spent is skipped, saying so; `kept`: what passes keep between runs."""
    by_name = dict(known)
    produced = []
    for number, step in enumerate(steps, start=1):
        optimization, parent = step.optimization, by_name[step.input]
        candidate = Candidate(
            name=step.name, technique=optimization.technique, pass_type=optimization.type, parent=parent.name,
            lineage=parent.lineage + [{"name": step.name, "pass": optimization.type, "parameters": optimization.parameters}],
        )
        by_name[step.name] = candidate
        produced.append(candidate)
        reason = optimization.not_applicable_reason()
        if reason:
            candidate.outcome, candidate.error = Outcome.NOT_APPLICABLE, reason
            progress(f"pass {number}/{len(steps)} {step.name}: not applicable: {reason}")
            continue
        if not parent.measured:
            candidate.outcome, candidate.error = Outcome.SKIPPED, f"its input {parent.name!r} did not produce a model"
            continue
        if budget is not None and budget.spent():
            candidate.outcome, candidate.error = Outcome.SKIPPED, budget.skip()
            progress(f"pass {number}/{len(steps)} {step.name}: skipped: {candidate.error}")
            continue
        if not quiet:
            progress(f"pass {number}/{len(steps)} {step.name} ({optimization.type}) on {parent.name}")
        output_dir = folder / step.name
        output_dir.mkdir(parents=True)
        log = (lambda m: None) if quiet else (lambda m, n=step.name: progress(f"  {n}: {m}"))
        context = PassContext(output_dir, dataset, log, task=spec.task, fetch=fetch, on_epoch=on_epoch, goals=spec.goals,
                              benchmark=spec.benchmark, baseline=by_name[BASELINE].model, kept=kept,
                              deadline=budget.deadline if budget is not None else None)
        try:
            candidate.model = optimization.run(parent.model, context)
            candidate.details = optimization.details
            if runners is not None:
                runners[step.name] = make_runner(candidate.model, threads=spec.benchmark.threads, input_names=dataset.input_names)
        except KompressError as exc:
            candidate.outcome, candidate.error = Outcome.FAILED, str(exc)
        except Exception as exc:  # a bug or library failure in one pass must not lose the others' results
            candidate.outcome, candidate.error = Outcome.FAILED, f"{type(exc).__name__}: {exc}"
            if not quiet:
                progress(f"  {step.name}: failed:\n{traceback.format_exc(limit=3)}")
        if candidate.outcome is Outcome.FAILED and not quiet:
            progress(f"  {step.name}: failed: {candidate.error}")
    return produced
