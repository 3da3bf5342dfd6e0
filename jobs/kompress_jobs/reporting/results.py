"""The run's results as types: report.json is written through `Report` (pipeline.py), so what a
reader gets from `Report.read(...)` or `kompress.optimize(...)` is what the file holds.

Wire names are the report's own: camelCase, except the latency figures (benchmark.Latency, the
type the benchmark measures into), which keep the snake_case names report.json has always had.
Readers of older or newer reports keep the fields these types do not name (`extra="allow"`); the
pipeline's test checks that a report survives a round trip through these types unchanged, so
nothing the pipeline writes is left untyped unseen.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import Field

from ..measurement.benchmark import Latency
from ..measurement.candidates import Outcome
from ..measurement.fingerprint import CpuInfo, Fingerprint, GpuInfo  # noqa: F401  (report.json's types, here together)
from ..modelfile import Execution, Processor
from ..spec.goals import Benchmark
from ..spec.sources import ModelFormat
from ..spec.status import PromotionStatus
from ..spec.wire import Record


class Metric(Record):
    value: float | None = None
    drop: float | None = None  # from the baseline, in the goal's unit
    fidelity: dict[str, float] = Field(default_factory=dict)


class Comparison(Record):
    """A candidate against a reference (the baseline, or its parent) at the primary batch size."""

    reference: str
    batch_size: int
    speedup_p50: float | None = None  # the speedup everywhere: the p50 of the task's timed call (a decode step for an LLM)
    # [low, high]: a ≥ 90 % interval of the speedup from the paired ratios of the interleaved rounds
    # (benchmark.median_interval); absent when the two were not measured in the same rounds
    speedup_range: list[float] | None = None
    speedup_p95: float | None = None
    size_reduction: float | None = None
    metric_drop: float | None = None


class Energy(Record):
    """Energy per call at the primary batch size (profiling.energy_per_call): from NVML for every candidate
    that runs on a GPU; the counter covers the whole device, so compare candidates of one run only."""

    measurable: bool
    source: str | None = None
    joules_per_call: float | None = None
    watts: float | None = None
    calls: int | None = None
    seconds: float | None = None
    reason: str | None = None  # why not, where not measurable


class PeakMemory(Record):
    """Peak resident memory of a fresh process that loads the candidate and runs it once (memory_probe.py)."""

    measurable: bool
    peak_bytes: int | None = None
    reason: str | None = None


class CandidateResult(Record):
    name: str
    technique: str
    pass_type: str | None = Field(None, alias="pass")
    parent: str | None = None
    lineage: list[dict[str, Any]] = Field(default_factory=list)
    outcome: Outcome
    error: str | None = None
    runtime: str | None = None  # what ran it, and where
    device: Processor | None = None
    execution: Execution | None = None  # how the candidate asked to be run, as stored with it (current.json, a trial)
    format: ModelFormat | None = None
    precision: str | None = None
    artifact: str | None = None
    artifact_files: list[str] | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    metric: Metric | None = None
    latency: dict[int, Latency] = Field(default_factory=dict)
    accepted: bool = False
    rejected_reasons: list[str] = Field(default_factory=list)
    pareto_optimal: bool = False
    rank: int | None = None
    vs_baseline: Comparison | None = None
    vs_parent: Comparison | None = None
    details: dict[str, Any] | None = None
    energy: Energy | None = None
    memory: PeakMemory | None = None
    contender: bool = False  # the model promoted by an earlier run, measured to compare

    @property
    def measured(self) -> bool:
        return self.outcome is Outcome.MEASURED


class TrialRecord(Record):
    """One trial of a tuning study, with what it has (a failed trial has no values, a pending one no end)."""

    number: int
    state: str  # Optuna's, capitalized: Complete, Pruned, Fail, Running
    parameters: dict[str, Any]
    values: dict[str, float] | None = None  # per objective: latencyMs, sizeMiB, drop
    validation: dict[str, Any] | None = None
    meets_goals: bool | None = None
    error: str | None = None
    repeat_of: int | None = None
    retry_of: int | None = None
    worker: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class TuningReport(Record):
    """report.json's `tuning`: the study (study_report.py builds it)."""

    study: str
    storage: str
    parallelism: int
    objectives: list[str]
    target: str
    validation_split: str
    resumed_with_trials: int
    finished_trials: int
    failed_trials: int
    stopped_because: str
    selected: list[str]
    trials: list[TrialRecord]


class PromotionVerdict(str, Enum):
    """What the gate decided (report.json); what publishing then did is status.promotion's PromotionDecision."""

    PROMOTE = "Promote"
    KEEP = "Keep"


class PromotionPlan(Record):
    """report.json's `promotion`: the gate's decision, made once (promotion.decide) and carried out
    by Promoter.publish, which is handed this object."""

    decision: PromotionVerdict
    reason: str  # CamelCase, as status.promotion.reason
    message: str
    pointer: str | None = None  # URI of current.json
    previous_run: str | None = None

    @property
    def promote(self) -> bool:
        return self.decision is PromotionVerdict.PROMOTE


class RunInfo(Record):
    id: str
    name: str
    namespace: str | None = None
    started_at: str
    finished_at: str
    kompress_version: str


class _Document(Record):
    """A file of its own (report.json, manifest.json): it always says what it is."""

    api_version: str = "kompress.io/v1alpha1"
    kind: str

    def model_post_init(self, context: Any) -> None:
        self.__pydantic_fields_set__.update({"api_version", "kind"})


class Report(_Document):
    kind: str = "OptimizationReport"
    run: RunInfo
    spec: dict[str, Any]
    fingerprint: Fingerprint
    benchmark: Benchmark  # as the run measured: every setting, defaults included
    metric: str
    primary_batch_size: int
    best_name: str | None = Field(None, alias="best")
    pareto_front_names: list[str] = Field(default_factory=list, alias="paretoFront")
    candidates: list[CandidateResult]
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tuning: TuningReport | None = None
    promotion: PromotionPlan | None = None
    inputs: dict[str, Any]
    plan: dict[str, Any] | None = None  # an automatic plan: its passes and why (planning/auto_plan.py)
    # Where the run's files went and what promotion did: known to the run, not part of report.json.
    run_uri: str | None = Field(None, exclude=True)
    manifest_sha256: str | None = Field(None, exclude=True)
    promotion_status: PromotionStatus | None = Field(None, exclude=True)  # status.promotion after publishing

    @property
    def best(self) -> CandidateResult | None:
        """The pick: the fastest (or smallest) candidate within the goals; None when none met them."""
        return self.candidate(self.best_name) if self.best_name else None

    @property
    def baseline(self) -> CandidateResult:
        return next(c for c in self.candidates if c.parent is None)

    @property
    def generative(self) -> bool:
        """A causal language model's run: a latency is one decode step, its throughput tokens per second."""
        return self.spec.get("task", {}).get("type") == "LanguageModeling"

    @property
    def uncertain(self) -> list[str]:
        """Why the pick's figures are uncertain: the pick or the baseline it is compared with is
        still noisy after every round allowed (empty: the figures are as sure as the tie tolerance)."""
        batch, bench = self.primary_batch_size, self.benchmark
        shown = [c for c in (self.baseline, self.best) if c is not None and c.measured]
        return [f"{c.name}'s latency spread {c.latency[batch].spread:.0%} exceeds the tie tolerance "
                f"{bench.tie_tolerance:.0%} after {len(c.latency[batch].round_medians_ms)} round(s)"
                for c in shown if c.latency[batch].noisy]

    @property
    def later_first_token(self) -> str | None:
        """A language model's pick whose first token comes later than the baseline's: what to say of it
        (a faster decode can hide a slower prefill, which a chat user waits for first)."""
        best, batch = self.best, self.primary_batch_size
        if not self.generative or best is None or batch not in best.latency or batch not in self.baseline.latency:
            return None
        mine, theirs = best.latency[batch].time_to_first_token_ms, self.baseline.latency[batch].time_to_first_token_ms
        if mine is None or theirs is None or mine <= theirs:
            return None
        return (f"its first token comes later than the baseline's ({mine:.0f} ms against {theirs:.0f} ms at batch {batch}, "
                f"{mine / theirs:.2f}×): set goals.maxTimeToFirstTokenMs if prefill matters")

    @property
    def pareto_front(self) -> list[CandidateResult]:
        return [self.candidate(name) for name in self.pareto_front_names]

    def candidate(self, name: str) -> CandidateResult:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(f"no candidate {name!r} in run {self.run.id} (candidates: {', '.join(c.name for c in self.candidates)})")

    @classmethod
    def read(cls, path: str | Path) -> "Report":
        """A report.json on disk (a run folder's, or a path to the file), with the run folder as its
        run_uri and, when the run is complete, its manifest's digest."""
        import hashlib

        path = Path(path)
        folder = path if path.is_dir() else path.parent
        report = cls.model_validate(json.loads((folder / "report.json" if path.is_dir() else path).read_text()))
        manifest = folder / "manifest.json"
        report.run_uri = str(folder.resolve())
        report.manifest_sha256 = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
        return report


class ManifestFile(Record):
    path: str  # the key under the run's folder
    sha256: str
    size_bytes: int


class ManifestEntry(Record):
    """A candidate as manifest.json lists it: where its model is and what it measured."""

    name: str
    outcome: Outcome
    lineage: list[dict[str, Any]]
    artifact: str | None
    sha256: str | None
    size_bytes: int | None
    metric: Metric | None
    accepted: bool | None  # None when it was not measured
    rank: int | None
    latency_p50_ms: dict[int, float]

    @classmethod
    def of(cls, c: CandidateResult) -> "ManifestEntry":
        return cls(name=c.name, outcome=c.outcome, lineage=c.lineage, artifact=c.artifact, sha256=c.sha256,
                   size_bytes=c.size_bytes, metric=c.metric, accepted=c.accepted if c.measured else None, rank=c.rank,
                   latency_p50_ms={batch: stats.p50_ms for batch, stats in c.latency.items()})


class RunManifest(_Document):
    """manifest.json: every file of the run with its digest, written last (it marks the run complete)."""

    kind: str = "RunManifest"
    run: RunInfo
    fingerprint: Fingerprint
    inputs: dict[str, Any]
    best: str | None
    pareto_front: list[str]
    files: list[ManifestFile]
    candidates: list[ManifestEntry]

    @classmethod
    def of(cls, report: Report, files: list[ManifestFile]) -> "RunManifest":
        return cls(run=report.run, fingerprint=report.fingerprint, inputs=report.inputs, best=report.best_name,
                   pareto_front=report.pareto_front_names, files=files, candidates=[ManifestEntry.of(c) for c in report.candidates])
