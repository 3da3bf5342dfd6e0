"""llama.cpp (through llama-cpp-python) for a GGUF file as its users run it: its own kernels on its
own quantization types, no de-quantization. Not the default runtime for GGUF (that is PyTorch, which
the baseline of a LanguageModeling run is measured in): a model runs here when its Execution names
`llama.cpp` (the LlamaCpp pass). Token ids go in as they are, so the pipeline's tokenizer (read from
the same GGUF) and llama.cpp's agree by construction.

A native library can crash the process (seen: llama.cpp's AMX backend, built for the build machine's
CPU, segfaults at the first inference of a Q4_1 file on an Intel Xeon with AMX). So it runs in a
process of its own (contained.py): a crash, whenever it comes, fails this candidate with the signal
named, and the run goes on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from ..spec.wire import Model
from .base import Processor
from .generative import GenerativeRunner
from .llama_variants import load_cpu_backend
from .registry import register

PACKAGE = "llama-cpp-python"


class LlamaCppOptions(Model):
    threads: int | None = Field(None, ge=1, le=256, description="llama.cpp's threads (default: benchmark.threads).")
    context_tokens: int = Field(2048, ge=64, le=131_072, description="The context llama.cpp allocates (its key/value "
                                "cache): the longest window or prompt plus new tokens it takes.")


@register
class LlamaCppRunner(GenerativeRunner):
    runtime = "llama.cpp"
    contained = True  # a crash costs this candidate, not the run (contained.py)
    formats = frozenset({ModelFormat.GGUF})
    default = False
    Options = LlamaCppOptions

    @classmethod
    def unavailable(cls, device: Processor) -> str | None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            return f"{PACKAGE} is not installed (the job image's extra `llama`)"
        return None

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None):
        import llama_cpp

        options = self.options_of(model)
        # a build of run-time CPU variants loads the best this node has (llama_variants.py)
        self.variant = load_cpu_backend(Path(llama_cpp.__file__).parent / "lib")
        self.device, self.max_positions = device, options.context_tokens
        self._make = lambda logits_all: llama_cpp.Llama(
            model_path=str(model.path), n_ctx=options.context_tokens, n_batch=min(512, options.context_tokens),
            n_threads=options.threads or threads, n_threads_batch=options.threads or threads, logits_all=logits_all,
            verbose=False)
        self._scorer = None  # every position's logits (perplexity), made on first use
        self._rows: list = []  # one context per row of a generation batch (llama.cpp keeps one cache each)
        # the last position's logits, read from the context (without logits_all llama-cpp-python keeps
        # no copy): bound here, not looked up in each timed decode step
        self._last_logits = llama_cpp.llama_get_logits_ith
        self._vocab = 0

    def logits(self, ids: np.ndarray) -> np.ndarray:
        if self._scorer is None:
            self._scorer = self._make(True)
        windows = []
        for row in ids:
            self._scorer.reset()
            self._scorer.eval(row.tolist())
            windows.append(np.asarray(self._scorer.scores[: len(row)], dtype=np.float32))
        return np.stack(windows)

    def _prefill(self, prompts: np.ndarray, new_tokens: int):
        while len(self._rows) < len(prompts):
            self._rows.append(self._make(False))
            self._vocab = self._rows[-1].n_vocab()
        rows = self._rows[: len(prompts)]
        for llm, prompt in zip(rows, prompts):
            llm.reset()
            llm.eval(prompt.tolist())
        return rows, self._next_tokens(rows)

    def _step(self, rows, token: np.ndarray):
        for llm, last in zip(rows, token):
            llm.eval([int(last)])
        return rows, self._next_tokens(rows)

    def _next_tokens(self, rows) -> np.ndarray:
        """Greedy: the most likely next token of each row, from the logits of its last position."""
        return np.array([int(np.argmax(np.ctypeslib.as_array(self._last_logits(llm.ctx, -1), shape=(self._vocab,))))
                         for llm in rows], dtype=np.int64)
