"""Ratios of the network-changing techniques, each against a baseline measured in the same run.

    .venv/bin/python benchmarks/techniques.py [--rounds 7] [--out DIR]

1. The digits CNN (examples/digits-cnn-compress.yaml): INT8 alone, unstructured pruning,
   structured pruning (PyTorch, ONNX, INT8, and the Optuna-tuned trials), a distilled student
   (PyTorch, ONNX, INT8) — every candidate against the PyTorch FP32 teacher, and the narrowed
   INT8 models against INT8 alone.
2. Low-rank factorization of the digits MLP, a small encoder and the 26M-parameter BERT-style
   encoder (--no-base-encoder skips it) at several ranks, against their ONNX Runtime FP32 export.

Every latency is the median over interleaved rounds (all candidates of a run in rotating order);
"spread" is (max - min) / median of the round medians.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "benchmarks"))

from quantization import row  # noqa: E402

from kompress_jobs.pipeline.run import run_optimization  # noqa: E402
from kompress_jobs.reference import BASE_ENCODER, TINY_ENCODER, build_encoder  # noqa: E402
from kompress_jobs.spec.specfile import load_resource_file, resource_from_dict  # noqa: E402

LOW_RANK = [{"type": "OnnxExport", "name": "onnx"},
            {"type": "LowRank", "name": "energy-90", "input": "onnx", "energy": 0.9},
            {"type": "LowRank", "name": "ratio-50", "input": "onnx", "rankRatio": 0.5},
            {"type": "LowRank", "name": "ratio-25", "input": "onnx", "rankRatio": 0.25}]


def run(resource, base_dir: Path, out: Path) -> dict:
    return run_optimization(resource, base_dir=base_dir, artifacts_uri=str(out)).report


def digits_cnn(rounds: int, out: Path) -> None:
    resource = load_resource_file(REPO / "examples" / "digits-cnn-compress.yaml")
    resource.spec.benchmark.rounds = rounds
    report = run(resource, REPO / "examples", out)
    print(f"digits CNN, every candidate vs the PyTorch FP32 teacher (best: {report['best']}, "
          f"Pareto front: {', '.join(report['paretoFront'])})")
    tuned = report["tuning"]["selected"]
    for name in ("int8", "pruned", "narrow", "narrow-onnx", "narrow-int8", *tuned, "student", "student-onnx", "student-int8"):
        print(row(report, name, "baseline", 1))
    print("structured-pruned INT8 vs INT8 alone")
    for name in ("narrow-int8", *tuned):
        print(row(report, name, "int8", 1))
    study = report["tuning"]
    print(f"Optuna study: {study['finishedTrials']} trials, {sum(t['state'] == 'Complete' for t in study['trials'])} complete, "
          f"stopped: {study['stoppedBecause']}")


def low_rank(rounds: int, out: Path, base_encoder: bool) -> None:
    mlp = resource_from_dict({"apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization",
                              "metadata": {"name": "mlp-low-rank"}, "spec": {
        "model": {"uri": "models/digits-mlp.pt", "format": "TorchScript"}, "data": {"uri": "data/digits.npz"},
        "passes": LOW_RANK, "benchmark": {"batchSizes": [1, 64], "rounds": rounds, "iterations": 100, "threads": 1}}})
    report = run(mlp, REPO / "examples", out)
    print("digits MLP, low rank vs its ONNX Runtime FP32 export")
    for name in ("energy-90", "ratio-50", "ratio-25"):
        print(row(report, name, "onnx", 1))
        print(row(report, name, "onnx", 64))
    for size, iterations in ((TINY_ENCODER, 50), *(((BASE_ENCODER, 10),) if base_encoder else ())):
        with tempfile.TemporaryDirectory() as folder:
            model, data, accuracy, parameters = build_encoder(Path(folder), size)
            encoder = resource_from_dict({"apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization",
                                          "metadata": {"name": "encoder-low-rank"}, "spec": {
                "model": {"uri": str(model), "format": "TorchExport"}, "data": {"uri": str(data)},
                "passes": [dict(p, minWeights=4096) if p["type"] == "LowRank" else p for p in LOW_RANK],
                "benchmark": {"batchSizes": [1, 8], "rounds": rounds, "iterations": iterations, "threads": 1}}})
            report = run(encoder, Path(folder), out)
        print(f"encoder ({parameters / 1e6:.1f}M parameters, trained accuracy {accuracy:.3f}), low rank vs ONNX Runtime FP32")
        for name in ("energy-90", "ratio-50", "ratio-25"):
            print(row(report, name, "onnx", 1))
            print(row(report, name, "onnx", 8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="kompress-bench-")))
    parser.add_argument("--no-base-encoder", dest="base_encoder", action="store_false",
                        help="skip the 26M-parameter encoder (minutes to train and factor)")
    args = parser.parse_args()
    digits_cnn(args.rounds, args.out)
    low_rank(args.rounds, args.out, args.base_encoder)


if __name__ == "__main__":
    main()
