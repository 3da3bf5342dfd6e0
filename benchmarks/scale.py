"""Fleet scale: many ModelOptimizations at once against a real API server with the operator running.

    .venv/bin/python benchmarks/scale.py [--resources 1000] [--namespaces 10] [--cap 50] [--warmup 100]

A real control plane (etcd, kube-apiserver with an audit log, kube-controller-manager) from
tests/harness; the operator as its own process (`kompress operator`, its own token user); a
stand-in node that binds each Pod, reports it Running and, after --run-seconds, Succeeded with a
real result message, so what is measured is the operator, not the pipeline. Two phases:

1. latency: every resource created at once, the cap above their number: the time from each
   resource's create to its Job's create (both from the audit log), and from the moment the
   operator's own watch delivered the resource (the operator runs under operator_clock.py, which
   stamps that) to its Job's create;
2. drain: as many again under a concurrency cap (--cap), runs finishing at once: the time until
   every run succeeded.

Then everything is deleted. Printed: those latencies, drain time and rate, the operator's peak
RSS (VmHWM) and CPU, and API writes per resource lifecycle (create → succeed → delete) by the
operator's user, counted from the audit log.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "jobs"))
sys.path.insert(0, str(REPO / "operator"))

from tests.harness.control_plane import ControlPlane, User, assets_dir  # noqa: E402
from tests.harness.operator_process import OperatorProcess  # noqa: E402

GROUP, VERSION, PLURAL = "kompress.io", "v1alpha1", "modeloptimizations"
OPERATOR_USER = User("kompress-operator", "kompress-operator-token", ("system:masters",))
AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"], "rules": [
    {"level": "Metadata", "users": [OPERATOR_USER.name]},
    {"level": "Metadata", "verbs": ["create"], "resources": [{"group": GROUP, "resources": [PLURAL]}]},
    {"level": "None"}]}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
from kompress_jobs import __version__  # noqa: E402
from kompress_jobs.spec.contract import CONTRACT_VERSION, JobMessage  # noqa: E402
# What a finished Pod of a real run writes to its termination log: a JobMessage (kompress_jobs.spec.contract).
RESULT = {"contractVersion": CONTRACT_VERSION, "release": __version__, "result": {
    "runId": "scale", "metric": "Accuracy", "batchSize": 1,
    "artifacts": {"uri": "s3://bench/runs/scale", "manifestSha256": "0" * 64},
    "baseline": {"name": "baseline", "technique": "baseline", "accepted": False, "paretoOptimal": True,
                 "latencyP50Ms": 0.16, "sizeBytes": 926_000, "metricValue": 0.9875},
    "best": {"name": "static-int8", "technique": "quantization", "accepted": True, "paretoOptimal": True,
             "latencyP50Ms": 0.032, "sizeBytes": 242_700, "metricValue": 0.9875, "speedup": 4.94, "sizeRatio": 3.82},
    "candidates": [{"name": "static-int8", "technique": "quantization", "accepted": True, "paretoOptimal": True,
                    "latencyP50Ms": 0.032, "sizeBytes": 242_700, "metricValue": 0.9875, "speedup": 4.94, "sizeRatio": 3.82}],
}}


JobMessage.model_validate(RESULT)  # the operator reads it with this model


def resource(name: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelOptimization", "metadata": {"name": name}, "spec": {
        "model": {"uri": "s3://bench/models/digits-cnn.pt", "format": "TorchScript"},
        "data": {"uri": "s3://bench/data/digits.npz"},
        "passes": [{"type": "OnnxExport"}, {"type": "StaticInt8"}],
        "artifacts": {"uri": "s3://bench/runs"}}}


def released(response) -> None:
    """Read an unparsed answer and hand its connection back to the pool: left unread, urllib3
    drops it and the next call pays a TLS handshake (which made this script the machine's
    biggest CPU user)."""
    response.read()
    response.release_conn()


class Node:
    """Plays the kubelet for kompress Pods: binds each one, reports it Running, and after
    `run_seconds` Succeeded with RESULT as its termination message (at once when 0)."""

    def __init__(self, api, run_seconds: float = 0.0):
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.run_seconds = run_seconds
        self.pool = concurrent.futures.ThreadPoolExecutor(8)
        self.due: queue.PriorityQueue = queue.PriorityQueue()
        self.done: set[str] = set()
        self.stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()
        threading.Thread(target=self._finish_when_due, daemon=True).start()

    def _watch(self) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            try:  # plain JSON events: the client's model classes would make this "kubelet" a CPU hog
                for event in watch.Watch().stream(self.core.list_pod_for_all_namespaces, timeout_seconds=30, deserialize=False,
                                                  label_selector="app.kubernetes.io/managed-by=kompress"):
                    pod = event["object"]
                    uid = pod["metadata"]["uid"]
                    if event["type"] != "DELETED" and pod["status"].get("phase") == "Pending" and uid not in self.done:
                        self.done.add(uid)
                        self.pool.submit(self._start, pod)
            except Exception:  # a dropped watch: list again
                time.sleep(0.5)

    def _start(self, pod: dict) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        released(self.core.create_namespaced_binding(namespace, {
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": "instant"}},
            _preload_content=False))
        if self.run_seconds <= 0:
            self._finish(pod)
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._status(pod, "Running", {"running": {"startedAt": stamp}}, stamp)
        self.due.put((time.monotonic() + self.run_seconds, name, pod))

    def _finish_when_due(self) -> None:
        while True:
            at, _, pod = self.due.get()
            time.sleep(max(0.0, at - time.monotonic()))
            self.pool.submit(self._finish, pod)

    def _finish(self, pod: dict) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._status(pod, "Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(RESULT),
                                                       "startedAt": stamp, "finishedAt": stamp}}, stamp)

    def _status(self, pod: dict, phase: str, state: dict, stamp: str) -> None:
        container = pod["spec"]["containers"][0]
        released(self.core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"], {"status": {
            "phase": phase, "startTime": stamp,
            "containerStatuses": [{"name": container["name"], "image": container["image"], "imageID": "",
                                   "ready": phase == "Running", "restartCount": 0, "state": state}]}}, _preload_content=False))


class Observer:
    """When a watch first saw each resource (wall clock, comparable with the audit log's: same
    machine) and first saw it Succeeded (monotonic). The watch runs in a process of its own at a
    raised priority, so that neither this script's threads nor the load delay its clock much."""

    def __init__(self, kubeconfig: Path):
        import subprocess

        self.seen: dict[tuple[str, str], float] = {}
        self.succeeded: dict[tuple[str, str], float] = {}
        self.process = subprocess.Popen([sys.executable, __file__, "--watch-resources", str(kubeconfig)],
                                        stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            what, namespace, name, at = line.split()
            (self.seen if what == "seen" else self.succeeded).setdefault((namespace, name), float(at))


def watch_resources(kubeconfig: str) -> None:
    """The Observer's process: one line per first sighting and per first Succeeded."""
    import os

    from kubernetes import client, config, watch

    os.nice(-10)  # needs root; without it the figures only get noisier
    custom = client.CustomObjectsApi(config.new_client_from_config(kubeconfig))
    seen, succeeded = set(), set()
    while True:
        try:
            for event in watch.Watch().stream(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                              timeout_seconds=300, deserialize=False):
                resource, wall, mono = event["object"], time.time(), time.monotonic()
                key = (resource["metadata"]["namespace"], resource["metadata"]["name"])
                if key not in seen:
                    seen.add(key)
                    print("seen", *key, wall, flush=True)
                if key not in succeeded and (resource.get("status") or {}).get("phase") == "Succeeded":
                    succeeded.add(key)
                    print("done", *key, mono, flush=True)
        except Exception:  # the control plane stopped, or a watch dropped: list again
            time.sleep(0.5)


@dataclasses.dataclass
class AuditTimes:
    """From the API server's audit log (the ResponseComplete stage, microseconds, wall clock):
    when each resource and each Job was created, and the server's own time per Job create."""

    created: dict[tuple[str, str], float]
    job_created: dict[tuple[str, str], float]
    job_serving: dict[tuple[str, str], float]

    @classmethod
    def read(cls, audit_log: Path) -> "AuditTimes":
        from datetime import datetime

        def seconds(stamp: str) -> float:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

        times = cls({}, {}, {})
        for line in audit_log.read_text().splitlines():
            entry = json.loads(line)
            ref = entry.get("objectRef") or {}
            if entry.get("stage") != "ResponseComplete" or entry.get("verb") != "create" or entry["responseStatus"]["code"] != 201:
                continue
            if ref.get("resource") == PLURAL:
                times.created[(ref["namespace"], ref["name"])] = seconds(entry["stageTimestamp"])
            elif ref.get("resource") == "jobs":
                key = (ref["namespace"], ref["name"].rsplit("-g", 1)[0])
                times.job_created[key] = seconds(entry["stageTimestamp"])
                times.job_serving[key] = times.job_created[key] - seconds(entry["requestReceivedTimestamp"])
        return times


def read_seen_log(path: Path) -> dict[tuple[str, str], float]:
    """operator_clock.py's log: when the operator's watch first delivered each resource (wall clock)."""
    seen = {}
    for line in path.read_text().splitlines():
        namespace, name, at = line.split()
        seen.setdefault((namespace, name), float(at))
    return seen


def spread(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {percentile(values, 99) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def create_all(api, namespaces: list[str], count: int, prefix: str) -> list[tuple[str, str]]:
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    keys = [(namespaces[i % len(namespaces)], f"{prefix}-{i:04d}") for i in range(count)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: released(custom.create_namespaced_custom_object(GROUP, VERSION, key[0], PLURAL, resource(key[1]),
                                                                              _preload_content=False)), keys))
    return keys


def prepare(plane, count: int):
    """The CRD established, an admin client and `count` team namespaces: (api client, namespace names)."""
    from kubernetes import client, config

    plane.kubectl("apply", "-f", str(REPO / "crds"))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    api = config.new_client_from_config(str(plane.kubeconfig()))
    api.configuration.connection_pool_maxsize = 32
    namespaces = [f"team-{i:02d}" for i in range(count)]
    for name in namespaces:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return api, namespaces


def wait_until(condition, what: str, timeout: float) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def reconcile_quantile(metrics_text: str, q: float) -> float:
    """The bucket bound under which q of the operator's reconciliations finished (as
    histogram_quantile would, without interpolation): handler start → Job created → done."""
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith("kompress_reconcile_time_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= q * total)


def cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuTimeline:
    """Each process's share of a core, second by second, until stopped."""

    def __init__(self, processes: dict[str, int]):
        self.processes, self.rows, self.stop = processes, [], threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        last = {name: cpu_seconds(pid) for name, pid in self.processes.items()}
        while not self.stop.wait(1.0):
            now = {name: cpu_seconds(pid) for name, pid in self.processes.items()}
            self.rows.append({name: now[name] - last[name] for name in now})
            last = now

    def table(self) -> str:
        names = list(self.processes)
        lines = ["  second  " + "  ".join(f"{name[:14]:>14}" for name in names)]
        for second, row in enumerate(self.rows, start=1):
            lines.append(f"  {second:6d}  " + "  ".join(f"{row[name] * 100:13.0f}%" for name in names))
        return "\n".join(lines)


def own_cpu_seconds() -> float:
    import os

    times = os.times()
    return times.user + times.system


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def count_writes(audit_log: Path) -> collections.Counter:
    writes: collections.Counter = collections.Counter()
    for line in audit_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("stage") != "ResponseComplete" or entry.get("verb") not in WRITE_VERBS \
                or entry["user"]["username"] != OPERATOR_USER.name:
            continue
        ref = entry.get("objectRef") or {}
        what = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        writes[(entry["verb"], what, entry.get("responseStatus", {}).get("code"))] += 1
    return writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--cap", type=int, default=50, help="concurrency cap of the drain phase")
    parser.add_argument("--profile", help="write a py-spy profile of the operator's first minute here")
    parser.add_argument("--run-seconds", type=float, default=30.0,
                        help="how long each phase-1 Pod runs before it succeeds (0: at once, everything overlaps the burst)")
    parser.add_argument("--cpu-timeline", action="store_true", help="print each process's CPU use per second of phase 1")
    parser.add_argument("--warmup", type=int, default=0, help="resources run through the operator before the measured burst")
    parser.add_argument("--latency-only", action="store_true", help="phase 1 only (no drain, deletion or write counts)")
    args = parser.parse_args()

    from kubernetes import client

    plane = ControlPlane(assets_dir(), users=[OPERATOR_USER],
                         controller_manager_args=["--kube-api-qps", "500", "--kube-api-burst", "1000"])
    audit_log = plane.dir / "audit.log"
    (plane.dir / "audit-policy.yaml").write_text(json.dumps(AUDIT_POLICY))
    plane.apiserver_args = ["--audit-policy-file", str(plane.dir / "audit-policy.yaml"), "--audit-log-path", str(audit_log),
                            "--audit-log-maxsize", "2000", "--max-requests-inflight", "800",
                            "--max-mutating-requests-inflight", "400"]
    plane.start()
    operator = seen = None
    try:
        api, namespaces = prepare(plane, args.namespaces)
        node, seen = Node(api, args.run_seconds), Observer(plane.kubeconfig())

        operator_seen_log = plane.dir / "operator-seen.log"

        def start_operator(cap: int) -> OperatorProcess:
            clock = [sys.executable, str(REPO / "benchmarks" / "operator_clock.py"), str(operator_seen_log)]
            return OperatorProcess(plane.kubeconfig(OPERATOR_USER.name), "--max-running", str(cap), "--storage-locations", "*",
                                   "--max-running-per-namespace", str(cap), "--retry-interval", "1", "--metrics-access", "Open",
                                   launcher=clock).start()

        # 1. latency: nothing queues
        operator, profiler = start_operator(args.resources * 2), None
        if args.profile:  # py-spy, if installed: where the operator's CPU goes during the burst
            import subprocess

            profiler = subprocess.Popen(["py-spy", "record", "-p", str(operator.process.pid), "-f", "raw", "-o", args.profile,
                                         "-d", "8", "-r", "100", "--gil"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        warm = []
        if args.warmup:  # a long-running operator has its threads and pooled connections already
            warm = create_all(api, namespaces, args.warmup, "warmup")
            wait_until(lambda: all(k in seen.seen for k in warm), "the warm-up resources", 300)
            time.sleep(5)
        processes = {name: process.pid for name, process in plane.processes.items()} | {"operator": operator.process.pid}
        cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()} | {"benchmark": own_cpu_seconds()}
        timeline = CpuTimeline(processes) if args.cpu_timeline else None
        started = time.monotonic()
        first = create_all(api, namespaces, args.resources, "burst")
        created_in = time.monotonic() - started
        wait_until(lambda: all(k in seen.succeeded for k in first), "every run Succeeded", 900)
        time.sleep(1)  # the audit log is written in batches
        audit = AuditTimes.read(audit_log)
        done_first = max(seen.succeeded[k] for k in first) - started
        cpu_used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes.items()}
        if timeline is not None:
            timeline.stop.set()
            print(timeline.table())
        cpu_used["benchmark"] = own_cpu_seconds() - cpu_before["benchmark"]
        print(f"phase 1: {args.resources} resources in {args.namespaces} namespaces created in {created_in:.1f}s (16 clients)")
        print(f"  resource created → its Job created (API server's clock): "
              f"{spread([audit.job_created[k] - audit.created[k] for k in first])}")
        operator_seen = read_seen_log(operator_seen_log)
        print(f"  resource delivered to the operator's watch → its Job created (the goal's measure): "
              f"{spread([audit.job_created[k] - operator_seen[k] for k in first])}")
        print(f"  resource created → delivered to the operator's watch: {spread([operator_seen[k] - audit.created[k] for k in first])}")
        print(f"  resource created → seen by the benchmark's own watch (another process): "
              f"{spread([seen.seen[k] - audit.created[k] for k in first])}")
        print(f"  the API server's own time per Job create: {spread([audit.job_serving[k] for k in first])}")
        print(f"  all Succeeded {done_first:.1f}s after the first create ({args.resources / done_first:.1f} runs/s)")
        rss = [peak_rss_mb(operator.process.pid)]
        print(f"  CPU seconds used until then (2 cores: {2 * done_first:.0f} available): "
              + ", ".join(f"{name} {seconds:.1f}" for name, seconds in sorted(cpu_used.items(), key=lambda kv: -kv[1])))
        handled = operator.metrics()
        print(f"  inside the operator (reconcile handler, which creates the Job): p50 ≤ {reconcile_quantile(handled, 0.5)} s, "
              f"p99 ≤ {reconcile_quantile(handled, 0.99)} s (histogram buckets)")
        operator.stop()
        print(f"  operator log: {operator.log_path}")
        if profiler is not None:  # py-spy writes its file when the operator it watched exits
            profiler.wait(90)
            print(f"  py-spy profile of the burst: {args.profile}")
        if args.latency_only:
            return

        # 2. drain under the cap
        node.run_seconds = 0.0  # the queue drains as fast as the operator can start runs
        operator = start_operator(args.cap)
        started = time.monotonic()
        second = create_all(api, namespaces, args.resources, "capped")
        wait_until(lambda: all(k in seen.succeeded for k in second), "every capped run Succeeded", 1800)
        drained = max(seen.succeeded[k] for k in second) - started
        time.sleep(1)
        audit = AuditTimes.read(audit_log)
        lag = [audit.job_created[k] - audit.created[k] for k in second]
        print(f"phase 2: cap {args.cap}: {args.resources} runs drained in {drained:.1f}s ({args.resources / drained:.1f} runs/s); "
              f"resource → Job incl. queueing p50 {statistics.median(lag):.1f}s, p99 {percentile(lag, 99):.1f}s")

        # 3. delete everything: a deletion is part of a lifecycle (and a finalizer, where one was added)
        custom = client.CustomObjectsApi(api)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: custom.delete_namespaced_custom_object(GROUP, VERSION, k[0], PLURAL, k[1]), warm + first + second))
        wait_until(lambda: not custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"], "every resource gone", 900)
        time.sleep(3)
        rss.append(peak_rss_mb(operator.process.pid))
        print(f"operator peak RSS (VmHWM): phase 1 {rss[0]:.0f} MB, phase 2 and deletion {rss[1]:.0f} MB")
        operator.stop()
        operator = None

        writes = count_writes(audit_log)
        total = sum(writes.values())
        lifecycles = 2 * args.resources + args.warmup
        print(f"API writes by the operator: {total} for {lifecycles} lifecycles = {total / lifecycles:.2f} per lifecycle")
        for (verb, what, code), count in writes.most_common():
            print(f"  {verb:<7} {what:<32} {code}  {count:6d}  ({count / lifecycles:.2f} per lifecycle)")
        node.stop.set()
    finally:
        if operator is not None:
            operator.stop()
        if seen is not None:
            seen.process.kill()
        plane.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--watch-resources"]:
        watch_resources(sys.argv[2])
    else:
        main()
