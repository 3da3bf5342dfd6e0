"""The task metric on a split, fidelity to the baseline's outputs, and how much a candidate loses.

Labelled metrics (Accuracy, MeanSquaredError, MeanAbsoluteError) compare the scored output with the
labels; fidelity metrics compare it with the baseline's own output on the same rows, so a model
without labels (an embedding model) can still be held to a goal.
"""

from __future__ import annotations

import numpy as np

from ..data import Split, rows
from ..spec.goals import DropMode
from ..runtimes import Runner
from ..spec.tasks import Metric, Task

Outputs = dict[str, np.ndarray]


def predict(runner: Runner, split: Split, batch_size: int) -> Outputs:
    """Every named output over the whole split, in batches."""
    parts = [runner(rows(split.inputs, i, i + batch_size)) for i in range(0, len(split), batch_size)]
    return {name: np.concatenate([part[name] for part in parts], axis=0) for name in parts[0]}


def scored(outputs: Outputs, task: Task) -> np.ndarray:
    """The output the task scores: `task.output`, or the first."""
    if task.output is None:
        return next(iter(outputs.values()))
    if task.output not in outputs:
        from ..errors import DataError

        raise DataError(f"task.output: the model has no output {task.output!r} (it has {', '.join(outputs)})")
    return outputs[task.output]


def score(output: np.ndarray, labels: np.ndarray | None, metric: Metric, reference: np.ndarray | None = None,
          top_k: int = 5) -> float:
    """The metric of one output array: against labels, or for fidelity metrics against `reference`."""
    if metric.is_fidelity:
        return fidelity_metric(output, reference, metric, top_k)
    if metric is Metric.ACCURACY:
        return float(np.mean(output.argmax(axis=-1) == labels))
    errors = output.reshape(labels.shape) - labels
    if metric is Metric.MEAN_SQUARED_ERROR:
        return float(np.mean(errors**2))
    return float(np.mean(np.abs(errors)))


def fidelity_metric(output: np.ndarray, reference: np.ndarray, metric: Metric, top_k: int = 5) -> float:
    if output.shape != reference.shape:
        raise ValueError(f"output shape {output.shape} differs from the baseline's {reference.shape}")
    if metric is Metric.COSINE_SIMILARITY:
        a, b = output.reshape(len(output), -1).astype(np.float64), reference.reshape(len(reference), -1).astype(np.float64)
        norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        return float(np.mean(np.sum(a * b, axis=1) / norms))
    if metric is Metric.RELATIVE_ERROR:
        return float(np.linalg.norm(output - reference) / max(float(np.linalg.norm(reference)), 1e-12))
    if metric is Metric.TOP1_AGREEMENT:
        return float(np.mean(output.argmax(axis=-1) == reference.argmax(axis=-1)))
    if metric is Metric.TOPK_AGREEMENT:
        k = min(top_k, output.shape[-1])
        mine, theirs = np.argsort(-output, axis=-1)[..., :k], np.argsort(-reference, axis=-1)[..., :k]
        shared = (mine[..., :, None] == theirs[..., None, :]).any(axis=-1).sum(axis=-1)
        return float(np.mean(shared / k))
    if metric is Metric.KL_DIVERGENCE:
        p, log_p, log_q = _softmax(reference), log_softmax(reference), log_softmax(output)
        return float(np.mean(np.sum(p * (log_p - log_q), axis=-1)))
    raise ValueError(f"{metric.value} is not a fidelity metric")


_CLASS_METRICS = frozenset({Metric.ACCURACY, Metric.TOP1_AGREEMENT, Metric.TOPK_AGREEMENT, Metric.KL_DIVERGENCE})


def fidelity(output: np.ndarray, reference: np.ndarray, task: Task) -> dict[str, float]:
    """How closely a candidate follows the baseline, whatever the task: reported for every candidate.
    Outputs that are class scores (the metric says so) add top-1 agreement and KL divergence."""
    figures = {"cosineSimilarity": fidelity_metric(output, reference, Metric.COSINE_SIMILARITY),
               "relativeError": fidelity_metric(output, reference, Metric.RELATIVE_ERROR)}
    if task.metric in _CLASS_METRICS and output.shape[-1] > 1:
        figures["top1Agreement"] = fidelity_metric(output, reference, Metric.TOP1_AGREEMENT)
        figures["klDivergence"] = fidelity_metric(output, reference, Metric.KL_DIVERGENCE)
    return figures


def quality_drop(baseline: float, candidate: float, metric: Metric, mode: DropMode) -> float:
    """How much worse the candidate is (negative when better).

    Absolute: in the metric's points (percentage points for shares such as accuracy or cosine, so
    cosine 0.99 against the baseline's 1.0 is a drop of 1 point). Relative: percent of baseline.
    """
    worse = (baseline - candidate) if metric.higher_is_better else (candidate - baseline)
    if mode is DropMode.RELATIVE:
        return 100.0 * worse / abs(baseline) if baseline else 0.0 if worse == 0 else float("inf")
    return 100.0 * worse if metric.is_fraction else worse


def drop_unit(metric: Metric, mode: DropMode) -> str:
    """The unit quality_drop counts in: "%" (of the baseline), "points", or "" (the metric's own)."""
    if mode is DropMode.RELATIVE:
        return "%"
    return "points" if metric.is_fraction else ""


def log_softmax(x: np.ndarray, dtype=np.float64) -> np.ndarray:
    shifted = x.astype(dtype) - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _softmax(x: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(x))


class Scorer:
    """Scores outputs on one split the same way for every model: against the split's labels, or,
    for fidelity metrics, against the reference model's outputs; drops are relative to the reference."""

    def __init__(self, task: Task, mode: DropMode, split: Split, reference_outputs: Outputs):
        self.task, self.mode, self.labels = task, mode, split.labels
        self.reference = scored(reference_outputs, task)
        self.reference_value = self.value(self.reference)

    def value(self, output: np.ndarray) -> float:
        return score(output, self.labels, self.task.metric, self.reference, self.task.top_k)

    def drop(self, value: float) -> float:
        return quality_drop(self.reference_value, value, self.task.metric, self.mode)

    def judge(self, outputs: Outputs) -> tuple[float, float, dict[str, float]]:
        """(metric value, drop against the reference, fidelity figures)."""
        output = scored(outputs, self.task)
        value = self.value(output)
        return value, self.drop(value), fidelity(output, self.reference, self.task)
