"""The operator's memory under a long queue of large specs (issue 27: one tenant must not be able to
crash the operator, and with a failing-closed webhook every team's applies, by queueing large specs).

    .venv/bin/python benchmarks/queued_memory.py [--resources 1000] [--spec-kib 62] [--namespaces 10] [--large-only]

A real control plane (tests/harness) and the operator as its own process with --max-running 0, so
every resource stays Queued. Two arms in one run, one after the other: small specs (the example's,
under 1 KiB) and large ones (a pass's ignoredScope filled with 4,000-character names up to
--spec-kib; by default just under the policy's maxSpecBytes, the largest the operator takes). In
each arm, one operator queues the specs as they are created, then a fresh one starts with all of
them queued (an upgrade: Kopf lists every resource and holds each body until its indexes are
full, so this is the peak). Printed: the operator's peak RSS (VmHWM), its RSS 40 s later, and the
ratio of the large arm to the small one, against the chart's memory limit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scale import GROUP, PLURAL, VERSION, create_all, peak_rss_mb, prepare, released, wait_until  # noqa: E402
from tests.harness.control_plane import ControlPlane, User, assets_dir  # noqa: E402
from kompress_operator.settings import OperatorSettings  # noqa: E402
from tests.harness.operator_process import OperatorProcess  # noqa: E402

OPERATOR_USER = User("kompress-operator", "kompress-operator-token", ("system:masters",))
CHART_LIMIT_MIB = int(yaml.safe_load((REPO / "charts/kompress/values.yaml").read_text())["resources"]["limits"]["memory"].removesuffix("Mi"))
MAX_SPEC_BYTES = OperatorSettings.model_fields["max_spec_bytes"].default  # the policy's default cap


def spec(kib: int) -> dict:
    names = ["n" * 4000 + f"{i:05d}" for i in range(max(0, (kib - 1) // 4))]
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


def settled(operator: OperatorProcess) -> tuple[float, float]:
    """(peak RSS MiB, RSS MiB) once the last status writes and their watch events are done (idle
    Kopf workers exit after 5 s; the operator hands freed memory back every 30 s)."""
    time.sleep(40)
    return peak_rss_mb(operator.process.pid), rss_mb(operator.process.pid)


def arm(plane, api, namespaces: list[str], count: int, kib: int, prefix: str, env: dict[str, str]) -> tuple:
    """(peak RSS MiB, RSS MiB, seconds until all were queued) of an operator that queued `count` specs
    as they were created, then the same of a fresh operator that found them all queued at its start
    (an upgrade: one LIST, then an event for every resource at once)."""
    import benchmarks.scale as scale

    scale.resource = lambda name: {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelOptimization",
                                   "metadata": {"name": name}, "spec": spec(kib)}

    def operator() -> OperatorProcess:
        return OperatorProcess(plane.kubeconfig(OPERATOR_USER.name), "--max-running", "0", "--max-running-per-namespace", "0",
                               "--storage-locations", "*", "--retry-interval", "5", "--metrics-access", "Open",
                               "--max-spec-bytes", str(max(MAX_SPEC_BYTES, (kib + 8) * 1024)), env=env).start()

    first = operator()
    try:
        started = time.monotonic()
        create_all(api, namespaces, count, prefix)
        wait_until(lambda: queued_count(first) >= count, f"{count} specs of {kib} KiB queued", timeout=3600)
        seconds = time.monotonic() - started
        streamed = settled(first)
        first.stop()
        second = operator()
        try:
            started = time.monotonic()
            wait_until(lambda: queued_count(second) >= count, f"{count} specs of {kib} KiB listed", timeout=3600)
            restarted = (*settled(second), time.monotonic() - started)
        finally:
            second.stop()
        return (*streamed, seconds), restarted
    finally:
        first.stop()
        from kubernetes import client

        for namespace in namespaces:  # the next arm starts from an empty cluster
            released(client.CustomObjectsApi(api).delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _preload_content=False))
        wait_until(lambda: not client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)["items"],
                   "every resource deleted", timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--spec-kib", type=int, default=MAX_SPEC_BYTES // 1024 - 2,
                        help="size of the large specs (default: just under the policy's maxSpecBytes)")
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--large-only", action="store_true", help="skip the small specs' arm")
    parser.add_argument("--operator-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the operator process (e.g. glibc's MALLOC_ARENA_MAX=2)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.operator_env)
    plane = ControlPlane(assets_dir(), users=[OPERATOR_USER])
    plane.start()
    try:
        api, namespaces = prepare(plane, args.namespaces)
        peaks = {}
        for kib, prefix in ((0, "small"), (args.spec_kib, "large"))[1 if args.large_only else 0:]:
            for how, (peak, now, seconds) in zip(("as created", "at a restart"),
                                                 arm(plane, api, namespaces, args.resources, kib, prefix, env)):
                peaks[prefix, how] = peak
                print(f"{prefix}, {how}: {args.resources} queued specs of ~{max(kib, 1)} KiB: operator peak RSS {peak:.0f} MiB, "
                      f"RSS {now:.0f} MiB 40 s later, all queued after {seconds:.0f} s (operator env {env or 'as is'})", flush=True)
        for how in ("as created", "at a restart"):
            large = peaks["large", how]
            ratio = f"large/small peak RSS {large / peaks['small', how]:.2f}x; " if ("small", how) in peaks else ""
            print(f"{how}: {ratio}chart limit {CHART_LIMIT_MIB} MiB: "
                  f"{'within' if large < CHART_LIMIT_MIB else 'ABOVE'} ({large:.0f} MiB)")
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
