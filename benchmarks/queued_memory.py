"""The operator's memory under a long queue of large specs (issue 27: one tenant must not be able to
crash the operator, and with a failing-closed webhook every team's applies, by queueing large specs).

    .venv/bin/python benchmarks/queued_memory.py [--resources 1000] [--spec-kib 256] [--namespaces 10]

A real control plane (tests/harness) and the operator as its own process with --max-running 0, so
every resource stays Queued. Two arms in one run, one after the other on fresh operators: small
specs (the example's, under 1 KiB) and large ones (a pass's ignoredScope filled with 4,096-character
names up to --spec-kib). Printed per arm: the operator's peak RSS (VmHWM) once every resource is
Queued, its RSS then, and the ratio of the large arm to the small one; the chart's memory limit is
256 MiB. The schema bounds a spec further than etcd takes (1.5 MiB an object): --spec-kib up to
about 1,400 is the largest the API server stores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scale import GROUP, PLURAL, VERSION, create_all, peak_rss_mb, prepare, released, wait_until  # noqa: E402
from tests.harness.control_plane import ControlPlane, User, assets_dir  # noqa: E402
from tests.harness.operator_process import OperatorProcess  # noqa: E402

OPERATOR_USER = User("kompress-operator", "kompress-operator-token", ("system:masters",))
CHART_LIMIT_MIB = 256


def spec(kib: int) -> dict:
    names = ["n" * 4000 + f"{i:05d}" for i in range(max(0, kib // 4))]
    passes = [{"type": "OnnxExport"}, {"type": "OpenVinoInt8", "ignoredScope": {"names": names}}] if names else \
        [{"type": "OnnxExport"}, {"type": "StaticInt8"}]
    return {"model": {"uri": "s3://bench/models/digits-cnn.pt", "format": "TorchScript"},
            "data": {"uri": "s3://bench/data/digits.npz"}, "passes": passes, "artifacts": {"uri": "s3://bench/runs"}}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def queued_count(operator: OperatorProcess) -> int:
    for line in operator.metrics().splitlines():
        if line.startswith("kompress_queue_depth "):
            return int(float(line.split()[1]))
    return 0


def arm(plane, api, namespaces: list[str], count: int, kib: int, prefix: str, env: dict[str, str]) -> tuple[float, float, float]:
    """(peak RSS MiB, RSS MiB, seconds until all were queued) of an operator that queued `count` specs."""
    import benchmarks.scale as scale

    scale.resource = lambda name: {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelOptimization",
                                   "metadata": {"name": name}, "spec": spec(kib)}
    operator = OperatorProcess(plane.kubeconfig(OPERATOR_USER.name), "--max-running", "0", "--max-running-per-namespace", "0",
                               "--storage-locations", "*", "--retry-interval", "5", env=env).start()
    try:
        started = time.monotonic()
        create_all(api, namespaces, count, prefix)
        wait_until(lambda: queued_count(operator) >= count, f"{count} specs of {kib} KiB queued", timeout=3600)
        seconds = time.monotonic() - started
        time.sleep(30)  # the last status writes and their watch events; idle Kopf workers exit after 5 s
        return peak_rss_mb(operator.process.pid), rss_mb(operator.process.pid), seconds
    finally:
        operator.stop()
        from kubernetes import client

        for namespace in namespaces:  # the next arm starts from an empty cluster
            released(client.CustomObjectsApi(api).delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _preload_content=False))
        wait_until(lambda: not client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)["items"],
                   "every resource deleted", timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--spec-kib", type=int, default=256)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--operator-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the operator process (e.g. glibc's MALLOC_ARENA_MAX=2)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.operator_env)
    plane = ControlPlane(assets_dir(), users=[OPERATOR_USER])
    plane.start()
    try:
        api, namespaces = prepare(plane, args.namespaces)
        rows = []
        for kib, prefix in ((0, "small"), (args.spec_kib, "large")):
            peak, now, seconds = arm(plane, api, namespaces, args.resources, kib, prefix, env)
            rows.append((prefix, kib, peak, now, seconds))
            print(f"{prefix}: {args.resources} queued specs of ~{max(kib, 1)} KiB: operator peak RSS {peak:.0f} MiB, "
                  f"RSS {now:.0f} MiB 30 s later, all queued after {seconds:.0f} s (operator env {env or 'as is'})", flush=True)
        ratio = rows[1][2] / rows[0][2]
        print(f"large/small peak RSS: {ratio:.2f}x; chart limit {CHART_LIMIT_MIB} MiB: "
              f"{'within' if rows[1][2] < CHART_LIMIT_MIB else 'ABOVE'} ({rows[1][2]:.0f} MiB)")
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
