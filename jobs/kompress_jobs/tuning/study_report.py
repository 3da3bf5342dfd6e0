"""What a tuning study did: why it stopped, its trial counts, and its section of the report
(typed as results.TuningReport), for a single-Pod study (tuning.py) and a shared one (parallel_study.py) alike."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..reporting.results import TrialRecord, TuningReport
from .trial_record import Attr, attr, has
from ..spec.tuning_spec import Tuning


class StopKind(str, Enum):
    BUDGET = "budget"
    TIMEOUT = "timeout"
    FAILURES = "failures"
    ACCEPTABLE = "acceptable"
    JOB_ENDED = "jobEnded"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class StopReason:
    """Why a study starts no more trials; the report shows `message` (`tuning.stoppedBecause`)."""

    kind: StopKind
    message: str

    def __str__(self) -> str:
        return self.message

    @classmethod
    def budget(cls) -> "StopReason":
        return cls(StopKind.BUDGET, "trial budget reached")

    @classmethod
    def timeout(cls, seconds: int) -> "StopReason":
        return cls(StopKind.TIMEOUT, f"timeout ({seconds} s)")

    @classmethod
    def failures(cls, failed: int, allowed: int) -> "StopReason":
        return cls(StopKind.FAILURES, f"{failed} trials failed (maxFailedTrials {allowed})")

    @classmethod
    def acceptable(cls, trial: int) -> "StopReason":
        return cls(StopKind.ACCEPTABLE, f"trial {trial} meets every goal (stopWhenAcceptable)")

    @classmethod
    def exhausted(cls, points: int) -> "StopReason":
        return cls(StopKind.EXHAUSTED, f"every point of the search space is measured ({points})")

    @classmethod
    def job_ended(cls, judged: int, trials: int) -> "StopReason":
        return cls(StopKind.JOB_ENDED, f"the tuning Job ended with {judged} of {trials} trials")


def study_report(study, *, key: str, storage: str, parallelism: int, tuning: Tuning, target: str,
                 best: list, finished_before: int, stop_reason: StopReason) -> TuningReport:
    """report.json's `tuning`: the study as it stands, every trial with its verdict or error."""
    trials = study.get_trials(deepcopy=False)
    best = {t.number for t in best}
    retries = {t.system_attrs["failed_trial"]: t.number for t in trials if "failed_trial" in t.system_attrs}
    return TuningReport(
        study=key, storage=storage, parallelism=parallelism, objectives=[o.value for o in tuning.objectives],
        target=target, validation_split=tuning.validation_split, resumed_with_trials=finished_before,
        finished_trials=judged_trials(study), failed_trials=count_trials(study, "FAIL"), stopped_because=str(stop_reason),
        selected=[f"{target}-trial-{n}" for n in sorted(best)],
        trials=[_trial_record(t, study.metric_names, retries) for t in trials],
    )


def _trial_record(t, metric_names: list[str], retries: dict[int, int]) -> TrialRecord:
    # Only what the trial has: a field it lacks stays out of report.json.
    fields = {"number": t.number, "state": t.state.name.capitalize(), "parameters": t.params}
    if t.values:
        fields |= {"values": dict(zip(metric_names, t.values)), "meets_goals": feasible(t)}
    if has(t, Attr.VALIDATION):
        fields["validation"] = attr(t, Attr.VALIDATION)
    if t.state.name == "FAIL":
        fields["error"] = _error(t, retries)
    if has(t, Attr.REPEAT_OF):
        fields["repeat_of"] = attr(t, Attr.REPEAT_OF)
    if "failed_trial" in t.system_attrs:
        fields["retry_of"] = t.system_attrs["failed_trial"]
    if has(t, Attr.WORKER):
        fields["worker"] = attr(t, Attr.WORKER)
    if t.datetime_start:
        fields["started_at"] = _stamp(t.datetime_start)
    if t.datetime_complete:
        fields["finished_at"] = _stamp(t.datetime_complete)
    return TrialRecord(**fields)


def feasible(trial) -> bool:
    return all(value <= 0 for value in (trial.constraints or {}).values())


def count_trials(study, state: str) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == state)


def taken_points(study) -> list[dict]:
    """The parameters of every trial, a queued one's too (it has none of its own until it starts)."""
    return [t.params or t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False)]


def judged_trials(study) -> int:
    """Trials that count against the budget (`_judged`)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if _judged(t))


def judged_and_running(study) -> tuple[int, int]:
    """The trials that count against the budget and those running, from one read of the study: from
    two, a trial that finishes between them is in neither count, and a worker starts one trial too
    many (seen: 13 trials for a budget of 12, 6 for 5)."""
    trials = study.get_trials(deepcopy=False)
    return sum(1 for t in trials if _judged(t)), sum(1 for t in trials if t.state.name == "RUNNING")


def _judged(t) -> bool:
    """Finished with a verdict, not lost with its Pod (a lost trial carries no error of its own, and
    is retried), and not a repeat of a point measured before (its earlier result stands: it
    measured nothing)."""
    return not has(t, Attr.REPEAT_OF) and (
        t.state.name in ("COMPLETE", "PRUNED") or (t.state.name == "FAIL" and has(t, Attr.ERROR)))


def _error(trial, retries: dict[int, int]) -> str:
    if has(trial, Attr.ERROR):
        return attr(trial, Attr.ERROR)
    retry = f" (retried as trial {retries[trial.number]})" if trial.number in retries else ""
    return f"lost: its worker stopped sending heartbeats{retry}"


def _stamp(moment) -> str:
    return moment.astimezone().isoformat(timespec="milliseconds")
