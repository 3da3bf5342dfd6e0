"""Build the batch Job for one run of a ModelOptimization: a pure function of the resource.

The Job's name comes from the resource's name, generation and re-runs (status.reoptimization.runs),
so a restarted operator finds the Job it already created instead of making a second one, a spec
change (new generation) gets a new Job that supersedes the old, and so does a scheduled re-run.
"""

from __future__ import annotations

import json
from typing import Any

from kompress_jobs import __version__
from kompress_jobs.spec.contract import CONTRACT_VERSION, JobEnv, sparse_wire
from kompress_jobs.spec.schema import ModelOptimizationSpec
from kompress_jobs.spec.targets import isa_environment

from . import policy
from .run_ref import MANAGED_BY, RUN_JOB, TUNING_JOB, RunRef
from .settings import OperatorSettings

SCRATCH = "/scratch"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def needs_tuning_job(spec: ModelOptimizationSpec) -> bool:
    return spec.tuning is not None and spec.tuning.parallelism > 1


def build_job(body: dict[str, Any], spec: ModelOptimizationSpec, settings: OperatorSettings, role: str = RUN_JOB,
              target: str | None = None) -> dict[str, Any]:
    """The run's Job, or (role TUNING_JOB) a parallel study's: `parallelism` worker Pods, each
    running trials until the study is over. The Job controller replaces a worker that dies (its
    trial is failed by heartbeat and retried); each Pod lost counts against maxFailedTrials, as in
    the study. With `target`, the Job of one of spec.targets: the spec it gets is resolved for
    that target (its node, resources and cap; Target.job_settings), and so are its name and run."""
    meta = body["metadata"]
    run = RunRef.of_resource(body)
    if target is not None:
        spec, run = spec.for_target(target), run.for_target(target)
    policy.enforce(spec, settings, meta["namespace"])  # again here: the webhook can be deleted by whoever may delete it
    job = spec.job
    labels = {**MANAGED_BY, "app.kubernetes.io/name": "kompress-job", **run.labels(role)}
    job_spec: dict[str, Any] = {
        "backoffLimit": job.backoff_limit,
        "ttlSecondsAfterFinished": job.ttl_seconds_after_finished if job.ttl_seconds_after_finished is not None
        else settings.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": labels}, "spec": _pod_spec(body, run, spec, settings, role)},
    }
    if role == TUNING_JOB:
        job_spec |= {"completions": spec.tuning.parallelism, "parallelism": spec.tuning.parallelism,
                     "backoffLimit": spec.tuning.max_failed_trials}
    # Every run ends: the spec's deadline (within the policy's maximum) or the operator's default,
    # capped by the namespace's maximum
    job_spec["activeDeadlineSeconds"] = job.active_deadline_seconds or settings.default_deadline(meta["namespace"])
    metadata_labels = dict(labels)
    queue = policy.kueue_queue(spec, settings)
    if queue:  # Kueue's contract: created suspended in a LocalQueue; Kueue unsuspends it once admitted
        metadata_labels[KUEUE_QUEUE_LABEL] = queue
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": run.job_name(role), "namespace": run.namespace, "labels": metadata_labels},
        "spec": job_spec,
    }


def _pod_spec(body: dict[str, Any], run: RunRef, spec: ModelOptimizationSpec, settings: OperatorSettings, role: str) -> dict[str, Any]:
    job = spec.job
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [_container(body, run, spec, settings, role)],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": settings.scratch_size_limit}}],  # a full disk evicts the Pod, not the node's others
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,  # the pipeline never talks to the API server
    }
    if settings.job_image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in settings.job_image_pull_secrets]
    if job.node_selector:
        pod_spec["nodeSelector"] = dict(job.node_selector)
    if job.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in job.tolerations]
    if job.priority_class_name:
        pod_spec["priorityClassName"] = job.priority_class_name
    service_account = job.service_account_name or settings.job_service_account
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return pod_spec


def _container(body: dict[str, Any], run: RunRef, spec: ModelOptimizationSpec, settings: OperatorSettings, role: str) -> dict[str, Any]:
    job = spec.job
    gpus = policy.job_gpus(job)
    # The spec's requests (or limits) replace the operator's defaults as a whole, as a Pod's would.
    defaults = settings.job_resources
    limits = {k: str(v) for k, v in (job.resources.limits or defaults.get("limits") or {}).items()}
    requests = {k: str(v) for k, v in (job.resources.requests or defaults.get("requests") or {}).items()}
    if gpus:
        limits[policy.GPU_RESOURCE] = str(gpus)
    # Without the fields at their defaults: a job image of an older release reads what it knows.
    resource_document = {"apiVersion": body["apiVersion"], "kind": body["kind"],
                         "metadata": {"name": run.name, "namespace": run.namespace, "generation": run.generation},
                         "spec": sparse_wire(spec)}
    env = [
        {"name": JobEnv.RESOURCE.value, "value": json.dumps(resource_document, separators=(",", ":"))},
        {"name": JobEnv.CONTRACT_VERSION.value, "value": str(CONTRACT_VERSION)},
        {"name": JobEnv.OPERATOR_RELEASE.value, "value": __version__},
        {"name": JobEnv.RUN_ID.value, "value": run.run_id},
        {"name": "HOME", "value": SCRATCH},
        {"name": "TMPDIR", "value": SCRATCH},
        {"name": "MPLCONFIGDIR", "value": SCRATCH},
    ]
    cap = spec.target().max_cpu_isa if spec.target() else None
    env += [{"name": k, "value": v} for k, v in isa_environment(cap).items()]  # before any runtime loads
    if settings.default_artifacts:
        env.append({"name": JobEnv.DEFAULT_ARTIFACTS.value, "value": settings.default_artifacts})
    env += [{"name": k, "value": v} for k, v in sorted(settings.job_env.items())]
    study = policy.study_secret(spec, settings)
    if study:  # optional: a missing Secret fails the Pod with a clear reason (StudyStorageMissing), not a stuck Pod
        env.append({"name": JobEnv.STUDY_STORAGE.value,
                    "valueFrom": {"secretKeyRef": {"name": study[0], "key": study[1], "optional": True}}})
    container: dict[str, Any] = {
        "name": "optimize" if role == RUN_JOB else "worker",
        "image": policy.job_image(spec, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["kompress", "job"] + (["--tuning-worker"] if role == TUNING_JOB else []),
        "env": env,
        "resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
        "workingDir": SCRATCH,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    # The team's storage credentials only ever reach an image the operator's policy trusts.
    if settings.artifacts_secret and policy.image_allowed(container["image"], settings):
        container["envFrom"] = [{"secretRef": {"name": settings.artifacts_secret, "optional": True}}]
    return container
