"""The compact result a Job hands to the operator through its termination message.

Kubernetes keeps at most 4096 bytes of a termination message, and the resource's status should
stay small (Katib resources that outgrew the object size limit are a known failure), so the
summary holds the baseline, the best pick, and a few more candidates (Pareto front first); the
full list stays in report.json.
"""

from __future__ import annotations

import json

from ..spec.contract import RunArtifacts, RunSummary
from .results import CandidateResult, Report, TuningReport
from ..spec.status import CandidateSummary, TrialCounts, TuningStatus

MESSAGE_LIMIT = 3800  # bytes; below Kubernetes' 4096 with room for the envelope
MAX_CANDIDATES = 8


def candidate_summary(c: CandidateResult, batch: int) -> CandidateSummary:
    ratios = c.vs_baseline
    reasons = c.rejected_reasons or ([c.error] if c.error else [])
    return CandidateSummary(
        name=c.name,
        technique=c.technique,
        accepted=c.accepted,
        pareto_optimal=c.pareto_optimal,
        latency_p50_ms=round(c.latency[batch].p50_ms, 4) if c.measured else None,
        size_bytes=c.size_bytes,
        metric_value=round(c.metric.value, 5) if c.measured else None,
        speedup=round(ratios.speedup_p50, 3) if ratios and ratios.speedup_p50 else None,
        noisy=True if c.measured and c.latency[batch].noisy else None,
        size_ratio=round(ratios.size_reduction, 3) if ratios and ratios.size_reduction else None,
        rejected_reason=reasons[0][:160] if reasons else None,
        joules_per_call=round(c.energy.joules_per_call, 5) if c.energy and c.energy.measurable else None,
        peak_memory_bytes=c.memory.peak_bytes if c.memory and c.memory.measurable else None,
        **(_generation(c.latency[batch]) if c.measured and c.latency[batch].time_to_first_token_ms is not None else {}),
    )


def _generation(stats) -> dict:
    return {"tokens_per_second": round(stats.throughput_per_second, 2),
            "time_to_first_token_ms": round(stats.time_to_first_token_ms, 2)}


def run_summary(report: Report) -> RunSummary:
    """From the typed report, with where it went (`run_uri`, `manifest_sha256`) and what promotion did."""
    batch = report.primary_batch_size
    others = sorted((c for c in report.candidates if c.parent is not None and not c.contender),
                    key=lambda c: (not c.pareto_optimal, c.rank or 1_000, c.name))
    summary = RunSummary(
        run_id=report.run.id, metric=report.metric, batch_size=batch,
        artifacts=RunArtifacts(uri=report.run_uri, manifest_sha256=report.manifest_sha256),
        baseline=candidate_summary(report.baseline, batch),
        best=candidate_summary(report.best, batch) if report.best else None,
        candidates=[candidate_summary(c, batch) for c in others[:MAX_CANDIDATES]],
        tuning=tuning_status(report.tuning) if report.tuning else None,
        promotion=report.promotion_status,
        machine=machine_of(report.fingerprint),
        plan=[p["name"] for p in report.plan["passes"]] if report.plan else None,
    )
    while len(json.dumps(summary.to_wire(), separators=(",", ":")).encode()) > MESSAGE_LIMIT and summary.candidates:
        summary.candidates.pop()
    return summary


def machine_of(fingerprint) -> str:
    """One line naming what the run measured on: the GPU, else the CPU and the target's cap."""
    if fingerprint.gpu is not None:
        return f"{fingerprint.gpu.count}x {fingerprint.gpu.name}"
    cap = fingerprint.cpu.max_isa
    return fingerprint.cpu.model + (f" (capped at {cap})" if cap else "")


def tuning_status(tuning: TuningReport) -> TuningStatus:
    return TuningStatus(study=tuning.study, parallelism=tuning.parallelism, trials=TrialCounts(
        finished=tuning.finished_trials, failed=tuning.failed_trials,
        running=sum(1 for t in tuning.trials if t.state == "Running")))
