"""The task metric on the evaluation split, and how much a candidate loses against the baseline."""

from __future__ import annotations

import numpy as np

from .data import Split
from .runtimes import Runner
from .schema import DropMode, Metric


def predict(runner: Runner, split: Split, batch_size: int) -> np.ndarray:
    outputs = [runner(split.inputs[i : i + batch_size]) for i in range(0, len(split), batch_size)]
    return np.concatenate(outputs, axis=0)


def score(outputs: np.ndarray, labels: np.ndarray, metric: Metric) -> float:
    if metric is Metric.ACCURACY:
        return float(np.mean(outputs.argmax(axis=-1) == labels))
    errors = outputs.reshape(labels.shape) - labels
    if metric is Metric.MEAN_SQUARED_ERROR:
        return float(np.mean(errors**2))
    return float(np.mean(np.abs(errors)))


def agreement(outputs: np.ndarray, reference: np.ndarray, metric: Metric) -> float:
    """How closely a candidate follows the baseline: top-1 agreement, or 1 - relative L2 distance."""
    if metric is Metric.ACCURACY:
        return float(np.mean(outputs.argmax(axis=-1) == reference.argmax(axis=-1)))
    distance = np.linalg.norm(outputs - reference) / max(np.linalg.norm(reference), 1e-12)
    return float(1.0 - distance)


def quality_drop(baseline: float, candidate: float, metric: Metric, mode: DropMode) -> float:
    """How much worse the candidate is (negative when better).

    Absolute: in the metric's points (percentage points for accuracy). Relative: percent of baseline.
    """
    worse = (baseline - candidate) if metric.higher_is_better else (candidate - baseline)
    if mode is DropMode.RELATIVE:
        return 100.0 * worse / abs(baseline) if baseline else 0.0 if worse == 0 else float("inf")
    return 100.0 * worse if metric is Metric.ACCURACY else worse
