"""Plays the node for a test cluster with no kubelet: binds pending Pods, runs each Pod's command
as a local process with the Pod's environment, and writes the Pod's status back (exit code and
termination message), so the real Job controller completes, retries or fails the Job.

Container paths are mapped to a folder per Pod: emptyDir mounts (and environment values under
them) point into it, and the termination log is read from it.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

NODE_NAME = "kompress-test-node"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodRunner:
    def __init__(self, api: client.ApiClient, bin_dir: Path, extra_env: dict[str, str] | None = None):
        self.core = client.CoreV1Api(api)
        self.bin_dir = bin_dir  # where the Pod's command (e.g. `kompress`) is found
        self.extra_env = extra_env or {}
        self.root = Path(tempfile.mkdtemp(prefix="kompress-node-"))
        self.running: dict[str, tuple[subprocess.Popen, Path, str]] = {}  # uid -> process, dir, started
        self.seen: set[str] = set()
        self.started_pods: list[str] = []  # namespace/name of every Pod started, in order
        self.names: dict[str, tuple[str, str, str, str]] = {}  # uid -> namespace, name, container, image
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self.errors: list[str] = []

    def start(self) -> "PodRunner":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for process, _, _ in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as exc:  # the API server may be restarting: keep playing the node
                self.errors.append(repr(exc))
            self._stop.wait(0.25)

    def _tick(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(label_selector="app.kubernetes.io/managed-by=kompress").items
        present = set()
        for pod in pods:
            uid = pod.metadata.uid
            present.add(uid)
            if pod.metadata.deletion_timestamp is not None:
                # As a kubelet does: stop the container, then confirm the deletion.
                self._kill(uid)
                try:
                    self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                continue
            if uid not in self.seen and pod.status.phase == "Pending":
                self.seen.add(uid)
                self._start(pod)
        for uid in list(self.running):
            if uid not in present:  # deleted (Job superseded, resource gone)
                self._kill(uid)
        for uid, (process, workdir, started) in list(self.running.items()):
            if process.poll() is not None:
                del self.running[uid]
                self._report(uid, process.returncode, workdir, started)

    def _start(self, pod) -> None:
        namespace, name = pod.metadata.namespace, pod.metadata.name
        self.core.create_namespaced_binding(
            namespace, client.V1Binding(metadata=client.V1ObjectMeta(name=name),
                                        target=client.V1ObjectReference(kind="Node", name=NODE_NAME)),
            _preload_content=False)
        container = pod.spec.containers[0]
        workdir = self.root / pod.metadata.uid
        mounts = {m.mount_path: workdir / m.name for m in container.volume_mounts or []}
        for path in mounts.values():
            path.mkdir(parents=True, exist_ok=True)

        def local(value: str) -> str:
            for mount, path in mounts.items():
                if value == mount or value.startswith(mount + "/"):
                    return str(path) + value[len(mount):]
            return value

        env = {"PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}", "HOSTNAME": name,  # as a kubelet sets it
               "KOMPRESS_TERMINATION_LOG": str(workdir / "termination-log"),
               **self.extra_env}
        values = {e.name: self._env_value(namespace, e) for e in container.env or []}  # one Secret read each
        env |= {name: local(value) for name, value in values.items() if value is not None}
        command = [*(container.command or []), *(container.args or [])]
        started = _now()
        log = (workdir / "log").open("w")
        process = subprocess.Popen(command, env=env, cwd=local(container.working_dir or str(workdir)), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.running[pod.metadata.uid] = (process, workdir, started)
        self.started_pods.append(f"{namespace}/{name}")
        self._patch(namespace, name, {"status": {
            "phase": "Running", "startTime": started,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
            "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "", "ready": True,
                                   "restartCount": 0, "state": {"running": {"startedAt": started}}}],
        }})
        self.names[pod.metadata.uid] = (namespace, name, container.name, container.image)

    def _env_value(self, namespace: str, entry) -> str | None:
        """A variable's value, from a Secret's key as a kubelet reads it; None for an optional one that is missing."""
        ref = entry.value_from.secret_key_ref if entry.value_from else None
        if ref is None:
            return entry.value or ""
        try:
            data = self.core.read_namespaced_secret(ref.name, namespace).data or {}
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
