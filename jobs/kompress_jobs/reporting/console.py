"""What a person sees while a run goes, and the results at the end.

The pipeline reports progress as lines: a step ("pass 2/4 static-int8 ...", "benchmarking ...")
or, indented, a detail of the step (an epoch, a trial, a benchmark round). At a terminal, a live
display shows the current step and its latest detail with their elapsed times, and each step,
once done, stays as one line with its duration. Elsewhere (a Pod's log, a CI job) each line is
printed as it comes, with a UTC timestamp and the run's elapsed time, for log search.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from .results import Report

def console_for(stream: TextIO) -> Console:
    return Console(file=stream, highlight=False, soft_wrap=not stream.isatty())


class ProgressDisplay:
    """`with ProgressDisplay() as progress: run(progress=progress)`; progress(message) per line."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or console_for(stream or sys.stderr)  # stderr as it is now, not at import
        self.live_mode = self.console.is_terminal
        self.started = self.step_started = time.monotonic()
        self.step: str | None = None
        self.detail = ""
        self.live: Live | None = None

    def __enter__(self) -> "ProgressDisplay":
        if self.live_mode and not self.quiet:
            self.live = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.live is not None:
            self._close_step(failed=exc_info[0] is not None)
            self.live.stop()

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        if not self.live_mode:
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{stamp} [{time.monotonic() - self.started:7.1f}s] {message}", file=self.console.file, flush=True)
            return
        if message.startswith(" "):
            self.detail = message.strip()
            if "failed" in self.detail:  # kept in the scrollback, not only in the live line
                self.console.print(Text(f"  {self.detail}", style="red"))
            return
        self._close_step()
        self.step, self.detail, self.step_started = message, "", time.monotonic()

    def _close_step(self, failed: bool = False) -> None:
        if self.step is not None:
            mark, style = ("✗", "red") if failed else ("✓", "green")
            self.console.print(Text.assemble((f"{mark} ", style), self.step, (f"  {time.monotonic() - self.step_started:.1f}s", "dim")))

    def __rich__(self) -> Group:
        """Drawn by Live on every refresh, so the elapsed times tick."""
        now = time.monotonic()
        line = Text.assemble(self.step or "starting", (f"  {now - self.step_started:.1f}s", "dim"),
                             (f"  (run {now - self.started:.0f}s)", "dim"))
        parts = [Spinner("dots", text=line)]
        if self.detail:
            parts.append(Text(f"   {self.detail}", style="dim"))
        return Group(*parts)


def print_results(report: Report, stream: TextIO) -> None:
    """The results table: drawn with rich at a terminal; a plain Markdown table elsewhere (a pipe,
    a CI log, a Pod's log), so it can be searched, diffed and pasted."""
    title, headers, rows, caption = _results(report)
    if stream.isatty():
        table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
        for index, header in enumerate(headers):
            table.add_column(header, justify="left" if index < 2 or header == "verdict" else "right", overflow="fold")
        for cells, style in rows:
            table.add_row(*cells[:-1], Text(cells[-1], style=style))
        console_for(stream).print(table)
        return
    lines = [title, "", "| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i < 2 or h == "verdict" else "---:" for i, h in enumerate(headers)) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells, _ in rows]
    print("\n".join(lines + ["", caption]), file=stream, flush=True)


def _results(report: Report) -> tuple[str, list[str], list[tuple[list[str], str]], str]:
    """Title, headers, rows (cells and the verdict's style at a terminal) and caption of the
    results table, for both renderings."""
    batch = report.primary_batch_size
    speed = ["tokens/s", "first token ms"] if report.generative else ["p50 ms"]
    what = "decode speed" if report.generative else "latency"
    title = f"{report.metric} and {what} at batch {batch}, against the baseline"
    headers = ["candidate", "runtime", report.metric, "drop", *speed, "speedup", "size KiB", "smaller", "verdict"]
    rows = []
    for c in report.candidates:
        if not c.measured:
            rows.append(([c.name, *["-"] * (len(headers) - 2), f"{c.outcome.value}: {c.error or ''}"], "yellow"))
            continue
        verdict = "baseline" if c.parent is None else "promoted before (to compare)" if c.contender else (
            "BEST" if c.rank == 1 else f"ok #{c.rank}" if c.accepted else "rejected: " + "; ".join(c.rejected_reasons))
        stats = c.latency[batch]
        timing = ([f"{stats.throughput_per_second:.1f}", f"{stats.time_to_first_token_ms:.0f}"] if report.generative
                  else [f"{stats.p50_ms:.3f}"])
        rows.append(([c.name, f"{c.runtime} {c.precision}", f"{c.metric.value:.4f}", f"{c.metric.drop:+.2f}", *timing,
                     f"{c.vs_baseline.speedup_p50:.2f}x" + (" noisy" if stats.noisy else ""), f"{c.size_bytes / 1024:.1f}",
                     f"{c.vs_baseline.size_reduction:.2f}x", verdict], "bold green" if verdict == "BEST" else ""))
    caption = f"Best: {report.best_name}" if report.best_name else "No candidate met the goals; keep the baseline."
    caption += f" (speedup: the baseline's p50 {'decode step' if report.generative else 'latency'} / the candidate's)"
    if report.best_name and report.uncertain:
        caption += ". The pick is uncertain: " + "; ".join(report.uncertain)
    if report.later_first_token:
        caption += ". Prefill is slower: " + report.later_first_token
    return title, headers, rows, caption
