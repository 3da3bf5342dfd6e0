"""The operator-wide policy and the admission review, without a cluster: what is refused, with
which field and which setting named, and when the SubjectAccessReview is asked at all."""

import asyncio
import ssl

import kopf
import pytest

from kompress_jobs.spec.contract import spec_bytes
from kompress_jobs.spec.specfile import resource_from_dict
from kompress_operator import policy, webhook
from kompress_operator.jobspec import build_job
from kompress_operator.settings import OperatorSettings

from .conftest import resource_dict

pytestmark = pytest.mark.unit

ALICE = {"username": "alice", "groups": ["team-a"]}
ROOT = "s3://ml"  # the operator's defaultArtifacts: team-a may use s3://ml/team-a/ by default


def Settings(**kwargs) -> OperatorSettings:  # noqa: N802 - reads as the settings it builds
    return OperatorSettings(**{"default_artifacts": ROOT, **kwargs})


def body(namespace="team-a", **job):
    document = resource_dict(name="resnet", model=f"{ROOT}/{namespace}/models/cnn.pt", data=f"{ROOT}/{namespace}/data/digits.npz",
                             **({"job": job} if job else {}))
    document["metadata"] |= {"namespace": namespace, "generation": 1}
    return document


def spec(**job):
    return resource_from_dict(body(**job)).spec


class Reviewer:
    """Stands in for the SubjectAccessReview: answers `allowed`, records who was asked about what."""

    def __init__(self, allowed: bool):
        self.allowed, self.asked = allowed, []

    async def __call__(self, user, namespace, attributes):
        self.asked.append((user["username"], namespace, attributes["resource"]))
        return self.allowed, "" if self.allowed else "no RBAC rule matched"


def review(new, old=None, allowed=False, settings=None):
    reviewer = Reviewer(allowed)
    asyncio.run(webhook.review(new, old, ALICE, settings or Settings(allow_service_accounts=True, allowed_priority_classes=("high",),
                                                                     allowed_images=("registry.example.com/ml/*",)),
                               reviewer))
    return reviewer


def test_default_policy_allows_only_the_operators_images_and_no_service_account():
    settings = Settings()
    assert policy.violations(spec(), settings, "team-a") == []
    assert policy.violations(spec(image=settings.cpu_image), settings, "team-a") == []
    found = policy.violations(spec(image="evil.example.com/miner:latest", serviceAccountName="admin",
                                   tolerations=[{"key": "dedicated", "value": "finance"}]), settings, "team-a")
    assert [(v.field, v.policy) for v in found] == [
        ("spec.job.image", "allowedImages"), ("spec.job.serviceAccountName", "allowServiceAccounts"),
        ("spec.job.tolerations[0]", "allowedTolerations")]
    assert "evil.example.com/miner:latest" in str(found[0]) and "operator policy allowedImages" in str(found[0])
    # The GPU nodes' usual taint is allowed out of the box.
    assert policy.violations(spec(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]), settings, "team-a") == []


def test_allowed_images_are_patterns_and_tolerations_match_on_set_fields():
    settings = Settings(allowed_images=("registry.example.com/ml/*",), allowed_tolerations=[{"key": "dedicated"}])
    assert policy.violations(spec(image="registry.example.com/ml/job:1"), settings, "team-a") == []
    assert policy.violations(spec(image="registry.example.com/other/job:1"), settings, "team-a")
    assert policy.violations(spec(tolerations=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]), settings, "team-a") == []
    assert policy.violations(spec(tolerations=[{"operator": "Exists"}]), settings, "team-a")  # tolerate-everything is another key


def test_the_job_builder_enforces_the_policy_and_gives_the_secret_only_to_allowed_images():
    document = body(image="evil.example.com/miner:latest")
    with pytest.raises(policy.PolicyViolation, match="allowedImages"):
        build_job(document, resource_from_dict(document).spec, Settings(artifacts_secret="s3-creds"))
    for image, settings in [(None, Settings(artifacts_secret="s3-creds")),
                            ("registry.example.com/ml/job:1", Settings(artifacts_secret="s3-creds",
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
    assert review(body(**job), allowed=True).asked == [("alice", "team-a", "jobs")]


def test_every_spec_change_of_a_privileged_spec_is_reviewed():
    old = body(image="registry.example.com/ml/job:1")
    edited = body(image="registry.example.com/ml/job:1")
    edited["spec"]["model"]["uri"] = f"{ROOT}/team-a/models/other.pt"  # the image stays; what runs under it changes
    with pytest.raises(kopf.AdmissionError, match="spec.job.image"):
        review(edited, old)
    assert review(edited, old, allowed=True).asked == [("alice", "team-a", "jobs")]
    # Metadata-only updates (the operator's finalizer, a deletion) pass even for a spec that never ran.
    broken = body()
    broken["spec"]["passes"] = [{"type": "DynamicInt8"}]
    review(broken, broken)


def test_a_spec_naming_a_secret_needs_the_right_to_get_it():
    document = body()
    document["spec"]["tuning"] = {"searchSpace": [{"pass": "static-int8", "parameter": "calibrationSamples", "low": 8, "high": 64}],
                                  "parallelism": 2, "trials": 4, "storageSecret": {"name": "team-b-db"}}
    with pytest.raises(kopf.AdmissionError, match="spec.tuning.storageSecret") as refused:
        review(document)
    assert "Secret 'team-b-db'" in str(refused.value) and "alice may not get" in str(refused.value)
    reviewer = review(document, allowed=True)
    assert reviewer.asked == [("alice", "team-a", "secrets")]
    with pytest.raises(kopf.AdmissionError, match="allowedSecrets"):
        review(document, allowed=True, settings=Settings(allowed_secrets=("study-*",)))


def test_pydantic_and_policy_refusals_name_the_field():
    broken = body()
    broken["spec"]["passes"] = [{"type": "OnnxExport"}, {"type": "StaticInt8", "opset": 17}]
    with pytest.raises(kopf.AdmissionError, match=r"spec.passes\[1\].opset") as refused:
        review(broken)
    assert refused.value.code == 422
    with pytest.raises(kopf.AdmissionError, match="allowedImages"):
        review(body(image="evil.example.com/miner:latest"), allowed=True)


def test_namespaces_the_operator_does_not_watch_are_not_judged():
    settings = Settings(namespaces=("team-b",))
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


# --- storage: each namespace within its own locations (locations.py) -----------------------------


def located(**spec_fields):
    document = body()
    for path, value in spec_fields.items():
        target = document["spec"]
        *parents, leaf = path.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return resource_from_dict(document).spec


@pytest.mark.parametrize("field, value", [
    ("artifacts.uri", "s3://ml/team-b"),  # another team's prefix
    ("promotion.uri", "s3://ml/team-b/resnet"),  # another team's served model
    ("model.uri", "s3://ml/team-b/models/cnn.pt"),  # another team's model
    ("data.uri", "s3://other-bucket/digits.npz"),
    ("artifacts.uri", "s3://ml/team-a-other"),  # a namespace whose name starts with mine is not mine
    ("artifacts.uri", "s3://ml/team-a/../team-b"),
    ("model.uri", "/dev/zero"),
    ("data.uri", "data/digits.npz"),  # relative: resolved in a Pod, never allowed
])
def test_locations_outside_the_namespace_are_refused_naming_field_and_policy(field, value):
    found = policy.violations(located(**{field: value}), Settings(), "team-a")
    assert [(v.field, v.policy) for v in found] == [(f"spec.{field}", "storageLocations")], found
    assert value in str(found[0])


def test_the_default_is_the_namespace_segment_of_the_artifacts_root_and_templates_widen_it():
    assert policy.violations(located(**{"artifacts.uri": "s3://ml/team-a/experiments", "promotion.uri": "s3://ml/team-a/served"}),
                             Settings(), "team-a") == []
    own_buckets = Settings(storage_locations=("s3://{namespace}-models/", "s3://ml/{namespace}/"))
    assert policy.violations(located(**{"model.uri": "s3://team-a-models/cnn.pt"}), own_buckets, "team-a") == []
    assert policy.violations(located(**{"model.uri": "s3://team-b-models/cnn.pt"}), own_buckets, "team-a")
    nothing = policy.violations(spec(), OperatorSettings(), "team-a")
    assert "neither storageLocations nor defaultArtifacts" in str(nothing[0])
    assert policy.violations(spec(), OperatorSettings(storage_locations=("*",)), "team-a") == []


def test_an_endpoint_must_be_one_the_policy_names():
    chosen = located(**{"artifacts.endpointUrl": "http://attacker.example.com:9000"})
    found = policy.violations(chosen, Settings(), "team-a")
    assert [(v.field, v.policy) for v in found] == [("spec.artifacts.endpointUrl", "allowedEndpoints")]
    assert policy.violations(chosen, Settings(allowed_endpoints=("http://attacker.example.com:9000/",)), "team-a") == []


def test_the_job_builder_refuses_what_the_webhook_would_and_bounds_every_run():
    document = body()
    document["spec"]["promotion"] = {"uri": "s3://ml/team-b/resnet"}
    with pytest.raises(policy.PolicyViolation, match="spec.promotion.uri.*storageLocations"):
        build_job(document, resource_from_dict(document).spec, Settings())
    plain = body()
    job = build_job(plain, resource_from_dict(plain).spec, Settings(default_active_deadline_seconds=7200, scratch_size_limit="8Gi"))
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "8Gi"}} in job["spec"]["template"]["spec"]["volumes"]


@pytest.mark.parametrize("job, field, setting", [
    ({"activeDeadlineSeconds": 10**7}, "spec.job.activeDeadlineSeconds", "maxActiveDeadlineSeconds"),
    ({"backoffLimit": 9}, "spec.job.backoffLimit", "maxRetries"),
    ({"priorityClassName": "system-cluster-critical"}, "spec.job.priorityClassName", "allowedPriorityClasses"),
    ({"nodeSelector": {"pool": "finance"}}, "spec.job.nodeSelector.pool", "allowedNodeSelectors"),
])
def test_cost_and_placement_limits_name_their_setting(job, field, setting):
    found = policy.violations(spec(**job), Settings(allowed_node_selectors=("pool=ml-*",)), "team-a")
    assert [(v.field, v.policy) for v in found] == [(field, setting)]


def test_a_spec_larger_than_the_operator_keeps_is_refused_at_apply_and_at_job_build():
    """Every spec is in the operator's memory at once when it starts: the policy bounds its size."""
    large = body()
    names = [f"/encoder/layer.{i}/attention/MatMul_{'x' * 200}" for i in range(400)]  # ~96 KiB of node names
    large["spec"]["passes"] = [{"type": "OnnxExport"}, {"type": "OpenVinoInt8", "ignoredScope": {"names": names}}]
    size = spec_bytes(resource_from_dict(large).spec)
    assert 90_000 < size < 100_000
    with pytest.raises(kopf.AdmissionError, match=rf"^spec: {size} bytes of JSON are more than a spec may hold \(65536\): "
                                                  r"the operator keeps every spec in memory when it starts "
                                                  r"\(operator policy maxSpecBytes\)$") as refused:
        review(large)
    assert refused.value.code == 403
    with pytest.raises(policy.PolicyViolation, match="maxSpecBytes"):
        build_job(large, resource_from_dict(large).spec, Settings())
    assert review(large, settings=Settings(max_spec_bytes=131_072)).asked == []
    assert spec_bytes(spec()) < 1024  # a usual spec is far from it


@pytest.mark.parametrize("change, field", [
    (lambda d: d["metadata"].update(name="m" * 64), "metadata.name: string should have at most 63 characters"),
    (lambda d: d["spec"].update(job={"resources": {"requests": {"cpu": "lots"}}}),
     "spec.job.resources.requests.cpu: 'lots' is not a Kubernetes quantity"),
    (lambda d: d["spec"].update(job={"resources": {"limits": {"memory": "-1Gi"}}}),
     "spec.job.resources.limits.memory: '-1Gi' is not a Kubernetes quantity"),
])
def test_what_the_api_server_would_refuse_at_job_creation_is_refused_at_apply(change, field):
    """Proof on the old code: each passed admission and the run's Job creation then failed for ever."""
    document = body()
    change(document)
    with pytest.raises(kopf.AdmissionError) as refused:
        review(document)
    assert field in str(refused.value) and refused.value.code == 422


def test_job_resources_are_bounded_by_the_policy():
    settings = Settings(max_job_resources={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 1})
    assert policy.violations(spec(resources={"requests": {"cpu": "7500m", "memory": "32Gi"}}), settings, "team-a") == []
    found = policy.violations(spec(resources={"requests": {"cpu": 9}, "limits": {"memory": "33Gi"}}, gpus=2), settings, "team-a")
    assert [(v.field, v.policy) for v in found] == [("spec.job.resources.requests.cpu", "maxJobResources"),
                                                    ("spec.job.resources.limits.memory", "maxJobResources"),
                                                    ("spec.job.gpus", "maxJobResources")]
    assert "9 of cpu is above the most one Job may ask (8)" in str(found[0])
    with pytest.raises(ValueError, match="cpu: 'lots' is not a Kubernetes quantity"):
        Settings(max_job_resources={"cpu": "lots"})


def test_a_namespace_deadline_caps_the_spec_and_the_default():
    settings = Settings(namespace_max_active_deadline_seconds={"team-a": 3600})
    found = policy.violations(spec(activeDeadlineSeconds=7200), settings, "team-a")
    assert [(v.field, v.policy) for v in found] == [("spec.job.activeDeadlineSeconds", "namespaceMaxActiveDeadlineSeconds")]
    team_b = resource_from_dict(body(namespace="team-b", activeDeadlineSeconds=7200)).spec
    assert policy.violations(team_b, settings, "team-b") == []
    plain = body()
    assert build_job(plain, resource_from_dict(plain).spec, settings)["spec"]["activeDeadlineSeconds"] == 3600
    other = body(namespace="team-b")
    assert build_job(other, resource_from_dict(other).spec, settings)["spec"]["activeDeadlineSeconds"] == 86_400


def test_a_kueue_queue_is_reviewed_like_the_other_placement_fields():
    settings = Settings(kueue_local_queue="team-queue", allowed_queues=("team-*",))
    with pytest.raises(kopf.AdmissionError, match=r"spec.job.queueName: .*create jobs.batch in namespace team-a"):
        review(body(queueName="team-urgent"), settings=settings)
    assert review(body(queueName="team-urgent"), allowed=True, settings=settings).asked == [("alice", "team-a", "jobs")]
    with pytest.raises(kopf.AdmissionError, match="allowedQueues"):
        review(body(queueName="finance-urgent"), allowed=True, settings=settings)


def test_a_flood_of_reviews_is_refused_at_once_and_never_reaches_the_other_lanes():
    """Anyone who reaches the webhook can post reviews: they wait in a lane of their own, and past
    its bound a review is refused with 429 instead of queueing behind the flood."""
    import threading

    from kompress_operator.lanes import REVIEWS_WAITING, ApiLanes, LaneFull

    lanes, release = ApiLanes(), threading.Event()

    async def flood():
        held = [asyncio.ensure_future(lanes.review(release.wait)) for _ in range(REVIEWS_WAITING)]
        await asyncio.sleep(0.1)
        with pytest.raises(LaneFull):
            await lanes.review(lambda: True)
        assert await lanes.report(lambda: "status written") == "status written"  # the report lane is free
        release.set()
        await asyncio.gather(*held)
        assert await lanes.review(lambda: "reviewed") == "reviewed"  # and the lane takes work again

    asyncio.run(flood())

    async def busy(user, namespace, attributes):
        raise LaneFull(f"{REVIEWS_WAITING} access reviews are already waiting")

    registry = kopf.OperatorRegistry()
    webhook.register(registry, Settings(allowed_images=("registry.example.com/ml/*",)), busy)
    handler = next(h for h in registry._webhooks.get_all_handlers() if h.id == webhook.HANDLER_ID)
    with pytest.raises(kopf.AdmissionError, match="busy") as refused:
        asyncio.run(handler.fn(body=body(image="registry.example.com/ml/job:1"), old=None, userinfo=ALICE))
    assert refused.value.code == 429


def test_the_author_is_recorded_by_the_mutating_webhook_and_cannot_be_forged_or_changed_alone():
    from kompress_operator.authors import AUTHOR_ANNOTATION, author_annotation, recorded_author

    registry = kopf.OperatorRegistry()
    webhook.register(registry, Settings(), Reviewer(True))
    stamp = next(h for h in registry._webhooks.get_all_handlers() if h.id == webhook.AUTHOR_ID)
    patch = kopf.Patch()
    stamp.fn(body=body(), old=None, userinfo=ALICE, patch=patch)
    assert recorded_author({"metadata": patch["metadata"]}) == {"username": "alice", "uid": "", "groups": ["team-a"]}
    untouched = kopf.Patch()
    stamp.fn(body=body(), old=body(), userinfo={"username": "system:serviceaccount:kompress-system:kompress"}, patch=untouched)
    assert not untouched, "a metadata-only update (the operator's finalizer) is not an authorship"

    stamped = body()
    stamped["metadata"]["annotations"] = {AUTHOR_ANNOTATION: author_annotation(ALICE)}
    review(stamped)  # alice's own record passes
    forged = body()
    forged["metadata"]["annotations"] = {AUTHOR_ANNOTATION: author_annotation({"username": "team-lead", "groups": ["admins"]})}
    with pytest.raises(kopf.AdmissionError, match=r"kompress.io/author\]: names another user than alice") as refused:
        review(forged)
    assert refused.value.code == 403
    with pytest.raises(kopf.AdmissionError, match="cannot be changed on its own"):
        review(forged, old=stamped)  # the spec unchanged, the record swapped


def test_the_bundled_examples_may_be_read_by_every_namespace_and_written_by_none():
    """The cluster sample (deploy/samples/cpu) reads the job image's examples: refused before by the
    chart's default storage policy, so the README's first apply failed."""
    sample = resource_from_dict({**resource_dict(name="digits-cnn", model="/opt/kompress/examples/models/digits-cnn.pt",
                                                 data="/opt/kompress/examples/data/digits.npz"),
                                 "metadata": {"name": "digits-cnn", "namespace": "default"}}).spec
    assert policy.violations(sample, Settings(), "default") == []
    writes = located(**{"artifacts.uri": "/opt/kompress/examples/runs"})
    assert [(v.field, v.policy) for v in policy.violations(writes, Settings(), "team-a")] == [("spec.artifacts.uri", "storageLocations")]
    assert policy.violations(sample, Settings(read_locations=()), "default"), "[] allows none"
