"""The steered search of the language-model passes (OnnxGenAI `precision: Auto`, OpenVinoCausalLM
`weights: Auto`): builds from the fastest kind (INT4 on every MatMul) to the safest (INT8), each judged on the calibration text (the text after the
evaluation tokens, never the evaluation windows) against the pass's input model with the task's
metric and the goal's drop, and the builds that keep the goal timed interleaved; the fastest of
them is the pass's output. Every build is in the report."""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import PassError
from ..measurement.benchmark import each
from ..modelfile import ModelFile
from ..runtimes import make_runner
from ..runtimes.base import first_line
from .corpus import INPUT, PROMPTS
from .quality import LanguageModelScorer

PROMPT_TOKENS, NEW_TOKENS, ROUNDS = 32, 16, 3  # a short generation tells decode speeds apart


def search(ladder: list[Any], model: ModelFile, ctx, build: Callable[[Any, Path], None], output: Path,
           built: Callable[[Path], ModelFile]) -> dict[str, Any]:
    """Build each settings of `ladder` (a pass's settings, each with a `trial_label`; the first's
    `judge_tokens` applies) into a folder of its own (`built` says what model a folder holds, and
    how it runs), judge it, and move the fastest that keeps the goal to `output`; returns the
    search's account (the pass's details)."""
    started = time.monotonic()
    judged = ctx.dataset.splits.get(ctx.dataset.source.calibration_split)
    if judged is None:
        raise PassError(f"precision Auto judges its builds on the text after task.evaluationTokens (split "
                        f"{ctx.dataset.source.calibration_split!r}); the text has not one more window there")
    # as many tokens as the evaluation (or judgeTokens): a search must not cost more than the run
    tokens = ladder[0].judge_tokens or ctx.task.evaluation_tokens
    judged = judged.take(max(1, tokens // ctx.task.context_length))
    goal, mode = ctx.goals.max_accuracy_drop, ctx.goals.accuracy_drop_mode
    reference = make_runner(model, threads=ctx.threads)
    scorer = LanguageModelScorer(ctx.task, mode, judged, reference)
    trials, runners = [], {}
    for number, settings in enumerate(ladder, start=1):
        folder = output.parent / f"_{output.name}-trial-{number}"
        trial = {"number": number, "settings": settings.trial_label, "metric": None, "drop": None}
        trials.append(trial)
        try:
            build(settings, folder)
            runner = make_runner(built(folder), threads=ctx.threads)
            trial["metric"], trial["drop"], _ = scorer.judge(runner)
        except Exception as exc:  # one build that fails (builder, loading, inference) must not end the search
            trial["verdict"] = f"failed: {first_line(exc)}"
            ctx.log(f"trial {number} ({settings.trial_label}): {trial['verdict']}")
            continue
        trial["sizeBytes"] = built(folder).size_bytes
        keeps = goal is None or trial["drop"] <= goal
        trial["verdict"] = "keeps the goal" if keeps else "exceeds the goal"
        ctx.log(f"trial {number} ({settings.trial_label}): {ctx.task.metric.value} {trial['metric']:.4f}, "
                f"drop {trial['drop']:+.3f}: {trial['verdict']}")
        if keeps:
            runners[number] = runner
    if not runners:
        drops = [t["drop"] for t in trials if t["drop"] is not None]
        if not drops:
            raise PassError(f"every build failed (build 1: {trials[0]['verdict']})")
        raise PassError(f"no build kept goals.maxAccuracyDrop {goal:g} on the calibration text (closest: {min(drops):+.3f})")
    failures: dict[int, str] = {}  # a build whose runtime crashed while timed (runtimes/contained.py)
    speeds = _tokens_per_second(runners | {0: reference}, judged.inputs["input_ids"], failures)
    if 0 in failures:
        raise PassError(f"the pass's input failed while timed: {failures[0]}")
    _drop_failed(runners, trials, failures, ctx)
    for trial in trials:
        if trial["number"] in runners:
            trial["tokensPerSecond"] = speeds[trial["number"]]
            trial["speedupVsInput"] = speeds[trial["number"]] / speeds[0]
    _keep_first_token_goal(runners, trials, ctx)
    chosen = max(runners, key=lambda n: speeds[n])
    runners.clear()
    for number in range(1, len(ladder) + 1):  # the chosen build becomes the pass's output; the others go
        folder = output.parent / f"_{output.name}-trial-{number}"
        if number == chosen:
            for path in folder.iterdir():
                shutil.move(str(path), output / path.name)
        shutil.rmtree(folder, ignore_errors=True)
    return {"trials": trials, "chosenTrial": chosen, "seconds": round(time.monotonic() - started),
            "goal": {"metric": ctx.task.metric.value, "maxAccuracyDrop": goal, "mode": mode.value},
            "judgedWindows": len(judged), "inputTokensPerSecond": speeds[0]}


def _keep_first_token_goal(runners: dict, trials: list[dict], ctx) -> None:
    """goals.maxTimeToFirstTokenMs, as the final selection applies it: each kept build's prefill of
    the benchmark's own prompt (its length, its batch), timed; a build that breaks it is not kept."""
    limit = ctx.goals.max_time_to_first_token_ms
    if limit is None or PROMPTS not in ctx.dataset.splits:
        return
    prompt = ctx.dataset.split(PROMPTS).inputs[INPUT][: ctx.benchmark.batch_sizes[0]]
    by_number = {t["number"]: t for t in trials}
    failures: dict[int, str] = {}
    firsts: dict[int, float] = {}

    def prefilled(number: int) -> None:
        firsts[number] = statistics.median(runners[number].generate(prompt, 2).first_token_ns / 1e6 for _ in range(ROUNDS))

    each(list(runners), failures, prefilled)
    _drop_failed(runners, trials, failures, ctx)
    for number in list(runners):
        first = firsts[number]
        trial = by_number[number]
        trial["timeToFirstTokenMs"] = round(first, 1)
        if first > limit:
            trial["verdict"] = f"first token {first:.0f} ms exceeds goals.maxTimeToFirstTokenMs {limit:g}"
            ctx.log(f"trial {number} ({trial['settings']}): {trial['verdict']}")
            del runners[number]
    if not runners:
        fastest = min(t["timeToFirstTokenMs"] for t in trials if "timeToFirstTokenMs" in t)
        raise PassError(f"no build kept goals.maxTimeToFirstTokenMs {limit:g} (the quickest first token: {fastest:.0f} ms)")


def _tokens_per_second(runners: dict, windows, failures: dict[int, str]) -> dict[int, float]:
    """Decode tokens/s of each runner: median of the per-round medians, rounds interleaved; a runner
    that fails is recorded in `failures` and left out."""
    prompt = windows[:1, :PROMPT_TOKENS]
    medians: dict[int, list[float]] = {n: [] for n in runners}
    alive = list(runners)

    def timed(n: int) -> None:
        medians[n].append(1e9 / statistics.median(runners[n].generate(prompt, NEW_TOKENS).step_ns))

    for round_index in range(ROUNDS):
        shift = round_index % max(1, len(alive))
        each(alive, failures, timed, order=alive[shift:] + alive[:shift])
    return {n: statistics.median(medians[n]) for n in alive}


def _drop_failed(runners: dict, trials: list[dict], failures: dict[int, str], ctx) -> None:
    """Builds that failed while timed are no longer kept; PassError when none is left."""
    for trial in trials:
        if trial["number"] in failures and trial["number"] in runners:
            trial["verdict"] = f"failed while timed: {failures[trial['number']]}"
            ctx.log(f"trial {trial['number']} ({trial['settings']}): {trial['verdict']}")
            del runners[trial["number"]]
    if failures and not runners:
        raise PassError(f"every build that kept the goal failed while timed ({next(iter(failures.values()))})")


def report_section(name: str, details: dict[str, Any]) -> list[str]:
    """report.md's account of a search: every build it judged."""
    from ..units import goal_text, human_size

    goal = details["goal"]
    lines = [f"## Steered weight compression `{name}`", "",
             f"{len(details['trials'])} build(s) judged on {details['judgedWindows']} window(s) of the calibration text "
             f"against the pass's input ({goal['metric']}, goal: {goal_text(goal)}); those within the goal timed interleaved "
             f"with the input ({details['inputTokensPerSecond']:.1f} tokens/s); {details['seconds']} s. "
             f"Chosen: build {details['chosenTrial']}.", "",
             "| build | settings | metric | drop | tokens/s | × input | size | verdict |", "|---|---|---|---|---|---|---|---|"]
    for t in details["trials"]:
        timed = "tokensPerSecond" in t
        lines.append(f"| {t['number']}{' (chosen)' if t['number'] == details['chosenTrial'] else ''} | {t['settings']} | "
                     + (f"{t['metric']:.4f} | {t['drop']:+.3f} | " if t["drop"] is not None else "– | – | ")
                     + (f"{t['tokensPerSecond']:.1f} | {t['speedupVsInput']:.2f}× | " if timed else "– | – | ")
                     + (f"{human_size(t['sizeBytes'])} | " if "sizeBytes" in t else "– | ") + f"{t['verdict']} |")
    return lines + [""]
