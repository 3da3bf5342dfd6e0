"""The text a language model is judged and calibrated on: one plain UTF-8 file, tokenized with the
model's own tokenizer. Its first `task.evaluationTokens` tokens are the evaluation split, cut into
windows of `task.contextLength` tokens that start `stride` apart; the tokens after them are the
calibration split, in windows of the same length. Each split is an `input_ids` array of shape
(windows, contextLength), so the rest of the pipeline sees a Dataset like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import Dataset, Split
from ..errors import DataError
from ..spec.sources import DataSource
from ..spec.tasks import Task

INPUT = "input_ids"


def read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"data file {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {path}: task LanguageModeling reads a plain UTF-8 text file; byte {exc.start} "
                        "is not UTF-8") from None
    if not text.strip():
        raise DataError(f"data file {path}: the text is empty")
    return text


def windows(ids: np.ndarray, length: int, stride: int) -> np.ndarray:
    """Windows of `length` tokens starting every `stride` tokens, as long as a whole window fits."""
    starts = range(0, len(ids) - length + 1, stride)
    return np.stack([ids[s:s + length] for s in starts]).astype(np.int64)


def scored_from(window_index: int, task: Task) -> int:
    """The first position of a window whose next-token prediction is scored: the first window scores
    all of its positions, later ones only their last `stride` (the earlier ones were scored with
    less context in the window before)."""
    return 0 if window_index == 0 else task.context_length - task.window_stride


def load_corpus(path: Path, source: DataSource, task: Task, tokenizer) -> Dataset:
    text = read_text(path)
    ids = np.asarray(tokenizer(text).input_ids, dtype=np.int64)
    need = task.context_length
    if len(ids) < need:
        raise DataError(f"data file {path}: the text is {len(ids)} tokens, shorter than one window "
                        f"(task.contextLength {need})")
    evaluation = ids[:task.evaluation_tokens]
    splits = {source.evaluation_split: Split({INPUT: windows(evaluation, need, task.window_stride)})}
    rest = ids[len(evaluation):]
    if len(rest) >= need:
        splits[source.calibration_split] = Split({INPUT: windows(rest, need, need)})
    return Dataset(splits, source)


PROMPTS = "prompts"  # the split of the timed prompts (stages.load puts it in the Dataset)

Frame = tuple[list[int], list[int]]  # a chat template's token ids before and after the user's message


def prompts(dataset: Dataset, count: int, prompt_tokens: int, frame: Frame | None = None) -> np.ndarray:
    """`count` prompts of `prompt_tokens` tokens from the evaluation text (repeated if it is short),
    each inside the chat template's frame when there is one."""
    before, after = frame or ([], [])
    length = prompt_tokens - len(before) - len(after)
    if length < 1:
        raise DataError(f"benchmark.generation.promptTokens {prompt_tokens} leaves no room for text in the chat "
                        f"template, which takes {len(before) + len(after)} tokens itself")
    ids = dataset.evaluation.inputs[INPUT].reshape(-1)
    if len(ids) < length:
        raise DataError(f"benchmark.generation.promptTokens {prompt_tokens} is longer than the evaluation text "
                        f"({len(ids)} tokens in its windows)")
    starts = [(i * length) % (len(ids) - length + 1) for i in range(count)]
    return np.stack([np.concatenate([np.asarray(before, dtype=ids.dtype), ids[s:s + length],
                                     np.asarray(after, dtype=ids.dtype)]) for s in starts])
