"""OpenVINO: a causal language model folder as optimum-intel writes it (a stateful IR, the key/value
cache inside the model; config.json; the tokenizer), on the CPU. One infer request carries the
cache: a prefill feeds the prompt after reset_state, each decode step feeds one token. Whole windows
(perplexity) run the same way from an empty cache. Computed in f32 like every OpenVINO candidate; the
cache in the precision the model's runtime options name (the OpenVinoCausalLM pass sets it)."""

from __future__ import annotations

import json

import numpy as np

from ..errors import ModelLoadError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import Processor, first_line
from .generative import GenerativeRunner
from .openvino_runtime import compile_config
from .registry import register

XML, BIN, CONFIG = "openvino_model.xml", "openvino_model.bin", "config.json"  # optimum-intel's names


def stateful_feed(ids: np.ndarray, past: int = 0) -> dict[str, np.ndarray]:
    """The stateful model's inputs for `ids` after `past` tokens already in its cache."""
    batch, length = ids.shape
    return {"input_ids": ids, "attention_mask": np.ones((batch, past + length), np.int64),
            "position_ids": np.broadcast_to(np.arange(past, past + length, dtype=np.int64), (batch, length)),
            "beam_idx": np.arange(batch, dtype=np.int32)}  # each row keeps its own cache


def check_folder(folder) -> None:
    """ModelLoadError naming what a folder lacks to be a stateful causal LM, before OpenVINO reads it."""
    where = f"model folder {folder}"
    if not folder.is_dir():
        raise ModelLoadError(f"{where}: not a folder (an OpenVINOCausalLM model is the folder optimum-intel writes)")
    for name in (XML, BIN, CONFIG):
        if not (folder / name).is_file():
            raise ModelLoadError(f"{where}: no {name} (an OpenVINOCausalLM folder holds {XML}, its .bin and {CONFIG})")


@register
class OpenVinoCausalLmRunner(GenerativeRunner):
    runtime = "openvino"
    formats = frozenset({ModelFormat.OPENVINO_CAUSAL_LM})
    devices = (Processor.CPU,)

    @classmethod
    def unavailable(cls, device: Processor) -> str | None:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed in this image"
        return super().unavailable(device)

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None):
        import openvino as ov

        check_folder(model.path)
        self.device, self.threads = device, threads
        core = ov.Core()
        try:
            ir = core.read_model(str(model.path / XML))
        except Exception as exc:
            raise ModelLoadError(f"model folder {model.path}: OpenVINO cannot read {XML}: {first_line(exc)}") from None
        names = {name for port in ir.inputs for name in port.get_names()}
        if not ir.get_sinks() or "beam_idx" not in names:
            raise ModelLoadError(f"model folder {model.path}: {XML} is not a stateful causal LM (its key/value cache "
                                 "is not inside the model); export it with optimum-intel's stateful export")
        self._feeds = names
        # compressed weights or not, computed in f32 (compile_config leaves the hint to FP32 models alone)
        config = compile_config(model, threads) | {"INFERENCE_PRECISION_HINT": "f32"}
        try:
            self.compiled = core.compile_model(ir, "CPU", config)
        except Exception as exc:
            raise ModelLoadError(f"model folder {model.path}: OpenVINO cannot compile it: {first_line(exc)}") from None
        self.kv_cache_precision = self.compiled.get_property("KV_CACHE_PRECISION").get_type_name()
        self.request = self.compiled.create_infer_request()
        self.max_positions = json.loads((model.path / CONFIG).read_text()).get("max_position_embeddings")

    def _infer(self, ids: np.ndarray, past: int) -> np.ndarray:
        """Logits of `ids` after `past` tokens already in the request's cache."""
        self.request.infer({name: value for name, value in stateful_feed(ids, past).items() if name in self._feeds})
        return self.request.get_tensor("logits").data

    def logits(self, ids: np.ndarray) -> np.ndarray:
        self.request.reset_state()
        return np.array(self._infer(ids, 0), dtype=np.float32)  # a copy: the request's buffer is reused

    def _prefill(self, prompts: np.ndarray, new_tokens: int):
        self.request.reset_state()
        return prompts.shape[1], self._infer(prompts, 0)[:, -1].argmax(-1)

    def _step(self, past: int, token: np.ndarray):
        return past + 1, self._infer(token[:, None], past)[:, -1].argmax(-1)
