"""The operator-wide policy: what a spec may ask of the Jobs the operator creates, whoever wrote it.

Checked twice: by the admission webhook (so `kubectl apply` says no), and again when the Job is
built, because whoever may delete the ValidatingWebhookConfiguration can bypass the webhook.
Each setting is named in the refusal, so an SRE knows which knob a team is asking to turn.
The storage half (which locations a namespace may read and write) is locations.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from kompress_jobs.spec.contract import spec_bytes
from kompress_jobs.spec.schema import Device, JobSettings, ModelOptimizationSpec, Toleration
from kompress_jobs.spec.tuning_spec import Tuning

from . import locations, study_databases
from .settings import OperatorSettings


@dataclass(frozen=True)
class Violation:
    field: str  # the spec's wire path, e.g. spec.job.image
    policy: str  # the setting that forbids it
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} (operator policy {self.policy})"


class PolicyViolation(Exception):
    def __init__(self, violations: list[Violation]):
        self.violations = violations
        super().__init__("; ".join(map(str, violations)))


def job_field(name: str) -> str:
    """spec.job.<camelCase>, from the schema's own alias."""
    return f"spec.job.{JobSettings.model_fields[name].alias}"


GPU_RESOURCE = "nvidia.com/gpu"
NAMESPACE_STUDY_SECRET = (study_databases.SECRET_NAME, study_databases.SECRET_KEY)
TUNING_FIELDS = {name: f"spec.tuning.{field.alias}" for name, field in Tuning.model_fields.items()}


def operator_images(settings: OperatorSettings) -> tuple[str, ...]:
    return settings.cpu_image, settings.gpu_image


def job_image(spec: ModelOptimizationSpec, settings: OperatorSettings) -> str:
    return spec.job.image or (settings.gpu_image if spec.job.device is Device.GPU else settings.cpu_image)


def image_allowed(image: str, settings: OperatorSettings) -> bool:
    """The operator's own images always; others when they match a pattern of allowed_images."""
    return image in operator_images(settings) or any(fnmatchcase(image, pattern) for pattern in settings.allowed_images)


def toleration_allowed(toleration: Toleration, settings: OperatorSettings) -> bool:
    """An allowed entry's unset fields match anything (so [{}] allows every toleration)."""
    def matches(allowed: Toleration) -> bool:
        return all(getattr(allowed, f) is None or getattr(allowed, f) == getattr(toleration, f)
                   for f in ("key", "operator", "value", "effect"))
    return any(matches(allowed) for allowed in settings.allowed_tolerations)


def violations(spec: ModelOptimizationSpec, settings: OperatorSettings, namespace: str) -> list[Violation]:
    """What the policy forbids in the spec, and in each target's Job (spec.job as the target
    changes it), named by the target's own field."""
    found = spec_violations(spec, settings, namespace)
    seen = {(v.policy, v.message) for v in found}
    for index, target in enumerate(spec.targets):
        for v in spec_violations(spec.for_target(target.name), settings, namespace):
            if (v.policy, v.message) not in seen:
                seen.add((v.policy, v.message))
                found.append(Violation(v.field.replace("spec.job", f"spec.targets[{index}]", 1), v.policy, v.message))
    return found


def spec_violations(spec: ModelOptimizationSpec, settings: OperatorSettings, namespace: str) -> list[Violation]:
    found = [Violation(field, setting, message) for field, setting, message in locations.outside(spec, settings, namespace)]
    job = spec.job
    if job.image and not image_allowed(job.image, settings):
        allowed = ", ".join((*operator_images(settings), *settings.allowed_images))
        found.append(Violation(job_field("image"), "allowedImages", f"image {job.image!r} is not allowed (allowed: {allowed})"))
    if job.service_account_name and not settings.allow_service_accounts:
        found.append(Violation(job_field("service_account_name"), "allowServiceAccounts",
                               "specs may not choose the Job's ServiceAccount"))
    for index, toleration in enumerate(job.tolerations):
        if not toleration_allowed(toleration, settings):
            found.append(Violation(f"{job_field('tolerations')}[{index}]", "allowedTolerations",
                                   f"toleration {toleration.to_wire()} is not allowed"))
    for key, value in job.node_selector.items():
        if not any(fnmatchcase(f"{key}={value}", pattern) for pattern in settings.allowed_node_selectors):
            found.append(Violation(f"{job_field('node_selector')}.{key}", "allowedNodeSelectors",
                                   f"node selector {key}={value} is not allowed (allowed: {', '.join(settings.allowed_node_selectors) or 'none'})"))
    if job.priority_class_name and not any(fnmatchcase(job.priority_class_name, p) for p in settings.allowed_priority_classes):
        found.append(Violation(job_field("priority_class_name"), "allowedPriorityClasses",
                               f"priority class {job.priority_class_name!r} is not allowed "
                               f"(allowed: {', '.join(settings.allowed_priority_classes) or 'none'})"))
    if job.queue_name and not settings.kueue_local_queue:
        found.append(Violation(job_field("queue_name"), "kueueLocalQueue",
                               "this operator queues runs itself, not through Kueue, so a Kueue queue cannot be named"))
    elif job.queue_name and not any(fnmatchcase(job.queue_name, p) for p in settings.allowed_queues):
        found.append(Violation(job_field("queue_name"), "allowedQueues",
                               f"queue {job.queue_name!r} is not one specs may name (allowed: {', '.join(settings.allowed_queues) or 'none'})"))
    secret = spec.tuning.storage_secret if spec.tuning else None
    if secret and not any(fnmatchcase(secret.name, p) for p in settings.allowed_secrets):
        found.append(Violation(TUNING_FIELDS["storage_secret"], "allowedSecrets",
                               f"Secret {secret.name!r} is not one specs may name (allowed: {', '.join(settings.allowed_secrets) or 'none'})"))
    return found + cost_violations(spec, settings, namespace) + tuning_violations(spec, settings) + target_violations(spec, settings)


def target_violations(spec: ModelOptimizationSpec, settings: OperatorSettings) -> list[Violation]:
    """A run holds a Job slot per hardware target while its Jobs run: more than fit can never start."""
    cap = min(settings.max_running, settings.max_running_per_namespace)
    if len(spec.targets) <= cap or settings.kueue_local_queue:  # with Kueue, each target's Job is admitted on its own
        return []
    which = "maxRunning" if settings.max_running <= settings.max_running_per_namespace else "maxRunningPerNamespace"
    return [Violation("spec.targets", which, (
        f"{len(spec.targets)} targets can never start: each target's Job takes a Job slot, and at most {cap} run at once "
        f"(maxRunning {settings.max_running}, maxRunningPerNamespace {settings.max_running_per_namespace})"))]


def cost_violations(spec: ModelOptimizationSpec, settings: OperatorSettings, namespace: str) -> list[Violation]:
    """What one run may cost: the operator's memory, its deadline, its retries and its resources."""
    found, job = [], spec.job
    size = spec_bytes(spec)
    if size > settings.max_spec_bytes:
        found.append(Violation("spec", "maxSpecBytes", f"{size} bytes of JSON are more than a spec may hold "
                               f"({settings.max_spec_bytes}): the operator keeps every spec in memory when it starts"))
    limit = settings.deadline_limit(namespace)
    if job.active_deadline_seconds and job.active_deadline_seconds > limit:
        which = ("namespaceMaxActiveDeadlineSeconds" if namespace in settings.namespace_max_active_deadline_seconds
                 else "maxActiveDeadlineSeconds")
        found.append(Violation(job_field("active_deadline_seconds"), which,
                               f"{job.active_deadline_seconds}s is above the most a run may take in namespace {namespace} "
                               f"({limit}s)"))
    deadline = job.active_deadline_seconds or settings.default_deadline(namespace)
    if spec.budget is not None and spec.budget.seconds() >= deadline and not job.active_deadline_seconds:
        found.append(Violation("spec.budget.duration", "defaultActiveDeadlineSeconds",
                               f"{spec.budget.duration} is not shorter than the deadline a run gets in namespace {namespace} "
                               f"({deadline}s): set spec.job.activeDeadlineSeconds above it (at most {limit}s)"))
    found += resource_violations(job, settings)
    if job.backoff_limit > settings.max_retries:
        found.append(Violation(job_field("backoff_limit"), "maxRetries",
                               f"{job.backoff_limit} retries are above the most allowed ({settings.max_retries})"))
    if spec.tuning and spec.tuning.max_failed_trials > settings.max_failed_trials:
        found.append(Violation(TUNING_FIELDS["max_failed_trials"], "maxFailedTrials",
                               f"{spec.tuning.max_failed_trials} is above the most allowed ({settings.max_failed_trials}): "
                               "each failed trial may cost a Pod"))
    return found


def job_gpus(job: JobSettings) -> int:
    """GPUs the Job's container asks for: the spec's count, else one on a GPU run."""
    return job.gpus or (1 if job.device is Device.GPU else 0)


def resource_violations(job: JobSettings, settings: OperatorSettings) -> list[Violation]:
    """Requests and limits (and the GPU count) above maxJobResources."""
    from kubernetes.utils import parse_quantity

    found = []
    asked = [(kind, name, quantity) for kind in ("requests", "limits") for name, quantity in getattr(job.resources, kind).items()]
    if job_gpus(job):
        asked.append(("gpus", GPU_RESOURCE, job_gpus(job)))
    for kind, name, quantity in asked:
        most = settings.max_job_resources.get(name)
        if most is not None and parse_quantity(quantity) > parse_quantity(most):
            where = job_field("gpus") if kind == "gpus" else f"{job_field('resources')}.{kind}.{name}"
            found.append(Violation(where, "maxJobResources", f"{quantity} of {name} is above the most one Job may ask ({most})"))
    return found


def tuning_violations(spec: ModelOptimizationSpec, settings: OperatorSettings) -> list[Violation]:
    """A parallel study takes a Job slot per Pod, and needs a shared database."""
    parallelism = spec.tuning.parallelism if spec.tuning else 1
    if parallelism == 1:
        return []
    found, cap = [], min(settings.max_running, settings.max_running_per_namespace)
    if parallelism > cap and not settings.kueue_local_queue:  # with Kueue, its quota decides what fits
        which = "maxRunning" if settings.max_running <= settings.max_running_per_namespace else "maxRunningPerNamespace"
        found.append(Violation(TUNING_FIELDS["parallelism"], which, (
            f"parallelism {parallelism} can never start: each worker Pod takes a Job slot, and at most {cap} run at once "
            f"(maxRunning {settings.max_running}, maxRunningPerNamespace {settings.max_running_per_namespace})")))
    if spec.tuning.storage_secret is None and not settings.study_storage_secret and not settings.study_admin_url:
        found.append(Violation(TUNING_FIELDS["storage_secret"], "studyStorageSecret", (
            "parallel trials share a study in a database: name a Secret holding its URL here, "
            "or have the operator's studyStorageSecret set")))
    return found


def kueue_queue(spec: ModelOptimizationSpec, settings: OperatorSettings) -> str | None:
    """The Kueue LocalQueue the run's Jobs wait in, or None where the operator queues runs itself."""
    return (spec.job.queue_name or settings.kueue_local_queue) if settings.kueue_local_queue else None


def study_secret(spec: ModelOptimizationSpec, settings: OperatorSettings) -> tuple[str, str] | None:
    """(Secret name, key) of the shared study's URL, for a parallel study: the spec's own Secret,
    else the namespace's own database (study_databases.py), else the operator's shared one."""
    if spec.tuning is None or spec.tuning.parallelism == 1:
        return None
    ref = spec.tuning.storage_secret
    if ref:
        return ref.name, ref.key
    if settings.study_admin_url:
        return NAMESPACE_STUDY_SECRET
    return settings.study_storage_secret, "url"


def namespace_database(spec: ModelOptimizationSpec, settings: OperatorSettings) -> bool:
    """Whether the run's Jobs read the namespace's own study database, which the operator makes first."""
    return study_secret(spec, settings) == NAMESPACE_STUDY_SECRET


def enforce(spec: ModelOptimizationSpec, settings: OperatorSettings, namespace: str) -> None:
    found = violations(spec, settings, namespace)
    if found:
        raise PolicyViolation(found)
