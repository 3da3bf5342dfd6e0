"""Does an automatic plan reach what a hand-written pass list reaches? An example as written and
with its `passes` removed (planned for this machine), interleaved.

    .venv/bin/python benchmarks/planned_vs_written.py [--example examples/digits-cnn.yaml] [--rounds 2] [--budget 45m]

Each round runs both specs once, each in its own process, the order alternating by round. Printed
per arm and round: the pick, its speedup (p50 at the primary batch size) and size reduction against
the baseline of the same run, its metric drop, and its speedup against ONNX Runtime FP32 of the same
run where the run has one (the export); then the medians, their spread ((max − min) / median) and
the planned arm's median pick speedup over the written arm's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from same_picks import cpu_model, spread  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUN = """
import json, sys, kompress
report = kompress.optimize(sys.argv[1], output=sys.argv[2])
by, batch = {c.name: c for c in report.candidates}, report.primary_batch_size
pick = by.get(report.best_name)
onnx = next((c for c in report.candidates if c.pass_type == "OnnxExport" and c.measured), None)
p50 = lambda c: c.latency[batch].p50_ms if c and batch in c.latency else None
vs_onnx = p50(onnx) / p50(pick) if p50(onnx) and p50(pick) else None
print(json.dumps({"best": report.best_name, "speedup": pick.vs_baseline.speedup_p50 if pick else None,
                  "smaller": pick.vs_baseline.size_reduction if pick else None, "drop": pick.metric.drop if pick else None,
                  "vs_onnx": vs_onnx}))
"""


def run_once(example: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", RUN, str(example), str(out)], cwd=example.parent.parent,
                          capture_output=True, text=True, env=dict(os.environ, MPLBACKEND="Agg"))
    if done.returncode:
        raise SystemExit(f"{example.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=REPO / "examples" / "digits-cnn.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", help="spec.budget.duration of the planned copy (e.g. 45m: structured compression too)")
    args = parser.parse_args()
    example = args.example.resolve()
    document = yaml.safe_load(example.read_text())
    document["spec"].pop("passes", None)
    document["spec"].pop("tuning", None)  # a study tunes named passes; the plan names its own
    if args.budget:
        document["spec"]["budget"] = {"duration": args.budget}
    for source in ("model", "data"):  # absolute, so the planned copy lives outside the examples
        uri = document["spec"][source]["uri"]
        document["spec"][source]["uri"] = uri if uri.startswith(("/", "s3://")) else str(example.parent / uri)
    planned = Path(tempfile.mkdtemp(prefix="kompress-planned-")) / example.name
    planned.write_text(yaml.safe_dump(document, sort_keys=False))
    arms = {"written": example, "planned": planned}
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    try:
        with tempfile.TemporaryDirectory(prefix="kompress-plan-bench-") as scratch:
            for round_ in range(args.rounds):
                order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
                for arm in order:
                    got = run_once(arms[arm], Path(scratch) / f"{arm}-{round_}")
                    results[arm].append(got)
                    print(f"round {round_ + 1} {arm}: {json.dumps(got)}", flush=True)
    finally:
        shutil.rmtree(planned.parent, ignore_errors=True)
    print(f"\n{example.name} on {cpu_model()}, {os.cpu_count()} cores, {args.rounds} rounds")
    medians = {}
    for arm, runs in results.items():
        line = [f"{arm:8}", f"picks {sorted({r['best'] for r in runs})}"]
        for key in ("speedup", "smaller", "vs_onnx", "drop"):
            values = [r[key] for r in runs if r[key] is not None]
            if values:
                medians[(arm, key)] = statistics.median(values)
                line.append(f"{key} {statistics.median(values):.3g} (spread {spread(values):.0%})" if key != "drop"
                            else f"drop {statistics.median(values):.3g}")
        print("  ".join(line))
    if ("planned", "speedup") in medians and ("written", "speedup") in medians:
        print(f"planned / written pick speedup: {medians[('planned', 'speedup')] / medians[('written', 'speedup')]:.2f}")


if __name__ == "__main__":
    main()
