"""The run's charts, drawn from the typed report: pareto.png (every pair of the three axes the
front is kept on, with units) and comparison.png (speedup and size reduction per candidate).

Points are numbered, and the numbers listed with the names beside the plots: names written at
the points overlap wherever candidates tie."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .goals import DropMode
from .quality import drop_unit
from .results import CandidateResult, Report
from .selection import non_dominated
from .tasks import Metric

BASELINE, ACCEPTED, REJECTED = "tab:gray", "tab:green", "tab:red"
NEAR_PX = 14  # points closer than this on screen share one label


def drop_label(report: Report) -> str:
    """The metric-drop axis, with the unit the drops are counted in."""
    mode = DropMode(report.spec.get("goals", {}).get("accuracyDropMode", DropMode.ABSOLUTE.value))
    try:
        unit = drop_unit(Metric(report.metric), mode)
    except ValueError:  # a metric this version does not know: its own units
        unit = ""
    return f"{report.metric} drop vs baseline ({unit or f'{report.metric} units'}; lower is better)"


def plot_pareto(report: Report, path: Path) -> None:
    fig = pareto_figure(report)
    fig.savefig(path)  # laid out already (tight_layout leaves the key its room): no second layout pass
    _pyplot().close(fig)


def pareto_figure(report: Report):
    """Three panels, one per pair of (latency, size, drop). Each draws the two-axis front of the
    accepted candidates and the baseline as a step line; a black edge marks the candidates on the
    three-axis front report.json lists. Rejected candidates are drawn apart (red crosses)."""
    plt = _pyplot()
    batch = report.primary_batch_size
    shown = _shown(report)
    size_scale, unit = size_unit(max(c.size_bytes for c in shown))
    step = "decode step" if report.generative else "latency"
    axes = [(lambda c: c.latency[batch].p50_ms, f"p50 {step} at batch {batch} (ms, log scale)", True),
            (lambda c: c.size_bytes / size_scale, f"size ({unit})", False),
            (lambda c: c.metric.drop, drop_label(report), False)]
    fig, panels = plt.subplots(1, 3, figsize=(15, 4.6), dpi=100)
    for ax, (x, y) in zip(panels, ((axes[0], axes[2]), (axes[1], axes[2]), (axes[0], axes[1]))):
        _pair(ax, shown, x, y)
    fig.suptitle(f"{report.run.name}: grey baseline, green accepted, red × rejected; "
                 f"black edge: on the Pareto front of all three axes", fontsize=10)
    _key(fig, shown)
    return fig


def plot_comparison(report: Report, path: Path) -> bool:
    """Speedup (p50) and size reduction against the baseline, one bar pair per measured candidate;
    False (no chart) when no candidate is compared."""
    shown = compared(report)
    if not shown:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(shown) + 1.6), dpi=100)
    rows = range(len(shown))
    for offset, value, colour, label in ((-0.2, lambda c: c.vs_baseline.speedup_p50, "tab:blue", "speedup (p50)"),
                                         (0.2, lambda c: c.vs_baseline.size_reduction, "tab:orange", "size reduction")):
        bars = ax.barh([r + offset for r in rows], [value(c) for c in shown], height=0.38, color=colour, label=label)
        for bar, c in zip(bars, shown):
            if not c.accepted:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
            ax.annotate(f"{value(c):.2f}×", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                        xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlim(0, 1.15 * max(max(c.vs_baseline.speedup_p50, c.vs_baseline.size_reduction) for c in shown))
    ax.set_yticks(list(rows), [c.name + ("" if c.accepted else " (rejected)") for c in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"× the baseline at batch {report.primary_batch_size} (higher is better; 1× = baseline)")
    ax.set_title(f"{report.run.name}: against the baseline (hatched: rejected)", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(shown)), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shown(report: Report) -> list[CandidateResult]:
    return [c for c in report.candidates if c.measured and not c.contender]


def compared(report: Report) -> list[CandidateResult]:
    """The candidates comparison.png draws (none: no chart, and report.md links none)."""
    return [c for c in _shown(report) if c.parent is not None]


def _colour(c: CandidateResult) -> str:
    return BASELINE if c.parent is None else ACCEPTED if c.accepted else REJECTED


Axis = tuple[Callable[[CandidateResult], float], str, bool]


def _pair(ax, shown: list[CandidateResult], x: Axis, y: Axis) -> None:
    (fx, x_label, x_log), (fy, y_label, _) = x, y
    for c in shown:
        rejected = _colour(c) == REJECTED
        ax.scatter(fx(c), fy(c), s=60, color=_colour(c), marker="x" if rejected else "o", alpha=0.8,
                   edgecolors=None if rejected else ("black" if c.pareto_optimal else "none"), linewidths=1.5, zorder=3)
    eligible = [c for c in shown if c.accepted or c.parent is None]
    front = sorted(non_dominated(eligible, lambda c: (fx(c), fy(c))), key=lambda c: (fx(c), fy(c)))
    if len({(fx(c), fy(c)) for c in front}) > 1:
        ax.plot([fx(c) for c in front], [fy(c) for c in front], drawstyle="steps-post", linestyle="--",
                color="black", linewidth=0.8, label="front on these two axes")
        ax.legend(loc="best", fontsize=7)
    if x_log:  # plain numbers at 1-2-5 steps: the default 3×10⁻¹ labels run into each other
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.grid(alpha=0.3)
    _number(ax, shown, fx, fy)


def _number(ax, shown: list[CandidateResult], fx, fy) -> None:
    """Each point's number; points within NEAR_PX of each other on screen get one joint label."""
    ax.autoscale_view()  # fixes the limits (no full draw), so data map to screen positions
    groups: list[tuple[tuple[float, float], list[int]]] = []
    for number, c in enumerate(shown, start=1):
        where = ax.transData.transform((fx(c), fy(c)))
        near = next((g for g in groups if abs(g[0][0] - where[0]) < NEAR_PX and abs(g[0][1] - where[1]) < NEAR_PX), None)
        if near:
            near[1].append(number)
        else:
            groups.append(((float(where[0]), float(where[1])), [number]))
    for (px, py), numbers in groups:
        ax.annotate(",".join(map(str, numbers)), ax.transData.inverted().transform((px, py)), xytext=(5, 5),
                    textcoords="offset points", fontsize=8)


def _key(fig, shown: list[CandidateResult]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", marker="x" if _colour(c) == REJECTED else "o", color=_colour(c),
                      label=f"{number} {c.name}" + ("" if _colour(c) != REJECTED else " (rejected)"))
               for number, c in enumerate(shown, start=1)]
    fig.tight_layout(rect=(0, 0, 0.86, 0.95))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.86, 0.5), fontsize=8, frameon=False)


def size_unit(size: float) -> tuple[float, str]:
    """(bytes per unit, unit name): the largest binary unit `size` fills at least once."""
    for scale, unit in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB"), (1024, "KiB")):
        if size >= scale:
            return float(scale), unit
    return 1.0, "B"
