"""The run's charts, drawn from the typed report: pareto.png (the axes the candidates differ on, in
pairs, with units) and comparison.png (speedup with its round-to-round range, and size reduction).

Every candidate has a colour of its own and a number; the shape says what the selection made of it
(square baseline, star pick, circle accepted, cross rejected, drawn on top so no point hides it).
Names sit in the key beside the plots: names written at the points overlap wherever candidates tie."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..spec.goals import DropMode
from ..measurement.quality import drop_unit
from .results import CandidateResult, Report
from ..measurement.selection import non_dominated
from ..units import size_unit
from ..spec.tasks import Metric

NEAR_PX = 14  # points closer than this on screen share one label
FONT = 10


@dataclass(frozen=True)
class Axis:
    name: str
    value: Callable[[CandidateResult], float]
    label: str
    unit: str
    log: bool = False
    relative: bool = True  # differences under 1 % are rounding (timing, metadata); a drop differs at all or not

    def varies(self, shown: list[CandidateResult]) -> bool:
        """Whether the candidates differ on it by more than a rounding (1 %, or any drop at all)."""
        values = [self.value(c) for c in shown]
        low, high = min(values), max(values)
        return high - low > (0.01 * max(abs(high), 1e-12) if self.relative else 1e-12)


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
    """A panel per pair of the axes (latency, size, drop) the candidates differ on; one that does
    not vary is named in the title instead of drawn as a flat line. Each panel draws the two-axis
    front of the accepted candidates and the baseline as a step line; a black edge marks the
    candidates on the three-axis front report.json lists."""
    plt = _pyplot()
    batch = report.primary_batch_size
    shown = _shown(report)
    size_scale, unit = size_unit(max(c.size_bytes for c in shown))
    step = "decode step" if report.generative else "latency"
    latency = Axis("latency", lambda c: c.latency[batch].p50_ms, f"p50 {step} at batch {batch} (ms, log scale)", "ms", True)
    size = Axis("size", lambda c: c.size_bytes / size_scale, f"size ({unit})", unit)
    drop = Axis(f"{report.metric} drop", lambda c: c.metric.drop, drop_label(report), "", relative=False)
    varying = [axis for axis in (latency, size, drop) if axis.varies(shown)]
    pairs = ([(latency, drop), (size, drop), (latency, size)] if len(varying) == 3
             else [tuple(varying)] if len(varying) == 2 else [(latency, size)])
    fig, panels = plt.subplots(1, len(pairs), figsize=(5.6 * len(pairs) + 3.2, 5.2), dpi=100, squeeze=False)
    for ax, (x, y) in zip(panels[0], pairs):
        _pair(ax, shown, x, y, report.best_name)
    constant = [f"{axis.name} {axis.value(shown[0]):.4g}{' ' + axis.unit if axis.unit else ''} for every candidate"
                for axis in (latency, size, drop)
                if axis not in varying and not any(axis in pair for pair in pairs)]
    fig.suptitle(f"{report.run.name}: square baseline, star pick, circle accepted, × rejected; black edge: on the "
                 f"Pareto front of all three axes" + (f"\nnot drawn: {'; '.join(constant)}" if constant else ""),
                 fontsize=FONT)
    _key(fig, shown, report.best_name, right=1 - 3.0 / (5.6 * len(pairs) + 3.2))
    return fig


def plot_comparison(report: Report, path: Path) -> bool:
    """Speedup (p50, with the range of its round-to-round ratio as an error bar) and size reduction
    against the baseline, one bar pair per measured candidate, the pick marked; False (no chart)
    when no candidate is compared."""
    shown = compared(report)
    if not shown:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(shown) + 1.8), dpi=100)
    rows = range(len(shown))
    speed = [c.vs_baseline.speedup_p50 for c in shown]
    ranges = [c.vs_baseline.speedup_range or [v, v] for c, v in zip(shown, speed)]
    error = [[max(v - low, 0) for v, (low, _) in zip(speed, ranges)], [max(high - v, 0) for v, (_, high) in zip(speed, ranges)]]
    for offset, values, colour, label, xerr in (
            (-0.2, speed, "tab:blue", "speedup (p50; bar: range from round to round)", error),
            (0.2, [c.vs_baseline.size_reduction for c in shown], "tab:orange", "size reduction", None)):
        bars = ax.barh([r + offset for r in rows], values, height=0.38, color=colour, label=label, xerr=xerr,
                       error_kw={"capsize": 3, "elinewidth": 1})
        for bar, c, value, top in zip(bars, shown, values, xerr[1] if xerr else [0] * len(shown)):
            if not c.accepted:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
            if c.name == report.best_name:
                bar.set_edgecolor("black")
                bar.set_linewidth(1.5)
            ax.annotate(f"{value:.2f}×", (bar.get_width() + top, bar.get_y() + bar.get_height() / 2),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=FONT - 1)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlim(0, 1.18 * max(max(high for _, high in ranges), max(c.vs_baseline.size_reduction for c in shown)))
    ax.set_yticks(list(rows), [_row_label(c, report) for c in shown], fontsize=FONT)
    for tick, c in zip(ax.get_yticklabels(), shown):
        if c.name == report.best_name:
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlabel(f"× the baseline at batch {report.primary_batch_size} (higher is better; 1× = baseline)", fontsize=FONT)
    ax.set_title(f"{report.run.name}: against the baseline (black edge: the pick; hatched: rejected)", fontsize=FONT)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(shown)), ncol=2, fontsize=FONT - 1, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def _row_label(c: CandidateResult, report: Report) -> str:
    status = "pick" if c.name == report.best_name else None if c.accepted else "rejected"
    noisy = "noisy" if c.latency[report.primary_batch_size].noisy else None
    notes = ", ".join(n for n in (status, noisy) if n)
    return c.name + (f" ({notes})" if notes else "")


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


def _marker(c: CandidateResult, pick: str | None) -> tuple[str, float, int]:
    """(shape, area, z-order): a rejected cross and the pick's star are drawn over the circles."""
    if c.parent is None:
        return "s", 70, 3
    if c.name == pick:
        return "*", 260, 6
    return ("o", 70, 4) if c.accepted else ("X", 110, 5)


def _colours(shown: list[CandidateResult]) -> list:
    palette = _pyplot().get_cmap("tab10" if len(shown) <= 10 else "tab20")
    return [palette(i % palette.N) for i in range(len(shown))]


def _pair(ax, shown: list[CandidateResult], x: Axis, y: Axis, pick: str | None) -> None:
    for c, colour in zip(shown, _colours(shown)):
        shape, area, z = _marker(c, pick)
        ax.scatter(x.value(c), y.value(c), s=area, color=colour, marker=shape, alpha=0.9, zorder=z,
                   edgecolors="black" if c.pareto_optimal else "none", linewidths=1.2)
    eligible = [c for c in shown if c.accepted or c.parent is None]
    front = sorted(non_dominated(eligible, lambda c: (x.value(c), y.value(c))), key=lambda c: (x.value(c), y.value(c)))
    if len({(x.value(c), y.value(c)) for c in front}) > 1:
        ax.plot([x.value(c) for c in front], [y.value(c) for c in front], drawstyle="steps-post", linestyle="--",
                color="black", linewidth=0.8, label="front on these two axes")
        ax.legend(loc="best", fontsize=FONT - 1)
    if x.log:  # plain numbers at 1-2-5 steps: the default 3×10⁻¹ labels run into each other
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(x.label, fontsize=FONT)
    ax.set_ylabel(y.label, fontsize=FONT)
    ax.tick_params(labelsize=FONT - 1)
    ax.grid(alpha=0.3)
    ax.margins(0.12)  # room for the numbers beside the outermost points
    _number(ax, shown, x.value, y.value)


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


def _key(fig, shown: list[CandidateResult], pick: str | None, right: float) -> None:
    from matplotlib.lines import Line2D

    def note(c: CandidateResult) -> str:
        return " (pick)" if c.name == pick else "" if c.accepted or c.parent is None else " (rejected)"

    handles = [Line2D([], [], linestyle="none", marker=_marker(c, pick)[0], markersize=9 if c.name == pick else 7,
                      color=colour, label=f"{number} {c.name}{note(c)}")
               for number, (c, colour) in enumerate(zip(shown, _colours(shown)), start=1)]
    fig.tight_layout(rect=(0, 0, right, 0.92))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(right, 0.5), fontsize=FONT - 1, frameon=False)
