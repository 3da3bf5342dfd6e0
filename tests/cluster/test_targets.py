"""One resource, two hardware targets, two labelled nodes: a Job each on its own node, a plan and a
pick each in status.targets, metrics labelled by target, a promotion each; deleting the resource
stops both. A target no node takes is told at once."""

from __future__ import annotations

import json

import boto3

from .conftest import PLURAL, apply, get, phase_is, resource, wait_for

TARGETS = [{"name": "avx2", "maxCpuIsa": "AVX2", "nodeSelector": {"kompress.io/cpu-pool": "general"}},
           {"name": "vector", "nodeSelector": {"kompress.io/cpu-pool": "vector"}}]


def test_two_targets_run_on_their_own_nodes_and_keep_a_pick_each(cluster, namespace, s3, node, start_operator):
    operator = start_operator("--allowed-node-selectors", "kompress.io/cpu-pool=*")
    # No passes: each target's Job plans for the CPU it sees (the AVX2 one through its cap).
    apply(cluster, namespace, resource("fleet", s3, passes=[], targets=TARGETS, promotion={}))

    done = wait_for(phase_is(cluster, namespace, "fleet", "Succeeded", "Failed"), "both targets to finish", timeout=600)
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["targetsDone"] == "2/2" and [t["name"] for t in status["targets"]] == ["avx2", "vector"]
    avx2, vector = status["targets"]
    for entry in (avx2, vector):
        assert entry["phase"] == "Succeeded" and entry["best"]["name"] and entry["plan"][0] == "onnx-export"
        assert entry["artifacts"]["uri"].endswith(f"{namespace}-fleet-g1-{entry['name']}")
    assert avx2["machine"].endswith("(capped at AVX2)") and "capped" not in vector["machine"]
    message = next(c for c in status["conditions"] if c["type"] == "Succeeded")["message"]
    assert message.startswith("2 targets done: avx2: ") and "; vector: " in message

    # A Job each, on the node its nodeSelector names, started under its cap.
    jobs = sorted(j["metadata"]["name"] for j in get(cluster, namespace, "jobs")["items"])
    assert jobs == ["fleet-avx2-g1", "fleet-vector-g1"]
    placed = {pod.split("/")[1].rsplit("-", 1)[0]: where for pod, where in node.node_of.items() if pod.startswith(f"{namespace}/")}
    assert placed == {"fleet-avx2-g1": "kompress-test-node", "fleet-vector-g1": "kompress-test-node-2"}

    # Each target's report: its own plan, made for the CPU as its cap shows it.
    s3_client = boto3.client("s3", endpoint_url=s3)
    reports = {}
    for entry in (avx2, vector):
        key = entry["artifacts"]["uri"].removeprefix("s3://models/") + "/report.json"
        reports[entry["name"]] = json.loads(s3_client.get_object(Bucket="models", Key=key)["Body"].read())
    assert reports["avx2"]["fingerprint"]["cpu"]["maxIsa"] == "AVX2"
    assert not any(f.startswith("avx512") for f in reports["avx2"]["fingerprint"]["cpu"]["flags"])
    assert any("no BF16" in reason for reason in reports["avx2"]["plan"]["reasons"])

    # A promotion each, under <promotion>/targets/<name>/.
    for entry in (avx2, vector):
        assert entry["promotion"]["decision"] == "Promoted"
        assert entry["promotion"]["pointer"] == f"s3://models/runs/{namespace}/fleet/targets/{entry['name']}/current.json"

    # Metrics per target; kubectl's Targets column.
    text = operator.metrics()
    for entry in (avx2, vector):
        assert (f'kompress_best_speedup_ratio{{candidate="{entry["best"]["name"]}",name="fleet",namespace="{namespace}",'
                f'target="{entry["name"]}"}}') in text
    assert "2/2" in cluster.kubectl("get", "mopt", "fleet", "-n", namespace).stdout

    # Deleting the resource stops both Jobs (they are owned by it).
    cluster.kubectl("delete", PLURAL, "fleet", "-n", namespace)
    wait_for(lambda: not get(cluster, namespace, "jobs")["items"], "the garbage collector to take both Jobs", timeout=120)


def test_a_target_no_node_takes_is_told_at_once_and_the_other_runs(cluster, namespace, s3, node, start_operator):
    start_operator("--allowed-node-selectors", "kompress.io/cpu-pool=*")
    targets = [TARGETS[1], {"name": "arm", "nodeSelector": {"kompress.io/cpu-pool": "arm64"}}]
    apply(cluster, namespace, resource("nowhere", s3, targets=targets, job={"backoffLimit": 0, "activeDeadlineSeconds": 900}))

    def told():
        entries = (get(cluster, namespace, PLURAL, "nowhere").get("status") or {}).get("targets") or []
        return next((e for e in entries if e["name"] == "arm" and e.get("unschedulable")), None)

    arm = wait_for(told, "the arm target to be told unschedulable")
    assert "no node of the 2 in the cluster matches kompress.io/cpu-pool=arm64" in arm["unschedulable"]
    assert "fails after 900s" in arm["unschedulable"]
    events = [(e["reason"], e["type"], e["message"]) for e in get(cluster, namespace, "events")["items"]]
    assert any(r == "NoMatchingNode" and t == "Warning" and m.startswith("target arm: ") for r, t, m in events)

    def vector_done():
        entries = (get(cluster, namespace, PLURAL, "nowhere").get("status") or {}).get("targets") or []
        return next((e for e in entries if e["name"] == "vector" and e["phase"] == "Succeeded"), None)

    wait_for(vector_done, "the vector target to finish while arm waits", timeout=400)
    status = get(cluster, namespace, PLURAL, "nowhere")["status"]
    assert status["phase"] == "Running" and status["targetsDone"] == "1/2"
    pods = get(cluster, namespace, "pods")["items"]
    waiting = [p for p in pods if p["metadata"]["name"].startswith("nowhere-arm-g1")]
    assert waiting and waiting[0]["status"]["phase"] == "Pending"
