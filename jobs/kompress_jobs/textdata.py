"""Text rows (JSONL, CSV or Parquet) turned into named token arrays with the checkpoint's tokenizer,
so a user brings sentences, not tensors. Each row names its split in `splitColumn`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .errors import DataError
from .spec.sources import TextData

SUFFIXES = {".jsonl": "JSON Lines", ".json": "JSON Lines", ".csv": "CSV", ".parquet": "Parquet"}


def read_rows(path: Path) -> list[dict]:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"data file {path}: text data must be .jsonl, .csv or .parquet, not {path.suffix or 'no suffix'}")
    try:
        if kind == "CSV":
            with path.open(newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        if kind == "Parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise DataError(f"data file {path}: line {number} is not a JSON object")
                    rows.append(row)
        return rows
    except DataError:
        raise
    except json.JSONDecodeError as exc:
        raise DataError(f"data file {path}: line {exc.lineno} is not JSON ({exc.msg})") from None
    except Exception as exc:  # csv.Error, pyarrow's ArrowInvalid, UnicodeDecodeError, ...
        raise DataError(f"data file {path}: not readable {kind} ({str(exc).splitlines()[0][:200]})") from None


def load_text_splits(path: Path, text: TextData, tokenizer_dir: Path | None) -> dict[str, tuple[dict, np.ndarray | None]]:
    """split name → (named token arrays, labels or None)."""
    from .huggingface import load_tokenizer

    rows = read_rows(path)
    if not rows:
        raise DataError(f"data file {path}: no rows")
    columns = [c for c in (text.column, text.pair_column, text.label_column, text.split_column) if c]
    known = list(rows[0])
    for column in columns:
        if column not in known:
            raise DataError(f"data file {path}: no column {column!r} (columns: {', '.join(map(str, known))})")
    tokenizer = load_tokenizer(tokenizer_dir)
    by_split: dict[str, list[dict]] = {}
    for row in rows:
        by_split.setdefault(str(row[text.split_column]), []).append(row)
    return {split: (_tokenize(tokenizer, chunk, text, path), _labels(chunk, text, path)) for split, chunk in by_split.items()}


def _tokenize(tokenizer, rows: list[dict], text: TextData, path: Path) -> dict[str, np.ndarray]:
    first = [_text(row, text.column, path) for row in rows]
    second = [_text(row, text.pair_column, path) for row in rows] if text.pair_column else None
    encoded = tokenizer(first, second, padding="max_length", truncation=True, max_length=text.max_length, return_tensors="np")
    names = [n for n in tokenizer.model_input_names if n in encoded]
    if not text.pair_column:  # all zeros for single texts: the model's default, so not an input to carry
        names = [n for n in names if n != "token_type_ids"]
    return {name: np.ascontiguousarray(encoded[name].astype(np.int64)) for name in names}


def _text(row: dict, column: str, path: Path) -> str:
    value = row.get(column)
    if not isinstance(value, str):
        raise DataError(f"data file {path}: column {column!r} must hold text in every row, found {type(value).__name__}")
    return value


def _labels(rows: list[dict], text: TextData, path: Path) -> np.ndarray | None:
    if text.label_column is None:
        return None
    values = [row.get(text.label_column) for row in rows]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(f"data file {path}: column {text.label_column!r} must hold numbers (class indices or targets)") from None
    if all(n.is_integer() for n in numbers):
        return np.asarray(numbers, dtype=np.int64)
    return np.asarray(numbers, dtype=np.float32)
