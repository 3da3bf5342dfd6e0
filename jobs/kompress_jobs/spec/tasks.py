"""What the model does (classification, regression, fidelity to its own outputs, language modeling) and
the metric it is scored by."""

from __future__ import annotations

from enum import Enum

from pydantic import Field, model_validator

from .wire import Model


class TaskType(str, Enum):
    CLASSIFICATION = "Classification"
    REGRESSION = "Regression"
    FIDELITY = "Fidelity"  # no labels: every candidate is scored against the baseline's own outputs
    LANGUAGE_MODELING = "LanguageModeling"  # a causal LM: perplexity on a text, next-token fidelity, generation speed


class Metric(str, Enum):
    ACCURACY = "Accuracy"  # higher is better, a fraction in [0, 1]
    MEAN_SQUARED_ERROR = "MeanSquaredError"  # lower is better
    MEAN_ABSOLUTE_ERROR = "MeanAbsoluteError"  # lower is better
    # Fidelity to the baseline's outputs (no labels needed):
    COSINE_SIMILARITY = "CosineSimilarity"  # mean per-sample cosine; embeddings
    TOP1_AGREEMENT = "Top1Agreement"  # share of samples whose arg-max class matches; classifiers
    TOPK_AGREEMENT = "TopKAgreement"  # share of the baseline's top-k classes also in the candidate's top-k
    KL_DIVERGENCE = "KlDivergence"  # mean KL(baseline ‖ candidate) of the softmax; logits
    RELATIVE_ERROR = "RelativeError"  # ‖candidate − baseline‖ / ‖baseline‖ over the split
    PERPLEXITY = "Perplexity"  # lower is better: exp(mean negative log-likelihood) of the evaluation text's tokens

    @property
    def higher_is_better(self) -> bool:
        return self in _FRACTION_METRICS

    @property
    def is_fraction(self) -> bool:
        """A share in [0, 1]: drops are counted in percentage points in Absolute mode."""
        return self in _FRACTION_METRICS

    @property
    def is_fidelity(self) -> bool:
        return self in _FIDELITY_METRICS


_FRACTION_METRICS = frozenset({Metric.ACCURACY, Metric.COSINE_SIMILARITY, Metric.TOP1_AGREEMENT, Metric.TOPK_AGREEMENT})


_FIDELITY_METRICS = frozenset({Metric.COSINE_SIMILARITY, Metric.TOP1_AGREEMENT, Metric.TOPK_AGREEMENT,
                               Metric.KL_DIVERGENCE, Metric.RELATIVE_ERROR})


_TASK_METRICS = {
    "Classification": (Metric.ACCURACY, {Metric.ACCURACY}),
    "Regression": (Metric.MEAN_SQUARED_ERROR, {Metric.MEAN_SQUARED_ERROR, Metric.MEAN_ABSOLUTE_ERROR}),
    "Fidelity": (Metric.COSINE_SIMILARITY, set(_FIDELITY_METRICS)),
    # Fidelity here is of the next-token distribution at every scored position of the text.
    "LanguageModeling": (Metric.PERPLEXITY, {Metric.PERPLEXITY, Metric.TOP1_AGREEMENT, Metric.KL_DIVERGENCE}),
}


class Task(Model):
    type: TaskType = TaskType.CLASSIFICATION
    metric: Metric | None = Field(None, description="Defaults to Accuracy (Classification), MeanSquaredError "
                                  "(Regression) or CosineSimilarity (Fidelity).")
    output: str | None = Field(None, min_length=1, description="The model output that is scored (default: the first).")
    top_k: int = Field(5, ge=1, le=1000, description="k of TopKAgreement.")
    context_length: int = Field(256, ge=8, le=32_768, description="LanguageModeling: tokens per perplexity window.")
    stride: int | None = Field(None, ge=1, le=32_768, description="LanguageModeling: tokens between window starts "
                               "(defaults to contextLength: windows do not overlap); with overlap, each window scores "
                               "only its last `stride` tokens, which see the longer context.")
    evaluation_tokens: int = Field(1024, ge=8, le=1_000_000, description="LanguageModeling: tokens of the text's "
                                   "beginning that perplexity and fidelity are measured on (the rest calibrates).")

    @model_validator(mode="after")
    def _metric_fits_task(self) -> "Task":
        default, allowed = _TASK_METRICS[self.type.value]
        if self.metric is None:
            self.metric = default
        elif self.metric not in allowed:
            raise ValueError(f"metric {self.metric.value} does not fit a {self.type.value} task "
                             f"(it takes {', '.join(sorted(m.value for m in allowed))})")
        if self.stride is not None and self.stride > self.context_length:
            raise ValueError(f"stride {self.stride} is longer than contextLength {self.context_length}: tokens between "
                             "windows would never be scored")
        if self.evaluation_tokens < self.context_length:
            raise ValueError(f"evaluationTokens {self.evaluation_tokens} is shorter than one window "
                             f"(contextLength {self.context_length})")
        return self

    @property
    def needs_labels(self) -> bool:
        return self.type not in (TaskType.FIDELITY, TaskType.LANGUAGE_MODELING)

    @property
    def generative(self) -> bool:
        return self.type is TaskType.LANGUAGE_MODELING

    @property
    def window_stride(self) -> int:
        return self.stride or self.context_length
