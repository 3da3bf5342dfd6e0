"""The operator-wide policy: what a spec may ask of the Jobs the operator creates, whoever wrote it.

Checked twice: by the admission webhook (so `kubectl apply` says no), and again when the Job is
built, because whoever may delete the ValidatingWebhookConfiguration can bypass the webhook.
Each setting is named in the refusal, so an SRE knows which knob a team is asking to turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from kompress_jobs.schema import Device, JobSettings, ModelOptimizationSpec, Toleration, Tuning

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


def violations(spec: ModelOptimizationSpec, settings: OperatorSettings) -> list[Violation]:
    found = []
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
    return found + tuning_violations(spec, settings)


def tuning_violations(spec: ModelOptimizationSpec, settings: OperatorSettings) -> list[Violation]:
    """A parallel study takes a Job slot per Pod, and needs a shared database."""
    parallelism = spec.tuning.parallelism if spec.tuning else 1
    if parallelism == 1:
        return []
    found, cap = [], min(settings.max_running, settings.max_running_per_namespace)
    if parallelism > cap:
        which = "maxRunning" if settings.max_running <= settings.max_running_per_namespace else "maxRunningPerNamespace"
        found.append(Violation(TUNING_FIELDS["parallelism"], which, (
            f"parallelism {parallelism} can never start: each worker Pod takes a Job slot, and at most {cap} run at once "
            f"(maxRunning {settings.max_running}, maxRunningPerNamespace {settings.max_running_per_namespace})")))
    if spec.tuning.storage_secret is None and not settings.study_storage_secret:
        found.append(Violation(TUNING_FIELDS["storage_secret"], "studyStorageSecret", (
            "parallel trials share a study in a database: name a Secret holding its URL here, "
            "or have the operator's studyStorageSecret set")))
    return found


def study_secret(spec: ModelOptimizationSpec, settings: OperatorSettings) -> tuple[str, str] | None:
    """(Secret name, key) of the shared study's URL, for a parallel study."""
    if spec.tuning is None or spec.tuning.parallelism == 1:
        return None
    ref = spec.tuning.storage_secret
    return (ref.name, ref.key) if ref else (settings.study_storage_secret, "url")


def enforce(spec: ModelOptimizationSpec, settings: OperatorSettings) -> None:
    found = violations(spec, settings)
    if found:
        raise PolicyViolation(found)
