"""Operator-wide settings, from `kompress operator` flags (each also an environment variable)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    max_running: int = 4  # optimization Jobs in flight cluster-wide
    max_running_per_namespace: int = 2
    cpu_image: str = "ghcr.io/kompress/kompress-job:0.1.0"
    gpu_image: str = "ghcr.io/kompress/kompress-job-gpu:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    default_artifacts: str | None = None  # used when a spec names no artifacts.uri
    artifacts_secret: str | None = None  # Secret with AWS_* keys, in each run's namespace
    job_service_account: str | None = None
    # Container resources for Jobs whose spec sets none of that kind ({"requests": {...}, "limits": {...}}).
    default_job_resources: dict[str, dict[str, str]] = field(default_factory=dict)
    ttl_seconds_after_finished: int = 86_400
    metrics_port: int = 8000
    health_port: int = 8080
    retry_interval_seconds: float = 5.0
    watch_server_timeout_seconds: int = 300
    watch_client_timeout_seconds: int = 330
    extra_env: dict[str, str] = field(default_factory=dict)  # handed to every Job (e.g. AWS_REGION)
    peering_priority: int = 0  # Kopf peering: the replica with the highest priority serves, the others wait
