"""Fixtures for tests against a real API server: the control plane, a node, S3, the operator."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from ..conftest import EXAMPLES, FAST_BENCHMARK, free_port
from ..harness.control_plane import REPO, ControlPlane, User
from ..harness.node import NODE_NAME, PodRunner
from ..harness.operator_process import OperatorProcess

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
GROUP, VERSION, PLURAL = "kompress.io", "v1alpha1", "modeloptimizations"


@pytest.fixture(scope="session")
def cluster(assets):
    users = [User("outsider", "outsider-token"), User("team-dev", "team-dev-token"), User("team-lead", "team-lead-token"),
             User("team-b-dev", "team-b-dev-token"), User("scraper", "scraper-token")]
    plane = ControlPlane(assets, users=users).start()
    plane.kubectl("apply", "-f", str(REPO / "crds"))
    plane.wait_established(f"{PLURAL}.{GROUP}")
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def api(cluster):
    from kubernetes import config

    return config.new_client_from_config(str(cluster.kubeconfig()))


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server holding the example model and data under s3://models/inputs/."""
    from moto.server import ThreadedMotoServer

    os.environ.update(S3_ENV)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="models")
    client.upload_file(str(EXAMPLES / "models" / "digits-cnn.pt"), "models", "inputs/digits-cnn.pt")
    client.upload_file(str(EXAMPLES / "data" / "digits.npz"), "models", "inputs/digits.npz")
    yield endpoint
    server.stop()


# Two kinds of node, as a fleet's pools are labelled; a Pod without a nodeSelector runs on the first.
NODES = {NODE_NAME: {"kompress.io/cpu-pool": "general"}, "kompress-test-node-2": {"kompress.io/cpu-pool": "vector"}}


@pytest.fixture(scope="session")
def node(api):
    runner = PodRunner(api, bin_dir=Path(sys.executable).parent, extra_env={"MPLBACKEND": "Agg"}, nodes=NODES,
                       image_files={"/opt/kompress/examples": EXAMPLES}).start()  # as deploy/images/job.Dockerfile copies them
    yield runner
    runner.stop()


@pytest.fixture
def namespace(cluster):
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def start_operator(cluster, node, s3):
    """start_operator(*flags, kubeconfig=None) -> a running OperatorProcess; every one is stopped at the end.
    Unless the flags say otherwise, its storage policy allows the whole test bucket and the test S3
    endpoint (test_tenant_isolation.py runs it with the per-namespace default)."""
    started: list[OperatorProcess] = []

    def start(*flags: str, kubeconfig: Path | None = None) -> OperatorProcess:
        storage = [] if "--storage-locations" in flags else ["--storage-locations", "s3://models/"]
        endpoints = [] if "--allowed-endpoints" in flags else ["--allowed-endpoints", s3]
        process = OperatorProcess(kubeconfig or cluster.kubeconfig(), "--retry-interval", "1", f"--job-env={json.dumps(S3_ENV)}",
                                  *storage, *endpoints, *flags).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        print(f"--- operator log {process.log_path} (tail) ---\n{process.log()[-6000:]}")  # shown when a test fails


def resource(name: str, s3_endpoint: str, **spec_overrides) -> dict:
    spec = {
        "model": {"uri": "s3://models/inputs/digits-cnn.pt", "format": "TorchScript"},
        "data": {"uri": "s3://models/inputs/digits.npz"},
        "passes": [{"type": "OnnxExport"}, {"type": "StaticInt8"}],
        "goals": {"maxAccuracyDrop": 1.0},
        "benchmark": dict(FAST_BENCHMARK),
        "artifacts": {"uri": "s3://models/runs", "endpointUrl": s3_endpoint},
        "job": {"backoffLimit": 0},
    }
    spec.update(spec_overrides)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelOptimization", "metadata": {"name": name}, "spec": spec}


def apply(cluster, namespace: str, document: dict, check: bool = True, user: str = "admin"):
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", user=user, input=yaml.safe_dump(document), check=check)


def refusal(cluster, namespace: str, document: dict, user: str = "admin") -> str:
    """The admission webhook's message for a refused apply (retried while its server comes up)."""
    def refused():
        answer = apply(cluster, namespace, document, check=False, user=user)
        assert answer.returncode != 0, f"{user}'s apply was accepted"
        return answer.stderr if "denied the request" in answer.stderr else None
    return wait_for(refused, f"the webhook to refuse {user}'s spec", timeout=60)


def unregister_webhooks(cluster) -> None:
    """Remove what --webhook-register made (both webhooks fail closed: left behind, with no operator
    to answer them, they would refuse every later apply)."""
    from kompress_operator.webhook import CONFIGURATION_NAME

    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        cluster.kubectl("delete", kind, CONFIGURATION_NAME, "--ignore-not-found")


def get(cluster, namespace: str, kind: str, name: str | None = None) -> dict:
    args = ["get", kind, "-n", namespace, "-o", "json"] + ([name] if name else [])
    return json.loads(cluster.kubectl(*args).stdout)


def wait_for(predicate, what: str, timeout: float = 180, interval: float = 0.5):
    """Poll until predicate() returns something truthy; the failure says what was awaited and the last value."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # a transient API error while polling
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def condition(obj: dict, type_: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def phase_is(cluster, namespace, name, *phases):
    def check():
        obj = get(cluster, namespace, PLURAL, name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None
    return check
