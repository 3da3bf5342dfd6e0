"""The contract between the operator and the Jobs it launches, typed and versioned.

In: the resource as JSON in `KOMPRESS_RESOURCE`, with the contract version and the operator's
release beside it. Out: a `JobMessage` in the container's termination message, a result or an
error, stamped with the contract version and the job image's release. Both sides import these
models, so the operator reads the result with the very model the Job wrote it with.

The operator sends the spec without the fields left at their defaults, so a job image of an
older release, whose models forbid fields they do not know, still runs any spec that uses only
what it knows. When one side cannot read the other, the run fails with reason
VersionMismatch, naming both releases, instead of some confusing validation error.
"""

from __future__ import annotations

import json

from enum import Enum

from pydantic import Field, model_validator

from .. import __version__
from .status import CandidateSummary, PromotionStatus, TrialCounts, TuningStatus
from .wire import Model

CONTRACT_VERSION = 1  # bump when either message changes in a way the other side cannot read


class JobEnv(str, Enum):
    """Environment variables of the Job's container (and `kompress job`)."""

    RESOURCE = "KOMPRESS_RESOURCE"  # the ModelOptimization as JSON
    CONTRACT_VERSION = "KOMPRESS_CONTRACT_VERSION"
    OPERATOR_RELEASE = "KOMPRESS_OPERATOR_RELEASE"
    RUN_ID = "KOMPRESS_RUN_ID"
    DEFAULT_ARTIFACTS = "KOMPRESS_DEFAULT_ARTIFACTS"  # for specs that name no artifacts.uri
    TERMINATION_LOG = "KOMPRESS_TERMINATION_LOG"  # where the JobMessage goes (default /dev/termination-log)
    STUDY_STORAGE = "KOMPRESS_STUDY_STORAGE"  # the shared study's database URL (from a Secret), parallel tuning


class RunArtifacts(Model):
    uri: str
    manifest_sha256: str


class RunSummary(Model):
    """The compact result of a run (summary.py keeps it under the termination message's 4 KiB)."""

    run_id: str
    metric: str
    batch_size: int
    artifacts: RunArtifacts
    baseline: CandidateSummary
    best: CandidateSummary | None = None
    candidates: list[CandidateSummary] = Field(default_factory=list)
    tuning: TuningStatus | None = None
    promotion: PromotionStatus | None = None
    machine: str | None = Field(None, description="The CPU (and its cap) or GPU the run measured on.")
    plan: list[str] | None = Field(None, description="The passes an automatic plan chose, by name.")

    def status_fields(self) -> dict:
        """What the resource's status carries of it."""
        wire = self.to_wire()
        return {**{k: wire[k] for k in ("machine", "plan") if k in wire}, "baseline": wire["baseline"], "best": wire.get("best"), "candidates": wire["candidates"],
                "artifacts": wire["artifacts"], "runId": self.run_id, **({"tuning": wire["tuning"]} if self.tuning else {}),
                **({"promotion": wire["promotion"]} if self.promotion else {})}


class WorkerReport(Model):
    """What one worker Pod of a parallel study did: the trials it ran, why it stopped, and the
    study's counts as it left."""

    study: str
    trials: list[int] = Field(default_factory=list)
    stopped_because: str
    counts: TrialCounts


class JobFailure(Model):
    reason: str
    message: str


class JobMessage(Model):
    """What a Job leaves in its termination message: exactly one of result (a run), worker (a
    parallel study's worker Pod) and error."""

    contract_version: int
    release: str = Field(description="The job image's kompress release.")
    result: RunSummary | None = None
    worker: WorkerReport | None = None
    error: JobFailure | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "JobMessage":
        if sum(part is not None for part in (self.result, self.worker, self.error)) != 1:
            raise ValueError("a JobMessage holds exactly one of result, worker and error")
        return self

    @classmethod
    def success(cls, summary: RunSummary) -> "JobMessage":
        return cls(contract_version=CONTRACT_VERSION, release=__version__, result=summary)

    @classmethod
    def worker_done(cls, report: WorkerReport) -> "JobMessage":
        return cls(contract_version=CONTRACT_VERSION, release=__version__, worker=report)

    @classmethod
    def failure(cls, reason: str, message: str) -> "JobMessage":
        return cls(contract_version=CONTRACT_VERSION, release=__version__, error=JobFailure(reason=reason, message=message[:3000]))


def sparse_wire(model: Model) -> dict:
    """The wire form without the fields left at their defaults (what an older release can read)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)


# The largest spec the operator takes by default (its maxSpecBytes): every spec is in its memory at once when it starts.
MAX_SPEC_BYTES = 65_536


def spec_bytes(spec: Model) -> int:
    """A spec's size as the API server stores it, near enough: its JSON without defaults or nulls."""
    return len(json.dumps(sparse_wire(spec), separators=(",", ":")))


def job_mismatch(operator_contract: str | None, operator_release: str | None) -> str | None:
    """Seen from the Job: why it cannot run what the operator sent, or None when it can."""
    try:
        version = int(operator_contract) if operator_contract else None
    except ValueError:
        version = None
    if version == CONTRACT_VERSION:
        return None
    if not operator_contract and not operator_release:  # nothing from an operator: run by hand
        return (f"`kompress job` runs inside a Job the operator creates (it reads the resource and contract from "
                f"{JobEnv.RESOURCE.value} and {JobEnv.CONTRACT_VERSION.value}); on a laptop, run `kompress optimize FILE.yaml`")
    return (f"the operator (kompress {operator_release or 'unknown'}) speaks Job contract v{operator_contract or '?'}, "
            f"this job image (kompress {__version__}) v{CONTRACT_VERSION}: use the job image of the operator's release")


def operator_mismatch(document: dict) -> str | None:
    """Seen from the operator: why it cannot read a Job's message, or None when it can."""
    version = document.get("contractVersion")
    if version == CONTRACT_VERSION:
        return None
    return (f"the job image (kompress {document.get('release', 'unknown')}) wrote Job contract v{version or '?'}, "
            f"this operator (kompress {__version__}) reads v{CONTRACT_VERSION}: use the job image of the operator's release")


def unknown_field_hint(operator_release: str | None) -> str:
    """Appended to a spec error in the Job when the operator is of another release."""
    if not operator_release or operator_release == __version__:
        return ""
    return (f" (the operator is kompress {operator_release}, this job image kompress {__version__}: "
            f"a field it does not know needs the job image of the operator's release)")
