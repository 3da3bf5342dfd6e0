"""Does a refactor change what a run picks? The same example run by two checkouts, interleaved.

    git worktree add /tmp/kompress-old <commit>
    .venv/bin/python benchmarks/same_picks.py --old /tmp/kompress-old [--new DIR] [--example examples/digits-cnn.yaml] [--rounds 3]

Each round runs the example once with the old checkout's code and once with this one's (order
alternating by round), each in its own process. Printed per arm: which candidate was picked in
each run, and per candidate the median speedup (p50, vs. the baseline of the same run) and size
reduction with their spread over the runs, (max - min) / median. Picks that differ between arms
only as often as they differ between runs of one arm are noise, not a behaviour change.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = """
import json, sys, kompress
report = kompress.optimize(sys.argv[1], output=sys.argv[2])
print(json.dumps({"best": report.best_name, "front": report.pareto_front_names, "candidates": {
    c.name: [c.vs_baseline.speedup_p50, c.vs_baseline.size_reduction, c.metric.drop]
    for c in report.candidates if c.measured and c.vs_baseline}}))
"""


def run_once(tree: Path, example: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'jobs'}:{tree / 'operator'}")
    done = subprocess.run([sys.executable, "-c", RUN, str(example), str(out)], env=env, cwd=example.parent.parent,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values) if values else 0.0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="a checkout (git worktree) of the code to compare with")
    parser.add_argument("--new", type=Path, default=REPO, help="the checkout to compare (default: this one)")
    parser.add_argument("--example", type=Path, default=REPO / "examples" / "digits-cnn.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    example = args.example.resolve()
    arms = {"old": args.old.resolve(), "new": args.new.resolve()}
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
            for arm in order:
                results[arm].append(run_once(arms[arm], example, Path(scratch) / f"{arm}-{round_}"))
                print(f"round {round_ + 1} {arm}: best {results[arm][-1]['best']}", file=sys.stderr)
    print(f"{example.name}, {args.rounds} interleaved rounds per arm, {cpu_model()}")
    for arm, runs in results.items():
        print(f"\n{arm}: picks {dict(Counter(r['best'] for r in runs))}")
        print(f"{'candidate':<22} {'speedup p50 (median, spread)':>30} {'smaller (median)':>18} {'drop (median)':>14}")
        names = dict.fromkeys(name for r in runs for name in r["candidates"])
        for name in names:
            figures = [r["candidates"][name] for r in runs if name in r["candidates"]]
            speedups = [f[0] for f in figures if f[0] is not None]
            sizes = [f[1] for f in figures if f[1] is not None]
            drops = [f[2] for f in figures if f[2] is not None]
            print(f"{name:<22} {statistics.median(speedups):>18.2f}× ({100 * spread(speedups):4.0f}%) "
                  f"{statistics.median(sizes):>17.2f}× {statistics.median(drops):>+14.3f}")


if __name__ == "__main__":
    main()
