"""A tenant who would hold the cluster's Job slots (a run that never ends, and a queue of more)
holds none beyond its namespace's deadline and share, while another namespace's run waits."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import apply, condition, phase_is, resource, wait_for

pytestmark = pytest.mark.cluster

# Hours of timing on digits: a run that would hold its slot until its deadline.
FOREVER = {"batchSizes": [1, 8, 64], "warmup": 2, "iterations": 100_000, "rounds": 100}


def test_a_tenant_holds_no_slot_beyond_its_namespaces_deadline_and_share(cluster, namespace, s3, node, start_operator):
    other = f"{namespace}-b"
    cluster.kubectl("create", "namespace", other)
    try:
        start_operator("--max-running", "1", "--max-running-per-namespace", "1",
                       f"--namespace-max-active-deadline-seconds={json.dumps({namespace: 20})}")
        apply(cluster, namespace, resource("forever", s3, benchmark=FOREVER, job={"backoffLimit": 0}))
        wait_for(phase_is(cluster, namespace, "forever", "Running"), "the tenant's run to take the slot")
        for i in range(50):  # and a queue of fifty behind it
            apply(cluster, namespace, resource(f"more-{i}", s3, benchmark=FOREVER, job={"backoffLimit": 0}))
        apply(cluster, other, resource("waiting", s3))
        wait_for(phase_is(cluster, other, "waiting", "Queued"), "the other namespace's run to wait")

        failed = wait_for(phase_is(cluster, namespace, "forever", "Failed"), "the namespace's deadline to end the run", timeout=180)
        assert condition(failed, "Succeeded")["reason"] == "DeadlineExceeded", failed["status"]
        done = wait_for(phase_is(cluster, other, "waiting", "Succeeded", "Failed"), "the other namespace's run", timeout=300)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        # fair share: the other namespace's run took the freed slot before any of the tenant's queue
        started = [re.match(r"(.+)-g\d+-[a-z0-9]+$", p.split("/")[1]).group(1) for p in node.started_pods
                   if p.split("/")[0] in (namespace, other)]
        assert started[:2] == ["forever", "waiting"], started
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
