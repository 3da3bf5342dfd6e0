"""Reference models and data that train in seconds from data a package ships, for examples,
tests and benchmarks: a CNN and an MLP on scikit-learn's digits, and a BERT-style transformer
encoder on a generated sequence task.

    python -m kompress_jobs.reference examples      # rebuild examples/data and examples/models
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "calibration", "evaluation")


# --- data --------------------------------------------------------------------------------


def digits_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's 8×8 digits as (N, 1, 8, 8) float32 in [0, 1], split 1197 / 200 / 400."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    images = (digits.images[order] / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target[order].astype(np.int64)
    bounds = {"evaluation": (0, 400), "calibration": (400, 600), "train": (600, len(labels))}
    arrays = {}
    for split, (start, stop) in bounds.items():
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images[start:stop], labels[start:stop]
    return arrays


def sequence_arrays(vocab: int, length: int, classes: int, rows: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Token sequences whose class shows in which band of the vocabulary is over-represented."""
    rng = np.random.default_rng(seed)
    band = vocab // classes
    arrays = {}
    for split, count in rows.items():
        labels = rng.integers(0, classes, size=count)
        tokens = rng.integers(0, vocab, size=(count, length))
        marked = rng.random((count, length)) < 0.3
        tokens[marked] = (labels[:, None] * band + rng.integers(0, band, size=(count, length)))[marked]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = tokens.astype(np.int64), labels.astype(np.int64)
    return arrays


_SUBJECTS = ["the engineer", "our team", "the operator", "a new intern", "the on-call SRE", "the platform group",
             "my manager", "the release train", "the model server", "the nightly build", "the data pipeline", "the cluster"]
_VERBS = ["shipped", "reviewed", "rolled back", "deployed", "tested", "described", "benchmarked", "migrated", "rebuilt", "watched"]
_OBJECTS = ["the dashboard", "a small service", "the inference endpoint", "the storage layer", "every alert", "the queue",
            "the training job", "a risky change", "the search index", "the login flow", "the GPU nodes", "the quarterly report"]
_GOOD = ["carefully", "quickly", "cleanly", "smoothly", "with great care", "ahead of schedule", "without a single error",
         "and everyone was delighted", "to wide applause", "and it works beautifully"]
_BAD = ["badly", "far too late", "with many errors", "and broke production", "despite every warning", "and nobody was happy",
        "while the pager screamed", "and it failed again", "in a terrible hurry", "and lost a day of data"]


def sentence_rows(counts: dict[str, int], seed: int = 0) -> list[dict]:
    """Generated English sentences with a sentiment label (1 good, 0 bad) and a split column:
    text data for the transformer examples without downloading any."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, count in counts.items():
        for _ in range(count):
            label = int(rng.integers(0, 2))
            ending = (_GOOD if label else _BAD)[rng.integers(0, len(_GOOD))]
            words = [_SUBJECTS[rng.integers(0, len(_SUBJECTS))], _VERBS[rng.integers(0, len(_VERBS))],
                     _OBJECTS[rng.integers(0, len(_OBJECTS))], ending]
            if rng.random() < 0.5:  # vary the length, so padding and masks matter
                words.append(["on Monday", "last night", "after the outage", "before lunch", "this quarter"][rng.integers(0, 5)])
            rows.append({"text": " ".join(words) + ".", "label": label, "split": split})
    return rows


def build_sentences(out: Path, seed: int = 0) -> Path:
    """examples/data/sentences.jsonl: train / calibration / evaluation sentences."""
    import json

    path = out / "data" / "sentences.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sentence_rows({"train": 512, "calibration": 256, "evaluation": 256}, seed)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# --- models ------------------------------------------------------------------------------


def digits_cnn():
    """The eager module behind examples/models/digits-cnn.pt (StructuredPrune's `architecture`)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 2 * 2, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10),
    )


def digits_mlp():
    """The eager module behind examples/models/digits-mlp.pt."""
    from torch import nn

    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10),
    )


def _digits_cnn_student():
    """A narrow CNN for distilling digits-cnn into (about 1/30 of its weights); untrained."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10),
    )


def build_student(out: Path, seed: int = 0) -> Path:
    """examples/models/digits-cnn-student.pt: the starting point of the distillation example."""
    import torch

    torch.manual_seed(seed)
    path = out / "models" / "digits-cnn-student.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(_digits_cnn_student().eval()), str(path))
    return path


def _encoder_classes():
    import torch
    from torch import nn

    class SelfAttention(nn.Module):
        """Plain BERT-style attention from MatMul/Softmax, the pattern INT8 kernels target."""

        def __init__(self, width: int, heads: int):
            super().__init__()
            self.heads, self.head_width = heads, width // heads
            self.qkv = nn.Linear(width, 3 * width)
            self.out = nn.Linear(width, width)

        def forward(self, x):
            batch, length, width = x.shape
            q, k, v = self.qkv(x).reshape(batch, length, 3, self.heads, self.head_width).permute(2, 0, 3, 1, 4)
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_width), dim=-1)
            return self.out((weights @ v).transpose(1, 2).reshape(batch, length, width))

    class EncoderLayer(nn.Module):
        def __init__(self, width: int, heads: int, hidden: int):
            super().__init__()
            self.attention, self.norm1 = SelfAttention(width, heads), nn.LayerNorm(width)
            self.feed_forward = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
            self.norm2 = nn.LayerNorm(width)

        def forward(self, x):
            x = self.norm1(x + self.attention(x))
            return self.norm2(x + self.feed_forward(x))

    class EncoderClassifier(nn.Module):
        def __init__(self, vocab: int, length: int, classes: int, width: int, heads: int, hidden: int, layers: int):
            super().__init__()
            self.embedding = nn.Embedding(vocab, width)
            self.position = nn.Parameter(torch.zeros(1, length, width))
            self.layers = nn.Sequential(*[EncoderLayer(width, heads, hidden) for _ in range(layers)])
            self.head = nn.Linear(width, classes)

        def forward(self, tokens):
            x = self.layers(self.embedding(tokens) + self.position)
            return self.head(x.mean(dim=1))

    return EncoderClassifier


@dataclass(frozen=True)
class EncoderSize:
    vocab: int = 400
    length: int = 32
    classes: int = 4
    width: int = 64
    heads: int = 4
    hidden: int = 256
    layers: int = 2
    steps: int = 150
    batch: int = 32
    lr: float = 3e-3


TINY_ENCODER = EncoderSize()
BASE_ENCODER = EncoderSize(vocab=2000, width=512, heads=8, hidden=2048, layers=8, steps=60, batch=16, lr=3e-4)  # ≈ 26M parameters


def train(model, arrays: dict[str, np.ndarray], epochs: int = 0, steps: int = 0, batch: int = 64, lr: float = 2e-3, seed: int = 0):
    """Adam on the train split for `epochs` passes or `steps` batches; returns evaluation accuracy."""
    import torch

    torch.manual_seed(seed)
    x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    total = steps or epochs * math.ceil(len(x) / batch)
    order = torch.randperm(len(x), generator=generator)
    for step in range(total):
        start = (step * batch) % len(x)
        if start < batch and step:
            order = torch.randperm(len(x), generator=generator)
        index = order[start : start + batch]
        loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.inference_mode():
        predictions = model(torch.from_numpy(arrays["x_evaluation"])).argmax(-1).numpy()
    return float((predictions == arrays["y_evaluation"]).mean())


def build_digits(out: Path, seed: int = 0) -> dict[str, float]:
    """examples/data/digits.npz and TorchScript CNN / MLP models; returns their accuracies."""
    import torch

    torch.manual_seed(seed)
    arrays = digits_arrays(seed)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "data" / "digits.npz", **arrays)
    accuracies = {}
    for name, factory, epochs in (("digits-cnn", digits_cnn, 25), ("digits-mlp", digits_mlp, 30)):
        model = factory()
        accuracies[name] = train(model, arrays, epochs=epochs, seed=seed)
        torch.jit.save(torch.jit.script(model), str(out / "models" / f"{name}.pt"))
    return accuracies


def build_encoder(out: Path, size: EncoderSize = TINY_ENCODER, name: str = "encoder", seed: int = 0) -> tuple[Path, Path, float, int]:
    """A trained encoder saved as a torch.export program (dynamic batch) and its data.

    Returns (model path, data path, evaluation accuracy, parameter count)."""
    import torch

    torch.manual_seed(seed)
    rows = {"train": size.steps * size.batch, "calibration": 128, "evaluation": 512}
    arrays = sequence_arrays(size.vocab, size.length, size.classes, rows, seed)
    model = _encoder_classes()(size.vocab, size.length, size.classes, size.width, size.heads, size.hidden, size.layers)
    accuracy = train(model, arrays, steps=size.steps, batch=size.batch, lr=size.lr, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    data_path, model_path = out / f"{name}.npz", out / f"{name}.pt2"
    np.savez_compressed(data_path, **arrays)
    example = (torch.from_numpy(arrays["x_evaluation"][:2]),)
    program = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    torch.export.save(program, str(model_path))
    return model_path, data_path, accuracy, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild the reference data and models.")
    parser.add_argument("out", type=Path, help="folder that receives data/ and models/ (e.g. examples)")
    args = parser.parse_args()
    for name, accuracy in build_digits(args.out).items():
        print(f"{name}: evaluation accuracy {accuracy:.4f}")
    print(f"student: {build_student(args.out)}")
    print(f"sentences: {build_sentences(args.out)}")


if __name__ == "__main__":
    main()
