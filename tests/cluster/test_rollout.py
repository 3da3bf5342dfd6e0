"""The admission webhook (failurePolicy Fail) keeps answering while the operator's Deployment rolls
and while a node is drained: the chart as installed by Helm, on a control plane that runs the real
Deployment, ReplicaSet, Endpoints and disruption controllers, with the test node playing each
operator Pod (own address, readiness probe, preStop hook, SIGTERM). A client applies a
ModelOptimization every second throughout; none may be refused."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..conftest import FAST_BENCHMARK
from ..harness.control_plane import ControlPlane, free_port
from ..harness.node import PodRunner
from ..harness.pod_network import PodNetwork
from ..harness.operator_process import OperatorProcess
from ..test_chart import CHART
from .test_chart import RELEASE, RELEASE_NAMESPACE, helm
from .conftest import GROUP, PLURAL, VERSION, wait_for

TEAM = "team-a"
OPERATOR_PODS = f"app.kubernetes.io/name=kompress,app.kubernetes.io/instance={RELEASE}"
ARTIFACTS = "s3://models/chart-runs"


@pytest.fixture(scope="module")
def network():
    pods = PodNetwork()
    missing = pods.check()
    if missing:  # a capability of the machine, which scripts/test cannot install: skipped, as GPU tests are
        pytest.skip(f"cannot give test Pods addresses of their own: {missing}")
    yield pods
    pods.close()


@pytest.fixture(scope="module")
def workloads(assets, network):
    """A control plane of its own: its Endpoints controller owns every Service's endpoints, which
    the session cluster's tests write by hand."""
    plane = ControlPlane(assets, extra_controllers=("deployment", "replicaset", "endpoint", "disruption")).start()
    api = config.new_client_from_config(str(plane.kubeconfig()))
    runner = PodRunner(api, bin_dir=Path(sys.executable).parent, selector=OPERATOR_PODS, network=network).start()
    yield plane, api, runner
    runner.stop()
    plane.stop()


def spec(name: str, **overrides) -> dict:
    own = f"{ARTIFACTS}/{TEAM}"
    body = {"model": {"uri": f"{own}/inputs/digits-cnn.pt", "format": "TorchScript"}, "data": {"uri": f"{own}/inputs/digits.npz"},
            "passes": [{"type": "OnnxExport"}, {"type": "StaticInt8"}], "goals": {"maxAccuracyDrop": 1.0},
            "benchmark": dict(FAST_BENCHMARK), **overrides}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelOptimization", "metadata": {"name": name}, "spec": body}


@dataclass
class Attempt:
    at: float  # time.monotonic() as it began
    created: str  # "" when accepted, else why not
    judged: str  # the webhook's refusal of a spec it must refuse; anything else means it did not answer


class Applier(threading.Thread):
    """Once a second: create a ModelOptimization (the webhook must admit it; with failurePolicy Fail
    an unanswered call refuses it) and dry-run one the webhook must deny (proof that it answered)."""

    def __init__(self, api: client.ApiClient):
        super().__init__(name="applier", daemon=True)
        self.objects = client.CustomObjectsApi(api)
        self.attempts: list[Attempt] = []
        self.done = threading.Event()

    def apply(self, body: dict, dry_run: bool) -> str:
        try:
            self.objects.create_namespaced_custom_object(GROUP, VERSION, TEAM, PLURAL, body, **({"dry_run": "All"} if dry_run else {}),
                                                         _request_timeout=30)
            return ""
        except ApiException as exc:
            return json.loads(exc.body).get("message", exc.body) if exc.body else str(exc)

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.is_set():
            index, began = len(self.attempts), time.monotonic()
            created = self.apply(spec(f"applied-{index}"), dry_run=False)
            judged = self.apply(spec(f"judged-{index}", passes=[{"type": "OnnxExport"}, {"type": "StaticInt8", "opset": 17}]), dry_run=True)
            self.attempts.append(Attempt(began, created, judged))
            self.done.wait(max(0.0, start + len(self.attempts) - time.monotonic()))

    def refused(self) -> list[Attempt]:
        return [a for a in self.attempts if a.created or "denied the request" not in a.judged or "spec.passes[1].opset" not in a.judged]


def operator_pods(core: client.CoreV1Api) -> list:
    return core.list_namespaced_pod(RELEASE_NAMESPACE, label_selector=OPERATOR_PODS).items


def serving(core: client.CoreV1Api) -> list[str]:
    """The names of the Pods behind the webhook Service, as the Endpoints controller lists them."""
    endpoints = core.read_namespaced_endpoints(f"{RELEASE}-webhook", RELEASE_NAMESPACE)
    return sorted(a.target_ref.name for s in endpoints.subsets or [] for a in s.addresses or [])


def settled(core: client.CoreV1Api, replicas: int, not_in: set[str] = frozenset()):
    """The Pod names once `replicas` Pods (none in not_in) are Ready and serve, and no other is left."""
    def check():
        pods = operator_pods(core)
        names = {p.metadata.name for p in pods}
        ready = [p for p in pods if p.metadata.deletion_timestamp is None and
                 any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        if len(pods) == replicas == len(ready) and not names & not_in and serving(core) == sorted(names):
            return names
        return None
    return check


def evict(api: client.ApiClient, name: str) -> int:
    """POST the Pod's eviction subresource (policy/v1beta1 on this 1.20 server), as `kubectl drain` does."""
    body = {"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": name, "namespace": RELEASE_NAMESPACE}}
    try:
        api.call_api(f"/api/v1/namespaces/{RELEASE_NAMESPACE}/pods/{name}/eviction", "POST", body=body,
                     header_params={"Content-Type": "application/json"}, auth_settings=["BearerToken"], _preload_content=False)
        return 201
    except ApiException as exc:
        return exc.status


def test_the_webhook_admits_every_apply_during_a_rollout_and_a_drain(workloads):
    plane, api, runner = workloads
    core = client.CoreV1Api(api)
    for namespace in (RELEASE_NAMESPACE, TEAM):
        plane.kubectl("create", "namespace", namespace)
    helm(plane, "install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--set", f"artifacts.uri={ARTIFACTS}")
    first = wait_for(settled(core, 2), "two operator replicas Ready behind the webhook Service", timeout=180)

    applier = Applier(config.new_client_from_config(str(plane.kubeconfig())))
    wait_for(lambda: not applier.apply(spec("warm-up"), dry_run=True), "the webhook to admit a valid spec", timeout=60)
    applier.start()
    try:
        # An upgrade: Helm changes the Pod template, the Deployment rolls (maxSurge 1, maxUnavailable 0).
        rollout_started = time.monotonic()
        helm(plane, "upgrade", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--reuse-values",
             "--set-string", "podAnnotations.rolled=yes")
        rolled = wait_for(settled(core, 2, not_in=first), "the rollout to replace both replicas", timeout=240)
        rollout_seconds = time.monotonic() - rollout_started

        # A drain: the first eviction is allowed, the second refused by the PodDisruptionBudget
        # (minAvailable 1) until the replacement is Ready.
        def allowed() -> int:  # policy/v1beta1 on this server, which the Python client no longer has
            budget = json.loads(plane.kubectl("get", "poddisruptionbudget", RELEASE, "-n", RELEASE_NAMESPACE, "-o", "json").stdout)
            return budget.get("status", {}).get("disruptionsAllowed")
        wait_for(lambda: allowed() == 1, "the disruption controller to allow one eviction", timeout=60)
        drained, kept = sorted(rolled)
        assert evict(api, drained) == 201
        assert evict(api, kept) == 429  # TooManyRequests: it would violate the budget
        after_drain = wait_for(settled(core, 2, not_in={drained}), "the drained replica's replacement", timeout=240)
        time.sleep(3)  # a few more applies with the final Pods
    finally:
        applier.done.set()
        applier.join(60)

    refused = applier.refused()
    slowest = max(applier.attempts[i + 1].at - applier.attempts[i].at for i in range(len(applier.attempts) - 1))
    start = applier.attempts[0].at
    print(f"rollout {rollout_seconds:.0f} s; {len(applier.attempts)} rounds of applies, {len(refused)} refused; "
          f"longest gap between applies {slowest:.1f} s; Pods {sorted(first)} -> {sorted(rolled)} -> {sorted(after_drain)}; "
          f"node errors (retried): {runner.errors[-3:]}")
    assert not refused, [(round(a.at - start, 1), a.created, a.judged) for a in refused]
    during = [a for a in applier.attempts if rollout_started <= a.at <= rollout_started + rollout_seconds]
    assert applier.attempts[0].at < rollout_started and len(during) >= rollout_seconds / 2, len(during)  # applied throughout
    assert kept in after_drain and drained not in after_drain


def test_the_operator_is_healthy_only_once_its_webhook_listens(cluster, namespace):
    """/healthz is the chart's readiness probe: answered before the webhook listens, it would put a
    Pod that refuses connections behind the webhook Service (Kopf serves /healthz a few tens of
    milliseconds before the webhook's site starts)."""
    webhook = free_port()
    operator = OperatorProcess(cluster.kubeconfig(), "--namespaces", namespace, "--webhook-port", str(webhook)).start(wait=False)
    try:
        deadline, healthy = time.monotonic() + 60, 0
        while healthy < 20 and time.monotonic() < deadline and operator.process.poll() is None:
            try:
                answered = urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=1).status == 200
            except OSError:
                answered = False
            if answered:  # at this instant, the webhook must accept connections
                healthy += 1
                socket.create_connection(("127.0.0.1", webhook), timeout=1).close()
            time.sleep(0.005)
        assert healthy == 20, operator.log()[-3000:]
    finally:
        operator.stop()
