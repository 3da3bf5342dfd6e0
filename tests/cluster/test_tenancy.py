"""No power through the operator (issue 16), on the real API server with RBAC and token users.

team-dev may only manage ModelOptimizations in the namespace; team-lead may also create Jobs there.
The operator serves its admission webhook (registered by URL) under a policy that allows one
registry, chosen ServiceAccounts and one toleration key. The policy is wide on purpose: what stops
team-dev is the SubjectAccessReview, not the policy.
"""

from __future__ import annotations

import json

import pytest
import yaml

from kompress_operator.webhook import CONFIGURATION_NAME

from ..harness.control_plane import free_port
from .conftest import apply, condition, get, phase_is, refusal, resource, unregister_webhooks, wait_for

ALLOWED_IMAGE = "registry.example.com/ml/kompress-jobs:custom"
TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
POLICY = ("--allowed-images", "registry.example.com/ml/*", "--allow-service-accounts",
          "--allowed-tolerations", json.dumps([{"key": "dedicated"}]))


def role(namespace: str, user: str, rules: list[dict]) -> list[dict]:
    """A Role of the given rules, bound to the user under the user's name."""
    meta = {"name": user, "namespace": namespace}
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
             "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]}]


MOPT_RULE = {"apiGroups": ["kompress.io"], "resources": ["modeloptimizations"], "verbs": ["*"]}
JOBS_RULE = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list"]}


@pytest.fixture
def team(cluster, namespace):
    documents = role(namespace, "team-dev", [MOPT_RULE]) + role(namespace, "team-lead", [MOPT_RULE, JOBS_RULE])
    documents.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "trainer", "namespace": namespace}})
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
    return namespace


@pytest.fixture
def guarded_operator(cluster, start_operator):
    """The operator with its webhook registered; the configuration is removed again (it fails closed)."""
    operator = start_operator("--webhook-port", str(free_port()), "--webhook-register", "--webhook-host", "127.0.0.1", *POLICY)
    wait_for(lambda: cluster.kubectl("get", "validatingwebhookconfiguration", CONFIGURATION_NAME, check=False).returncode == 0,
             "the operator to register its webhook", timeout=60)
    yield operator
    unregister_webhooks(cluster)


PRIVILEGED = {
    "spec.job.image": {"image": ALLOWED_IMAGE},
    "spec.job.serviceAccountName": {"serviceAccountName": "trainer"},
    "spec.job.tolerations": {"tolerations": [TOLERATION]},
}


@pytest.mark.parametrize("field", sorted(PRIVILEGED))
def test_a_user_who_cannot_create_jobs_cannot_have_the_operator_run_one_as_they_choose(cluster, team, s3, guarded_operator, field):
    spec = resource("chosen", s3, job={"backoffLimit": 0, **PRIVILEGED[field]})
    message = refusal(cluster, team, spec, user="team-dev")
    assert field in message and f"create jobs.batch in namespace {team}" in message and "team-dev" in message, message
    assert get(cluster, team, "modeloptimizations")["items"] == []


def test_the_same_spec_from_a_user_who_may_create_jobs_is_accepted_and_runs(cluster, team, s3, node, guarded_operator):
    job = {"backoffLimit": 0, "image": ALLOWED_IMAGE, "serviceAccountName": "trainer", "tolerations": [TOLERATION]}
    spec = resource("chosen", s3, job=job)
    refusal(cluster, team, spec, user="team-dev")  # also waits for the webhook to answer
    answer = apply(cluster, team, spec, check=False, user="team-lead")
    assert answer.returncode == 0, answer.stderr

    done = wait_for(phase_is(cluster, team, "chosen", "Succeeded", "Failed"), "the run to finish", timeout=240)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    pod = get(cluster, team, "jobs")["items"][0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == ALLOWED_IMAGE and pod["serviceAccountName"] == "trainer"
    assert TOLERATION in pod["tolerations"]


def test_a_default_spec_from_a_user_who_cannot_create_jobs_runs(cluster, team, s3, node, guarded_operator):
    probe = resource("probe", s3, job={"image": "elsewhere.example.com/miner"})
    refusal(cluster, team, probe, user="team-dev")  # waits for the webhook to answer
    answer = apply(cluster, team, resource("plain", s3), check=False, user="team-dev")
    assert answer.returncode == 0, answer.stderr
    done = wait_for(phase_is(cluster, team, "plain", "Succeeded", "Failed"), "the run to finish", timeout=240)
    assert condition(done, "Succeeded")["status"] == "True", json.dumps(done["status"], indent=1)


def test_an_image_outside_the_policy_is_refused_even_to_a_user_who_may_create_jobs(cluster, team, s3, guarded_operator):
    miner = resource("miner", s3, job={"image": "elsewhere.example.com/miner:1"})
    message = refusal(cluster, team, miner, user="team-lead")
    assert "spec.job.image" in message and "allowedImages" in message, message


def test_a_spec_the_crd_schema_admits_but_the_models_do_not_is_refused_with_its_field_path(cluster, team, s3, guarded_operator):
    # StaticInt8 takes no opset of its own: the CRD's schema keeps unknown pass fields, the models forbid them.
    judged = resource("judged", s3, passes=[{"type": "OnnxExport"}, {"type": "StaticInt8", "opset": 17}])
    message = refusal(cluster, team, judged, user="team-dev")
    assert "spec.passes[1].opset" in message, message


def test_without_the_webhook_the_operator_still_refuses_a_job_outside_its_policy(cluster, namespace, s3, node, start_operator):
    start_operator(*POLICY)  # no webhook: as if someone deleted its configuration
    apply(cluster, namespace, resource("miner", s3, job={"backoffLimit": 0, "image": "elsewhere.example.com/miner:1"}))
    done = wait_for(phase_is(cluster, namespace, "miner", "Failed"), "the run to be refused")
    failed = condition(done, "Succeeded")
    assert failed["status"] == "False" and failed["reason"] == "PolicyViolation", done["status"]
    assert "spec.job.image" in failed["message"] and "allowedImages" in failed["message"], failed["message"]
    assert get(cluster, namespace, "jobs")["items"] == []
