"""The boundary between teams (issue 27), on the real API server with token users in two namespaces.

team-dev may manage ModelOptimizations in namespace A only; team-b-dev in namespace B only. The
operator runs with the per-namespace storage default: a namespace reads and writes only
s3://models/tenants/<namespace>/. Each attack is refused at `kubectl apply` naming the field and
the policy, and again at Job build when the webhook is bypassed (the run fails PolicyViolation and
no Job exists); team B's promoted model is byte-for-byte unchanged; the same spec within policy runs.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
import yaml

from kompress_operator.webhook import CONFIGURATION_NAME

from ..harness.control_plane import free_port
from .conftest import apply, condition, get, phase_is, refusal, resource, unregister_webhooks, wait_for
from .test_tenancy import MOPT_RULE, role

ROOT = "s3://models/tenants"


@pytest.fixture
def teams(cluster, s3):
    """Two namespaces, a user each, the example model in each team's own prefix, and team B's
    promoted model (its pointer and a release) as B's earlier runs would have left it."""
    a, b = (f"t-{uuid.uuid4().hex[:6]}-a", f"t-{uuid.uuid4().hex[:6]}-b")
    client = boto3.client("s3", endpoint_url=s3)
    for namespace, user in ((a, "team-dev"), (b, "team-b-dev")):
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(role(namespace, user, [MOPT_RULE])))
        for name in ("digits-cnn.pt", "digits.npz"):
            client.copy_object(Bucket="models", Key=f"tenants/{namespace}/inputs/{name}", CopySource={"Bucket": "models", "Key": f"inputs/{name}"})
    promoted = {f"tenants/{b}/served/current.json": json.dumps({"release": "releases/r1/", "files": []}).encode(),
                f"tenants/{b}/served/releases/r1/model.onnx": b"team b's served model"}
    for key, body in promoted.items():
        client.put_object(Bucket="models", Key=key, Body=body)
    yield a, b, client, promoted
    for namespace in (a, b):
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def own(namespace: str, name: str, s3: str, **spec) -> dict:
    """A spec that stays inside its namespace's storage: what every attack below starts from."""
    base = {"model": {"uri": f"{ROOT}/{namespace}/inputs/digits-cnn.pt", "format": "TorchScript"},
            "data": {"uri": f"{ROOT}/{namespace}/inputs/digits.npz"},
            "artifacts": {"uri": f"{ROOT}/{namespace}", "endpointUrl": s3}}
    return resource(name, s3, **{**base, **spec})


POLICY = ("--storage-locations", f"{ROOT}/{{namespace}}/", "--max-retries", "2")


@pytest.fixture
def guarded(cluster, start_operator, s3):
    operator = start_operator("--webhook-port", str(free_port()), "--webhook-register", "--webhook-host", "127.0.0.1",
                              "--allowed-endpoints", s3, *POLICY)
    wait_for(lambda: cluster.kubectl("get", "validatingwebhookconfiguration", CONFIGURATION_NAME, check=False).returncode == 0,
             "the operator to register its webhook", timeout=60)
    yield operator
    unregister_webhooks(cluster)


def attacks(a: str, b: str, s3: str) -> dict[str, tuple[dict, str, str]]:
    """name → (spec fields, the field the refusal names, the policy setting it names)."""
    return {
        "promote over team B's served model": ({"promotion": {"uri": f"{ROOT}/{b}/served"}}, "spec.promotion.uri", "storageLocations"),
        "write runs into team B's prefix": ({"artifacts": {"uri": f"{ROOT}/{b}", "endpointUrl": s3}}, "spec.artifacts.uri", "storageLocations"),
        "read team B's model": ({"model": {"uri": f"{ROOT}/{b}/inputs/digits-cnn.pt", "format": "TorchScript"}}, "spec.model.uri", "storageLocations"),
        "read team B's data": ({"data": {"uri": f"{ROOT}/{b}/inputs/digits.npz"}}, "spec.data.uri", "storageLocations"),
        "a prefix that only starts like mine": ({"promotion": {"uri": f"{ROOT}/{b}x"}}, "spec.promotion.uri", "storageLocations"),
        "send credentials to another endpoint": ({"artifacts": {"uri": f"{ROOT}/{a}", "endpointUrl": "http://127.0.0.1:9"}},
                                                 "spec.artifacts.endpointUrl", "allowedEndpoints"),
        "a model the operator would hash forever": ({"model": {"uri": "/dev/zero", "format": "TorchScript"},
                                                     "reoptimizeOn": {"modelChange": True}}, "spec.model.uri", "storageLocations"),
        "retry without end": ({"job": {"backoffLimit": 9}}, "spec.job.backoffLimit", "maxRetries"),
    }


ATTACKS = sorted(attacks("a", "b", "http://s3"))


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_attack_on_another_team_is_refused_at_apply_naming_field_and_policy(cluster, teams, s3, guarded, attack):
    a, b, client, promoted = teams
    fields, field, setting = attacks(a, b, s3)[attack]
    message = refusal(cluster, a, own(a, "attack", s3, **fields), user="team-dev")
    assert field in message and setting in message, message
    assert get(cluster, a, "modeloptimizations")["items"] == []
    for key, body in promoted.items():  # team B's promoted model, byte for byte
        assert client.get_object(Bucket="models", Key=key)["Body"].read() == body


def test_a_secret_the_user_may_not_read_cannot_be_mounted_into_the_job(cluster, teams, s3, guarded):
    a, _, _, _ = teams
    cluster.kubectl("create", "secret", "generic", "-n", a, "finance-db", "--from-literal=url=postgresql://x/y")
    tuning = {"searchSpace": [{"pass": "static-int8", "parameter": "calibrationSamples", "low": 8, "high": 64}],
              "trials": 4, "parallelism": 2, "storageSecret": {"name": "finance-db"}}
    message = refusal(cluster, a, own(a, "study", s3, tuning=tuning), user="team-dev")
    assert "spec.tuning.storageSecret" in message and "finance-db" in message and "may not get" in message, message


def test_an_edit_by_a_user_without_job_rights_of_a_privileged_spec_is_refused(cluster, teams, s3, start_operator):
    a, _, _, _ = teams
    operator_flags = ("--allow-service-accounts", "--allowed-endpoints", s3, *POLICY)
    start_operator("--webhook-port", str(free_port()), "--webhook-register", "--webhook-host", "127.0.0.1", *operator_flags)
    wait_for(lambda: cluster.kubectl("get", "validatingwebhookconfiguration", CONFIGURATION_NAME, check=False).returncode == 0,
             "the operator to register its webhook", timeout=60)
    try:
        cluster.kubectl("create", "serviceaccount", "-n", a, "trainer")
        privileged = own(a, "privileged", s3, job={"backoffLimit": 0, "serviceAccountName": "trainer"})
        apply(cluster, a, privileged)  # the admin may choose the Job's identity
        privileged["spec"]["model"]["uri"] = f"{ROOT}/{a}/inputs/other.pt"  # what runs under it, changed by team-dev
        message = refusal(cluster, a, privileged, user="team-dev")
        assert "spec.job.serviceAccountName" in message and "create jobs.batch" in message, message
    finally:
        unregister_webhooks(cluster)


def test_with_the_webhook_bypassed_the_job_build_refuses_and_no_job_exists(cluster, teams, s3, node, start_operator):
    a, b, client, promoted = teams
    start_operator("--allowed-endpoints", s3, *POLICY)  # as if someone deleted the webhook configuration
    apply(cluster, a, own(a, "sneaky", s3, promotion={"uri": f"{ROOT}/{b}/served"}))
    done = wait_for(phase_is(cluster, a, "sneaky", "Failed"), "the run to be refused")
    failed = condition(done, "Succeeded")
    assert failed["reason"] == "PolicyViolation" and "spec.promotion.uri" in failed["message"], failed
    assert get(cluster, a, "jobs")["items"] == []
    for key, body in promoted.items():
        assert client.get_object(Bucket="models", Key=key)["Body"].read() == body


def test_the_same_spec_within_policy_runs_and_writes_only_under_its_namespace(cluster, teams, s3, node, guarded):
    a, b, client, promoted = teams

    def keys() -> set[str]:
        return {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="models") for o in page.get("Contents", [])}
    before = keys()
    answer = apply(cluster, a, own(a, "mine", s3, promotion={}), check=False, user="team-dev")
    assert answer.returncode == 0, answer.stderr
    done = wait_for(phase_is(cluster, a, "mine", "Succeeded", "Failed"), "the run to finish", timeout=240)
    assert condition(done, "Succeeded")["status"] == "True", json.dumps(done["status"], indent=1)
    assert done["status"]["artifacts"]["uri"].startswith(f"{ROOT}/{a}/{a}/mine/runs/")
    assert done["status"]["promotion"]["pointer"] == f"{ROOT}/{a}/{a}/mine/current.json"
    written = keys() - before
    assert written and all(key.startswith(f"tenants/{a}/{a}/mine/") for key in written), sorted(written)  # one prefix
    for key, body in promoted.items():
        assert client.get_object(Bucket="models", Key=key)["Body"].read() == body
    pod = get(cluster, a, "jobs")["items"][0]["spec"]
    assert pod["activeDeadlineSeconds"] == 86400 and pod["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "50Gi"
