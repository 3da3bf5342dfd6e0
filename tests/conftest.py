"""Shared fixtures: the shipped example data and models, a fast spec writer, and a real S3
endpoint (moto in server mode) for boto3."""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import pytest
import yaml

from .harness.control_plane import free_port  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# Every test is in one tier (pyproject.toml): a module says which with `pytestmark`; tests/cluster/ is `cluster`.
TIERS = ("unit", "pipeline", "cluster")


def pytest_collection_modifyitems(config, items):
    untiered = []
    for item in items:
        if "cluster" in item.path.relative_to(REPO / "tests").parts[:1]:
            item.add_marker(pytest.mark.cluster)
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if len(tiers) != 1:
            untiered.append(f"{item.nodeid}: {sorted(tiers) or 'no tier'}")
    if untiered:
        raise pytest.UsageError("each test needs exactly one tier marker of " + ", ".join(TIERS) + ":\n" + "\n".join(untiered))

# Small enough to run in seconds, still interleaved over several rounds.
FAST_BENCHMARK = {"batchSizes": [1, 8], "warmup": 2, "iterations": 5, "rounds": 2, "threads": 1}


def run_folder(root: Path, run_id: str, name: str = "test-run", namespace: str = "default") -> Path:
    """Where a run's files land under an artifacts root (kompress_jobs/storage/layout.py)."""
    from kompress_jobs.storage.layout import run_prefix

    return root / run_prefix(namespace, name, run_id)


def copy_examples(folder: Path) -> Path:
    """Copies of the example data and models in `folder`, as a user's project would hold them."""
    for sub in ("data", "models"):
        shutil.copytree(EXAMPLES / sub, folder / sub, symlinks=True)  # the linked checkpoint stays a link
    return folder


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return copy_examples(tmp_path)


def resource_dict(name: str = "test-run", model: str | dict = "models/digits-cnn.pt", model_format: str = "TorchScript",
                  data: str | dict = "data/digits.npz", passes: list | None = None, **spec) -> dict:
    """model and data: a URI, or the whole object."""
    body = {
        "model": model if isinstance(model, dict) else {"uri": model, "format": model_format},
        "data": data if isinstance(data, dict) else {"uri": data},
        "passes": passes if passes is not None else [{"type": "OnnxExport"}, {"type": "StaticInt8"}],
        "benchmark": dict(FAST_BENCHMARK),
    }
    body.update(spec)
    return {"apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization", "metadata": {"name": name}, "spec": body}


@pytest.fixture
def write_spec(workspace: Path):
    """write_spec(**overrides) -> path of a ModelOptimization YAML inside the workspace."""

    def write(filename: str = "spec.yaml", **overrides) -> Path:
        path = workspace / filename
        path.write_text(yaml.safe_dump(resource_dict(**overrides), sort_keys=False))
        return path

    return write


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A moto S3 server on loopback with a bucket 'models'; yields its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its buckets in process-wide state: start each test from an empty store.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
    yield endpoint
    server.stop()


def s3_keys(endpoint: str, bucket: str = "models", prefix: str = "") -> list[str]:
    import boto3

    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.fixture(scope="session")
def assets() -> Path:
    """The real Kubernetes binaries (etcd, kube-apiserver, kubectl, helm, promtool, ...)."""
    from .harness.control_plane import assets_dir

    try:
        return assets_dir()
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("KOMPRESS_REQUIRE_CLUSTER"):
            raise
        pytest.skip(f"no Kubernetes test binaries (run scripts/k8s-test-assets): {exc}")


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on loopback (Debian's package; scripts/test installs it)."""
    from .harness.postgres import PostgresServer, binaries

    if binaries() is None:
        if os.environ.get("KOMPRESS_REQUIRE_CLUSTER"):
            pytest.fail("PostgreSQL is not installed (scripts/k8s-test-assets installs Debian's postgresql)")
        pytest.skip("PostgreSQL is not installed (scripts/k8s-test-assets installs Debian's postgresql)")
    server = PostgresServer()
    yield server
    server.stop()
