"""spec.tuning: an Optuna study over pass parameters (tuning.py runs it)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .goals import (
    Objective,
)
from .wire import Model


class SearchRange(Model):
    """One pass parameter to search: a numeric range, or a list of choices."""

    pass_name: str = Field(alias="pass", min_length=1, description="Name of the pass whose parameter is searched.")
    parameter: str = Field(min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$",
                           description="The field as written in the pass, dotted into objects: amount, fineTuning.learningRate.")
    low: float | None = Field(None, description="Lower end of a numeric range (integers when the parameter is an integer).")
    high: float | None = Field(None, description="Upper end of a numeric range, inclusive.")
    log: bool = Field(False, description="Sample the range on a log scale (learning rates).")
    choices: list[int | float | str | bool] | None = Field(None, min_length=1, max_length=256, description="Values to choose among, instead of a range.")

    @model_validator(mode="after")
    def _range_or_choices(self) -> "SearchRange":
        has_range = self.low is not None or self.high is not None
        if has_range == (self.choices is not None):
            raise ValueError("set either low and high, or choices")
        if has_range:
            if self.low is None or self.high is None:
                raise ValueError("a range needs both low and high")
            if self.low >= self.high:
                raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
            if self.log and self.low <= 0:
                raise ValueError("a log range needs low > 0")
        return self


class SecretKeyRef(Model):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    key: str = Field("url", min_length=1, description="The key holding the value.")


class Tuning(Model):
    """An Optuna study over pass parameters. Each trial reruns the chain from the first searched
    pass to `target` with sampled values and is judged on the validation split; the best trials join
    the candidates and are measured like every other. The study is saved in the artifact store after
    every trial, so an interrupted run resumes where it stopped."""

    search_space: list[SearchRange] = Field(max_length=64, json_schema_extra={"minItems": 1})
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective.LATENCY, Objective.SIZE, Objective.ACCURACY], min_length=1, max_length=3,
        description="One objective: a single best; several: a Pareto front. All are minimized (Accuracy as its drop); "
                    "goals become constraints.")
    target: str | None = Field(None, description="Pass whose output a trial is judged on (default: the last pass fed by a searched one).")
    trials: int = Field(20, ge=1, le=10_000, description="Finished trials the study should hold, counting earlier attempts.")
    timeout_seconds: int | None = Field(None, ge=1, description="Stop starting trials after this long (per attempt).")
    max_failed_trials: int = Field(5, ge=1, description="Stop the study when this many trials have failed.")
    prune_weak_trials: bool | None = Field(
        None, description="Stop trials whose validation metric lags the median while fine-tuning (needs objectives: [Accuracy]; on by default then).")
    stop_when_acceptable: bool = Field(False, description="Stop at the first trial that meets every goal, instead of using the whole budget.")
    keep_best: int = Field(3, ge=1, le=20, description="How many of the best trials become candidates.")
    validation_split: str = Field("calibration", min_length=1, description="Split trials are judged on (keeps the evaluation split unseen).")
    seed: int = Field(0, ge=0)
    parallelism: int = Field(1, ge=1, le=64, description=(
        "Trials run at once. Above 1 (on the cluster) a tuning Job of that many worker Pods runs the trials, all on "
        "one study in a shared database (storageSecret); then the run's Job measures the best trials with the other "
        "candidates on one node. Each worker Pod takes a Job slot."))
    storage_secret: SecretKeyRef | None = Field(None, description=(
        "Secret in the run's namespace holding the study database's URL (postgresql://…), for parallelism above 1; "
        "default: the operator's studyStorageSecret."))
    heartbeat_seconds: int = Field(10, ge=1, le=600, description=(
        "With a shared study: how often a running trial reports it is alive; a trial silent for three "
        "heartbeats (its Pod died) is marked failed and retried."))

    @field_validator("search_space")
    @classmethod
    def _not_empty(cls, ranges: list[SearchRange]) -> list[SearchRange]:
        if not ranges:
            raise ValueError("the search space is empty: name at least one pass parameter to search, "
                             "e.g. {pass: prune, parameter: amount, low: 0.3, high: 0.8}")
        return ranges

    @field_validator("objectives")
    @classmethod
    def _unique_objectives(cls, objectives: list[Objective]) -> list[Objective]:
        if len(set(objectives)) != len(objectives):
            raise ValueError("objectives must be unique")
        return objectives

    @model_validator(mode="after")
    def _parallelism_within_trials(self) -> "Tuning":
        if self.parallelism > self.trials:
            raise ValueError(f"parallelism ({self.parallelism}) is above trials ({self.trials}): "
                             f"the extra Pods would have no trial to run")
        return self

    @model_validator(mode="after")
    def _pruning_needs_one_accuracy_objective(self) -> "Tuning":
        single_accuracy = self.objectives == [Objective.ACCURACY]
        if self.prune_weak_trials and not single_accuracy:
            raise ValueError("pruneWeakTrials needs objectives: [Accuracy] (Optuna prunes on intermediate values of a "
                             "single objective, and only accuracy changes while fine-tuning)")
        if self.prune_weak_trials is None:
            self.prune_weak_trials = single_accuracy
        return self
