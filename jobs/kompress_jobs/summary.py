"""The compact result a Job hands to the operator through its termination message.

Kubernetes keeps at most 4096 bytes of a termination message, and the resource's status should
stay small (Katib resources that outgrew the object size limit are a known failure), so the
summary holds the baseline, the best pick, and a few more candidates (Pareto front first); the
full list stays in report.json.
"""

from __future__ import annotations

import json

from .contract import RunArtifacts, RunSummary
from .schema import CandidateSummary, PromotionStatus, TrialCounts, TuningStatus

MESSAGE_LIMIT = 3800  # bytes; below Kubernetes' 4096 with room for the envelope
MAX_CANDIDATES = 8


def candidate_summary(record: dict, batch: int) -> CandidateSummary:
    measured = record["outcome"] == "Measured"
    ratios = record.get("vsBaseline", {})
    reasons = record.get("rejectedReasons") or ([record["error"]] if record.get("error") else [])
    return CandidateSummary(
        name=record["name"],
        technique=record["technique"],
        accepted=bool(record.get("accepted")),
        pareto_optimal=bool(record.get("paretoOptimal")),
        latency_p50_ms=round(record["latency"][str(batch)]["p50_ms"], 4) if measured else None,
        size_bytes=record.get("sizeBytes"),
        metric_value=round(record["metric"]["value"], 5) if measured else None,
        speedup=round(ratios["speedupP50"], 3) if ratios.get("speedupP50") else None,
        size_ratio=round(ratios["sizeReduction"], 3) if ratios.get("sizeReduction") else None,
        rejected_reason=reasons[0][:160] if reasons else None,
    )


def run_summary(report: dict, run_uri: str, manifest_sha256: str, promotion: dict | None = None) -> RunSummary:
    batch = report["primaryBatchSize"]
    records = report["candidates"]
    baseline = next(r for r in records if r["parent"] is None)
    best = next((r for r in records if r["name"] == report["best"]), None)
    others = sorted((r for r in records if r["parent"] is not None and not r.get("contender")),
                    key=lambda r: (not r.get("paretoOptimal"), r.get("rank") or 1_000, r["name"]))
    summary = RunSummary(
        run_id=report["run"]["id"], metric=report["metric"], batch_size=batch,
        artifacts=RunArtifacts(uri=run_uri, manifest_sha256=manifest_sha256),
        baseline=candidate_summary(baseline, batch), best=candidate_summary(best, batch) if best else None,
        candidates=[candidate_summary(r, batch) for r in others[:MAX_CANDIDATES]],
        tuning=tuning_status(report["tuning"]) if report.get("tuning") else None,
        promotion=PromotionStatus.model_validate(promotion) if promotion else None,
    )
    while len(json.dumps(summary.to_wire(), separators=(",", ":")).encode()) > MESSAGE_LIMIT and summary.candidates:
        summary.candidates.pop()
    return summary


def tuning_status(tuning: dict) -> TuningStatus:
    return TuningStatus(study=tuning["study"], parallelism=tuning.get("parallelism", 1), trials=TrialCounts(
        finished=tuning["finishedTrials"], failed=tuning.get("failedTrials", 0),
        running=sum(1 for t in tuning["trials"] if t["state"] == "Running")))
