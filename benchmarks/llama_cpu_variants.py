"""llama.cpp's CPU variants against PyTorch FP32, in one run: what scripts/build-llama-wheel's
run-time variants buy on this CPU. Each GGUF runs in kompress's llama.cpp runtime, in a process of
its own, twice: once loading the best variant this CPU has, once under an AVX2 cap (the haswell
variant, what the job image ran before it carried variants); PyTorch FP32 of the source file is
the baseline. The example's 128-token prompt of the GPL-3 text, then 64 greedy tokens at 1 thread;
rounds interleaved (the order rotates), ratios taken per round: medians with their range.

    .venv/bin/python benchmarks/llama_cpu_variants.py [ROUNDS]

The GGUFs: the example's Q4_1 file as kept, and Q6_K and Q8_0 re-quantized from it by the bindings.
"""
from __future__ import annotations

import os
import statistics as st
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "examples" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_TOKENS, NEW_TOKENS = 128, 64


def main(rounds: int) -> None:
    from kompress_jobs.llm.loading import load_tokenizer
    from kompress_jobs.measurement.hardware import cpu_info
    from kompress_jobs.modelfile import Execution, ModelFile
    from kompress_jobs.passes.llama_cpp import GgufType, _quantize
    from kompress_jobs.runtimes import make_runner
    from kompress_jobs.spec.sources import ModelFormat
    from kompress_jobs.spec.targets import MAX_CPU_ISA_ENV, CpuIsa

    os.environ.pop(MAX_CPU_ISA_ENV, None)
    source = ModelFile(SOURCE, ModelFormat.GGUF, generative=True)
    tokenizer = load_tokenizer(source)
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    import numpy as np

    prompt = np.array([tokenizer(text, add_special_tokens=False)["input_ids"][:PROMPT_TOKENS]])
    runners = {"pytorch-fp32": make_runner(source, threads=1)}
    with tempfile.TemporaryDirectory() as folder:
        files = {"q4_1": SOURCE}
        for kind in (GgufType.Q6_K, GgufType.Q8_0):
            files[kind.value.lower()] = Path(folder) / f"{kind.value}.gguf"
            _quantize(SOURCE, files[kind.value.lower()], kind, 1, None)
        for name, path in files.items():
            model = replace(source, path=path, execution=Execution(runtime="llama.cpp"))
            for cap in (None, CpuIsa.AVX2):  # the cap travels to the runner's process in its environment
                os.environ.pop(MAX_CPU_ISA_ENV, None) if cap is None else os.environ.__setitem__(MAX_CPU_ISA_ENV, cap.value)
                runner = make_runner(model, threads=1)
                runners[f"{name}-{runner.variant}"] = runner
        os.environ.pop(MAX_CPU_ISA_ENV, None)
        steps: dict[str, list[float]] = {name: [] for name in runners}
        names = list(runners)
        for name in names:
            runners[name].generate(prompt, 8)  # warm
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                steps[name].append(st.median(runners[name].generate(prompt, NEW_TOKENS).step_ns) / 1e6)
    print(f"{cpu_info()[0]}, 1 thread, {rounds} interleaved rounds; decode step p50 per round")
    print("| runtime | variant | step ms (median) | × PyTorch FP32 (rounds) | × haswell of the same file |")
    print("|---|---|---|---|---|")
    for name in names:
        ratios = [b / m for b, m in zip(steps["pytorch-fp32"], steps[name])]
        file, _, variant = name.partition("-")
        haswell = f"{file}-haswell"
        versus = ""
        if name != "pytorch-fp32" and haswell in steps and haswell != name:
            gains = [h / m for h, m in zip(steps[haswell], steps[name])]
            versus = f"{st.median(gains):.2f}× ({min(gains):.2f}–{max(gains):.2f})"
        print(f"| {file} | {variant or '–'} | {st.median(steps[name]):.2f} | {st.median(ratios):.2f}× "
              f"({min(ratios):.2f}–{max(ratios):.2f}) | {versus} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
