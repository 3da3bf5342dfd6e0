"""The typed, versioned contract between the operator and its Jobs: what each side does with a
message of another release (tests/cluster run the matching releases end to end)."""

from __future__ import annotations

import json

import pytest

from kompress_jobs import __version__
from kompress.cli import main
from kompress_jobs.spec.contract import CONTRACT_VERSION, JobEnv, JobMessage
from kompress_jobs.spec.specfile import resource_from_dict
from kompress_operator.jobspec import build_job
from kompress_operator.jobstate import job_outcome
from kompress_operator.settings import OperatorSettings

from .conftest import resource_dict

pytestmark = pytest.mark.unit

COMPLETE = {"metadata": {"name": "m-g1"}, "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}}
FAILED_JOB = {"metadata": {"name": "m-g1"}, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}


def pod_with(message: dict | str, phase: str = "Succeeded") -> dict:
    text = message if isinstance(message, str) else json.dumps(message)
    return {"metadata": {"creationTimestamp": "t"}, "status": {"phase": phase, "containerStatuses": [
        {"state": {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "message": text}}}]}}


def job_env(spec_document: dict | None = None, **spec) -> dict[str, str]:
    document = spec_document or resource_dict(name="m", **spec)
    document["metadata"] |= {"namespace": "a", "generation": 1}
    container = build_job(document, resource_from_dict(document).spec, OperatorSettings(storage_locations=("*",)))["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def run_job(monkeypatch, tmp_path, env: dict[str, str]) -> tuple[int, dict]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    log = tmp_path / "termination-log"
    code = main(["job", "--termination-log", str(log)])
    return code, json.loads(log.read_text())


def test_the_job_gets_the_spec_without_its_defaults_and_reads_it_back_the_same():
    env = job_env(goals={"maxAccuracyDrop": 2.0})
    assert env[JobEnv.CONTRACT_VERSION.value] == str(CONTRACT_VERSION) and env[JobEnv.OPERATOR_RELEASE.value] == __version__
    sent = json.loads(env[JobEnv.RESOURCE.value])
    assert sent["spec"]["goals"] == {"maxAccuracyDrop": 2.0}
    assert "job" not in sent["spec"] and "task" not in sent["spec"]  # left at their defaults: an older image applies its own
    document = resource_dict(name="m", goals={"maxAccuracyDrop": 2.0})
    assert resource_from_dict(sent).spec == resource_from_dict(document).spec


def test_the_operator_reads_the_result_with_the_model_the_job_wrote_it_with():
    from .test_operator_builders import SUMMARY

    outcome = job_outcome(COMPLETE, [pod_with(JobMessage.success(SUMMARY).to_wire())])
    assert outcome.state == "Succeeded" and outcome.result == SUMMARY


@pytest.mark.parametrize("message, reason, words", [
    ({"contractVersion": CONTRACT_VERSION + 1, "release": "9.0.0", "result": {}}, "VersionMismatch",
     [f"kompress 9.0.0) wrote Job contract v{CONTRACT_VERSION + 1}", f"reads v{CONTRACT_VERSION}"]),
    ({"result": {"best": {"name": "x"}}}, "VersionMismatch", ["wrote Job contract v?", "job image of the operator's release"]),
    ({"contractVersion": CONTRACT_VERSION, "release": __version__, "result": {"runId": 3}}, "ResultUnreadable", ["does not follow the contract"]),
])
def test_a_result_the_operator_cannot_read_fails_the_run_naming_the_versions(message, reason, words):
    outcome = job_outcome(COMPLETE, [pod_with(message)])
    assert outcome.state == "Failed" and outcome.reason == reason
    for fragment in words:
        assert fragment in outcome.message


def test_a_crashed_pods_log_tail_is_its_error():
    outcome = job_outcome(FAILED_JOB, [pod_with("Traceback ...\nMemoryError", phase="Failed")])
    assert outcome.state == "Failed" and "MemoryError" in outcome.message


def test_a_job_image_given_a_newer_contract_fails_with_the_version_mismatch(monkeypatch, tmp_path):
    env = job_env() | {JobEnv.CONTRACT_VERSION.value: str(CONTRACT_VERSION + 1), JobEnv.OPERATOR_RELEASE.value: "9.0.0"}
    code, message = run_job(monkeypatch, tmp_path, env)
    assert code != 0 and message["contractVersion"] == CONTRACT_VERSION and message["release"] == __version__
    assert message["error"]["reason"] == "VersionMismatch"
    assert f"(kompress 9.0.0) speaks Job contract v{CONTRACT_VERSION + 1}" in message["error"]["message"]
    assert job_outcome(FAILED_JOB, [pod_with(message, "Failed")]).reason == "VersionMismatch"


def test_an_older_job_image_given_a_field_it_does_not_know_says_so(monkeypatch, tmp_path):
    env = job_env()
    sent = json.loads(env[JobEnv.RESOURCE.value])
    sent["spec"]["passes"][0]["introducedLater"] = True  # what a newer operator's spec looks like to this image
    env |= {JobEnv.RESOURCE.value: json.dumps(sent), JobEnv.OPERATOR_RELEASE.value: "9.0.0"}
    code, message = run_job(monkeypatch, tmp_path, env)
    assert code != 0 and message["error"]["reason"] == "VersionMismatch"
    assert "introducedLater" in message["error"]["message"] and "the operator is kompress 9.0.0" in message["error"]["message"]


def test_a_bad_spec_from_an_operator_of_the_same_release_stays_a_spec_error(monkeypatch, tmp_path):
    env = job_env()
    sent = json.loads(env[JobEnv.RESOURCE.value])
    sent["spec"]["passes"][0]["typo"] = True
    code, message = run_job(monkeypatch, tmp_path, env | {JobEnv.RESOURCE.value: json.dumps(sent)})
    assert code == 2 and message["error"]["reason"] == "InvalidSpec" and "typo" in message["error"]["message"]
