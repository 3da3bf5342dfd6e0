"""Plays the node for a test cluster with no kubelet: binds pending Pods, runs each Pod's command
as a local process with the Pod's environment, and writes the Pod's status back (exit code and
termination message), so the real Job controller completes, retries or fails the Job.

Container paths are mapped to a folder per Pod: emptyDir mounts (and environment values under
them) point into it, Secret volumes are written into it as a kubelet mounts them, and the
termination log is read from it. A mounted ServiceAccount token becomes the process's KUBECONFIG
(in-cluster configuration reads fixed paths). Files the job image carries (`image_files`: the
examples it copies to /opt/kompress/examples) are found where the image has them: paths under
them, in environment values (the resource the operator passes), point to this checkout's copy.

With a PodNetwork (pod_network.py) each Pod gets addresses of its own and turns Ready only when
its readiness probe answers, so the real Endpoints controller routes to it as in a cluster. A
deleted Pod stops as a kubelet stops it: its preStop hook, SIGTERM, SIGKILL at the end of its
grace period, then the deletion is confirmed.

It may play several nodes (`nodes`: name → labels), registered as Node objects: a Pod goes to the
first whose labels hold its nodeSelector, as the scheduler's first filter does; a Pod no node
takes stays Pending with PodScheduled False (Unschedulable) and the scheduler's message.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from .control_plane import write_kubeconfig
from .pod_network import PodNetwork

NODE_NAME = "kompress-test-node"
JOB_PODS = "app.kubernetes.io/managed-by=kompress"
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # where a kubelet mounts the ServiceAccount token


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodRunner:
    def __init__(self, api: client.ApiClient, bin_dir: Path, extra_env: dict[str, str] | None = None,
                 selector: str = JOB_PODS, network: PodNetwork | None = None, image_files: dict[str, Path] | None = None,
                 nodes: dict[str, dict[str, str]] | None = None):
        self.core = client.CoreV1Api(api)
        self.server = api.configuration.host
        self.bin_dir = bin_dir  # where the Pod's command (e.g. `kompress`) is found
        self.extra_env = extra_env or {}
        self.image_files = image_files or {}  # a path in the job image -> this checkout's copy
        self.selector, self.network = selector, network
        self.root = Path(tempfile.mkdtemp(prefix="kompress-node-"))
        self.running: dict[str, tuple[subprocess.Popen, Path, str]] = {}  # uid -> process, dir, started
        self.seen: set[str] = set()
        self.terminating: set[str] = set()
        self.started_pods: list[str] = []  # namespace/name of every Pod started, in order
        self.names: dict[str, tuple[str, str, str, str]] = {}  # uid -> namespace, name, container, image
        self.addresses: dict[str, tuple[str, str]] = {}  # uid -> the Pod's IPv4 and IPv6 address
        self.envs: dict[str, dict[str, str]] = {}  # uid -> the process's environment (for its preStop hook)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self.errors: list[str] = []
        self.nodes = nodes or {NODE_NAME: {}}  # name → labels, in the order Pods are placed
        self.node_of: dict[str, str] = {}  # namespace/name of a started Pod → the node it ran on
        self.unschedulable: set[str] = set()  # uids told Unschedulable

    def start(self) -> "PodRunner":
        self._register_nodes()
        self._thread.start()
        return self

    def _register_nodes(self) -> None:
        for name, labels in self.nodes.items():
            body = client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name, **labels}))
            try:
                self.core.create_node(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.patch_node(name, {"metadata": {"labels": body.metadata.labels}})

    def _node_for(self, pod) -> str | None:
        wanted = pod.spec.node_selector or {}
        return next((name for name, labels in self.nodes.items()
                     if all({"kubernetes.io/hostname": name, **labels}.get(k) == v for k, v in wanted.items())), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for process, _, _ in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        if self.network:
            self.network.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as exc:  # the API server may be restarting: keep playing the node
                self.errors.append(repr(exc))
            self._stop.wait(0.25)

    def _tick(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(label_selector=self.selector).items
        present = set()
        for pod in pods:
            uid = pod.metadata.uid
            present.add(uid)
            if pod.metadata.deletion_timestamp is not None:
                if uid not in self.terminating:
                    self.terminating.add(uid)
                    threading.Thread(target=self._terminate, args=(pod,), name=f"stop-{pod.metadata.name}", daemon=True).start()
                continue
            if uid not in self.seen and pod.status.phase == "Pending":
                node = self._node_for(pod)
                if node is None:
                    self._tell_unschedulable(pod)
                    continue
                self.seen.add(uid)
                self._start(pod, node)
        for uid in list(self.running):
            if uid not in present and uid not in self.terminating:  # gone without a graceful deletion
                self._kill(uid)
        for uid, (process, workdir, started) in list(self.running.items()):
            if process.poll() is not None and uid not in self.terminating:
                del self.running[uid]
                self._report(uid, process.returncode, workdir, started)

    def _image_paths(self, value: str) -> str:
        for inside, here in self.image_files.items():
            value = value.replace(inside.rstrip("/") + "/", str(here) + "/")
        return value

    def _tell_unschedulable(self, pod) -> None:
        if pod.metadata.uid in self.unschedulable:
            return
        self.unschedulable.add(pod.metadata.uid)
        message = f"0/{len(self.nodes)} nodes are available: {len(self.nodes)} node(s) didn't match Pod's node affinity/selector."
        self._patch(pod.metadata.namespace, pod.metadata.name, {"status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
             "lastTransitionTime": _now()}]}})

    def _start(self, pod, node: str = NODE_NAME) -> None:
        namespace, name, uid = pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
        self.core.create_namespaced_binding(
            namespace, client.V1Binding(metadata=client.V1ObjectMeta(name=name),
                                        target=client.V1ObjectReference(kind="Node", name=node)),
            _preload_content=False)
        self.node_of[f"{namespace}/{name}"] = node
        container = pod.spec.containers[0]
        workdir = self.root / uid
        mounts = {m.mount_path: workdir / m.name for m in container.volume_mounts or []}
        for path in mounts.values():
            path.mkdir(parents=True, exist_ok=True)
        self._mount_secrets(pod, workdir)
        addresses = self.network.allocate() if self.network else None
        if addresses:
            self.addresses[uid] = addresses

        def local(value: str) -> str:
            for mount, path in mounts.items():
                if value == mount or value.startswith(mount + "/"):
                    return str(path) + value[len(mount):]
            return value

        env = {"PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}", "HOSTNAME": name,  # as a kubelet sets it
               "KOMPRESS_TERMINATION_LOG": str(workdir / "termination-log"),
               **self.extra_env, **(PodNetwork.env(addresses) if addresses else {})}
        token = mounts.get(TOKEN_PATH)
        if token is not None and (token / "token").exists():
            env["KUBECONFIG"] = str(write_kubeconfig(workdir / "kubeconfig", self.server, "pod", (token / "token").read_text(), namespace))
        values = {e.name: self._env_value(pod, e, addresses) for e in container.env or []}  # one Secret read each
        env |= {name: self._image_paths(local(value)) for name, value in values.items() if value is not None}
        command = [*(container.command or []), *(container.args or [])]
        started = _now()
        log = (workdir / "log").open("w")
        process = subprocess.Popen(command, env=env, cwd=local(container.working_dir or str(workdir)), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.running[uid] = (process, workdir, started)
        self.envs[uid] = env
        self.started_pods.append(f"{namespace}/{name}")
        self.names[uid] = (namespace, name, container.name, container.image)
        probed = addresses is not None and container.readiness_probe is not None
        status = {"phase": "Running", "startTime": started}
        if addresses:
            status |= {"hostIP": addresses[0], "podIP": addresses[0], "podIPs": [{"ip": address} for address in addresses]}
        self._patch(namespace, name, {"status": status | self._readiness(container, started, ready=not probed)})
        if probed:
            threading.Thread(target=self._probe, args=(pod, container, addresses[0], started), name=f"probe-{name}",
                             daemon=True).start()

    @staticmethod
    def _readiness(container, started: str, ready: bool) -> dict:
        flag, now = ("True" if ready else "False"), _now()
        return {"conditions": [{"type": "Ready", "status": flag, "lastTransitionTime": now},
                               {"type": "ContainersReady", "status": flag, "lastTransitionTime": now}],
                "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "", "ready": ready,
                                       "restartCount": 0, "state": {"running": {"startedAt": started}}}]}

    def _probe(self, pod, container, address: str, started: str) -> None:
        """The readiness probe (httpGet), as a kubelet runs it: after initialDelaySeconds, then every
        periodSeconds; the Pod's Ready condition follows its answers."""
        probe, uid = container.readiness_probe, pod.metadata.uid
        ports = {p.name: p.container_port for p in container.ports or []}
        port = probe.http_get.port
        url = f"http://{address}:{ports.get(port, port)}{probe.http_get.path or '/'}"
        ready = False
        self._stop.wait(probe.initial_delay_seconds or 0)
        while not self._stop.is_set() and uid in self.running and uid not in self.terminating:
            try:
                with urllib.request.urlopen(url, timeout=probe.timeout_seconds or 1) as answer:
                    now_ready = 200 <= answer.status < 400
            except Exception:
                now_ready = False
            if now_ready != ready and uid not in self.terminating:
                try:
                    self._patch(pod.metadata.namespace, pod.metadata.name, {"status": self._readiness(container, started, now_ready)})
                    ready = now_ready
                except Exception as exc:  # tried again at the next probe, as a kubelet's status sync would
                    self.errors.append(repr(exc))
            self._stop.wait(probe.period_seconds or 10)

    def _terminate(self, pod) -> None:
        """Stop a deleted Pod's process as a kubelet does, then confirm the deletion."""
        uid, namespace, name = pod.metadata.uid, pod.metadata.namespace, pod.metadata.name
        entry = self.running.get(uid)
        if entry is not None and entry[0].poll() is None:
            process = entry[0]
            grace = pod.metadata.deletion_grace_period_seconds
            deadline = time.monotonic() + (30 if grace is None else grace)
            hook = pod.spec.containers[0].lifecycle.pre_stop if pod.spec.containers[0].lifecycle else None
            if hook is not None and hook._exec is not None:  # the client's name for `exec`
                try:
                    subprocess.run(hook._exec.command, env=self.envs.get(uid), capture_output=True,
                                   timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            except ProcessLookupError:
                pass
        self._kill(uid)
        if self.network and uid in self.addresses:
            self.network.release(self.addresses.pop(uid))
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                self.errors.append(repr(exc))

    def _mount_secrets(self, pod, workdir: Path) -> None:
        """Each Secret volume's keys as files, as a kubelet mounts them (a missing optional one stays empty)."""
        for volume in pod.spec.volumes or []:
            if volume.secret is None:
                continue
            folder = workdir / volume.name
            folder.mkdir(parents=True, exist_ok=True)
            try:
                data = self.core.read_namespaced_secret(volume.secret.secret_name, pod.metadata.namespace).data or {}
            except ApiException as exc:
                if exc.status == 404 and volume.secret.optional:
                    continue
                raise
            for key, value in data.items():
                (folder / key).write_bytes(base64.b64decode(value))

    def _env_value(self, pod, entry, addresses: tuple[str, str] | None) -> str | None:
        """A variable's value: literal, from the downward API, or from a Secret's key as a kubelet
        reads it; None for an optional one that is missing."""
        source = entry.value_from
        if source is None:
            return entry.value or ""
        if source.field_ref is not None:
            fields = {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
                      "metadata.uid": pod.metadata.uid, "spec.nodeName": self.node_of.get(f"{pod.metadata.namespace}/{pod.metadata.name}", NODE_NAME),
                      "spec.serviceAccountName": pod.spec.service_account_name,
                      "status.podIP": addresses[0] if addresses else "", "status.hostIP": addresses[0] if addresses else ""}
            return fields[source.field_ref.field_path]
        ref = source.secret_key_ref
        try:
            data = self.core.read_namespaced_secret(ref.name, pod.metadata.namespace).data or {}
        except ApiException as exc:
            if exc.status == 404 and ref.optional:
                return None
            raise
        if ref.key not in data:
            return None
        return base64.b64decode(data[ref.key]).decode()

    def kill_pod(self, namespace: str, name: str) -> bool:
        """SIGKILL a running Pod's process, as a node lost or an OOM kill would: it reports exit 137."""
        for uid, (process, _, _) in list(self.running.items()):
            if self.names.get(uid, ())[:2] == (namespace, name) and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                return True
        return False

    def running_pods(self, namespace: str) -> list[str]:
        return [self.names[uid][1] for uid, (process, _, _) in list(self.running.items())
                if uid in self.names and self.names[uid][0] == namespace and process.poll() is None]

    def _report(self, uid: str, code: int, workdir: Path, started: str) -> None:
        code = 128 - code if code < 0 else code  # killed by a signal: a container runtime reports 128 + signal
        namespace, name, container, image = self.names[uid]
        message_file = workdir / "termination-log"
        message = message_file.read_text()[-4096:] if message_file.exists() else ""
        if not message and code != 0:  # terminationMessagePolicy: FallbackToLogsOnError
            message = (workdir / "log").read_text()[-2048:]
        finished = _now()
        self._patch(namespace, name, {"status": {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": finished}],
            "containerStatuses": [{"name": container, "image": image, "imageID": "", "ready": False, "restartCount": 0,
                                   "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                                            "message": message, "startedAt": started, "finishedAt": finished}}}],
        }})

    def _kill(self, uid: str) -> None:
        entry = self.running.pop(uid, None)
        if entry and entry[0].poll() is None:
            os.killpg(entry[0].pid, signal.SIGKILL)

    def _patch(self, namespace: str, name: str, body: dict) -> None:
        try:
            self.core.patch_namespaced_pod_status(name, namespace, body)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def log_of(self, pod_uid: str) -> str:
        path = self.root / pod_uid / "log"
        return path.read_text() if path.exists() else ""
