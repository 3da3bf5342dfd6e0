"""Parallel tuning on the test API server with a real PostgreSQL: one study, its trials run by the
`parallelism` worker Pods of a tuning Job, then the run's Job measures the best trials with every
other candidate on one node. A worker Pod killed mid-trial costs one
trial (failed by heartbeat, retried); deleting the resource stops every worker; bad settings
fail the run with a reason that names what to fix."""

from __future__ import annotations

import base64
import json
import time
import uuid

import boto3
import pytest

from .conftest import apply, condition, get, phase_is, resource, wait_for

NARROW = {"type": "StructuredPrune", "name": "narrow", "architecture": "kompress_jobs.reference:digits_cnn",
          "amount": 0.5, "fineTuning": {"epochs": 1}}
SEARCH = [{"pass": "narrow", "parameter": "amount", "low": 0.3, "high": 0.8}]
CAPS = ("--max-running", "4", "--max-running-per-namespace", "4")


def study_resource(name: str, s3: str, trials: int, parallelism: int, **tuning) -> dict:
    return resource(name, s3, passes=[NARROW, {"type": "OnnxExport", "name": "narrow-onnx"}],
                    goals={"maxAccuracyDrop": 5.0, "optimizeFor": "Size"},
                    tuning={"trials": trials, "parallelism": parallelism, "searchSpace": SEARCH, "objectives": ["Accuracy", "Size"],
                            "heartbeatSeconds": 2, "keepBest": 2, **tuning})


def secret(cluster, namespace: str, name: str, url: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "data": {"url": base64.b64encode(url.encode()).decode()}}))


@pytest.fixture
def study_db(postgres, cluster, namespace):
    """A fresh database for this test's studies, its URL in the Secret the operator is told of."""
    url = postgres.new_database(f"s_{uuid.uuid4().hex[:8]}")
    secret(cluster, namespace, "studies", url)
    return url


def trials_in(url: str) -> list:
    import optuna

    summaries = optuna.get_all_study_summaries(storage=url)
    if not summaries:
        return []
    return optuna.load_study(study_name=summaries[0].study_name, storage=url).get_trials(deepcopy=False)


def report_of(s3: str, status: dict) -> dict:
    key = status["artifacts"]["uri"].removeprefix("s3://models/") + "/report.json"
    return json.loads(boto3.client("s3", endpoint_url=s3).get_object(Bucket="models", Key=key)["Body"].read())


def test_a_study_of_twelve_trials_runs_three_at_a_time_and_the_run_measures_its_best_on_one_node(
        cluster, namespace, s3, node, study_db, start_operator):
    start_operator(*CAPS, "--study-storage-secret", "studies")
    apply(cluster, namespace, study_resource("wide", s3, trials=12, parallelism=3))

    seen = []  # what the status said while the study ran

    def tuning_seen():
        obj = get(cluster, namespace, "modeloptimizations", "wide")
        status = obj.get("status") or {}
        if status.get("phase") == "Tuning":
            seen.append((status["tuning"].get("workers") or {}, len(node.running_pods(namespace))))
        return obj if status.get("phase") in ("Running", "Succeeded", "Failed") else None

    wait_for(tuning_seen, "the study to finish", timeout=600, interval=0.3)
    done = wait_for(phase_is(cluster, namespace, "wide", "Succeeded", "Failed"), "the run to finish", timeout=300)
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert seen and max(running for _, running in seen) <= 3  # never more worker Pods than parallelism
    assert any(workers.get("active", 0) >= 2 for workers, _ in seen), seen  # and several at once, as the status says
    report = report_of(s3, status)
    tuning = report["tuning"]
    shown = [(t["number"], t["state"], t.get("worker"), t.get("retryOf"), t.get("error")) for t in tuning["trials"]]
    # Exactly 12: the surplus trial once seen here came from counting the judged and the running
    # trials in two reads (study_report.judged_and_running; tests/test_study_counts.py)
    finished = status["tuning"]["trials"]["finished"]
    assert status["tuning"]["parallelism"] == 3 and finished == 12, shown
    assert status["tuning"]["workers"] == {"active": 0, "succeeded": 3, "failed": 0}
    assert tuning["finishedTrials"] == finished and tuning["parallelism"] == 3 and tuning["storage"].startswith("postgresql://127.0.0.1:")
    numbers = [t["number"] for t in tuning["trials"]]
    assert len(numbers) == len(set(numbers)) == finished and all(t["state"] == "Complete" for t in tuning["trials"])
    workers = {t["worker"] for t in tuning["trials"]}
    assert 2 <= len(workers) <= 3 and all(w.startswith("wide-g1-tuning-") for w in workers)
    spans = sorted((t["startedAt"], t["finishedAt"]) for t in tuning["trials"])
    overlapping = sum(1 for earlier, later in zip(spans, spans[1:]) if later[0] < earlier[1])
    assert overlapping >= 3, spans
    # The single-Pod contract: the kept trials are candidates measured in the run's one Pod.
    candidates = {c["name"]: c for c in report["candidates"]}
    assert tuning["selected"] and all(candidates[n]["outcome"] == "Measured" and candidates[n]["latency"] for n in tuning["selected"])
    jobs = sorted(j["metadata"]["name"] for j in get(cluster, namespace, "jobs")["items"])
    assert jobs == ["wide-g1", "wide-g1-tuning"]
    assert [p for p in node.started_pods if p.startswith(f"{namespace}/wide-g1-") and "tuning" not in p].__len__() == 1
    assert condition(done, "Succeeded")["status"] == "True" and not node.running_pods(namespace)


def test_a_worker_pod_killed_mid_trial_costs_one_trial_which_is_retried(cluster, namespace, s3, node, study_db, start_operator):
    start_operator(*CAPS, "--study-storage-secret", "studies")
    apply(cluster, namespace, study_resource("killed", s3, trials=5, parallelism=2))

    def kill_a_busy_worker():
        # A trial that has drawn its parameters: one killed before that is retried with fresh ones.
        busy = [t for t in trials_in(study_db) if t.state.name == "RUNNING" and "worker" in t.user_attrs and t.params]
        return busy and node.kill_pod(namespace, busy[0].user_attrs["worker"]) and busy[0]

    killed = wait_for(kill_a_busy_worker, "a trial to run in a worker Pod", timeout=300, interval=0.2)
    done = wait_for(phase_is(cluster, namespace, "killed", "Succeeded", "Failed"), "the run to finish", timeout=600)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    tuning = report_of(s3, done["status"])["tuning"]
    by_number = {t["number"]: t for t in tuning["trials"]}
    lost = by_number[killed.number]
    assert lost["state"] == "Fail" and lost["error"].startswith("lost: its worker stopped sending heartbeats (retried as trial")
    retry = next(t for t in tuning["trials"] if t.get("retryOf") == killed.number)
    assert retry["state"] == "Complete" and retry["parameters"] == lost["parameters"] and retry["worker"] != lost["worker"]
    assert tuning["finishedTrials"] == 5 and sum(t["state"] == "Complete" for t in tuning["trials"]) == 5
    assert len(by_number) == len(tuning["trials"]) == 6  # nothing duplicated: five verdicts and the lost one
    assert done["status"]["tuning"]["trials"] == {"finished": 5, "failed": 1, "running": 0}


def test_deleting_the_resource_mid_study_stops_every_worker(cluster, namespace, s3, node, study_db, start_operator):
    start_operator(*CAPS, "--study-storage-secret", "studies")
    # More trials than the workers can finish while the deletion travels (a trial takes well under
    # a second on a fast CPU): the test needs the study cut short.
    apply(cluster, namespace, study_resource("gone", s3, trials=60, parallelism=2))
    wait_for(lambda: any(t.state.name == "COMPLETE" for t in trials_in(study_db)), "a trial to finish", timeout=300)
    cluster.kubectl("delete", "modeloptimization", "-n", namespace, "gone", "--wait=false")

    wait_for(lambda: not node.running_pods(namespace) and not get(cluster, namespace, "pods")["items"],
             "the garbage collector and the node to stop every worker Pod", timeout=120)
    stopped = time.time()
    trials = trials_in(study_db)
    time.sleep(6)  # two heartbeat grace periods: a worker left anywhere would have started a trial by now
    after = trials_in(study_db)
    assert len(after) == len(trials) and len(trials) < 60
    assert all(t.datetime_start.timestamp() < stopped for t in after)
    assert not get(cluster, namespace, "jobs")["items"]


def test_bad_study_settings_fail_the_run_with_a_reason_that_names_what_to_fix(cluster, namespace, s3, node, postgres, start_operator):
    start_operator("--max-running", "4", "--max-running-per-namespace", "2")
    closed = f"postgresql://kompress:hunter2-pw@127.0.0.1:{postgres.port + 1}/studies"  # nothing listens there
    secret(cluster, namespace, "closed-db", closed)
    secret(cluster, namespace, "redis-db", "redis://cache.example:6379/0")
    apply(cluster, namespace, study_resource("too-wide", s3, trials=6, parallelism=3, storageSecret={"name": "closed-db"}))
    apply(cluster, namespace, study_resource("unreachable", s3, trials=4, parallelism=2, storageSecret={"name": "closed-db"}))
    apply(cluster, namespace, study_resource("unsupported", s3, trials=4, parallelism=2, storageSecret={"name": "redis-db"}))

    wide = wait_for(phase_is(cluster, namespace, "too-wide", "Failed"), "the too-wide study to be refused")
    message = condition(wide, "Succeeded")["message"]
    assert condition(wide, "Succeeded")["reason"] == "PolicyViolation"
    assert message.startswith("spec.tuning.parallelism: parallelism 3 can never start") and "maxRunningPerNamespace" in message

    unreachable = wait_for(phase_is(cluster, namespace, "unreachable", "Failed"), "the unreachable study to fail", timeout=300)
    failed = condition(unreachable, "Succeeded")
    assert failed["reason"] == "StudyStorageUnreachable", failed
    assert f"cannot use the study database at 127.0.0.1:{postgres.port + 1}/studies" in failed["message"]
    assert "hunter2" not in json.dumps(unreachable["status"])
    unsupported = wait_for(phase_is(cluster, namespace, "unsupported", "Failed"), "the unsupported study to fail", timeout=300)
    assert condition(unsupported, "Succeeded")["reason"] == "StudyStorageUnsupported"
    assert "scheme 'redis' is not supported" in condition(unsupported, "Succeeded")["message"]
    # The failing studies' trial Pods are stopped, not retried until the backoff limit; no run Job started.
    wait_for(lambda: not node.running_pods(namespace), "the failing studies' Pods to stop", timeout=120)
    names = {j["metadata"]["name"] for j in get(cluster, namespace, "jobs")["items"]}
    assert not names & {"too-wide-g1-tuning", "unreachable-g1", "unsupported-g1"}


def test_editing_the_spec_mid_study_stops_the_old_workers_and_the_new_generation_goes_on(
        cluster, namespace, s3, node, study_db, start_operator):
    start_operator(*CAPS, "--study-storage-secret", "studies")
    document = study_resource("edited", s3, trials=12, parallelism=2)
    apply(cluster, namespace, document)
    wait_for(lambda: sum(t.state.name == "COMPLETE" for t in trials_in(study_db)) >= 2, "two trials to finish", timeout=300)
    document["spec"]["tuning"]["trials"] = 2  # a budget change: the same study goes on, with enough trials already
    apply(cluster, namespace, document)

    done = wait_for(phase_is(cluster, namespace, "edited", "Succeeded", "Failed"), "the new generation to finish", timeout=300)
    assert done["status"]["phase"] == "Succeeded" and done["status"]["observedGeneration"] == 2, json.dumps(done["status"], indent=1)
    superseded = [e["message"] for e in get(cluster, namespace, "events")["items"] if e["reason"] == "Superseded"]
    assert "spec changed: Job edited-g1-tuning stopped for generation 2" in superseded, superseded
    jobs = {j["metadata"]["name"] for j in get(cluster, namespace, "jobs")["items"]}
    assert jobs == {"edited-g2-tuning", "edited-g2"}  # generation 1's workers are gone
    tuning = report_of(s3, done["status"])["tuning"]
    assert tuning["finishedTrials"] >= 2 and tuning["stoppedBecause"] == "trial budget reached"
    assert not [t for t in tuning["trials"] if t["state"] == "Running"]  # a stopped worker's trial is lost, not left running


def test_with_an_administrator_url_each_namespace_studies_in_a_database_role_of_its_own(
        cluster, namespace, s3, node, postgres, start_operator):
    """The operator gives the namespace a role and schema, writes only that role's URL into the
    namespace's Secret, and the study lives there: another namespace's role sees none of it."""
    from kompress_operator.study_databases import SECRET_NAME, StudyDatabases, role_name

    admin = postgres.new_database(f"a_{uuid.uuid4().hex[:8]}")
    start_operator(*CAPS, "--study-admin-url", admin)
    apply(cluster, namespace, study_resource("own", s3, trials=3, parallelism=2))
    done = wait_for(phase_is(cluster, namespace, "own", "Succeeded", "Failed"), "the run to finish", timeout=600)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)

    url = base64.b64decode(get(cluster, namespace, "secrets", SECRET_NAME)["data"]["url"]).decode()
    assert url.startswith(f"postgresql://{role_name(namespace)}:") and admin.split("@")[0] not in url
    studied = trials_in(url)
    assert sum(t.state.name == "COMPLETE" for t in studied) >= 3
    other = StudyDatabases(admin).ensure(f"{namespace}-other")
    assert trials_in(other) == [], "another namespace's role sees no study"
    tuning_job = next(j for j in get(cluster, namespace, "jobs")["items"] if j["metadata"]["name"] == "own-g1-tuning")
    env = {e["name"]: e for e in tuning_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KOMPRESS_STUDY_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
