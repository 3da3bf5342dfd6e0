"""Operator-wide settings: one pydantic-settings model that is also `kompress operator`'s flags.

Each field is read from KOMPRESS_<FIELD> (the chart sets them; an empty value counts as unset,
as charts write optional values) and can be given as --<field-with-dashes>, which wins over the
environment. Lists and maps are JSON in the environment and on the command line, except
the name and pattern lists, which also take comma-separated lists. tests/test_chart.py keeps the chart's
Deployment and this model in step.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Annotated, Any, Literal, get_origin

from pydantic import Field, field_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kompress_jobs.spec.contract import MAX_SPEC_BYTES
from kompress_jobs.spec.schema import Toleration

ENV_PREFIX = "KOMPRESS_"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid")

    namespaces: Annotated[tuple[str, ...], NoDecode] = Field((), description="namespaces to watch, comma-separated (default: all)")
    max_running: int = Field(4, ge=0, description="optimization Jobs in flight cluster-wide")
    max_running_per_namespace: int = Field(2, ge=0, description="optimization Jobs in flight per namespace")
    cpu_image: str = Field("ghcr.io/kompress/kompress-job:0.1.0", description="job image for CPU runs")
    gpu_image: str = Field("ghcr.io/kompress/kompress-job-gpu:0.1.0", description="job image for GPU runs")
    kueue_local_queue: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description=(
        "queue through Kueue: the LocalQueue (in each run's namespace) that Jobs are created suspended in, with the "
        "kueue.x-k8s.io/queue-name label, for Kueue to admit (default: the operator's own queue and its limits)"))
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="the Jobs' image pull policy")
    default_artifacts: str | None = Field(None, description="artifact URI for specs that name none")
    artifacts_secret: str | None = Field(None, description="Secret (in each run's namespace) whose keys become the Job's "
                                                           "environment, e.g. AWS_*")
    study_storage_secret: str | None = Field(None, description=(
        "Secret (in each run's namespace) whose key `url` holds the PostgreSQL URL of parallel tuning "
        "studies, for specs with tuning.parallelism above 1 that name no storageSecret"))
    study_admin_url: str | None = Field(None, description=(
        "PostgreSQL URL of a role that may create roles and schemas: each namespace's parallel studies then get a role "
        "and schema of their own, whose URL alone the namespace's Jobs receive (Secret kompress-study-database); "
        "wins over studyStorageSecret (the chart fills it from tuning.adminSecretName)"))
    job_image_pull_secrets: Annotated[tuple[str, ...], NoDecode] = Field((), description=(
        "Secrets (comma-separated, in each run's namespace) for pulling the job images"))
    job_service_account: str | None = Field(None, description="ServiceAccount for Job Pods whose spec names none")
    job_resources: dict[str, dict[str, str | int | float]] = Field(default_factory=dict, description=(
        'default Job container resources as JSON, e.g. {"requests": {"cpu": "2"}}; a spec\'s own requests or limits replace them'))
    job_env: dict[str, str] = Field(default_factory=dict, description='environment for every Job as JSON, e.g. {"AWS_REGION": "eu-west-1"}')
    ttl_seconds_after_finished: int = Field(86_400, ge=0, description="how long finished Jobs stay, unless a spec says otherwise")
    metrics_port: int = Field(8000, ge=1, le=65535, description="port of the Prometheus metrics")
    metrics_host: str = Field("0.0.0.0", description="address the metrics endpoint binds to (127.0.0.1 behind an "
                                                     "authenticating proxy sidecar)")
    metrics_access: Literal["TokenReview", "Open"] = Field("TokenReview", description=(
        "who may scrape /metrics: TokenReview, a bearer token whose user may get the non-resource URL /metrics (as "
        "controller-runtime's secure metrics serving); Open, anyone who reaches the port (behind a proxy that checks)"))
    health_port: int = Field(8080, ge=1, le=65535, description="port of /healthz")
    retry_interval: float = Field(5.0, gt=0, description="seconds between retries of a run whose start failed "
                                                         "(the API server away, a refused Job)")
    reoptimize_interval: float = Field(30.0, gt=0, description=(
        "seconds between looks at schedules, model digests and job images of resources that re-run on them"))
    watch_server_timeout: int = Field(300, ge=1, description="seconds after which the API server ends each watch (Kopf resumes it)")
    watch_client_timeout: int = Field(330, ge=1, description="seconds after which the operator gives up on a silent watch "
                                                             "stream and opens a new one (keep it above the server timeout)")
    api_timeout: float = Field(60.0, gt=0, description="seconds the operator waits for the API server's answer to one call "
                                                       "before it gives up on the connection (a silently dropped one would "
                                                       "otherwise hold a handler for good)")
    peering: str | None = Field(None, description="Kopf peering name, for more than one replica (default: standalone)")
    peering_priority: int = Field(default_factory=lambda: random.randint(1, 2**31 - 1), description=(
        "this replica's peering priority (default: random, so one replica serves and the others stand by; "
        "equal priorities would make Kopf freeze all of them)"))
    peering_lifetime: int = Field(60, ge=15, description=(
        "seconds a replica's peering record stays valid without renewal: how long a standby waits "
        "before it takes over from a replica that died"))
    # The policy (policy.py): what any spec may ask of the Jobs, enforced at admission and at Job build.
    allowed_images: Annotated[tuple[str, ...], NoDecode] = Field((), description=(
        "image patterns (shell-style, comma-separated) specs may set in job.image besides the operator's "
        "own images; the artifacts Secret goes only into Jobs of allowed images"))
    allow_service_accounts: bool = Field(False, description="whether specs may choose the Job's ServiceAccount")
    allowed_tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", effect="NoSchedule")], description=(
            'tolerations specs may set, as JSON; unset fields match anything, e.g. [{"key": "nvidia.com/gpu"}]'))
    allowed_secrets: Annotated[tuple[str, ...], NoDecode] = Field(("*",), description=(
        "Secret name patterns (shell-style, comma-separated) specs may name (tuning.storageSecret); the requesting "
        "user must also be allowed to get the Secret"))
    allowed_priority_classes: Annotated[tuple[str, ...], NoDecode] = Field((), description=(
        "PriorityClass name patterns specs may set in job.priorityClassName (comma-separated; default: none)"))
    allowed_node_selectors: Annotated[tuple[str, ...], NoDecode] = Field(("*",), description=(
        "key=value patterns (comma-separated) each entry of job.nodeSelector must match (default: any, for users "
        "who may create Jobs)"))
    # Storage (locations.py): where a namespace's runs may read and write.
    storage_locations: Annotated[tuple[str, ...], NoDecode] = Field((), description=(
        "URI prefixes (comma-separated, {namespace} is the run's namespace) that a spec's model, data, artifacts and "
        "promotion locations must lie under; default: <defaultArtifacts>/{namespace}/; '*' turns the check off"))
    read_locations: Annotated[tuple[str, ...], NoDecode] = Field(("/opt/kompress/examples/",), description=(
        "prefixes (comma-separated) any namespace's specs may read models and data from, never write to; default: the "
        "job image's bundled examples, which the cluster sample reads"))
    allowed_endpoints: Annotated[tuple[str, ...], NoDecode] = Field((), description=(
        "S3 endpoint patterns (comma-separated) specs may name in artifacts.endpointUrl; default: none (the store the "
        "Job's environment configures)"))
    # Bounded cost per run, whatever the spec says.
    default_active_deadline_seconds: int = Field(86_400, ge=1, description="a run's Job deadline when its spec sets none")
    max_active_deadline_seconds: int = Field(604_800, ge=1, description="the longest job.activeDeadlineSeconds a spec may set")
    namespace_max_active_deadline_seconds: dict[str, int] = Field(default_factory=dict, description=(
        'per namespace, the longest a run may take, as JSON, e.g. {"team-a": 21600}: caps the spec\'s deadline and the '
        'default alike; other namespaces: maxActiveDeadlineSeconds'))
    max_job_resources: dict[str, str | int] = Field(default_factory=dict, description=(
        'the most one Job container may request or limit of each resource, as JSON, e.g. {"cpu": "8", "memory": '
        '"32Gi", "nvidia.com/gpu": 1}; default: no bound beyond the namespace\'s ResourceQuota and LimitRange'))
    allowed_queues: Annotated[tuple[str, ...], NoDecode] = Field(("*",), description=(
        "Kueue LocalQueue name patterns (comma-separated) specs may name in job.queueName; the requesting user must "
        "also be allowed to create Jobs in the namespace"))
    max_retries: int = Field(3, ge=0, description="the most job.backoffLimit a spec may set")
    max_failed_trials: int = Field(20, ge=1, description="the most tuning.maxFailedTrials (the tuning Job's backoffLimit) a spec may set")
    scratch_size_limit: str = Field("50Gi", description="sizeLimit of each Job Pod's scratch emptyDir")
    # Every spec is in the operator's memory at once when it starts (Kopf lists them all before any
    # handler runs): the chart's memory limit holds 1,000 specs of this size (docs/benchmarks.md).
    max_spec_bytes: int = Field(MAX_SPEC_BYTES, ge=4096, description="the largest spec, in bytes of its JSON, the operator takes")
    # Fair share of Job slots between namespaces (fair_share.py).
    namespace_weights: dict[str, float] = Field(default_factory=dict, description=(
        'share of Job slots per namespace, as JSON, e.g. {"team-a": 2}; unnamed namespaces weigh 1'))
    priority_across_namespaces: bool = Field(False, description=(
        "whether job.priority orders runs across namespaces (default: only among a namespace's own runs)"))
    # The admission webhook (webhook.py), served when webhook_port is set.
    webhook_port: int | None = Field(None, ge=1, le=65535, description="port of the HTTPS admission webhook (default: none)")
    webhook_cert_dir: str | None = Field(None, description=(
        "folder holding tls.crt and tls.key (a mounted Secret, e.g. cert-manager's), re-read when they change; "
        "default: a self-signed certificate made at start"))
    webhook_client_ca: str | None = Field(None, description=(
        "CA file of the client certificate the API server presents to admission webhooks (its AdmissionConfiguration's "
        "kubeConfigFile): when set, the webhook answers only callers with a certificate it signed, so no Pod can post "
        "reviews (docs/security.md)"))
    webhook_register: bool = Field(False, description=(
        "create or update the ValidatingWebhookConfiguration, pointing at https://<webhook-host>:<webhook-port> "
        "(for clusters without the chart, which renders it itself)"))
    webhook_host: str = Field("127.0.0.1", description="host name or address the API server reaches the webhook at, "
                                                       "when the operator registers it")
    debug: bool = Field(False, description="debug logging, Kopf's included")

    @field_validator("namespaces", "allowed_images", "allowed_secrets", "allowed_priority_classes", "allowed_node_selectors",
                     "storage_locations", "read_locations", "allowed_endpoints", "allowed_queues", "job_image_pull_secrets",
                     mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("max_job_resources")
    @classmethod
    def _quantities(cls, value: dict) -> dict:
        from kubernetes.utils import parse_quantity

        for name, quantity in value.items():
            try:
                parse_quantity(quantity)
            except ValueError:
                raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity") from None
        return value

    def deadline_limit(self, namespace: str) -> int:
        """The longest a run in this namespace may take."""
        return self.namespace_max_active_deadline_seconds.get(namespace, self.max_active_deadline_seconds)

    def default_deadline(self, namespace: str) -> int:
        return min(self.default_active_deadline_seconds, self.deadline_limit(namespace))

    @classmethod
    def env_name(cls, field: str) -> str:
        return ENV_PREFIX + field.upper()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field: its type as the metavar, and its description, default and
        environment name as its help."""
        for name, field in cls.model_fields.items():
            flag = "--" + name.replace("_", "-")
            default = None if field.default_factory or "default:" in (field.description or "") else field.default
            if isinstance(default, tuple):  # the comma-separated settings, as they are written
                default = ",".join(default)
            elif isinstance(default, (dict, list)):
                default = json.dumps(to_jsonable_python(default, by_alias=True, exclude_none=True))
            unset = default is None or default is False or default in ("", "[]", "{}") or field.is_required()
            shown = "" if unset else f" (default: {default})"
            help_text = f"{field.description}{shown} [{cls.env_name(name)}]"
            if field.annotation is bool:
                parser.add_argument(flag, action="store_const", const=True, default=None, help=help_text)
                continue
            as_json = get_origin(field.annotation) in (dict, list)
            metavar = "JSON" if as_json else _METAVARS.get(field.annotation, "TEXT")
            parser.add_argument(flag, default=None, metavar=metavar, help=help_text, type=_json if as_json else str)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> "OperatorSettings":
        """Flags given on the command line, the environment for the rest."""
        given = {name: getattr(args, name) for name in cls.model_fields if getattr(args, name, None) is not None}
        return cls(**given)


_METAVARS = {int: "N", float: "NUMBER", str: "TEXT"}


def _json(text: str) -> dict | list:
    """argparse type of the map and list settings: a JSON object or array."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, (dict, list)):
        raise argparse.ArgumentTypeError("expected a JSON object or array")
    return value
