"""Standby failover (issue 16): two operator processes peered the way the chart's two replicas are;
SIGKILL the serving one while a run is in flight, and the standby finishes the work."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid

import yaml

from ..test_chart import CHART
from .conftest import apply, get, phase_is, resource, wait_for

LIFETIME = 15  # seconds; the settings' minimum, so the test waits as little as a deployment could


def install_peering(cluster, name: str) -> None:
    """The chart's peering CRDs (rendered for two replicas) and a ClusterKopfPeering of the given name."""
    rendered = subprocess.run([str(cluster.assets / "helm"), "template", "kompress", str(CHART), "--set", "replicaCount=2",
                               "--show-only", "templates/peering.yaml"], capture_output=True, text=True, check=True).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    crds = [d for d in documents if d["kind"] == "CustomResourceDefinition"]
    assert {d["metadata"]["name"] for d in crds} == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    cluster.wait_established("clusterkopfpeerings.kopf.dev")
    peering = next(d for d in documents if d["kind"] == "ClusterKopfPeering")
    peering["metadata"] = {"name": name}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(peering))


def peers(cluster, name: str) -> dict:
    return get(cluster, "default", "clusterkopfpeering", name).get("status") or {}


def test_the_standby_takes_over_a_run_in_flight_when_the_serving_replica_dies(cluster, namespace, s3, node, start_operator):
    name = f"failover-{uuid.uuid4().hex[:6]}"
    install_peering(cluster, name)
    flags = ("--peering", name, "--peering-lifetime", str(LIFETIME), "--max-running", "1")
    # Kopf starts paused and resumes once its peering record shows no peer of higher priority.
    serving = start_operator(*flags, "--peering-priority", "200")
    wait_for(lambda: "Resuming operations" in serving.log(), "the first replica to serve", timeout=60)
    standby = start_operator(*flags, "--peering-priority", "100")
    wait_for(lambda: len(peers(cluster, name)) == 2, "both replicas in the peering record", timeout=60)

    for run in ("first", "second"):
        apply(cluster, namespace, resource(run, s3))
    wait_for(lambda: get(cluster, namespace, "jobs")["items"], "the serving replica to start a Job")
    queued = get(cluster, namespace, "modeloptimizations", "second")["status"]
    assert queued["phase"] == "Queued", queued  # the cap holds the second run back: the queue is in play
    assert "Resuming operations" not in standby.log()

    dead = next(peer for peer, record in peers(cluster, name).items() if record.get("priority") == 200)
    serving.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    # The wait is generous (a slow machine is not a failure); what is checked is why it resumed.
    wait_for(lambda: "Resuming operations" in standby.log(), "the standby to take over", timeout=LIFETIME + 120)
    print(f"standby resumed {time.monotonic() - killed_at:.1f}s after SIGKILL (peering lifetime {LIFETIME}s)")
    record = peers(cluster, name).get(dead)
    assert record is None or _expired(record), record  # it took over a dead peer's place, never a live one's

    for run in ("first", "second"):
        done = wait_for(phase_is(cluster, namespace, run, "Succeeded", "Failed"), f"{run} to finish", timeout=300)
        assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    jobs = sorted(j["metadata"]["name"] for j in get(cluster, namespace, "jobs")["items"])
    assert jobs == ["first-g1", "second-g1"], jobs  # one Job per run: nothing started twice across the takeover


def _expired(record: dict) -> bool:
    """Kopf's peering record: `lastseen` (ISO time) plus `lifetime` seconds is in the past."""
    from datetime import datetime, timedelta, timezone

    seen = datetime.fromisoformat(record["lastseen"])
    seen = seen if seen.tzinfo else seen.replace(tzinfo=timezone.utc)
    return seen + timedelta(seconds=record["lifetime"]) < datetime.now(timezone.utc)
