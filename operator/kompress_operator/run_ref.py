"""One run of a resource, named once: its namespace and name, the generation of its spec, how
many re-runs of that spec came before it, and the hardware target it is for (spec.targets; "" for
a resource without targets). The Job's name and labels and the run ID derive from it, and it is
read back from a resource or from a Job's labels."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

MANAGED_BY = {"app.kubernetes.io/managed-by": "kompress"}
RESOURCE_LABEL = "kompress.io/resource"
GENERATION_LABEL = "kompress.io/generation"
ROLE_LABEL = "kompress.io/role"
RERUN_LABEL = "kompress.io/rerun"
TARGET_LABEL = "kompress.io/target"
RUN_JOB, TUNING_JOB = "run", "tuning"  # the run's Job (measure, select, publish), and a parallel study's worker Pods


def reruns_of(resource: dict) -> int:
    """Runs started without a spec change so far (they give the Job a new name)."""
    return int(((resource.get("status") or {}).get("reoptimization") or {}).get("runs") or 0)


@dataclass(frozen=True)
class RunRef:
    namespace: str
    name: str
    generation: int
    rerun: int = 0
    target: str = ""

    @classmethod
    def of_resource(cls, body: dict) -> "RunRef":
        """The run the resource's spec and re-run count ask for now."""
        meta = body["metadata"]
        return cls(meta["namespace"], meta["name"], int(meta.get("generation") or 1), reruns_of(body))

    @classmethod
    def of_labels(cls, namespace: str, labels: dict) -> "RunRef":
        """The run a Job belongs to, from the labels it was created with."""
        return cls(namespace, labels.get(RESOURCE_LABEL) or "", int(labels.get(GENERATION_LABEL, "0")),
                   int(labels.get(RERUN_LABEL, "0")), labels.get(TARGET_LABEL) or "")

    @classmethod
    def of_job(cls, job: dict) -> "RunRef":
        return cls.of_labels(job["metadata"]["namespace"], job["metadata"].get("labels") or {})

    def for_target(self, target: str) -> "RunRef":
        return replace(self, target=target)

    def job_key(self, role: str = RUN_JOB) -> str:
        """How the operator's index of Jobs tells a run's Jobs apart: the role, and the target's name."""
        return f"{role}/{self.target}" if self.target else role

    @property
    def key(self) -> tuple[str, str]:
        """The resource's (namespace, name): what the queue and the indexes are keyed by."""
        return self.namespace, self.name

    def job_name(self, role: str = RUN_JOB) -> str:
        """<name>[-<target>]-g<generation>[-r<rerun>] (a tuning Job: …-tuning), shortened with a hash
        when it would pass the 63-character label limit."""
        suffix = (f"-{self.target}" if self.target else "") + f"-g{self.generation}" + (f"-r{self.rerun}" if self.rerun else "") + ("" if role == RUN_JOB else f"-{role}")
        if len(self.name) + len(suffix) <= 63:
            return self.name + suffix
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:8]
        return f"{self.name[: 63 - len(suffix) - 9].rstrip('-.')}-{digest}{suffix}"

    def labels(self, role: str = RUN_JOB) -> dict[str, str]:
        labels = {RESOURCE_LABEL: self.name, GENERATION_LABEL: str(self.generation), ROLE_LABEL: role, RERUN_LABEL: str(self.rerun)}
        return labels | ({TARGET_LABEL: self.target} if self.target else {})

    @property
    def run_id(self) -> str:
        """The pipeline's run ID (the run's folder in the store): the same for every attempt of the run."""
        return (f"{self.namespace}-{self.name}-g{self.generation}" + (f"-r{self.rerun}" if self.rerun else "")
                + (f"-{self.target}" if self.target else ""))
