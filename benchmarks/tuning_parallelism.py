"""Wall time of a study's trial phase, parallelism 1 against 3 (and any other --arms).

Each arm is a fresh study of the same spec (StructuredPrune of the digits CNN with --epochs of
fine-tuning, `amount` searched). Parallelism 1 is what a run does without the option: every
trial in the run's own process (`kompress optimize`, journal in the store). Parallelism 3 is a
tuning Job's Pods: `kompress job --tuning-worker` processes on a real PostgreSQL, run the way the
Job controller runs them (3 worker processes looping over trials), each loading model and data.
The arms alternate over the rounds, so both see the same machine. The trial phase is timed from
the study's own timestamps, first trial start to last trial end (so neither arm counts its
one-time start, though p=3's workers load while the first trials run); the overlap is the summed
trial time over the phase, i.e. how many trials ran at once on average. The ratio is per round,
p=1 / p=3. On a machine of N cores the gain is bounded by N (each trial trains on one thread).

    .venv/bin/python benchmarks/tuning_parallelism.py --rounds 3 --trials 12 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import EXAMPLES, FAST_BENCHMARK  # noqa: E402
from tests.harness.postgres import PostgresServer  # noqa: E402
from tests.harness.trial_pods import job_env, run_tuning_job  # noqa: E402

def study_document(name: str, store: Path, trials: int, parallelism: int, epochs: int = 1) -> dict:
    narrow = {"type": "StructuredPrune", "name": "narrow", "architecture": "kompress_jobs.reference:digits_cnn",
              "amount": 0.5, "fineTuning": {"epochs": epochs}}
    return {"apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization",
            "metadata": {"name": name, "namespace": "bench", "generation": 1},
            "spec": {"model": {"uri": str(EXAMPLES / "models/digits-cnn.pt"), "format": "TorchScript"},
                     "data": {"uri": str(EXAMPLES / "data/digits.npz")}, "passes": [narrow],
                     "benchmark": dict(FAST_BENCHMARK), "artifacts": {"uri": str(store)},
                     "tuning": {"trials": trials, "parallelism": parallelism, "objectives": ["Accuracy", "Size"],
                                "searchSpace": [{"pass": "narrow", "parameter": "amount", "low": 0.3, "high": 0.8}]}}}


def trial_phase(report: dict) -> dict:
    """The trial phase from a report's trial records: its seconds, the mean trial's, the overlap."""
    spans = [(datetime.fromisoformat(t["startedAt"]), datetime.fromisoformat(t["finishedAt"]))
             for t in report["tuning"]["trials"] if "finishedAt" in t]
    phase = (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds()
    inside = [(end - start).total_seconds() for start, end in spans]
    return {"phase": phase, "trial": statistics.mean(inside), "overlap": sum(inside) / phase}


def in_process(folder: Path, trials: int, epochs: int) -> dict:
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(study_document("p1", folder / "store", trials, 1, epochs)))
    subprocess.run([sys.executable, "-m", "kompress.cli", "optimize", str(spec), "--quiet"], check=True, capture_output=True)
    return trial_phase(json.loads(next((folder / "store").glob("*/report.json")).read_text()))


def in_pods(server: PostgresServer, folder: Path, trials: int, parallelism: int, epochs: int) -> dict:
    url = server.new_database(folder.name)
    document = study_document(folder.name, folder / "store", trials, parallelism, epochs)
    run_tuning_job(document, url, folder)
    log = folder / "run.log"  # the run's Job reads the study and writes the report
    subprocess.run([sys.executable, "-m", "kompress.cli", "job"], env=job_env(document, url, log, "run"),
                   check=True, capture_output=True)
    run_uri = json.loads(log.read_text())["result"]["artifacts"]["uri"]
    return trial_phase(json.loads((Path(run_uri) / "report.json").read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs per trial (the trial's length)")
    parser.add_argument("--arms", default="1,3", help="parallelisms to compare, e.g. 1,2,3 (1 is always the in-process study)")
    args = parser.parse_args()
    server = PostgresServer()
    arms = sorted({1, *(int(a) for a in args.arms.split(","))})
    results: dict[int, list[dict]] = {arm: [] for arm in arms}
    try:
        with tempfile.TemporaryDirectory(prefix="kompress-bench-") as scratch:
            for round_ in range(args.rounds):
                for parallelism in arms if round_ % 2 == 0 else arms[::-1]:  # alternate which arm goes first
                    folder = Path(scratch) / f"r{round_}p{parallelism}"
                    folder.mkdir()
                    result = (in_process(folder, args.trials, args.epochs) if parallelism == 1
                              else in_pods(server, folder, args.trials, parallelism, args.epochs))
                    results[parallelism].append(result)
                    print(f"round {round_ + 1} p={parallelism}: trial phase {result['phase']:.1f} s, "
                          f"{result['trial']:.1f} s per trial, overlap {result['overlap']:.2f}", flush=True)
    finally:
        server.stop()

    print(f"\n{args.trials} trials of {args.epochs} epoch(s), {args.rounds} rounds; median [min–max]")
    for parallelism, rows in results.items():
        phases = [r["phase"] for r in rows]
        print(f"  parallelism {parallelism}: trial phase {statistics.median(phases):.1f} s [{min(phases):.1f}–{max(phases):.1f}], "
              f"trial {statistics.median(r['trial'] for r in rows):.1f} s, overlap {statistics.median(r['overlap'] for r in rows):.2f}")
    for parallelism in arms[1:]:
        ratio = [one["phase"] / other["phase"] for one, other in zip(results[1], results[parallelism])]
        print(f"  p=1 / p={parallelism} trial phase: {statistics.median(ratio):.2f}x [{min(ratio):.2f}–{max(ratio):.2f}] per round")

if __name__ == "__main__":
    main()
