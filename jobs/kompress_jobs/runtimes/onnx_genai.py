"""ONNX Runtime GenAI: a folder written by its model builder (genai_config.json, model.onnx with
its data, tokenizer files), on the CPU. Generation runs in onnxruntime-genai with its own key/value
cache; the logits of a whole window come from the same model.onnx in plain ONNX Runtime with an
empty cache (GenAI computes only what generation needs). Loading reads protobuf and JSON: no code."""

from __future__ import annotations

import json

import numpy as np

from ..errors import ModelLoadError
from ..modelfile import ModelFile
from ..formats.onnx_genai import read_genai_config
from ..spec.sources import ModelFormat
from .base import Processor, first_line
from .generative import GenerativeRunner
from .registry import register

@register
class GenAiRunner(GenerativeRunner):
    runtime = "onnxruntime-genai"
    formats = frozenset({ModelFormat.ONNX_GENAI})

    @classmethod
    def unavailable(cls, device: Processor) -> str | None:
        try:
            import onnxruntime_genai  # noqa: F401
        except ImportError:
            return "onnxruntime-genai is not installed in this image"
        return super().unavailable(device)

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CPU,
                 input_names: tuple[str, ...] | None = None):
        import onnxruntime_genai as og

        self._og, self.device, self.threads = og, device, threads
        self.config = read_genai_config(model.path)
        decoder = self.config["model"]["decoder"]
        self.onnx_path = model.path / decoder.get("filename", "model.onnx")
        self.max_positions = self.config["model"].get("context_length")
        self._names = decoder["inputs"], decoder["outputs"], decoder["num_hidden_layers"]
        self._shape = (decoder["num_key_value_heads"], decoder["head_size"])
        try:
            config = og.Config(str(model.path))
            # the benchmark's threads, without touching the artifact's own configuration
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
            self.model = og.Model(config)
        except Exception as exc:
            raise ModelLoadError(f"model folder {model.path}: onnxruntime-genai could not load it: {first_line(exc)}") from None
        self._session = None

    def logits(self, ids: np.ndarray) -> np.ndarray:
        session = self._window_session()
        inputs, outputs, layers = self._names
        batch = ids.shape[0]
        empty = np.zeros((batch, *self._shape[:1], 0, self._shape[1]), dtype=self._cache_type)
        feed = {inputs["input_ids"]: ids, inputs["attention_mask"]: np.ones_like(ids)}
        for layer in range(layers):
            feed[inputs["past_key_names"] % layer] = empty
            feed[inputs["past_value_names"] % layer] = empty
        return session.run([outputs["logits"]], feed)[0].astype(np.float32, copy=False)

    def _window_session(self):
        if self._session is None:
            import onnxruntime as ort

            from .onnx_runtime import session_options

            self._session = ort.InferenceSession(str(self.onnx_path), session_options(self.threads),
                                                 providers=["CPUExecutionProvider"])
            past = self._names[0]["past_key_names"] % 0
            kind = next(i.type for i in self._session.get_inputs() if i.name == past)
            self._cache_type = np.float16 if kind == "tensor(float16)" else np.float32
        return self._session

    def _prefill(self, prompts: np.ndarray, new_tokens: int):
        og = self._og
        params = og.GeneratorParams(self.model)
        # the generator's buffers are sized for the whole generation
        params.set_search_options(max_length=prompts.shape[1] + new_tokens, do_sample=False, batch_size=prompts.shape[0])
        generator = og.Generator(self.model, params)
        generator.append_tokens(prompts.astype(np.int32))
        generator.generate_next_token()
        return generator, np.asarray(generator.get_next_tokens(), dtype=np.int64)

    def _step(self, generator, token: np.ndarray):
        generator.generate_next_token()
        return generator, np.asarray(generator.get_next_tokens(), dtype=np.int64)
