"""Which hardware targets no node of the cluster can take now, as a pure function of the Nodes.

Told when the run starts (status.targets[].unschedulable and a Warning Event), instead of a Pod
pending in silence. The target's Job is still created: a cluster autoscaler (Karpenter, a node
group scaled to zero) adds nodes only for Pods that wait, and the Job's activeDeadlineSeconds
ends the wait if none comes. Only nodeSelector and NoSchedule/NoExecute taints are weighed, as the
scheduler's first filters do; resources and affinity are the scheduler's to tell.
"""

from __future__ import annotations

from kompress_jobs.spec.schema import ModelOptimizationSpec, Toleration

_BLOCKING = ("NoSchedule", "NoExecute")


def unschedulable(spec: ModelOptimizationSpec, nodes: list[dict], deadline_seconds: int) -> dict[str, str]:
    """target name → why no node takes its Pod now; targets some node takes are left out."""
    found = {}
    for target in spec.targets:
        job = target.job_settings(spec.job)
        if not any(_takes(node, job.node_selector, job.tolerations) for node in nodes):
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(job.node_selector.items())) or "no nodeSelector"
            found[target.name] = (f"no node of the {len(nodes)} in the cluster matches {wanted} and tolerates its taints: "
                                  f"the Job waits for one (an autoscaler may add it) and fails after {deadline_seconds}s")
    return found


def _takes(node: dict, selector: dict[str, str], tolerations: list[Toleration]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(key) != value for key, value in selector.items()):
        return False
    taints = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") in _BLOCKING]
    return all(any(_tolerates(t, taint) for t in tolerations) for taint in taints)


def _tolerates(toleration: Toleration, taint: dict) -> bool:
    if toleration.effect and toleration.effect != taint.get("effect"):
        return False
    if toleration.operator == "Exists":
        return toleration.key in (None, taint.get("key"))
    return toleration.key == taint.get("key") and (toleration.value or "") == (taint.get("value") or "")
