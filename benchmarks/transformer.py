"""The real pretrained transformer (all-MiniLM-L6-v2): ratios against ONNX Runtime FP32 of the same
model, measured in the same run.

    .venv/bin/python benchmarks/transformer.py [--rounds 7] [--iterations 50] [--out DIR]

1. `kompress optimize examples/sentence-embeddings.yaml` as a user runs it (OnnxExport + AutoQuantize,
   one goal: cosine ≥ 0.99 to the FP32 embeddings): the pick against ONNX Runtime FP32 at batch 1
   and 8, its cosine on the evaluation split, and the steered search's trials.
2. ONNX Runtime's offline transformer optimizer (attention / LayerNorm / GELU fusions,
   `onnxruntime.transformers.optimizer`) against what an InferenceSession already fuses on the CPU:
   the exported FP32 model, the same fused, the pick, and the fused model with the pick's settings,
   timed interleaved (the order rotates every round) on one thread.

Every figure is a median over rounds with the range of the per-round ratios; cosine is against the
PyTorch FP32 embeddings over the evaluation split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))

from kompress_jobs.data import batch_of  # noqa: E402
from kompress_jobs.modelfile import ModelFile  # noqa: E402
from kompress_jobs.pipeline.run import run_optimization  # noqa: E402
from kompress_jobs.measurement.quality import fidelity_metric  # noqa: E402
from kompress_jobs.runtimes import OrtRunner  # noqa: E402
from kompress_jobs.spec.sources import ModelFormat  # noqa: E402
from kompress_jobs.spec.specfile import load_resource_file  # noqa: E402
from kompress_jobs.spec.tasks import Metric


def pipeline_run(rounds: int, iterations: int, out: Path) -> tuple[dict, Path]:
    resource = load_resource_file(REPO / "examples" / "sentence-embeddings.yaml")
    resource.spec.benchmark.rounds, resource.spec.benchmark.iterations = rounds, iterations
    started = time.monotonic()
    result = run_optimization(resource, base_dir=REPO / "examples", artifacts_uri=str(out),
                              progress=lambda m: print(f"  [{time.monotonic() - started:5.0f}s] {m}", file=sys.stderr))
    report = result.report
    print(f"\n1. kompress optimize examples/sentence-embeddings.yaml: {time.monotonic() - started:.0f} s on "
          f"{report['fingerprint']['cpu']['model']} ({' '.join(report['fingerprint']['cpu']['flags'])}), 1 thread")
    by_name = {c["name"]: c for c in report["candidates"]}
    reference = by_name["onnx-export"]
    for name in ("baseline", "onnx-export", report["best"]):
        c = by_name[name]
        for batch in report["benchmark"]["batchSizes"]:
            mine, theirs = c["latency"][str(batch)], reference["latency"][str(batch)]
            ratios = [t / m for t, m in zip(theirs["round_medians_ms"], mine["round_medians_ms"])]
            print(f"   {name:<14} batch {batch}: p50 {mine['p50_ms']:7.2f} ms  vs ORT FP32 {statistics.median(ratios):.2f}× "
                  f"(rounds {min(ratios):.2f}–{max(ratios):.2f})  cosine {c['metric']['fidelity']['cosineSimilarity']:.4f}  "
                  f"{c['sizeBytes'] / 2**20:.1f} MiB")
    search = by_name[report["best"]].get("details") or {}
    for trial in search.get("trials", []):
        print(f"   trial {trial['number']:>2} {trial['method']:<7} {trial['settings']} FP32 nodes {len(trial['fallbackNodes'])}: "
              f"cosine {trial['metric']:.4f}, {trial['speedupVsInput']:.2f}× → {trial['verdict']}")
    return report, out / result.run_id


def fused(source: Path, target: Path) -> Path:
    """ONNX Runtime's offline BERT optimizer (fusions only; the session's own optimizations stay on)."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(source), model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
    model.save_model_to_file(str(target))
    return target


def fused_int8(source: Path, target: Path, settings: dict) -> Path:
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    # Shape inference does not type the fused contrib ops' outputs: tell the quantizer they are float.
    quantize_dynamic(str(source), str(target), per_channel=settings["perChannel"], reduce_range=settings["reduceRange"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return target


def interleaved(models: dict[str, Path], inputs: dict, reference: np.ndarray, rounds: int, iterations: int) -> None:
    runners = {name: OrtRunner(ModelFile(path, ModelFormat.ONNX), threads=1) for name, path in models.items()}
    cosine = {name: fidelity_metric(r(inputs)["embeddings"], reference, Metric.COSINE_SIMILARITY) for name, r in runners.items()}
    names = list(runners)
    for batch_size in (1, 8):
        batch = batch_of(inputs, batch_size)
        medians: dict[str, list[float]] = {name: [] for name in names}
        for name in names:
            for _ in range(10):
                runners[name](batch)
        for index in range(rounds):
            for name in names[index % len(names):] + names[:index % len(names)]:
                timings = []
                for _ in range(iterations):
                    start = time.perf_counter()
                    runners[name](batch)
                    timings.append(time.perf_counter() - start)
                medians[name].append(1e3 * statistics.median(timings))
        base = medians[names[0]]
        for name in names:
            ratios = [b / m for b, m in zip(base, medians[name])]
            print(f"   {name:<26} batch {batch_size}: p50 {statistics.median(medians[name]):7.2f} ms  vs {names[0]} "
                  f"{statistics.median(ratios):.2f}× (rounds {min(ratios):.2f}–{max(ratios):.2f})  cosine {cosine[name]:.4f}")


def fusion_comparison(report: dict, run: Path, rounds: int, iterations: int, scratch: Path) -> None:
    from kompress_jobs.huggingface import load_task_model, load_tokenizer
    from kompress_jobs.reference import sentence_rows

    by_name = {c["name"]: c for c in report["candidates"]}
    exported = run / by_name["onnx-export"]["artifact"]
    pick = by_name[report["best"]]
    settings = next(t["settings"] for t in pick["details"]["trials"] if t["number"] == pick["details"]["chosenTrial"])
    checkpoint = REPO / "examples" / "models" / "all-MiniLM-L6-v2"
    tokenizer = load_tokenizer(checkpoint)
    texts = [r["text"] for r in sentence_rows({"evaluation": 128}, seed=7)]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="np")
    inputs = {n: encoded[n].astype(np.int64) for n in ("input_ids", "attention_mask")}
    import torch

    module = load_task_model(checkpoint, None, tuple(inputs))
    with torch.no_grad():
        reference = module(*[torch.from_numpy(inputs[n]) for n in inputs]).numpy()
    fused_fp32 = fused(exported, scratch / "fused.onnx")
    models = {"ORT FP32 (exported)": exported, "ORT FP32 fused offline": fused_fp32,
              f"pick ({pick['name']})": run / pick["artifact"],
              "fused + pick's INT8 settings": fused_int8(fused_fp32, scratch / "fused-int8.onnx", settings)}
    print(f"\n2. offline transformer fusion, interleaved, {rounds} rounds × {iterations} calls, 1 thread, "
          f"128 generated sentences at length 64 (cosine vs PyTorch FP32)")
    interleaved(models, inputs, reference, rounds, iterations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "kompress-benchmarks")
    args = parser.parse_args()
    report, run = pipeline_run(args.rounds, args.iterations, args.out)
    with tempfile.TemporaryDirectory() as scratch:
        fusion_comparison(report, run, args.rounds, args.iterations, Path(scratch))


if __name__ == "__main__":
    main()
