"""A causal language model in PyTorch eager (transformers), FP32 on the CPU: the baseline of a
LanguageModeling run as the user keeps it, from a checkpoint folder or a GGUF file."""

from __future__ import annotations

import inspect

import numpy as np

from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import Processor
from .generative import GenerativeRunner
from .registry import register


@register
class TorchCausalLmRunner(GenerativeRunner):
    runtime = "pytorch"
    formats = frozenset({ModelFormat.HUGGING_FACE, ModelFormat.GGUF})

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None, module=None):
        import torch

        from ..llm.loading import load_causal_lm

        self._torch = torch
        self.device = device
        self.module = module if module is not None else load_causal_lm(model)
        self.max_positions = getattr(self.module.config, "max_position_embeddings", None)
        # transformers 5.x names the key/value cache `cache`; earlier versions `past_key_values`
        self._cache = "cache" if "cache" in inspect.signature(self.module.forward).parameters else "past_key_values"

    def logits(self, ids: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(ids), use_cache=False).logits.float().numpy()

    def _prefill(self, prompts: np.ndarray, new_tokens: int):
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(prompts), use_cache=True)
        return out[self._cache], out.logits[:, -1].argmax(-1).numpy()

    def _step(self, cache, token: np.ndarray):
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(token[:, None]), use_cache=True, **{self._cache: cache})
        return out[self._cache], out.logits[:, -1].argmax(-1).numpy()
