"""llama.cpp on the user's GGUF file as kept, against PyTorch FP32 of the same process: what a
llama.cpp runtime would add to examples/small-llm.yaml (docs/benchmarks.md). Not a kompress runtime
yet: llama-cpp-python has no binary wheel on PyPI, so it is built from source first (about 4.5 min
on 2 cores), into its own folder so the project's venv stays as it is:

    python3 -m venv /tmp/llamavenv && /tmp/llamavenv/bin/pip install llama-cpp-python==0.3.36
    LLAMA_CPP_SITE=/tmp/llamavenv/lib/python3.11/site-packages .venv/bin/python benchmarks/llama_cpp_reference.py

SmolLM2-135M-Instruct (Q4_1; PyTorch de-quantizes it to FP32), one thread, the example's 128-token
prompt of the GPL-3 text then 64 greedy tokens, 3 interleaved rounds after a warm-up each;
perplexity over the first 1,024 tokens in 4 windows of 256, the same token ids fed to both."""
import math
import os
import statistics as st
import sys
import time

if os.environ.get("LLAMA_CPP_SITE"):  # llama.cpp built beside the venv (see above)
    sys.path.append(os.environ["LLAMA_CPP_SITE"])
try:
    from llama_cpp import Llama
except ImportError:
    sys.exit("llama_cpp is not importable: build llama-cpp-python first (see this file's docstring)")
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(1)
gguf = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "examples", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
folder, name = os.path.split(gguf)
ROUNDS, PROMPT_TOKENS, NEW_TOKENS, WINDOW, WINDOWS = 3, 128, 64, 256, 4


def pytorch_generation(model, prompt: list[int]) -> tuple[float, list[float], list[int]]:
    """Seconds to the first token, seconds per decode step, the greedy tokens."""
    with torch.no_grad():
        start = time.perf_counter()
        out = model(torch.tensor([prompt]), use_cache=True)
        token, first = out.logits[0, -1].argmax().item(), time.perf_counter() - start
        steps, tokens, cache = [], [token], out.past_key_values
        for _ in range(NEW_TOKENS - 1):
            start = time.perf_counter()
            out = model(torch.tensor([[token]]), past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[0, -1].argmax().item()
            steps.append(time.perf_counter() - start)
            tokens.append(token)
    return first, steps, tokens


def llama_cpp_generation(llm, prompt: list[int]) -> tuple[float, list[float], list[int]]:
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    token, first = int(np.argmax(llm.scores[llm.n_tokens - 1])), time.perf_counter() - start
    steps, tokens = [], [token]
    for _ in range(NEW_TOKENS - 1):
        start = time.perf_counter()
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        steps.append(time.perf_counter() - start)
        tokens.append(token)
    return first, steps, tokens


def mean_nll(logits: np.ndarray, targets: list[int]) -> float:
    logits = logits.astype(np.float64) - logits.max(1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -float(log_probs[np.arange(len(targets)), targets].mean())


def perplexities(model, llm, ids: list[int]) -> tuple[float, float]:
    torch_nll, llama_nll = [], []
    with torch.no_grad():
        for w in range(WINDOWS):
            window = ids[w * WINDOW:(w + 1) * WINDOW]
            torch_nll.append(mean_nll(model(torch.tensor([window])).logits[0, :-1].numpy(), window[1:]))
            llm.reset()
            llm.eval(window)
            llama_nll.append(mean_nll(np.array(llm.scores[:WINDOW - 1]), window[1:]))
    return math.exp(st.mean(torch_nll)), math.exp(st.mean(llama_nll))


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = tokenizer(open("/usr/share/common-licenses/GPL-3").read(), add_special_tokens=False)["input_ids"]
    llm = Llama(model_path=gguf, n_ctx=2 * WINDOW, n_threads=1, n_threads_batch=1, n_batch=WINDOW, logits_all=True, verbose=False)
    prompt = ids[:PROMPT_TOKENS]
    runs = {"pytorch-fp32": lambda: pytorch_generation(model, prompt), "llama.cpp-q4_1": lambda: llama_cpp_generation(llm, prompt)}
    results = {name: [] for name in runs}
    for round_ in range(ROUNDS):
        for candidate in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):  # the order alternates
            runs[candidate]()  # warm-up
            results[candidate].append(runs[candidate]())
    for candidate, rounds in results.items():
        steps = [s for _, round_steps, _ in rounds for s in round_steps]
        print(f"{candidate}: p50 step {st.median(steps) * 1e3:.2f} ms, round medians "
              f"{[round(st.median(s) * 1e3, 2) for _, s, _ in rounds]} ms, {len(steps) / sum(steps):.1f} tokens/s, "
              f"time to first token {st.median(first for first, _, _ in rounds) * 1e3:.0f} ms")
    ratios = [st.median(a[1]) / st.median(b[1]) for a, b in zip(results["pytorch-fp32"], results["llama.cpp-q4_1"])]
    print("llama.cpp × PyTorch FP32 by round:", [round(r, 2) for r in ratios])
    reference, other = results["pytorch-fp32"][0][2], results["llama.cpp-q4_1"][0][2]
    agreed = next((i for i, (x, y) in enumerate(zip(reference, other)) if x != y), NEW_TOKENS)
    print(f"greedy agreement {agreed / NEW_TOKENS:.3f}")
    print("perplexity PyTorch FP32 %.3f, llama.cpp %.3f" % perplexities(model, llm, ids))


if __name__ == "__main__":
    main()
