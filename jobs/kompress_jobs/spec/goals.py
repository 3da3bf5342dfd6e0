"""What a pick must meet (accuracy drop, latency, size) and how every candidate is measured."""

from __future__ import annotations

import re
from enum import Enum

from pydantic import Field, field_validator, model_validator

from .wire import Model

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")


_QUANTITY_FACTORS = {
    None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a Kubernetes-style quantity ("12Mi", "5M", "1500")."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 12Mi or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be ≥ 0")
        return value
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"{str(value)!r} is not a size such as 12Mi, 5M or 1500")  # repr: a newline in it stays on one line
    return int(float(match.group(1)) * _QUANTITY_FACTORS[match.group(2)])


class Percentile(str, Enum):
    P50 = "P50"
    P95 = "P95"
    P99 = "P99"


class LatencyGoal(Model):
    percentile: Percentile = Percentile.P50
    max_milliseconds: float = Field(gt=0)
    batch_size: int | None = Field(None, ge=1, description="Defaults to the first of benchmark.batchSizes.")


class DropMode(str, Enum):
    ABSOLUTE = "Absolute"  # points of the metric: percentage points for accuracy
    RELATIVE = "Relative"  # percent of the baseline's value


class Objective(str, Enum):
    LATENCY = "Latency"
    SIZE = "Size"
    ACCURACY = "Accuracy"


class Goals(Model):
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="Largest acceptable loss of the metric (points for accuracy in Absolute mode)."
    )
    accuracy_drop_mode: DropMode = DropMode.ABSOLUTE
    latency: LatencyGoal | None = None
    max_size: int | str | None = Field(None, description="Largest acceptable model file: bytes or a quantity (12Mi).")
    optimize_for: Objective = Field(Objective.LATENCY, description="What the best pick minimizes among accepted candidates.")
    min_tokens_per_second: float | None = Field(None, gt=0, description="Task LanguageModeling: least decode tokens "
                                                "per second at the primary batch size.")
    max_time_to_first_token_ms: float | None = Field(None, gt=0, description="Task LanguageModeling: longest prefill "
                                                     "of the benchmark's prompt and first new token, in milliseconds.")
    max_memory: int | str | None = Field(None, description="Largest acceptable peak resident memory of a process that "
                                         "loads the candidate and runs it once (a generation, for a language model): "
                                         "bytes or a quantity (2Gi). Setting it measures every candidate's.")

    @field_validator("max_size", "max_memory")
    @classmethod
    def _size_parses(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            parse_size(value)
        return value

    @property
    def max_size_bytes(self) -> int | None:
        return None if self.max_size is None else parse_size(self.max_size)

    @property
    def max_memory_bytes(self) -> int | None:
        return None if self.max_memory is None else parse_size(self.max_memory)


class Generation(Model):
    """How a causal language model is timed: a prompt from the evaluation text, then greedy decoding."""

    prompt_tokens: int = Field(128, ge=1, le=32_768, description="Prompt length: time to first token is its prefill.")
    new_tokens: int = Field(64, ge=2, le=8192, description="Tokens generated per timed generation; each decode step "
                            "is one timed call of the latency figures.")
    chat_template: bool = Field(False, description="Wrap each prompt as a user message in the model's chat template, "
                                "as an instruction-tuned model is served; promptTokens counts the template's tokens "
                                "too. A model whose tokenizer has no chat template is refused.")


class Benchmark(Model):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32], min_length=1, max_length=8)
    warmup: int = Field(10, ge=0, le=10_000)
    iterations: int = Field(50, ge=1, le=100_000, description="Timed calls per candidate, batch size and round.")
    rounds: int = Field(5, ge=1, le=100, description="Candidates are measured interleaved, round after round.")
    max_rounds: int | None = Field(None, ge=1, le=300, description="While a measurement's spread exceeds tieTolerance "
                                   "at the batch size the pick is judged at, more rounds are measured, up to this many "
                                   "in all (default: 3 × rounds); one still noisy is flagged.")
    threads: int = Field(1, ge=1, le=256, description="Intra-op threads for every runtime.")
    tie_tolerance: float = Field(0.05, ge=0, le=1, description="Latencies this close (relative) count as a tie.")
    evaluation_batch_size: int = Field(256, ge=1, le=65_536)
    peak_memory: bool = Field(False, description="Measure each candidate's peak resident memory in a process of its "
                              "own (memory_probe.py: a model load per candidate); on whenever goals.maxMemory is set.")
    generation: Generation = Field(default_factory=Generation, description="Task LanguageModeling only: the "
                                   "latency of a language model is that of one decode step (milliseconds per new token).")

    @property
    def round_cap(self) -> int:
        return self.max_rounds if self.max_rounds is not None else 3 * self.rounds

    @model_validator(mode="after")
    def _cap_above_rounds(self) -> "Benchmark":
        if self.max_rounds is not None and self.max_rounds < self.rounds:
            raise ValueError(f"maxRounds ({self.max_rounds}) must be at least rounds ({self.rounds})")
        return self

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, sizes: list[int]) -> list[int]:
        if any(size < 1 for size in sizes):
            raise ValueError("every batch size must be ≥ 1")
        if len(set(sizes)) != len(sizes):
            raise ValueError("batch sizes must be unique")
        return sizes
