"""kompress from Python, as from a notebook: the digits example, then a look at its results.

    .venv/bin/python examples/optimize_from_python.py [OUTPUT]

The same pipeline `kompress optimize` runs; the report comes back as types (kompress.Report), and
the run's folder (report.json, report.md, the models) is written to OUTPUT (default ./kompress-runs).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import kompress

EXAMPLE = Path(__file__).with_name("digits-cnn.yaml")


def main(output: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the run's progress lines
    kompress.validate(EXAMPLE)  # the schema and the chain of passes, before any work
    report = kompress.optimize(EXAMPLE, output=output)

    batch = report.primary_batch_size
    print(f"\nrun {report.run.id} on {report.fingerprint['cpu']['model']}, metric {report.metric}")
    for c in report.candidates:
        if not c.measured:
            print(f"  {c.name:14} {c.outcome.value}: {c.error}")
            continue
        print(f"  {c.name:14} {c.runtime:12} p50 {c.latency[batch].p50_ms:.3f} ms  {c.size_bytes / 1024:7.1f} KiB  "
              f"{report.metric} {c.metric.value:.4f}"
              + ("  BEST" if c.name == report.best_name else "") + ("  Pareto" if c.pareto_optimal else ""))
    best = report.best
    if best is None:
        print("no candidate met the goals")
        return
    print(f"\npick: {best.name}, {best.vs_baseline.speedup_p50:.2f}x the baseline's speed, "
          f"{best.vs_baseline.size_reduction:.2f}x smaller, files in {report.run_uri}/{best.artifact}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "kompress-runs")
