"""Perplexity of the evaluation text and fidelity of the next-token distribution to the baseline's,
at the same scored positions for every candidate (corpus.scored_from): top-1 agreement (the greedy
choice is the same) and KL(baseline ‖ candidate). The baseline's log-probabilities are kept (one
row of the vocabulary per scored token), so each candidate's figures need one pass over the text."""

from __future__ import annotations

import numpy as np

from ..data import Split
from ..spec.goals import DropMode
from ..measurement.quality import log_softmax, quality_drop
from ..runtimes import Runner
from ..spec.tasks import Metric, Task
from .corpus import INPUT, scored_from


def scored_log_probs(runner: Runner, split: Split, task: Task):
    """Per window: (log-probabilities of the scored predictions, the tokens they predict)."""
    for index, window in enumerate(split.inputs[INPUT]):
        first = max(scored_from(index, task), 1)  # position 0 has no earlier token to be predicted from
        logits = runner.logits(window[None, :])[0]
        yield log_softmax(logits[first - 1:-1], np.float32), window[first:]  # float32: the reference is kept


class LanguageModelScorer:
    """Figures of every candidate on the evaluation split, against the reference (the baseline)."""

    def __init__(self, task: Task, mode: DropMode, split: Split, reference: Runner):
        self.task, self.mode, self.split = task, mode, split
        self.reference = list(scored_log_probs(reference, split, task))
        self.reference_figures = self._figures(self.reference)
        self.reference_value = self.reference_figures[_KEYS[task.metric]]

    def judge(self, runner: Runner) -> tuple[float, float, dict[str, float]]:
        """(metric value, drop against the reference, {perplexity, top1Agreement, klDivergence})."""
        figures = self._figures(list(scored_log_probs(runner, self.split, self.task)))
        value = figures[_KEYS[self.task.metric]]
        return value, quality_drop(self.reference_value, value, self.task.metric, self.mode), figures

    def baseline(self) -> tuple[float, float, dict[str, float]]:
        return self.reference_value, 0.0, self.reference_figures

    def _figures(self, scored: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        nll, agree, kl, count = 0.0, 0, 0.0, 0
        for (log_q, targets), (log_p, _) in zip(scored, self.reference):
            nll -= float(log_q[np.arange(len(targets)), targets].sum())
            agree += int((log_q.argmax(-1) == log_p.argmax(-1)).sum())
            kl += float((np.exp(log_p) * (log_p - log_q)).sum())
            count += len(targets)
        return {"perplexity": float(np.exp(nll / count)), "top1Agreement": agree / count, "klDivergence": kl / count,
                "scoredTokens": float(count)}


_KEYS = {Metric.PERPLEXITY: "perplexity", Metric.TOP1_AGREEMENT: "top1Agreement", Metric.KL_DIVERGENCE: "klDivergence"}
