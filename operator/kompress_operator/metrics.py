"""Prometheus metrics. Names mirror controller-runtime's (reconcile_total{controller,result},
reconcile_time_seconds, ...) under the kompress_ prefix, so existing dashboards read the same.
Per-resource series carry only namespace, name and candidate, and go when the resource goes."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kompress_jobs.spec.status import ModelOptimizationStatus, PromotionStatus, TargetStatus
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from .metrics_access import MetricsAccess

CONTROLLER = "modeloptimization"


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_total = Counter("kompress_reconcile_total", "Reconciliations by result (success, error, requeue).",
                                       ["controller", "result"], registry=r)
        self.reconcile_errors = Counter("kompress_reconcile_errors_total", "Reconciliations that raised.", ["controller"], registry=r)
        self.reconcile_time = Histogram("kompress_reconcile_time_seconds", "Time spent in one reconciliation.", ["controller"],
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        # namespace and reason: an alert can leave a team's own mistakes (an invalid spec, a model
        # that does not load) to that team and page the SREs only for the platform's
        self.runs_total = Counter("kompress_runs_total", "Finished optimization runs by outcome, namespace and the reason "
                                  "of their Succeeded condition.", ["outcome", "namespace", "reason"], registry=r)
        self.queue_depth = Gauge("kompress_queue_depth", "Runs waiting for a free Job slot.", registry=r)
        self.running_jobs = Gauge("kompress_running_jobs", "Optimization Jobs in flight.", registry=r)
        self.job_duration = Histogram("kompress_job_duration_seconds", "Wall time of optimization Jobs.", ["outcome"],
                                      buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400), registry=r)
        # target: the hardware target (spec.targets[].name), "" for a resource without targets,
        # which Prometheus reads as no label: queries written before targets still match
        labels = ["namespace", "name", "target", "candidate"]
        self.best_latency = Gauge("kompress_best_latency_seconds", "p50 latency of the best candidate at the primary batch size.",
                                  labels, registry=r)
        self.best_size = Gauge("kompress_best_size_bytes", "Size on disk of the best candidate.", labels, registry=r)
        self.best_speedup = Gauge("kompress_best_speedup_ratio", "Baseline p50 latency / best candidate's.", labels, registry=r)
        self.best_size_reduction = Gauge("kompress_best_size_reduction_ratio", "Baseline size / best candidate's.", labels, registry=r)
        self.best_metric_change = Gauge("kompress_best_metric_change", "Best candidate's task metric minus the baseline's.",
                                        labels, registry=r)
        self.best_tokens = Gauge("kompress_best_decode_tokens_per_second", "Language models: decode tokens per second "
                                 "of the best candidate at the primary batch size.", labels, registry=r)
        self.best_first_token = Gauge("kompress_best_time_to_first_token_seconds", "Language models: the best "
                                      "candidate's prefill of the benchmark prompt and first new token.", labels, registry=r)
        self.best_energy = Gauge("kompress_best_energy_joules", "GPU candidates: energy per call of the best candidate "
                                 "at the primary batch size, from NVML.", labels, registry=r)
        self.best_memory = Gauge("kompress_best_peak_memory_bytes", "Peak resident memory of a process running the best "
                                 "candidate, where measured (benchmark.peakMemory or goals.maxMemory).", labels, registry=r)
        self.promotions_total = Counter("kompress_promotions_total", "Promotion decisions of finished runs (Promoted, Kept, Failed).",
                                        ["decision"], registry=r)
        self.promoted_time = Gauge("kompress_promoted_timestamp_seconds", "When the model promoted now was promoted (Unix time).",
                                   ["namespace", "name", "target"], registry=r)
        self.reruns_total = Counter("kompress_reoptimizations_total", "Runs started without a spec change, by reason.",
                                    ["reason"], registry=r)
        self._candidates: dict[tuple[str, str, str], str | None] = {}  # (namespace, name, target) → the best's name
        self._lock = threading.Lock()

    @contextmanager
    def reconciling(self):
        with self.reconcile_time.labels(CONTROLLER).time():
            try:
                yield
            except Exception:
                self.reconcile_errors.labels(CONTROLLER).inc()
                self.reconcile_total.labels(CONTROLLER, "error").inc()
                raise
        self.reconcile_total.labels(CONTROLLER, "success").inc()

    def record_run(self, namespace: str, name: str, status: ModelOptimizationStatus) -> None:
        """Export a finished resource's picks: its own, or each target's (after an operator restart too)."""
        self.forget(namespace, name)
        for target in status.targets:
            if target.phase is not None and target.phase.value == "Succeeded":
                self.record_best(namespace, name, target, target.name)
        if not status.targets:
            self.record_best(namespace, name, status)

    def record_best(self, namespace: str, name: str, status: "ModelOptimizationStatus | TargetStatus", target: str = "") -> None:
        """Export the best candidate of a run's status, or of one target's entry in it."""
        best, baseline = status.best, status.baseline
        self.forget(namespace, name, target)
        self.record_promotion(namespace, name, status.promotion, target)
        with self._lock:  # recorded even without a pick: forget() drops its promotion's series too
            self._candidates[(namespace, name, target)] = best.name if best else None
        if not best:
            return
        key = (namespace, name, target, best.name)
        if best.latency_p50_ms is not None:
            self.best_latency.labels(*key).set(best.latency_p50_ms / 1000)
        if best.size_bytes is not None:
            self.best_size.labels(*key).set(best.size_bytes)
        if best.speedup is not None:
            self.best_speedup.labels(*key).set(best.speedup)
        if best.size_ratio is not None:
            self.best_size_reduction.labels(*key).set(best.size_ratio)
        if best.metric_value is not None and baseline is not None and baseline.metric_value is not None:
            self.best_metric_change.labels(*key).set(best.metric_value - baseline.metric_value)
        if best.tokens_per_second is not None:
            self.best_tokens.labels(*key).set(best.tokens_per_second)
        if best.time_to_first_token_ms is not None:
            self.best_first_token.labels(*key).set(best.time_to_first_token_ms / 1000)
        if best.joules_per_call is not None:
            self.best_energy.labels(*key).set(best.joules_per_call)
        if best.peak_memory_bytes is not None:
            self.best_memory.labels(*key).set(best.peak_memory_bytes)

    def record_promotion(self, namespace: str, name: str, promotion: PromotionStatus | None, target: str = "") -> None:
        """The promoted model's age, from status.promotion (also after an operator restart)."""
        if promotion and promotion.promoted_at:
            promoted = datetime.strptime(promotion.promoted_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            self.promoted_time.labels(namespace, name, target).set(promoted.timestamp())

    def observe_job(self, start: str | None, end: str | None, succeeded: bool) -> None:
        """A finished Job's wall time, from its status times (RFC 3339, whole seconds)."""
        if not start or not end:
            return
        parse = lambda text: datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
        self.job_duration.labels("succeeded" if succeeded else "failed").observe((parse(end) - parse(start)).total_seconds())

    def forget(self, namespace: str, name: str, target: str | None = None) -> None:
        """Drop a resource's series: one target's, or (target None) every target's."""
        with self._lock:
            keys = [k for k in self._candidates if k[:2] == (namespace, name) and target in (None, k[2])]
            dropped = [(k, self._candidates.pop(k)) for k in keys]
        for (_, _, which), candidate in dropped:
            series = [(self.promoted_time, ())] + ([] if candidate is None else [
                (gauge, (candidate,)) for gauge in (self.best_latency, self.best_size, self.best_speedup, self.best_size_reduction,
                                                    self.best_metric_change, self.best_tokens, self.best_first_token,
                                                    self.best_energy, self.best_memory)])
            for gauge, rest in series:
                try:
                    gauge.remove(namespace, name, which, *rest)
                except KeyError:
                    pass

    def serve(self, port: int, address: str = "0.0.0.0", access: "MetricsAccess | None" = None) -> None:
        """The endpoint, behind `access` (metrics_access.py) unless None."""
        from .metrics_access import serve

        serve(self.registry, port, address, access)
