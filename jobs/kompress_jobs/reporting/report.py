"""The run's report: its candidates as typed results (results.py), and report.md rendered from
the typed report, the same objects report.json is written from (the charts: charts.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..measurement.benchmark import median_interval
from ..measurement.candidates import Candidate
from ..modelfile import Processor
from ..units import human_size
from .charts import compared
from ..passes import PASSES
from .profile_report import profile_section
from .results import CandidateResult, Comparison, Metric, Report, TuningReport


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def candidate_result(c: Candidate, by_name: dict[str, Candidate], batch: int) -> CandidateResult:
    """The candidate as report.json holds it: every field a measured candidate has, only the first
    ones (and the error) for one that was not measured."""
    baseline = next(x for x in by_name.values() if x.is_baseline)
    parent = by_name.get(c.parent) if c.parent else None
    fields: dict[str, Any] = {"name": c.name, "technique": c.technique, "pass_type": c.pass_type, "parent": c.parent,
                              "lineage": c.lineage, "outcome": c.outcome}
    if c.error:
        fields["error"] = c.error
    if not c.measured:
        return CandidateResult(**fields)
    fields |= {
        "runtime": c.runtime, "device": c.device, "execution": c.model.execution, "format": c.model.format,
        "precision": c.model.precision,
        "artifact": c.artifact_key, "artifact_files": sorted(c.artifact_files()) or None, "sha256": c.sha256,
        "size_bytes": c.size_bytes, "metric": Metric(value=c.metric_value, drop=c.metric_drop, fidelity=c.fidelity),
        "latency": dict(c.latency), "accepted": c.accepted, "rejected_reasons": c.rejected_reasons,
        "pareto_optimal": c.pareto_optimal, "rank": c.rank, "vs_baseline": _comparison(c, baseline, batch),
    }
    if parent is not None and parent.measured:
        fields["vs_parent"] = _comparison(c, parent, batch)
    if c.details:
        fields["details"] = c.details
    if c.energy:
        fields["energy"] = c.energy
    if c.memory:
        fields["memory"] = c.memory
    if c.contender:  # the model promoted before: measured alike, never picked
        fields |= {"contender": True, "accepted": False, "rejected_reasons": ["promoted by an earlier run: measured to compare"]}
    return CandidateResult(**fields)


def _comparison(c: Candidate, reference: Candidate, batch: int) -> Comparison:
    return Comparison(
        reference=reference.name, batch_size=batch,
        speedup_p50=ratio(reference.latency[batch].p50_ms, c.latency[batch].p50_ms),
        speedup_range=paired_range(reference.latency[batch].round_medians_ms, c.latency[batch].round_medians_ms),
        speedup_p95=ratio(reference.latency[batch].p95_ms, c.latency[batch].p95_ms),
        size_reduction=ratio(reference.size_bytes, c.size_bytes),
        metric_drop=None if c.metric_drop is None else c.metric_drop - reference.metric_drop,
    )


def paired_range(reference_rounds: list[float], rounds: list[float]) -> list[float] | None:
    """The speedup's interval from round to round: both ran in each round, one after the other, so a
    round's ratio cancels what slowed the machine in it. None unless both ran the same rounds."""
    if len(reference_rounds) != len(rounds) or not rounds or not all(rounds):
        return None
    return list(median_interval([r / m for r, m in zip(reference_rounds, rounds)]))


def write_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def measured_rounds(report: Report) -> int:
    """The rounds measured at the primary batch size (more than benchmark.rounds where one was noisy)."""
    return len(report.baseline.latency[report.primary_batch_size].round_medians_ms)


def spread_text(stats) -> str:
    return f"**{stats.spread:.0%} noisy**" if stats.noisy else f"{stats.spread:.0%}"


def speedup_text(comparison: Comparison) -> str:
    low_high = comparison.speedup_range
    return f"{comparison.speedup_p50:.2f}×" + (f" ({low_high[0]:.2f}–{low_high[1]:.2f})" if low_high else "")


def render_markdown(report: Report) -> str:
    run, batch, bench, cpu = report.run, report.primary_batch_size, report.benchmark, report.fingerprint.cpu
    lines = [
        f"# kompress report: {run.name}",
        "",
        f"Run `{run.id}`, {run.started_at} → {run.finished_at}.",
        f"Machine: {cpu.model} ({', '.join(cpu.flags) or 'no SIMD flags read'}), {bench.threads} thread(s); "
        + ", ".join(f"{k} {v}" for k, v in report.fingerprint.libraries.items()) + ".",
        "",
        (f"Latency at batch {batch}: one decode step (a new token), over {measured_rounds(report)} interleaved rounds of a "
         f"{bench.generation.prompt_tokens}-token prompt and {bench.generation.new_tokens} new tokens; "
         if report.generative else
         f"Latency at batch {batch}: median over {measured_rounds(report)} interleaved rounds of {bench.iterations} calls; ")
        + "speedup = the baseline's p50 / the candidate's, with the range of its ratio from round to round; "
        + "spread = the width of a 90 % interval of the median round over that median ((max − min) / median up to 7 "
        + f"rounds); a spread above the tie tolerance ({bench.tie_tolerance:.0%}) after up to {bench.round_cap} rounds "
        + "is marked noisy.",
        "",
        f"| candidate | runtime | {report.metric} | drop | p50 ms | p95 ms | spread | size | speedup | smaller | vs parent | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.candidates:
        if not c.measured:
            lines.append(f"| {c.name} | – | – | – | – | – | – | – | – | – | – | {c.outcome.value}: {c.error or ''} |")
            continue
        stats, base, parent = c.latency[batch], c.vs_baseline, c.vs_parent
        parent_text = f"{parent.speedup_p50:.2f}× / {parent.size_reduction:.2f}× vs {parent.reference}" if parent else "–"
        verdict = verdict_of(c) + (", Pareto" if c.pareto_optimal else "")
        lines.append(
            f"| {c.name} | {c.runtime} ({c.precision}{', ' + c.device.value if c.device not in (None, Processor.CPU) else ''}) | {c.metric.value:.4f} | {c.metric.drop:+.2f} | "
            f"{stats.p50_ms:.3f} | {stats.p95_ms:.3f} | {spread_text(stats)} | {human_size(c.size_bytes)} | "
            f"{speedup_text(base)} | {base.size_reduction:.2f}× | {parent_text} | {verdict} |"
        )
    lines += ["", _conclusion(report), "", "![Pareto front per pair of axes](pareto.png)", ""]
    if report.plan:
        lines += ["## Plan", "", "spec.passes was empty: the run planned its passes for this machine.", ""]
        lines += [f"- {reason}" for reason in report.plan["reasons"]] + [""]
    if compared(report):
        lines += ["![Speedup and size reduction against the baseline](comparison.png)", ""]
    if report.generative:
        lines += generation_section(report)
    for other in (b for b in bench.batch_sizes if b != batch):
        lines += [f"## Batch {other}", "", "| candidate | p50 ms | p95 ms | p99 ms | throughput/s |", "|---|---|---|---|---|"]
        for c in report.candidates:
            if c.measured:
                s = c.latency[other]
                lines.append(f"| {c.name} | {s.p50_ms:.3f} | {s.p95_ms:.3f} | {s.p99_ms:.3f} | {s.throughput_per_second:.0f} |")
        lines.append("")
    for c in report.candidates:  # a pass that wrote details renders them (e.g. AutoQuantize's search)
        if c.details and c.pass_type in PASSES:
            lines += PASSES[c.pass_type].report_section(c.name, c.details)
    lines += energy_section(report) + memory_section(report)
    if report.tuning is not None:
        lines += _tuning_section(report.tuning)
    lines += profile_section(report)
    if report.promotion is not None:
        plan = report.promotion
        lines += ["## Promotion", "", f"Decision: **{plan.decision.value}** ({plan.reason}): {plan.message}. "
                  f"Pointer: `{plan.pointer}`.", ""]
    return "\n".join(lines)


def memory_section(report: Report) -> list[str]:
    """Peak resident memory of a fresh process that loads each candidate and runs it once."""
    measured = [c for c in report.candidates if c.measured and c.memory is not None]
    if not measured:
        return []
    lines = ["## Memory", "", "Peak resident memory of a fresh process that loads the candidate and runs it once "
             "(the interpreter and the runtime's libraries included, as a serving process pays them).", "",
             "| candidate | peak MiB | vs baseline |", "|---|---|---|"]
    base = report.baseline.memory
    for c in measured:
        m = c.memory
        if not m.measurable:
            lines.append(f"| {c.name} | – | not measured: {m.reason} |")
            continue
        ratio = f"{base.peak_bytes / m.peak_bytes:.2f}× less" if base and base.measurable and m.peak_bytes else "–"
        lines.append(f"| {c.name} | {m.peak_bytes / 2**20:.0f} | {ratio} |")
    return lines + [""]


def energy_section(report: Report) -> list[str]:
    """Energy per call of every candidate that ran on a GPU (NVML), at the primary batch size."""
    measured = [c for c in report.candidates if c.measured and c.energy is not None]
    if not measured:
        return []
    lines = ["## Energy", "", f"Per call at batch {report.primary_batch_size}, from the GPU's own counter (the whole "
             "device: compare candidates of this run only).", "", "| candidate | joules per call | watts | source |", "|---|---|---|---|"]
    for c in measured:
        e = c.energy
        lines.append(f"| {c.name} | {e.joules_per_call:.4f} | {e.watts:.0f} | {e.source} |" if e.measurable
                     else f"| {c.name} | – | – | not measurable: {e.reason} |")
    return lines + [""]


def generation_section(report: Report) -> list[str]:
    """What a language model's users read first: decode speed, time to first token, quality."""
    lines = ["## Generation", "", "Greedy decoding; agreement figures are against the baseline: top-1 of the next-token "
             "distribution over the evaluation text, and the generated tokens before the first that differs.", "",
             "| candidate | batch | decode tokens/s | speedup (p50 step) | time to first token ms | perplexity | top-1 agreement "
             "| KL divergence | greedy agreement |", "|---|---|---|---|---|---|---|---|---|"]
    base = report.baseline
    for c in report.candidates:
        if not c.measured:
            continue
        f = c.metric.fidelity
        for batch, s in c.latency.items():
            ratio = base.latency[batch].p50_ms / s.p50_ms  # the speedup status and console show: one definition
            lines.append(f"| {c.name} | {batch} | {s.throughput_per_second:.1f} | {ratio:.2f}× | "
                         f"{s.time_to_first_token_ms:.1f} | {f.get('perplexity', float('nan')):.3f} | "
                         f"{f.get('top1Agreement', float('nan')):.3f} | {f.get('klDivergence', float('nan')):.4f} | "
                         f"{f.get('greedyAgreement', float('nan')):.3f} |")
    return lines + [""]


def verdict_of(c: CandidateResult) -> str:
    """One line on what the selection made of a candidate (report.md and the console say the same)."""
    if c.parent is None:
        return "baseline"
    if c.contender:
        return "promoted before: measured to compare"
    if c.rank == 1:
        return f"**best** (#{c.rank})"
    return f"accepted (#{c.rank})" if c.accepted else "rejected: " + "; ".join(c.rejected_reasons)


def _tuning_section(tuning: TuningReport) -> list[str]:
    lines = [f"## Tuning study `{tuning.study}`", "",
             f"{tuning.finished_trials} finished trial(s) ({tuning.resumed_with_trials} from an earlier attempt), judged on "
             f"`{tuning.target}` over the `{tuning.validation_split}` split; stopped: {tuning.stopped_because}. "
             f"Candidates: {', '.join(tuning.selected) or 'none'}.", "",
             "| trial | state | parameters | values | meets goals |", "|---|---|---|---|---|"]
    for t in tuning.trials:
        params = ", ".join(f"{k.split('.', 1)[1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.', 1)[1]}={v}"
                           for k, v in t.parameters.items())
        values = ", ".join(f"{k} {v:.4g}" for k, v in (t.values or {}).items()) or t.error or "–"
        lines.append(f"| {t.number} | {t.state} | {params} | {values} | {'yes' if t.meets_goals else 'no'} |")
    return lines + [""]


def _conclusion(report: Report) -> str:
    best = report.best
    rejected = [c for c in compared(report) if not c.accepted]
    front = (f"Pareto front (latency, size and {report.metric} drop, over the accepted candidates and the baseline): "
             f"{', '.join(report.pareto_front_names)}.")
    apart = (" Rejected, so on no front: " + "; ".join(f"{c.name} ({', '.join(c.rejected_reasons)})" for c in rejected)
             + ".") if rejected else ""
    if best is None:
        return "**No candidate met the goals**; the baseline stays the model to serve. " + front + apart
    doubt = (" **The pick is uncertain**: " + "; ".join(report.uncertain) + ": its speedup may be off by as much; "
             "measure again on a quieter node or raise benchmark.maxRounds.") if report.uncertain else ""
    if report.later_first_token:
        doubt += f" **Prefill is slower**: {report.later_first_token}."
    return (f"**Best: {best.name}**: {speedup_text(best.vs_baseline)} faster (p50) and "
            f"{best.vs_baseline.size_reduction:.2f}× smaller than the baseline, {report.metric} drop "
            f"{best.metric.drop:+.2f}." + doubt + " " + front + apart)
