"""PyTorch on the GPU the Job lands on, with no TensorRT: all-MiniLM-L6-v2 (the sentence-embeddings
example, sequences of up to 128 tokens) and the digits CNN, each as PyTorch eager FP32 on CUDA
(the reference), FP16 and BF16, and FP16 through torch.compile (Default; ReduceOverhead: CUDA
graphs), in one run per model, interleaved. TensorRT is in the run too: it reports why it cannot run
where it is absent.

    python benchmarks/gpu_runtimes.py --out DIR [--minilm CHECKPOINT] [--rounds 5] [--iterations 30]

Prints, per candidate and batch size, p50 and the median of per-round ratios against CUDA FP32 with
their range, cosine / accuracy, energy per call (NVML) and compile time; writes each run's
report.json and report.md, and figures.md, flat under --out (what a device call brings back).
--minilm takes a checkpoint whose weights may be FP16 (scripts/gpu-carry's): they are widened to
FP32 first, so the baseline is FP32 as the example's is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))

from kompress_jobs.measurement.fingerprint import machine_fingerprint  # noqa: E402
from kompress_jobs.pipeline.run import run_optimization  # noqa: E402
from kompress_jobs.spec.specfile import load_resource_file  # noqa: E402

REFERENCE = "cuda-fp32"
TORCH_CANDIDATES = [
    {"type": "TorchRuntime", "name": REFERENCE, "precision": "FP32"},
    {"type": "TorchRuntime", "name": "cuda-fp16", "precision": "FP16"},
    {"type": "TorchRuntime", "name": "cuda-bf16", "precision": "BF16"},
]
COMPILED = [
    {"type": "TorchRuntime", "name": "cuda-fp16-compiled", "precision": "FP16", "compile": "Default"},
    {"type": "TorchRuntime", "name": "cuda-fp16-graphs", "precision": "FP16", "compile": "ReduceOverhead"},
]
ENGINES = [{"type": "OnnxExport", "name": "onnx"}, {"type": "TensorRT", "name": "tensorrt-fp16", "input": "onnx"}]


def widened_to_fp32(checkpoint: Path, folder: Path) -> Path:
    """The checkpoint with its floating weights in FP32 (safetensors in, safetensors out)."""
    import torch
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True)
    for path in checkpoint.iterdir():
        if path.suffix == ".safetensors":
            tensors = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
            save_file(tensors, str(folder / path.name), metadata={"format": "pt"})
        elif path.is_file():
            shutil.copy2(path, folder / path.name)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"dtype": "float32", "torch_dtype": "float32"}, indent=2))
    return folder


def minilm_resource(checkpoint: Path, rounds: int, iterations: int) -> dict:
    resource = load_resource_file(REPO / "examples" / "sentence-embeddings.yaml").to_wire()
    spec = resource["spec"]
    spec["model"]["uri"] = str(checkpoint)
    spec["data"] = {"uri": str(REPO / "examples" / "data" / "sentences.jsonl"), "text": {"column": "text", "maxLength": 128}}
    spec["passes"] = TORCH_CANDIDATES + COMPILED + ENGINES
    spec["goals"] = {"maxAccuracyDrop": 1.0}
    spec["benchmark"] = {"batchSizes": [1, 256], "warmup": 10, "iterations": iterations, "rounds": rounds, "threads": 1,
                         "evaluationBatchSize": 64}
    spec["job"] = {"device": "GPU"}
    return resource


def digits_resource(rounds: int, iterations: int) -> dict:
    resource = load_resource_file(REPO / "examples" / "digits-cnn.yaml").to_wire()
    spec = resource["spec"]
    for part in ("model", "data"):
        spec[part]["uri"] = str(REPO / "examples" / spec[part]["uri"])
    spec["passes"] = TORCH_CANDIDATES + ENGINES
    spec["benchmark"] = {"batchSizes": [1, 256], "warmup": 10, "iterations": iterations, "rounds": rounds, "threads": 1}
    spec["job"] = {"device": "GPU"}
    return resource


def figures(report: dict) -> list[str]:
    """One Markdown table: each candidate against CUDA FP32, per batch size, from per-round medians."""
    by_name = {c["name"]: c for c in report["candidates"]}
    reference = by_name.get(REFERENCE)
    batches = report["benchmark"]["batchSizes"]
    lines = ["| candidate | " + " | ".join(f"batch {b} p50 ms | vs CUDA FP32" for b in batches)
             + f" | {report['metric']} | energy J/call | first call s |", "|---" * (2 * len(batches) + 4) + "|"]
    for c in report["candidates"]:
        if c["outcome"] != "Measured":
            lines.append(f"| {c['name']} | {c['outcome']}: {(c.get('error') or '')[:160]} |")
            continue
        cells = []
        for batch in batches:
            mine = c["latency"][str(batch)]
            if reference and reference["outcome"] == "Measured":
                theirs = reference["latency"][str(batch)]["round_medians_ms"]
                ratios = [t / m for t, m in zip(theirs, mine["round_medians_ms"])]
                cells += [f"{mine['p50_ms']:.3f}", f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"]
            else:
                cells += [f"{mine['p50_ms']:.3f}", "–"]
        metric = c["metric"]["value"]
        energy = c.get("energy") or {}
        joules = f"{energy['joulesPerCall']:.4f}" if energy.get("measurable") else (energy.get("reason", "–")[:60])
        first = (c.get("details") or {}).get("firstCallSeconds", "–")
        lines.append(f"| {c['name']} ({c['runtime']} {c['precision']} {c['device']}) | " + " | ".join(cells)
                     + f" | {metric:.4f} | {joules} | {first} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minilm", type=Path, default=REPO / "examples" / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_fingerprint()
    text = [f"# PyTorch on the GPU: {machine.gpu.name if machine.gpu else 'no GPU visible'}; CPU {machine.cpu.model}",
            "", f"Libraries: {', '.join(f'{k} {v}' for k, v in machine.libraries.items())}.",
            f"{args.rounds} interleaved rounds × {args.iterations} calls; ratios are medians of per-round ratios (range).", ""]
    with tempfile.TemporaryDirectory(prefix="kompress-gpu-") as scratch:
        runs = {"digits": digits_resource(args.rounds, args.iterations)}
        if args.minilm.is_dir():
            runs["minilm"] = minilm_resource(widened_to_fp32(args.minilm, Path(scratch) / "minilm"), args.rounds, args.iterations)
        else:
            text += [f"MiniLM skipped: no checkpoint at {args.minilm} (scripts/gpu-carry makes one to carry).", ""]
        for name, resource in runs.items():
            from kompress_jobs.spec.specfile import resource_from_dict

            result = run_optimization(resource_from_dict(resource), base_dir=REPO, artifacts_uri=str(Path(scratch) / name),
                                      progress=lambda line: print(f"[{name}] {line}", flush=True))
            run_folder = Path(result.run_uri.removeprefix("file://"))
            for file in ("report.json", "report.md"):
                shutil.copy2(run_folder / file, args.out / f"{name}-{file}")
            text += [f"## {name}", "", *figures(result.report), ""]
    (args.out / "figures.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
