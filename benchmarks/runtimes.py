"""Across runtimes and techniques on the real pretrained transformer (all-MiniLM-L6-v2), one run, one
benchmark: every candidate against ONNX Runtime FP32 of the same model, at batch 1 and 8.

    .venv/bin/python benchmarks/runtimes.py [--rounds 5] [--iterations 30] [--out DIR] [--digits]

Candidates: ONNX Runtime FP32, OpenVINO FP32, the AutoQuantize pick (ONNX Runtime and OpenVINO
configurations side by side), NNCF INT8 (transformer preset), INT4 weight-only in both runtimes, and
a structurally compressed (TransformerCompress) + distilled + AutoQuantize candidate whose amounts an
Optuna study picks against the spec's goal (cosine ≥ 0.98, fastest first). --digits adds
the digits CNN with the OpenVINO passes next to ONNX Runtime's. Ratios are medians of the per-round
ratios with their range; cosine is against the PyTorch FP32 embeddings on the evaluation split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))

from kompress_jobs.pipeline.run import run_optimization  # noqa: E402
from kompress_jobs.spec.specfile import load_resource_file, resource_from_dict  # noqa: E402

COMPRESSION = {"training": {"epochs": 8, "learningRate": 2.0e-4, "batchSize": 32}}
# What the study may choose; it judges each trial (compress → distil → AutoQuantize) on the
# calibration split against the goal, and keeps the fastest that meets it.
SEARCH = {"trials": 6, "objectives": ["Latency"], "keepBest": 1, "searchSpace": [
    {"pass": "compressed", "parameter": "keepLayers", "choices": [4, 5, 6]},
    {"pass": "compressed", "parameter": "ffnAmount", "choices": [0.25, 0.5]},
    {"pass": "compressed", "parameter": "headAmount", "choices": [0.0, 0.25]}]}


def minilm_spec(rounds: int, iterations: int) -> dict:
    example = load_resource_file(REPO / "examples" / "sentence-embeddings.yaml").to_wire()
    spec = example["spec"]
    spec["model"]["uri"] = str(REPO / "examples" / "models" / "all-MiniLM-L6-v2")
    spec["data"]["uri"] = str(REPO / "examples" / "data" / "sentences.jsonl")
    spec["goals"] = {"maxAccuracyDrop": 2.0}  # cosine ≥ 0.98, the goal for the compressed candidate
    spec["benchmark"] |= {"rounds": rounds, "iterations": iterations, "batchSizes": [1, 8]}
    spec["passes"] = [
        {"type": "OnnxExport"},
        {"type": "OpenVinoConvert"},
        {"type": "AutoQuantize"},
        {"type": "OpenVinoInt8", "modelType": "Transformer", "calibrationSamples": 256},
        {"type": "Int4WeightOnly", "blockSize": 32, "accuracyLevel": 4},
        {"type": "OpenVinoWeightCompression", "bits": "INT4", "blockSize": 32},
        {"type": "TransformerCompress", "name": "compressed", "input": "baseline", **COMPRESSION},
        {"type": "AutoQuantize", "name": "compressed-int8", "input": "compressed"},
    ]
    spec["tuning"] = SEARCH
    return example


def table(report: dict, reference: str) -> None:
    by_name = {c["name"]: c for c in report["candidates"]}
    ref = by_name[reference]
    for c in report["candidates"]:
        if c["outcome"] != "Measured":
            print(f"   {c['name']:<28} {c['outcome']}: {c.get('error', '')[:120]}")
            continue
        cells = []
        for batch in report["benchmark"]["batchSizes"]:
            mine, theirs = c["latency"][str(batch)], ref["latency"][str(batch)]
            ratios = [t / m for t, m in zip(theirs["round_medians_ms"], mine["round_medians_ms"])]
            cells.append(f"b{batch} {mine['p50_ms']:7.2f} ms {statistics.median(ratios):5.2f}× ({min(ratios):.2f}–{max(ratios):.2f})")
        fidelity = c["metric"]["fidelity"].get("cosineSimilarity", c["metric"]["value"])
        print(f"   {c['name']:<28} {c['runtime']:<11} {c['precision']:<5} {'  '.join(cells)}  "
              f"{report['metric']} {c['metric']['value']:.4f} (cosine {fidelity:.4f})  {c['sizeBytes'] / 2**20:6.1f} MiB  "
              f"{'BEST' if c['name'] == report['best'] else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "kompress-benchmarks")
    parser.add_argument("--digits", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    report = run_optimization(resource_from_dict(minilm_spec(args.rounds, args.iterations)), artifacts_uri=str(args.out),
                              progress=lambda m: print(f"  [{time.monotonic() - started:5.0f}s] {m}", file=sys.stderr)).report
    cpu = report["fingerprint"]["cpu"]
    print(f"all-MiniLM-L6-v2, {time.monotonic() - started:.0f} s, {cpu['model']} ({' '.join(cpu['flags'])}), 1 thread, "
          f"{', '.join(f'{k} {v}' for k, v in report['fingerprint']['libraries'].items())}; ratios vs ORT FP32 (onnx-export)")
    table(report, "onnx-export")
    for trial in report.get("tuning", {}).get("trials", []):
        print(f"   study trial {trial['number']}: {trial['state']} {trial['parameters']} {trial.get('values', '')} "
              f"{trial.get('validation', '')} meets goals: {trial.get('meetsGoals')}")
    for name in ("auto-quantize", "compressed-int8"):
        search = next(c for c in report["candidates"] if c["name"] == name).get("details") or {}
        chosen = next((t for t in search.get("trials", []) if t["number"] == search.get("chosenTrial")), None)
        if chosen:
            print(f"   {name} chose trial {chosen['number']}: {chosen['runtime']} {chosen['method']} {chosen['settings']}")
    if args.digits:
        resource = load_resource_file(REPO / "examples" / "digits-cnn.yaml").to_wire()
        resource["spec"]["passes"] += [{"type": "OpenVinoConvert"}, {"type": "OpenVinoInt8"}]
        resource["spec"]["model"]["uri"] = str(REPO / "examples" / "models" / "digits-cnn.pt")
        resource["spec"]["data"]["uri"] = str(REPO / "examples" / "data" / "digits.npz")
        resource["spec"]["benchmark"]["rounds"] = args.rounds
        digits = run_optimization(resource_from_dict(resource), artifacts_uri=str(args.out)).report
        print("\ndigits CNN (examples/digits-cnn.yaml + OpenVINO passes); ratios vs PyTorch FP32 (baseline)")
        table(digits, "baseline")


if __name__ == "__main__":
    main()
