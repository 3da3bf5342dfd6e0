"""The operator-wide policy and the admission review, without a cluster: what is refused, with
which field and which setting named, and when the SubjectAccessReview is asked at all."""

import asyncio
import ssl

import kopf
import pytest

from kompress_jobs.specfile import resource_from_dict
from kompress_operator import policy, webhook
from kompress_operator.jobspec import build_job
from kompress_operator.settings import OperatorSettings

from .conftest import resource_dict

ALICE = {"username": "alice", "groups": ["team-a"]}


def body(**job):
    document = resource_dict(name="resnet", job=job) if job else resource_dict(name="resnet")
    document["metadata"] |= {"namespace": "team-a", "generation": 1}
    return document


def spec(**job):
    return resource_from_dict(body(**job)).spec


class Reviewer:
    """Stands in for the SubjectAccessReview: answers `allowed`, records who was asked about."""

    def __init__(self, allowed: bool):
        self.allowed, self.asked = allowed, []

    async def __call__(self, user, namespace):
        self.asked.append((user["username"], namespace))
        return self.allowed, "" if self.allowed else "no RBAC rule matched"


def review(new, old=None, allowed=False, settings=None):
    reviewer = Reviewer(allowed)
    asyncio.run(webhook.review(new, old, ALICE, settings or OperatorSettings(allow_service_accounts=True,
                                                                             allowed_images=("registry.example.com/ml/*",)),
                               reviewer))
    return reviewer


def test_default_policy_allows_only_the_operators_images_and_no_service_account():
    settings = OperatorSettings()
    assert policy.violations(spec(), settings) == []
    assert policy.violations(spec(image=settings.cpu_image), settings) == []
    found = policy.violations(spec(image="evil.example.com/miner:latest", serviceAccountName="admin",
                                   tolerations=[{"key": "dedicated", "value": "finance"}]), settings)
    assert [(v.field, v.policy) for v in found] == [
        ("spec.job.image", "allowedImages"), ("spec.job.serviceAccountName", "allowServiceAccounts"),
        ("spec.job.tolerations[0]", "allowedTolerations")]
    assert "evil.example.com/miner:latest" in str(found[0]) and "operator policy allowedImages" in str(found[0])
    # The GPU nodes' usual taint is allowed out of the box.
    assert policy.violations(spec(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]), settings) == []


def test_allowed_images_are_patterns_and_tolerations_match_on_set_fields():
    settings = OperatorSettings(allowed_images=("registry.example.com/ml/*",), allowed_tolerations=[{"key": "dedicated"}])
    assert policy.violations(spec(image="registry.example.com/ml/job:1"), settings) == []
    assert policy.violations(spec(image="registry.example.com/other/job:1"), settings)
    assert policy.violations(spec(tolerations=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]), settings) == []
    assert policy.violations(spec(tolerations=[{"operator": "Exists"}]), settings)  # tolerate-everything is another key


def test_the_job_builder_enforces_the_policy_and_gives_the_secret_only_to_allowed_images():
    document = body(image="evil.example.com/miner:latest")
    with pytest.raises(policy.PolicyViolation, match="allowedImages"):
        build_job(document, resource_from_dict(document).spec, OperatorSettings(artifacts_secret="s3-creds"))
    for image, settings in [(None, OperatorSettings(artifacts_secret="s3-creds")),
                            ("registry.example.com/ml/job:1", OperatorSettings(artifacts_secret="s3-creds",
                                                                               allowed_images=("registry.example.com/ml/*",)))]:
        document = body(image=image) if image else body()
        container = build_job(document, resource_from_dict(document).spec, settings)["spec"]["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "s3-creds", "optional": True}}]


def test_a_default_spec_needs_no_access_review():
    assert review(body()).asked == []


@pytest.mark.parametrize("job", [{"image": "registry.example.com/ml/job:1"}, {"serviceAccountName": "trainer"},
                                 {"tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}, {"nodeSelector": {"pool": "gpu"}},
                                 {"priorityClassName": "high"}])
def test_a_privileged_field_needs_the_right_to_create_jobs(job):
    with pytest.raises(kopf.AdmissionError) as refused:
        review(body(**job))
    field = f"spec.job.{next(iter(job))}"
    assert field in str(refused.value) and "create jobs.batch in namespace team-a" in str(refused.value)
    assert "alice" in str(refused.value) and refused.value.code == 403
    assert review(body(**job), allowed=True).asked == [("alice", "team-a")]


def test_an_update_is_checked_on_what_it_changes_only():
    old = body(image="registry.example.com/ml/job:1")
    edited = body(image="registry.example.com/ml/job:1")
    edited["spec"]["goals"] = {"maxAccuracyDrop": 2.0}
    assert review(edited, old).asked == []  # the image was someone else's (allowed) choice
    changed = body(image="registry.example.com/ml/job:2")
    with pytest.raises(kopf.AdmissionError, match="spec.job.image"):
        review(changed, old)
    # Metadata-only updates (the operator's finalizer, a deletion) pass even for a spec that never ran.
    broken = body()
    broken["spec"]["passes"] = [{"type": "DynamicInt8"}]
    review(broken, broken)


def test_pydantic_and_policy_refusals_name_the_field():
    broken = body()
    broken["spec"]["passes"] = [{"type": "OnnxExport"}, {"type": "StaticInt8", "opset": 17}]
    with pytest.raises(kopf.AdmissionError, match=r"spec.passes\[1\].opset") as refused:
        review(broken)
    assert refused.value.code == 422
    with pytest.raises(kopf.AdmissionError, match="allowedImages"):
        review(body(image="evil.example.com/miner:latest"), allowed=True)


def test_namespaces_the_operator_does_not_watch_are_not_judged():
    settings = OperatorSettings(namespaces=("team-b",))
    assert review(body(image="evil.example.com/miner:latest"), settings=settings).asked == []


def test_the_self_signed_certificate_serves_tls_for_its_host(tmp_path):
    files = webhook.self_signed("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files["certfile"], files["pkeyfile"])
    client = ssl.create_default_context(cafile=str(files["certfile"]))
    assert client.get_ca_certs()[0]["subject"] == ((("commonName", "127.0.0.1"),),)


def test_the_webhook_configuration_fails_closed_and_matches_creates_and_updates_only():
    config = webhook.configuration({"url": "https://127.0.0.1:9443/validate", "caBundle": "Zm9v"})
    hook = config["webhooks"][0]
    assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 10 and hook["sideEffects"] == "None"
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"] and hook["rules"][0]["resources"] == ["modeloptimizations"]
