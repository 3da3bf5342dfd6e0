"""Quantization ratios, each measured against a baseline taken in the same run.

    .venv/bin/python benchmarks/quantization.py [--rounds 7] [--out DIR]

1. The digits CNN (examples/digits-cnn.yaml): the best candidate against the PyTorch FP32 baseline
   at batch 1, and INT8 against ONNX Runtime FP32 (the runtime's share and quantization's share).
2. A BERT-style encoder of about 26M parameters, briefly trained on generated sequences:
   dynamic and static INT8 against ONNX Runtime FP32.

Every figure is a median over interleaved rounds; "spread" is (max - min) / median of the round
medians. Results go to stdout; the full reports land in --out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))

from kompress_jobs.pipeline.run import run_optimization  # noqa: E402
from kompress_jobs.reference import BASE_ENCODER, build_encoder  # noqa: E402
from kompress_jobs.spec.specfile import load_resource_file, resource_from_dict  # noqa: E402


def row(report: dict, name: str, reference: str, batch: int) -> str:
    by_name = {c["name"]: c for c in report["candidates"]}
    c, ref = by_name[name], by_name[reference]
    if c["outcome"] != "Measured":
        return f"  {name:<22} {c['outcome']}: {c.get('error')}"
    mine, theirs = c["latency"][str(batch)], ref["latency"][str(batch)]
    return (f"  {name:<22} vs {reference:<12} batch {batch:<3} p50 {mine['p50_ms']:8.3f} ms (spread {100 * mine['spread']:3.0f}%)"
            f"  vs {theirs['p50_ms']:8.3f} ms (spread {100 * theirs['spread']:3.0f}%)  speedup {theirs['p50_ms'] / mine['p50_ms']:5.2f}x"
            f"  size {ref['sizeBytes'] / c['sizeBytes']:5.2f}x smaller  {report['metric']} {c['metric']['value']:.4f}"
            f" (drop {c['metric']['drop'] - ref['metric']['drop']:+.2f})")


def digits_cnn(rounds: int, out: Path) -> None:
    resource = load_resource_file(REPO / "examples" / "digits-cnn.yaml")
    resource.spec.benchmark.rounds = rounds
    report = run_optimization(resource, base_dir=REPO / "examples", artifacts_uri=str(out)).report
    best = report["best"]
    print(f"digits CNN ({report['fingerprint']['cpu']['model']}, flags {' '.join(report['fingerprint']['cpu']['flags'])}, "
          f"{report['benchmark']['threads']} thread)")
    print(row(report, best, "baseline", 1) + "   <- best vs PyTorch FP32")
    for name in ("onnx-export", "dynamic-int8", "static-int8", "fp16"):
        print(row(report, name, "baseline", 1))
    for name in ("dynamic-int8", "static-int8"):
        print(row(report, name, "onnx-export", 1) + "   <- quantization's own share")
    print(row(report, "static-int8", "baseline", 64))


def encoder(rounds: int, out: Path, scratch: Path) -> None:
    started = time.monotonic()
    model, data, accuracy, parameters = build_encoder(scratch, BASE_ENCODER, name="encoder-base")
    print(f"\nencoder: {parameters / 1e6:.1f}M parameters, {BASE_ENCODER.layers} layers x {BASE_ENCODER.width} wide, "
          f"trained {time.monotonic() - started:.0f}s to {accuracy:.3f} accuracy (4 classes)")
    resource = resource_from_dict({
        "apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization", "metadata": {"name": "encoder-base"},
        "spec": {
            "model": {"uri": str(model), "format": "TorchExport"},
            "data": {"uri": str(data)},
            "passes": [{"type": "OnnxExport"}, {"type": "DynamicInt8"},
                       {"type": "DynamicInt8", "name": "dynamic-int8-per-channel", "perChannel": True},
                       {"type": "StaticInt8", "calibrationSamples": 64}],
            "benchmark": {"batchSizes": [1, 8], "warmup": 3, "iterations": 10, "rounds": rounds, "threads": 1,
                          "evaluationBatchSize": 64},
        },
    })
    report = run_optimization(resource, artifacts_uri=str(out)).report
    for name in ("dynamic-int8", "dynamic-int8-per-channel", "static-int8"):
        for batch in (1, 8):
            print(row(report, name, "onnx-export", batch))
    print(row(report, "onnx-export", "baseline", 1) + "   <- ORT FP32 vs PyTorch FP32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "kompress-benchmarks")
    parser.add_argument("--skip-encoder", action="store_true")
    args = parser.parse_args()
    digits_cnn(args.rounds, args.out)
    if not args.skip_encoder:
        with tempfile.TemporaryDirectory() as scratch:
            encoder(args.rounds, args.out, Path(scratch))


if __name__ == "__main__":
    main()
