"""The operator as its own process (`kompress operator`), so tests can SIGKILL and restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .control_plane import ADMIN_TOKEN, free_port


class OperatorProcess:
    def __init__(self, kubeconfig: Path, *args: str, env: dict[str, str] | None = None, launcher: list[str] | None = None):
        """launcher: what runs in place of the `kompress` command (a benchmark's instrumented wrapper)."""
        self.kubeconfig, self.args, self.env = kubeconfig, list(args), env or {}
        self.launcher = launcher or [str(Path(sys.executable).parent / "kompress")]
        self.metrics_port, self.health_port = free_port(), free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="kompress-operator-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "OperatorProcess":
        """Start it and, when wait, return once /healthz answers."""
        command = [*self.launcher, "operator", "--metrics-port", str(self.metrics_port),
                   "--health-port", str(self.health_port), *self.args]
        log = self.log_path.open("a")
        self.process = subprocess.Popen(command, env={**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env},
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait:
            return self
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not healthy after 60s:\n{self.log()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(30)

    def stop(self) -> None:
        try:
            self.kill(signal.SIGTERM)
        except subprocess.TimeoutExpired:  # stuck on a dead connection: do not hang the test run
            self.kill(signal.SIGKILL)

    def metrics(self, token: str | None = ADMIN_TOKEN) -> str:
        """The exposition, scraped as `token`'s user (the operator checks it: metrics.access);
        the test admin's by default, who may get /metrics."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.metrics_port}/metrics", headers=headers)
        return urllib.request.urlopen(request, timeout=5).read().decode()

    def log(self) -> str:
        return self.log_path.read_text()
