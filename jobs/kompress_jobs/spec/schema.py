"""The ModelOptimization resource (kompress.io/v1alpha1) as pydantic models.

The single source of truth for the resource: the CLI validates YAML with it, the Job reads its
spec with it, the operator writes status with it, and crds/ is generated from it. Field names are
camelCase on the wire (Kubernetes convention) and snake_case in Python; enumerated values are
CamelCase, as the Kubernetes API conventions ask.

This module assembles the resource from its parts: sources.py (model and data), tasks.py,
goals.py (goals and benchmark), tuning_spec.py, status.py, and each pass's settings, which live
beside the pass (passes/<pass>.py) and join the `passes` union through the pass registry.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ..formats import format_of
from ..passes import PASSES
from .goals import Benchmark, DropMode, Goals
from ..passes.settings import pass_type_of
from .sources import DataSource, Device, ModelFormat, ModelSource
from .status import ModelOptimizationStatus
from .tasks import Metric, Task
from .targets import TARGET_NAME, CpuIsa
from .tuning_spec import Tuning
from .wire import Model

API_GROUP = "kompress.io"
API_VERSION = "v1alpha1"
KIND = "ModelOptimization"
PLURAL = "modeloptimizations"


class Artifacts(Model):
    uri: str | None = Field(
        None, description="Local directory or s3://bucket/prefix; the CLI defaults to ./kompress-runs."
    )
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph); AWS when unset.")
    region: str | None = None


class Promotion(Model):
    """Publish the run's pick to a stable place a serving stack reads (promotion.py), unless the
    model promoted before is as good: a later run measures it as one more contender."""

    uri: str | None = Field(None, description=(
        "Local directory or s3://bucket/prefix for current.json, current/ and releases/; "
        "default <artifacts>/<namespace>/<name>."))
    fidelity_tolerance: float = Field(0.0, ge=0, description=(
        "How much larger (in the goal's accuracy-drop units) the new pick's drop may be than the promoted "
        "model's, measured on this run's data; 0 means no worse."))


_DURATION = re.compile(r"^(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?$")


class Budget(Model):
    """How long the passes of a run may take in all (not the baseline's load nor the final
    measurement). An automatic plan is sized to it; a pass (or a study's trial) that would start
    after it is spent is skipped and the report says so."""

    duration: str = Field(min_length=2, max_length=16, pattern=_DURATION.pattern, description=(
        "A Go duration of hours, minutes and seconds: 45m, 1h30m, 90s. Structured compression with a study is "
        "planned from 30m."))

    def seconds(self) -> int:
        hours, minutes, seconds = (int(part or 0) for part in _DURATION.match(self.duration).groups())
        return hours * 3600 + minutes * 60 + seconds

    @model_validator(mode="after")
    def _positive(self) -> "Budget":
        if self.seconds() == 0:
            raise ValueError(f"duration {self.duration!r} is no time at all")
        return self


class ConcurrencyPolicy(str, Enum):
    """As a CronJob's, for a run whose time comes while the last one still runs."""

    FORBID = "Forbid"  # skip this time
    REPLACE = "Replace"  # stop the running one, start the new one


class ReoptimizeOn(Model):
    model_change: bool = Field(False, description="Run again when the model's digest changes (S3 ETag, file SHA-256).")
    job_image_change: bool = Field(False, description="Run again when the job image the operator would use changes.")


class Toleration(Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


# A Kubernetes quantity as the API server parses it (resource.Quantity): a decimal number, then a
# binary (Ki…Ei) or decimal (n…E) suffix or an exponent; and a resource name, a qualified name
# (an optional DNS prefix, then a name: cpu, nvidia.com/gpu).
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_RESOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _quantity(value: int | str) -> int | str:
    if isinstance(value, int) and value < 0 or isinstance(value, str) and (len(value) > 64 or not _QUANTITY.match(value)):
        raise ValueError(f"{str(value)[:64]!r} is not a Kubernetes quantity (e.g. 2, 500m, 4Gi)")
    return value


def _resource_name(value: str) -> str:
    if len(value) > 253 or not _RESOURCE_NAME.match(value):
        raise ValueError(f"{value[:64]!r} is not a resource name (e.g. cpu, memory, nvidia.com/gpu)")
    return value


Quantity = Annotated[int | str, AfterValidator(_quantity)]
ResourceName = Annotated[str, AfterValidator(_resource_name)]


class Resources(Model):
    """Container resources as in a Pod spec (quantities: 2, "500m", "4Gi"), checked as the API server does."""

    requests: dict[ResourceName, Quantity] = Field(default_factory=dict, max_length=32)
    limits: dict[ResourceName, Quantity] = Field(default_factory=dict, max_length=32)


class JobSettings(Model):
    image: str | None = Field(None, description="Job image; the operator's default CPU or GPU image when unset.")
    device: Device = Device.CPU
    gpus: int = Field(0, ge=0, le=16, description="nvidia.com/gpu count; 1 when device is GPU and unset.")
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    priority_class_name: str | None = None
    service_account_name: str | None = None
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first when the operator queues runs.")
    queue_name: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description=(
        "Kueue LocalQueue in this namespace the Job waits in, where the operator queues through Kueue "
        "(default: the operator's kueueLocalQueue); with Kueue, priorityClassName orders the Workload."))
    active_deadline_seconds: int | None = Field(None, ge=1)
    backoff_limit: int = Field(1, ge=0, le=10)
    ttl_seconds_after_finished: int | None = Field(None, ge=0)


class Target(Model):
    """One kind of node in the fleet: its fields replace spec.job's for its own Job (nodeSelector
    extends it), so each target is admitted, scheduled and measured on its own."""

    name: str = Field(min_length=1, max_length=20, pattern=TARGET_NAME.pattern, description=(
        "Names the target's Job (<resource>-<target>-g<generation>), its run, its status entry, its metrics' "
        "target label and its promotion folder (<promotion>/targets/<name>/)."))
    device: Device | None = Field(None, description="CPU or GPU; spec.job.device when unset.")
    gpus: int | None = Field(None, ge=0, le=16)
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32, description=(
        "Added to spec.job.nodeSelector (the target's value wins for a key both name)."))
    tolerations: list[Toleration] | None = Field(None, max_length=32, description="Replace spec.job.tolerations when set.")
    resources: Resources | None = Field(None, description="Replace spec.job.resources when set.")
    max_cpu_isa: CpuIsa | None = Field(None, description=(
        "Cap the instruction set the Job uses: oneDNN and PyTorch's kernels, and kompress's view of the CPU, "
        "which decides the plan. ONNX Runtime, OpenVINO and llama.cpp read the CPU themselves and are not capped "
        "(docs/targets.md)."))

    def job_settings(self, job: JobSettings) -> JobSettings:
        """spec.job as this target's Job runs it."""
        update = {"node_selector": job.node_selector | self.node_selector}
        for field in ("device", "gpus", "tolerations", "resources"):
            if getattr(self, field) is not None:
                update[field] = getattr(self, field)
        return job.model_copy(update=update)


# The pass union, from the registry: a pass joins the resource by registering its settings class.
_PASS_SETTINGS = tuple(PASSES[type_].settings for type_ in sorted(PASSES))
PassSpec = Annotated[Union[_PASS_SETTINGS], Field(discriminator="type")]
PASS_TYPES: tuple[str, ...] = tuple(pass_type_of(settings) for settings in _PASS_SETTINGS)


class ModelOptimizationSpec(Model):
    model: ModelSource
    data: DataSource
    task: Task = Field(default_factory=Task)
    passes: list[PassSpec] = Field(default_factory=list, max_length=32, description=(
        "The passes, in order. Empty: the Job plans them for the model, the task and the machine it lands on "
        "(planning/auto_plan.py; `kompress plan` prints the plan), and the report lists the plan and its reasons."))
    goals: Goals = Field(default_factory=Goals)
    benchmark: Benchmark = Field(default_factory=Benchmark)
    tuning: Tuning | None = None
    budget: Budget | None = Field(None, description="How long the passes may take in all; without it they take what they take.")
    artifacts: Artifacts = Field(default_factory=Artifacts)
    promotion: Promotion | None = Field(None, description="Off unless set; `promotion: {}` promotes to the default place.")
    schedule: str | None = Field(None, min_length=1, description=(
        "Cron expression (5 fields, UTC) for re-running the optimization, as a CronJob's schedule."))
    starting_deadline_seconds: int | None = Field(None, ge=1, description=(
        "A scheduled run missed by more than this is skipped, as a CronJob's."))
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    reoptimize_on: ReoptimizeOn = Field(default_factory=ReoptimizeOn)
    job: JobSettings = Field(default_factory=JobSettings)
    targets: list[Target] = Field(default_factory=list, max_length=8, description=(
        "Kinds of node to optimize for, each with its own Job, plan and pick (status.targets). Empty: one Job, "
        "as spec.job says."))

    def target(self) -> Target | None:
        """The target this spec runs for: its only one (a Job's spec is resolved for one target)."""
        return self.targets[0] if len(self.targets) == 1 else None

    def for_target(self, name: str) -> "ModelOptimizationSpec":
        """The spec as the Job of target `name` runs it: spec.job merged with the target, which is its only one."""
        target = next((t for t in self.targets if t.name == name), None)
        if target is None:
            known = ", ".join(t.name for t in self.targets) or "none"
            raise ValueError(f"no target named {name!r} in spec.targets (it names {known})")
        return self.model_copy(update={"job": target.job_settings(self.job), "targets": [target]})

    def judging_splits(self) -> tuple[str, ...]:
        """Splits that a tuning study or a steered pass is judged on: the data must hold them."""
        names = [split for settings in self.passes for split in settings.judging_splits()]
        if self.tuning is not None:
            names.append(self.tuning.validation_split)
        return tuple(dict.fromkeys(names))

    @field_validator("schedule")
    @classmethod
    def _schedule_is_cron(cls, value: str | None) -> str | None:
        from .cron import check_schedule

        return None if value is None else check_schedule(value)

    @model_validator(mode="after")
    def _drop_mode_fits_metric(self) -> "ModelOptimizationSpec":
        if self.goals.accuracy_drop_mode is DropMode.RELATIVE and self.task.metric in (Metric.KL_DIVERGENCE, Metric.RELATIVE_ERROR):
            raise ValueError(f"goals.accuracyDropMode Relative needs a metric whose baseline value is not zero; "
                             f"{self.task.metric.value} of the baseline to itself is 0 (use Absolute)")
        return self

    @model_validator(mode="after")
    def _text_data_has_a_tokenizer(self) -> "ModelOptimizationSpec":
        text = self.data.text
        if text is not None and text.tokenizer is None and self.model.format is not ModelFormat.HUGGING_FACE:
            raise ValueError("data.text.tokenizer: text data needs a tokenizer directory unless the model is a HuggingFace checkpoint")
        if text is not None and self.task.needs_labels and text.label_column is None:
            raise ValueError(f"data.text.labelColumn: a {self.task.type.value} task needs labels (or use task.type: Fidelity)")
        return self

    @model_validator(mode="after")
    def _targets_are_distinct(self) -> "ModelOptimizationSpec":
        names = [t.name for t in self.targets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"targets: each target needs a name of its own; {', '.join(twice)} is named twice")
        if len(self.targets) > 1 and self.tuning is not None and self.tuning.parallelism > 1:
            raise ValueError("tuning.parallelism: a parallel study across Pods does not run with several targets yet "
                             "(each target would need a study of its own); use parallelism 1, or one target per resource")
        return self

    @model_validator(mode="after")
    def _budget_fits_the_deadline(self) -> "ModelOptimizationSpec":
        deadline = self.job.active_deadline_seconds
        if self.budget is not None and deadline is not None and self.budget.seconds() >= deadline:
            raise ValueError(f"budget.duration {self.budget.duration} is not shorter than job.activeDeadlineSeconds {deadline}: "
                             f"the Job would be stopped before the run could publish what the budget bought")
        return self

    @model_validator(mode="after")
    def _tuning_has_passes(self) -> "ModelOptimizationSpec":
        if self.tuning is not None and not self.passes:
            raise ValueError("tuning: a study tunes the parameters of passes named in spec.passes, and it names none "
                             "(an automatic plan has no study)")
        return self

    @model_validator(mode="after")
    def _language_model_fits(self) -> "ModelOptimizationSpec":
        generative, fmt = self.task.generative, self.model.format
        if format_of(fmt).generative_only and not generative:
            raise ValueError(f"model.format {fmt.value} holds a causal language model: it needs task.type: LanguageModeling")
        if not generative:
            for name in ("min_tokens_per_second", "max_time_to_first_token_ms"):
                if getattr(self.goals, name) is not None:
                    raise ValueError(f"goals.{to_camel(name)}: a goal on generation needs task.type: LanguageModeling")
            return self
        if fmt not in LANGUAGE_MODEL_FORMATS:
            raise ValueError(f"task LanguageModeling: model.format {fmt.value} is not a causal language model format "
                             f"(it takes {', '.join(f.value for f in LANGUAGE_MODEL_FORMATS)})")
        if self.data.text is not None:
            raise ValueError("data.text: task LanguageModeling reads data.uri as one plain text file, not as rows")
        if self.tuning is not None:
            raise ValueError("tuning: a tuning study does not run on task LanguageModeling yet; "
                             "let a steered pass (OnnxGenAI or OpenVinoCausalLM with Auto) find the settings")
        return self

    @model_validator(mode="after")
    def _latency_goal_is_measured(self) -> "ModelOptimizationSpec":
        goal = self.goals.latency
        if goal and goal.batch_size and goal.batch_size not in self.benchmark.batch_sizes:
            raise ValueError(
                f"goals.latency.batchSize {goal.batch_size} is not among benchmark.batchSizes {self.benchmark.batch_sizes}"
            )
        return self


LANGUAGE_MODEL_FORMATS = (ModelFormat.HUGGING_FACE, *(f for f in ModelFormat if format_of(f).generative_only))


class ObjectMeta(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    # 63, not the 253 the API server stores: the name labels the run's Jobs and Pods, and a label
    # value longer than 63 characters makes every Job creation fail
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


class ModelOptimization(Model):
    api_version: Literal["kompress.io/v1alpha1"]
    kind: Literal["ModelOptimization"]
    metadata: ObjectMeta
    spec: ModelOptimizationSpec
    status: ModelOptimizationStatus | None = None
