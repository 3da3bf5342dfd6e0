"""The report's "where the time goes": per-operator profiles in report.md and profile.png."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import Report

SHOWN = 8  # operator types per model; the rest are summed as "other"


def profile_section(report: Report) -> list[str]:
    """The profiles are each profiler's own records (profiling.py); the latencies are the typed report's."""
    profiles = report.profiles
    if not profiles:
        return []
    batch = report.primary_batch_size
    lines = ["## Where the time goes", "",
             f"Per-operator time from each runtime's own profiler, at batch {batch}, per call (a profiled session is "
             "slower than the benchmark's: read the shares; the latencies are the benchmark's). CPU time is the "
             "process's (every thread) per call over the benchmark's timed calls. Each profiled call is also in a "
             "trace file: drop it on https://ui.perfetto.dev or chrome://tracing, or point TensorBoard's PyTorch "
             "profiler plugin (torch-tb-profiler) at the `traces` folder.", ""]
    if any(p.get("profiler") for p in profiles.values()):
        lines += ["![Time per call by operator type](profile.png)", ""]
    for name, profile in profiles.items():
        latency = report.candidate(name).latency[batch]
        energy = profile.get("energy") or {}
        energy_text = (f"{1e3 * energy['joulesPerCall']:.3f} mJ per call ({energy['source']})" if energy.get("measurable")
                       else f"energy not measurable here: {energy.get('reason', 'not measured')}")
        cpu = latency.cpu_ms_per_call
        lines += [f"### {name}", "", f"p50 {latency.p50_ms:.3f} ms, CPU {cpu:.3f} ms per call; {energy_text}." if cpu is not None
                  else f"p50 {latency.p50_ms:.3f} ms; {energy_text}.", ""]
        if not profile.get("profiler"):
            lines += [f"No operator profile: {profile.get('reason')}.", ""]
            continue
        trace = f" Trace: [{profile['trace']}]({profile['trace']})." if profile.get("trace") else ""
        lines += [f"{profile['profiler']} profiler, {profile['calls']} calls: {profile['totalMs']:.3f} ms of operator time per call.{trace}", "",
                  "| operator type | ms per call | share | runs per call |", "|---|---|---|---|"]
        lines += [f"| {t['type']} | {t['ms']:.4f} | {100 * t['share']:.1f}% | {t['runsPerCall']:g} |" for t in profile["byType"][:SHOWN]]
        lines += ["", "| top operators | type | ms per call | share |", "|---|---|---|---|"]
        lines += [f"| `{t['name']}` | {t['type']} | {t['ms']:.4f} | {100 * t['share']:.1f}% |" for t in profile["top"][:5]]
        lines.append("")
    return lines


def plot_profiles(report: Report, path: Path) -> bool:
    """Horizontal bars per model: time per call by operator type. False when nothing was profiled."""
    profiles = {name: p for name, p in report.profiles.items() if p.get("profiler")}
    if not profiles:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(profiles), 1, figsize=(7, 1.2 + 2.2 * len(profiles)), dpi=110, squeeze=False, sharex=True)
    for ax, (name, profile) in zip(axes[:, 0], profiles.items()):
        types = profile["byType"][:SHOWN]
        rest = sum(t["ms"] for t in profile["byType"][SHOWN:])
        labels = [t["type"] for t in types] + (["other"] if rest else [])
        values = [t["ms"] for t in types] + ([rest] if rest else [])
        ax.barh(labels[::-1], values[::-1], color="tab:blue")
        for y, value in enumerate(values[::-1]):
            ax.annotate(f"{value:.3f}", (value, y), textcoords="offset points", xytext=(3, -3), fontsize=7)
        ax.set_title(f"{name} ({profile['profiler']}): {profile['totalMs']:.3f} ms of operator time per call", fontsize=9)
        ax.set_xlabel(f"ms per call at batch {report.primary_batch_size}", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
