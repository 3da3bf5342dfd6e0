"""What a runner of a causal language model adds to every Runner: the logits of a window of tokens
(perplexity and fidelity are computed from them) and a timed greedy generation (prefill, then one
decode step per new token with the key/value cache). Every runtime decodes the same way, so the
benchmark compares runtimes and not decoding strategies."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import DataError
from .base import Inputs, Runner

INPUT, OUTPUT = "input_ids", "logits"


@dataclass
class Generation:
    first_token_ns: int  # the prefill of the prompt and the choice of the first new token
    step_ns: list[int]  # each later token: one decode step on the cache
    tokens: np.ndarray  # (batch, new tokens): what was generated, to compare runtimes' continuations
    cpu_ns: int = 0  # the CPU time of the process the model runs in (every thread), over the whole generation


class GenerativeRunner(Runner):
    generative: ClassVar[bool] = True
    input_names = (INPUT,)
    output_names = (OUTPUT,)
    max_positions: int | None = None  # the longest sequence the model takes, when it says

    def __call__(self, inputs: Inputs) -> Inputs:
        ids = inputs[INPUT]
        self._check_length(ids.shape[1], "a window of task.contextLength")
        return {OUTPUT: self.logits(np.ascontiguousarray(ids, dtype=np.int64))}

    def logits(self, ids: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """(batch, tokens) → (batch, tokens, vocabulary) float32, without a cache."""
        raise NotImplementedError

    def generate(self, prompts: np.ndarray, new_tokens: int) -> Generation:
        self._check_length(prompts.shape[1] + new_tokens, "benchmark.generation.promptTokens + newTokens")
        cpu_start = time.process_time_ns()
        start = time.perf_counter_ns()
        state, token = self._prefill(np.ascontiguousarray(prompts, dtype=np.int64), new_tokens)
        first = time.perf_counter_ns() - start
        tokens, steps = [token], []
        for _ in range(new_tokens - 1):
            start = time.perf_counter_ns()
            state, token = self._step(state, token)
            steps.append(time.perf_counter_ns() - start)
            tokens.append(token)
        return Generation(first, steps, np.stack(tokens, axis=1), time.process_time_ns() - cpu_start)

    def _prefill(self, prompts: np.ndarray, new_tokens: int):  # pragma: no cover - interface
        """(state, next token per row) after the prompt; `new_tokens` will follow it."""
        raise NotImplementedError

    def _step(self, state, token: np.ndarray):  # pragma: no cover - interface
        raise NotImplementedError

    def _check_length(self, length: int, what: str) -> None:
        if self.max_positions and length > self.max_positions:
            raise DataError(f"{what} is {length} tokens, longer than the model's context ({self.max_positions} positions)")
