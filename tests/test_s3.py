"""Artifacts and inputs on S3, through boto3 against a real S3 HTTP endpoint (moto server)."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

from kompress.cli import main
from kompress_jobs.errors import StoreError
from kompress_jobs.pipeline.run import run_optimization
from kompress_jobs.spec.specfile import load_resource_file
from kompress_jobs.storage.store import S3Store

from .conftest import s3_keys

pytestmark = pytest.mark.pipeline


def test_inputs_from_s3_and_artifacts_to_s3(capsys, s3_endpoint, workspace, write_spec):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.upload_file(str(workspace / "models" / "digits-cnn.pt"), "models", "inputs/cnn.pt")
    client.upload_file(str(workspace / "data" / "digits.npz"), "models", "inputs/digits.npz")
    spec = write_spec(model="s3://models/inputs/cnn.pt", data="s3://models/inputs/digits.npz",
                      artifacts={"uri": "s3://models/runs/team-a", "endpointUrl": s3_endpoint})

    assert main(["optimize", "-q", str(spec), "--run-id", "run-1"]) == 0
    run = "runs/team-a/default/test-run/runs/run-1"  # <root>/<namespace>/<name>/runs/<run id>
    assert f"s3://models/{run}" in capsys.readouterr().out

    keys = s3_keys(s3_endpoint, prefix=f"{run}/")
    manifest = json.loads(client.get_object(Bucket="models", Key=f"{run}/manifest.json")["Body"].read())
    assert set(keys) == {f"{run}/{f['path']}" for f in manifest["files"]} | {f"{run}/manifest.json"}
    assert s3_keys(s3_endpoint, prefix="runs/") == keys, "nothing outside the run's folder"
    for entry in manifest["files"]:
        body = client.get_object(Bucket="models", Key=f"{run}/{entry['path']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    assert manifest["inputs"]["model"]["uri"] == "s3://models/inputs/cnn.pt"


def test_missing_bucket_is_a_clear_error(capsys, s3_endpoint, write_spec):
    spec = write_spec(artifacts={"uri": "s3://no-such-bucket/x", "endpointUrl": s3_endpoint})
    assert main(["optimize", "-q", str(spec)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"kompress: error: artifact store s3://no-such-bucket at {s3_endpoint}: bucket not accessible (404)")


def test_missing_input_object_is_a_clear_error(capsys, s3_endpoint, write_spec):
    spec = write_spec(model="s3://models/absent.pt", artifacts={"uri": "s3://models/runs", "endpointUrl": s3_endpoint})
    assert main(["optimize", "-q", str(spec)]) == 1
    assert capsys.readouterr().err.strip() == "kompress: error: s3://models/absent.pt: cannot download (404)"
    assert s3_keys(s3_endpoint, prefix="runs/") == []


class FlakyS3Store(S3Store):
    def __init__(self, *args, fail_at: int, calls=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.fail_at = calls if calls is not None else [0], fail_at

    def under(self, prefix):  # the run's folder fails the same way, on the same count
        inner = super().under(prefix)
        return FlakyS3Store(inner.uri(""), endpoint_url=self.endpoint_url, fail_at=self.fail_at, calls=self.calls)

    def put(self, local, key):
        self.calls[0] += 1
        if self.calls[0] == self.fail_at:
            raise StoreError(f"upload of {key} failed: endpoint went away")
        super().put(local, key)


@pytest.mark.parametrize("fail_at", [3, 5])  # mid-way, and on the manifest itself
def test_an_interrupted_upload_is_rolled_back(s3_endpoint, write_spec, monkeypatch, fail_at):
    import kompress_jobs.pipeline.run as pipeline

    store = FlakyS3Store("s3://models/runs", endpoint_url=s3_endpoint, fail_at=fail_at)
    monkeypatch.setattr(pipeline, "open_run_store", lambda *args: store)
    spec = write_spec(passes=[{"type": "OnnxExport"}])
    with pytest.raises(StoreError, match="endpoint went away"):
        run_optimization(load_resource_file(spec), base_dir=spec.parent, run_id="broken")
    assert s3_keys(s3_endpoint, prefix="runs/") == []


def test_s3_unreachable_during_upload_is_retried_then_a_clear_error_without_a_manifest(s3_endpoint, write_spec):
    from .harness.proxy import BreakableProxy

    host, port = s3_endpoint.removeprefix("http://").split(":")
    proxy = BreakableProxy(host, int(port))
    spec = write_spec(artifacts={"uri": "s3://models/runs", "endpointUrl": f"http://{proxy.address}"})
    seen: dict[str, int] = {}

    def progress(message: str) -> None:
        if message.startswith("writing report and uploading"):  # the work is done; S3 goes away now
            proxy.refuse()
            seen["connections"] = proxy.connections

    try:
        with pytest.raises(StoreError) as failure:
            run_optimization(load_resource_file(spec), base_dir=spec.parent, run_id="cut", progress=progress)
        assert "upload of" in str(failure.value) and "s3://models" in str(failure.value)
        assert proxy.connections - seen["connections"] >= S3Store.ATTEMPTS  # retried, not given up at once
    finally:
        proxy.restore()
        proxy.close()
    assert "runs/cut/manifest.json" not in s3_keys(s3_endpoint, prefix="runs/")  # nothing claims the run is complete
