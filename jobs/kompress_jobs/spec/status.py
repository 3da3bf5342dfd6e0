"""The resource's status, as the operator writes it: conditions, the pick, the study, the promotion.

The CRD's status schema is generated from these models (kompress_operator/crd.py) and the
operator builds the status through them, so what it writes is what the CRD declares."""

from __future__ import annotations

from enum import Enum

from pydantic import Field

from .wire import Model


class ConditionStatus(str, Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Phase(str, Enum):
    PENDING = "Pending"
    QUEUED = "Queued"
    TUNING = "Tuning"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# metav1.Condition's rules, so the API server checks what kubectl explain documents.
CONDITION_TYPE = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"


CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


TIMESTAMP = {"format": "date-time"}


class Condition(Model):
    """One aspect of the run's state, in the Kubernetes condition convention."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE, description="Accepted, Running, Succeeded, Reconciling or Stalled.")
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON,
                        description="CamelCase reason for the last transition (e.g. InvalidSpec, ConcurrencyLimit, Completed).")
    message: str = Field("", max_length=32768, description="What a person needs to know about the transition.")
    last_transition_time: str = Field(json_schema_extra=TIMESTAMP, description="When the status last changed.")
    observed_generation: int | None = Field(None, ge=0, description="The metadata.generation the condition was set for.")


class CandidateSummary(Model):
    """One candidate model, as measured (latency at the report's primary batch size)."""

    name: str
    technique: str
    accepted: bool = Field(description="Whether it met every goal.")
    pareto_optimal: bool = False
    latency_p50_ms: float | None = None
    size_bytes: int | None = None
    metric_value: float | None = None
    speedup: float | None = Field(None, description="Baseline p50 latency / this candidate's (of one decode step for "
                                  "a language model): the one speedup the report and the console show too.")
    noisy: bool | None = Field(None, description="True when its latency's spread stayed above benchmark.tieTolerance "
                               "after benchmark.maxRounds rounds: its speedup is uncertain.")
    size_ratio: float | None = Field(None, description="Baseline size / this candidate's.")
    rejected_reason: str | None = None
    # A causal language model (task LanguageModeling): its latency above is one decode step.
    tokens_per_second: float | None = Field(None, description="Decode tokens per second at the report's batch size.")
    time_to_first_token_ms: float | None = Field(None, description="Prefill of the benchmark's prompt and the first new token.")
    joules_per_call: float | None = Field(None, description="GPU candidates: energy per call at the report's batch size (NVML).")
    peak_memory_bytes: int | None = Field(None, description="Peak resident memory of a process that loads it and runs it "
                                          "once, where measured (benchmark.peakMemory or goals.maxMemory).")


class ArtifactRef(Model):
    uri: str = Field(description="Where the run's artifacts and report.json are.")
    manifest_sha256: str | None = Field(None, description="Digest of manifest.json, which lists every artifact's digest.")


class TrialCounts(Model):
    """Trials of a study as the study counts them (finished: with a verdict; failed: with an error,
    or lost with a worker Pod and retried). Written when a worker Pod leaves, and when the run's
    Job has read the study; the study itself is live in the workers' logs and the database."""

    finished: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)
    running: int = Field(0, ge=0)


class WorkerCounts(Model):
    """The tuning Job's worker Pods, live from the Job's status."""

    active: int = Field(0, ge=0)
    succeeded: int = Field(0, ge=0, description="Workers that left because the study was over.")
    failed: int = Field(0, ge=0, description="Workers lost (a replacement takes over; their trial is retried).")


class TuningStatus(Model):
    study: str | None = Field(None, description="The Optuna study's name.")
    parallelism: int = Field(1, ge=1)
    workers: WorkerCounts | None = None
    trials: TrialCounts | None = None


class PromotionDecision(str, Enum):
    PROMOTED = "Promoted"
    KEPT = "Kept"  # the promoted model stays: the pick was not better, or there was none
    FAILED = "Failed"  # the switch could not be written; the promoted model stays


class PromotionStatus(Model):
    """The last run's promotion decision, and the model promoted now (after that decision)."""

    decision: PromotionDecision
    reason: str = Field(pattern=CONDITION_REASON)
    message: str = ""
    pointer: str | None = Field(None, description="URI of current.json.")
    uri: str | None = Field(None, description="URI of the promoted model's files (immutable, one folder per run).")
    digest: str | None = Field(None, description="SHA-256 of the promoted model.")
    run_id: str | None = Field(None, description="The run the promoted model comes from.")
    candidate: str | None = None
    promoted_at: str | None = Field(None, json_schema_extra=TIMESTAMP)


class ReoptimizationStatus(Model):
    """What re-runs the resource without a spec change: its schedule and the model or image it watches."""

    runs: int = Field(0, ge=0, description="Re-runs so far (not counting spec changes); names the Job (…-r<runs>).")
    reason: str | None = Field(None, description="Why the current run started: Scheduled, ModelChanged or JobImageChanged.")
    message: str | None = None
    last_schedule_time: str | None = Field(None, json_schema_extra=TIMESTAMP)
    generation: int | None = Field(None, ge=0, description="The generation the model digest and job image were recorded for.")
    model_uri: str | None = None
    model_digest: str | None = Field(None, description="The model's digest (S3 ETag, file SHA-256) as first seen for this run.")
    job_image: str | None = Field(None, description="The job image the operator would use, as first seen for this run.")


class TargetStatus(Model):
    """One hardware target's run (spec.targets): its Job, where it stands, and what it found."""

    name: str
    phase: Phase | None = None
    reason: str | None = Field(None, description="CamelCase reason of the target's last transition.")
    message: str = ""
    job: str | None = Field(None, description="The target's Job.")
    unschedulable: str | None = Field(None, description="Why no node of the cluster could take the target's Pod when "
                                      "its Job was created (its Job still waits, until its deadline).")
    machine: str | None = Field(None, description="The CPU (and its cap) or GPU the Job reported.")
    plan: list[str] | None = Field(None, description="The passes an automatic plan chose here, by name.")
    start_time: str | None = Field(None, json_schema_extra=TIMESTAMP)
    completion_time: str | None = Field(None, json_schema_extra=TIMESTAMP)
    baseline: CandidateSummary | None = None
    best: CandidateSummary | None = Field(None, description="The target's pick.")
    candidates: list[CandidateSummary] = Field(default_factory=list, max_length=8)
    artifacts: ArtifactRef | None = None
    run_id: str | None = None
    promotion: PromotionStatus | None = None


class ModelOptimizationStatus(Model):
    """Written by the operator: where the run stands (conditions) and what it found."""

    observed_generation: int | None = Field(None, ge=0, description="The metadata.generation this status is for.")
    phase: Phase | None = Field(None, description="For humans; the contract is conditions.")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    baseline: CandidateSummary | None = None
    best: CandidateSummary | None = Field(None, description="The pick: the best candidate that met every goal.")
    candidates: list[CandidateSummary] = Field(default_factory=list, description="The Pareto front first, then the best-ranked.")
    artifacts: ArtifactRef | None = None
    run_id: str | None = Field(None, description="The run's folder in the artifact store.")
    machine: str | None = Field(None, description="The CPU (and its cap) or GPU the run measured on.")
    plan: list[str] | None = Field(None, description="The passes an automatic plan chose, by name.")
    targets: list[TargetStatus] = Field(default_factory=list, max_length=8, description=(
        "One entry per spec.targets, in its order; the fields above then hold none of a single run's results."),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    targets_done: str | None = Field(None, description="Targets finished / all (the printer column Targets).")
    tuning: TuningStatus | None = Field(None, description="The tuning study of a run with spec.tuning.")
    promotion: PromotionStatus | None = Field(None, description="With spec.promotion: what is promoted, and why.")
    reoptimization: ReoptimizationStatus | None = None
    start_time: str | None = Field(None, json_schema_extra=TIMESTAMP)
    completion_time: str | None = Field(None, json_schema_extra=TIMESTAMP)
