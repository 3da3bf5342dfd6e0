"""Hugging Face checkpoints, loaded safely from a local directory only.

A checkpoint is a directory with config.json, *.safetensors weights and tokenizer files. It is
loaded with `transformers` from that directory alone: no hub download (HF_HUB_OFFLINE and
local_files_only), no `trust_remote_code`, and never a pickled `pytorch_model.bin`. The model is
wrapped with its task head (`TaskModel`) so that it takes named tensors and returns one tensor,
which is what the runners, the ONNX exporter and the training passes expect. Only the job side
imports this module (it needs torch); the operator plans passes without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .errors import ModelLoadError
from .spec.sources import HeadType, HuggingFaceOptions, Pooling

PICKLED_WEIGHTS = ("pytorch_model.bin", "*.bin", "*.pt", "*.pth", "*.ckpt")
OUTPUT_NAMES = {HeadType.FEATURE_EXTRACTION: "embeddings", HeadType.SEQUENCE_CLASSIFICATION: "logits",
                HeadType.TOKEN_CLASSIFICATION: "logits"}
_INTEGER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _offline() -> None:
    # Set before transformers first touches the hub client: nothing is ever fetched at run time.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # the CLI shows its own progress, not loading bars
    transformers_logging.disable_progress_bar()


def read_config(directory: Path) -> dict:
    """config.json of a checkpoint that kompress may load; ModelLoadError naming what is wrong otherwise."""
    where = f"model directory {directory}"
    if not directory.is_dir():
        raise ModelLoadError(f"{where}: not a directory (a HuggingFace model is a checkpoint directory with config.json)")
    if not (directory / "config.json").is_file():
        raise ModelLoadError(f"{where}: no config.json (not a Hugging Face checkpoint)")
    if not list(directory.glob("*.safetensors")):
        pickled = sorted({p.name for pattern in PICKLED_WEIGHTS for p in directory.glob(pattern)})
        if pickled:
            raise ModelLoadError(f"{where}: holds only pickled weights ({', '.join(pickled)}); kompress never unpickles "
                                 "a model: save it with save_pretrained(..., safe_serialization=True) for *.safetensors")
        raise ModelLoadError(f"{where}: no *.safetensors weights")
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{where}: config.json is not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{where}: config.json is not a JSON object")
    architectures = config.get("architectures", [])
    if not isinstance(architectures, list) or not all(isinstance(a, str) and len(a) <= 200 for a in architectures):
        raise ModelLoadError(f"{where}: config.json architectures is not a list of class names")
    if not isinstance(config.get("model_type"), str):
        raise ModelLoadError(f"{where}: config.json model_type is not a string")
    if "auto_map" in config:
        raise ModelLoadError(f"{where}: config.json needs remote code (auto_map: {', '.join(config['auto_map'])}); "
                             "kompress never runs code from a checkpoint (trust_remote_code)")
    _offline()
    from transformers import CONFIG_MAPPING, __version__

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(f"{where}: architecture model_type {model_type[:60]!r} is not known to transformers {__version__}")
    return config


def resolve_head(config: dict, options: HuggingFaceOptions) -> HeadType:
    if options.head is not HeadType.AUTO:
        return options.head
    architecture = (config.get("architectures") or [""])[0]
    for head in (HeadType.SEQUENCE_CLASSIFICATION, HeadType.TOKEN_CLASSIFICATION):
        if architecture.endswith(f"For{head.value}"):
            return head
    return HeadType.FEATURE_EXTRACTION


def load_tokenizer(directory: Path):
    where = f"tokenizer directory {directory}"
    if not directory.is_dir():
        raise ModelLoadError(f"{where}: not a directory")
    if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json")):
        raise ModelLoadError(f"{where}: no tokenizer files (tokenizer.json, vocab.txt, ...)")
    _offline()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"{where}: transformers cannot load the tokenizer: {str(exc).strip().splitlines()[0][:300]}") from None


def load_task_model(directory: Path, options: HuggingFaceOptions | None, input_names: tuple[str, ...]):
    """The checkpoint with its task head, in eval mode, taking `input_names` positionally."""
    options = options or HuggingFaceOptions()
    config = read_config(directory)
    head = resolve_head(config, options)
    loader = auto_class(head)
    try:
        # Eager attention: plain MatMul / Softmax graphs that exporters and quantizers know.
        model = loader.from_pretrained(str(directory), local_files_only=True, use_safetensors=True,
                                       trust_remote_code=False, attn_implementation="eager")
    except Exception as exc:
        raise ModelLoadError(f"model directory {directory}: transformers cannot load it as {head.value}: "
                             f"{str(exc).strip().splitlines()[0][:300]}") from None
    return TaskModel(model, head, options.pooling, options.normalize, input_names, config.get("max_position_embeddings")).eval()


def auto_class(head: HeadType):
    """The transformers class that loads a checkpoint with this task head."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

    return {HeadType.FEATURE_EXTRACTION: AutoModel, HeadType.SEQUENCE_CLASSIFICATION: AutoModelForSequenceClassification,
            HeadType.TOKEN_CLASSIFICATION: AutoModelForTokenClassification}[head]


def check_inputs(input_names: tuple[str, ...], inputs: dict, max_positions: int | None) -> str | None:
    """Why these arrays cannot feed a transformer, or None."""
    import numpy as np

    for name in input_names:
        array = inputs[name]
        if name in _INTEGER_INPUTS and not np.issubdtype(array.dtype, np.integer):
            return f"input {name!r} holds {array.dtype} but the model takes integer token ids / masks (int64)"
        if name in _INTEGER_INPUTS and array.ndim != 2:
            return f"input {name!r} has shape {tuple(array.shape)} but the model takes (batch, sequence)"
        if max_positions and array.ndim >= 2 and array.shape[1] > max_positions:
            return f"input {name!r} has sequence length {array.shape[1]} but the model has {max_positions} positions"
    return None


class TaskModel(torch.nn.Module):
    """A transformers model with a fixed input order and one output tensor."""

    def __init__(self, model, head: HeadType, pooling: Pooling, normalize: bool, input_names: tuple[str, ...],
                 max_positions: int | None):
        super().__init__()
        self.model, self.head, self.pooling, self.normalize = model, head, pooling, normalize
        self.input_names, self.max_positions = tuple(input_names), max_positions
        self.output_name = OUTPUT_NAMES[head]

    def forward(self, *tensors):
        named = dict(zip(self.input_names, tensors))
        output = self.model(**named)
        if self.head is not HeadType.FEATURE_EXTRACTION:
            return output.logits
        states = output.last_hidden_state
        if self.pooling is Pooling.CLS:
            pooled = states[:, 0]
        else:
            mask = named.get("attention_mask")
            weights = torch.ones_like(states[..., :1]) if mask is None else mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled
