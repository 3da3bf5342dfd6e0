"""The run's report: report.json (machine-readable), report.md (for people), pareto.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .candidates import Candidate
from .profile_report import profile_section


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def candidate_record(c: Candidate, by_name: dict[str, Candidate], batch: int) -> dict[str, Any]:
    baseline = next(x for x in by_name.values() if x.is_baseline)
    parent = by_name.get(c.parent) if c.parent else None
    record: dict[str, Any] = {
        "name": c.name,
        "technique": c.technique,
        "pass": c.pass_type,
        "parent": c.parent,
        "lineage": c.lineage,
        "outcome": c.outcome.value,
    }
    if c.error:
        record["error"] = c.error
    if not c.measured:
        return record
    record |= {
        "runtime": c.runtime,
        "device": c.device.value if c.device else None,
        "format": c.model.format.value,
        "precision": c.model.precision,
        "artifact": c.artifact_key,
        "artifactFiles": sorted(c.artifact_files()) or None,
        "sha256": c.sha256,
        "sizeBytes": c.size_bytes,
        "metric": {"value": c.metric_value, "drop": c.metric_drop, "fidelity": c.fidelity},
        "latency": {str(b): stats.to_wire() for b, stats in c.latency.items()},
        "accepted": c.accepted,
        "rejectedReasons": c.rejected_reasons,
        "paretoOptimal": c.pareto_optimal,
        "rank": c.rank,
        "vsBaseline": _ratios(c, baseline, batch),
    }
    if parent is not None and parent.measured:
        record["vsParent"] = _ratios(c, parent, batch)
    if c.details:
        record["details"] = c.details
    if c.contender:  # the model promoted before: measured alike, never picked
        record |= {"contender": True, "accepted": False, "rejectedReasons": ["promoted by an earlier run: measured to compare"]}
    return record


def _ratios(c: Candidate, reference: Candidate, batch: int) -> dict[str, Any]:
    return {
        "reference": reference.name,
        "batchSize": batch,
        "speedupP50": ratio(reference.latency[batch].p50_ms, c.latency[batch].p50_ms),
        "speedupP95": ratio(reference.latency[batch].p95_ms, c.latency[batch].p95_ms),
        "sizeReduction": ratio(reference.size_bytes, c.size_bytes),
        "metricDrop": None if c.metric_drop is None else c.metric_drop - reference.metric_drop,
    }


def write_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def render_markdown(report: dict) -> str:
    run, batch = report["run"], report["primaryBatchSize"]
    metric = report["metric"]
    lines = [
        f"# kompress report: {run['name']}",
        "",
        f"Run `{run['id']}`, {run['startedAt']} → {run['finishedAt']}.",
        f"Machine: {report['fingerprint']['cpu']['model']} ({', '.join(report['fingerprint']['cpu']['flags']) or 'no SIMD flags read'}), "
        f"{report['benchmark']['threads']} thread(s); "
        + ", ".join(f"{k} {v}" for k, v in report["fingerprint"]["libraries"].items()) + ".",
        "",
        f"Latency at batch {batch}: median over {report['benchmark']['rounds']} interleaved rounds of "
        f"{report['benchmark']['iterations']} calls; spread = (max − min) / median of the round medians.",
        "",
        f"| candidate | runtime | {metric} | drop | p50 ms | p95 ms | spread | size | speedup | smaller | vs parent | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["candidates"]:
        if c["outcome"] != "Measured":
            lines.append(f"| {c['name']} | – | – | – | – | – | – | – | – | – | – | {c['outcome']}: {c.get('error', '')} |")
            continue
        stats = c["latency"][str(batch)]
        base, parent = c["vsBaseline"], c.get("vsParent")
        parent_text = (f"{parent['speedupP50']:.2f}× / {parent['sizeReduction']:.2f}× vs {parent['reference']}"
                       if parent else "–")
        verdict = ("baseline" if c["parent"] is None else
                   "promoted before: measured to compare" if c.get("contender") else
                   f"**best** (#{c['rank']})" if c["rank"] == 1 else
                   f"accepted (#{c['rank']})" if c["accepted"] else "rejected: " + "; ".join(c["rejectedReasons"]))
        if c["paretoOptimal"]:
            verdict += ", Pareto"
        lines.append(
            f"| {c['name']} | {c['runtime']} ({c['precision']}) | {c['metric']['value']:.4f} | {c['metric']['drop']:+.2f} | "
            f"{stats['p50_ms']:.3f} | {stats['p95_ms']:.3f} | {100 * stats['spread']:.0f}% | {_size(c['sizeBytes'])} | "
            f"{base['speedupP50']:.2f}× | {base['sizeReduction']:.2f}× | {parent_text} | {verdict} |"
        )
    lines += ["", _conclusion(report), ""]
    other_batches = [b for b in report["benchmark"]["batchSizes"] if b != batch]
    for other in other_batches:
        lines += [f"## Batch {other}", "", "| candidate | p50 ms | p95 ms | p99 ms | throughput/s |", "|---|---|---|---|---|"]
        for c in report["candidates"]:
            if c["outcome"] == "Measured":
                s = c["latency"][str(other)]
                lines.append(f"| {c['name']} | {s['p50_ms']:.3f} | {s['p95_ms']:.3f} | {s['p99_ms']:.3f} | {s['throughput_per_second']:.0f} |")
        lines.append("")
    for c in report["candidates"]:
        if (c.get("details") or {}).get("search") == "AutoQuantize":
            lines += _search_section(c["name"], c["details"])
    if "tuning" in report:
        lines += _tuning_section(report["tuning"])
    lines += profile_section(report)
    if "promotion" in report:
        promotion = report["promotion"]
        lines += ["## Promotion", "", f"Decision: **{promotion['decision']}** ({promotion['reason']}): {promotion['message']}. "
                  f"Pointer: `{promotion['pointer']}`.", ""]
    return "\n".join(lines)


def _search_section(name: str, search: dict) -> list[str]:
    goal = search["goal"]
    limit = "none" if goal["maxAccuracyDrop"] is None else f"drop ≤ {goal['maxAccuracyDrop']:g} ({goal['mode']})"
    lines = [f"## Steered quantization `{name}`", "",
             f"{len(search['trials'])} configuration(s) judged on {search['validationRows']} rows of "
             f"`{search['validationSplit']}` against the baseline ({goal['metric']}, goal: {limit}), timed at batch "
             f"{search['batchSize']} interleaved with the pass's input; {search['seconds']} s; stopped: {search['stoppedBecause']}. "
             f"Chosen: trial {search['chosenTrial']}.", "",
             "| trial | runtime | method | settings | FP32 nodes | metric | drop | × input | size | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in search["trials"]:
        settings = ", ".join(f"{k}={'/'.join(v) if isinstance(v, list) else ('all' if v is None else v)}"
                             for k, v in t["settings"].items())
        measured = t["drop"] is not None
        lines.append(f"| {t['number']}{' (chosen)' if t['number'] == search['chosenTrial'] else ''} | {t.get('runtime', '')} | {t['method']} | {settings} | "
                     f"{len(t['fallbackNodes'])} | {t['metric']:.4f} | {t['drop']:+.3f} | {t['speedupVsInput']:.2f}× | "
                     f"{_size(t['sizeBytes'])} | {t['verdict']} |" if measured else
                     f"| {t['number']} | {t.get('runtime', '')} | {t['method']} | {settings} | {len(t['fallbackNodes'])} | – | – | – | – | {t['verdict']} |")
    lines += [""] + [f"Note: {note}." for note in search.get("notes", [])] if search.get("notes") else []
    if search["sensitivity"]:
        lines += ["", "Most error-adding nodes (relative L2 error added at the node's output): "
                  + ", ".join(f"`{e['node']}` {e['addedError']:.3f}" for e in search["sensitivity"][:8]) + "."]
    return lines + [""]


def _tuning_section(tuning: dict) -> list[str]:
    lines = [f"## Tuning study `{tuning['study']}`", "",
             f"{tuning['finishedTrials']} finished trial(s) ({tuning['resumedWithTrials']} from an earlier attempt), judged on "
             f"`{tuning['target']}` over the `{tuning['validationSplit']}` split; stopped: {tuning['stoppedBecause']}. "
             f"Candidates: {', '.join(tuning['selected']) or 'none'}.", "",
             "| trial | state | parameters | values | meets goals |", "|---|---|---|---|---|"]
    for t in tuning["trials"]:
        params = ", ".join(f"{k.split('.', 1)[1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.', 1)[1]}={v}"
                           for k, v in t["parameters"].items())
        values = ", ".join(f"{k} {v:.4g}" for k, v in t.get("values", {}).items()) or t.get("error", "–")
        lines.append(f"| {t['number']} | {t['state']} | {params} | {values} | {'yes' if t.get('meetsGoals') else 'no'} |")
    return lines + [""]


def _conclusion(report: dict) -> str:
    if report["best"] is None:
        return "**No candidate met the goals**; the baseline stays the model to serve."
    best = next(c for c in report["candidates"] if c["name"] == report["best"])
    return (f"**Best: {best['name']}**: {best['vsBaseline']['speedupP50']:.2f}× faster (p50) and "
            f"{best['vsBaseline']['sizeReduction']:.2f}× smaller than the baseline, {report['metric']} drop "
            f"{best['metric']['drop']:+.2f}. Pareto front: {', '.join(report['paretoFront'])}.")


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def plot_pareto(report: dict, path: Path) -> None:
    """Latency against metric drop, marker area by size, the Pareto front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = str(report["primaryBatchSize"])
    measured = [c for c in report["candidates"] if c["outcome"] == "Measured"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    largest = max(c["sizeBytes"] for c in measured)
    for index, c in enumerate(measured):
        x, y = c["latency"][batch]["p50_ms"], c["metric"]["drop"]
        colour = "tab:gray" if c["parent"] is None else ("tab:green" if c["accepted"] else "tab:red")
        ax.scatter(x, y, s=40 + 400 * c["sizeBytes"] / largest, color=colour, alpha=0.6,
                   edgecolors="black" if c["paretoOptimal"] else "none")
        ax.annotate(c["name"], (x, y), textcoords="offset points",
                    xytext=(6, 4 + 11 * (index % 4)), fontsize=8)  # staggered: ties share a point
    front = sorted((c for c in measured if c["paretoOptimal"]), key=lambda c: c["latency"][batch]["p50_ms"])
    ax.plot([c["latency"][batch]["p50_ms"] for c in front], [c["metric"]["drop"] for c in front],
            linestyle="--", color="black", linewidth=0.8, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency at batch {batch} (ms, log)")
    ax.set_ylabel(f"{report['metric']} drop vs baseline")
    ax.set_title(f"{report['run']['name']}: grey baseline, green accepted, red rejected; area ∝ size")
    ax.title.set_fontsize(9)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
