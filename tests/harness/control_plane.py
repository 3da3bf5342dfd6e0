"""A real Kubernetes control plane on loopback (the envtest approach): etcd, kube-apiserver with
RBAC and static-token users, and kube-controller-manager running the Job controller and the
garbage collector (and, when a test asks, the Deployment, ReplicaSet, Endpoints and disruption
controllers). No kubelet: tests/harness/node.py plays the node."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "kompress-admin-token"
CONTROLLERS = ("job", "garbagecollector", "serviceaccount", "serviceaccount-token", "namespace", "ttl-after-finished",
               "resourcequota", "clusterrole-aggregation")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a server a test starts later, chosen outside the kernel's
    ephemeral range and never twice in this process. A port that bind(0) picks comes from that
    range, and between closing it and the server's own bind any outgoing connection (the tests
    make thousands, to the API server, S3 and Prometheus) can be given it: seen once as EADDRINUSE
    for an operator's health port. Ports below the range are never handed to a connection."""
    low, high = _ephemeral_range()
    span = range(10_000, low) if low > 12_000 else range(high + 1, 65_536)
    for _ in range(500):
        port = random.choice(span)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # free on every address, as the operator binds its metrics and health
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port between {span.start} and {span.stop}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def assets_dir() -> Path:
    """Binaries from $KOMPRESS_TEST_ASSETS (set by scripts/test), else scripts/k8s-test-assets."""
    given = os.environ.get("KOMPRESS_TEST_ASSETS")
    if given:
        return Path(given)
    out = subprocess.run([str(REPO / "scripts" / "k8s-test-assets")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def host_address() -> str:
    """This machine's address on its default route: reachable like loopback, but allowed in Endpoints."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the route
        address = sock.getsockname()[0]
    if address.startswith("127."):
        raise RuntimeError("no non-loopback IPv4 address: a Service's Endpoints cannot point at this machine")
    return address


def write_kubeconfig(path: Path, server: str, user: str, token: str, namespace: str = "default") -> Path:
    """A kubeconfig that authenticates with a bearer token (the test server's certificate is self-signed)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user, "namespace": namespace}}],
    }))
    return path


@dataclass
class User:
    name: str
    token: str
    groups: tuple[str, ...] = ()


def _wait(condition, what: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {process.returncode}\n{tail}")
        try:
            if condition():
                return
        except Exception:
            pass
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout}s\n{tail}")


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl whose message carries what kubectl said (CalledProcessError's leaves it out)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()[-2000:]}"


class ControlPlane:
    def __init__(self, assets: Path, users: list[User] = (), apiserver_args: list[str] = (),
                 controller_manager_args: list[str] = (), extra_controllers: tuple[str, ...] = ()):
        self.assets = assets
        self.apiserver_args, self.controller_manager_args = list(apiserver_args), list(controller_manager_args)
        self.controllers = [*CONTROLLERS, *extra_controllers]
        self.dir = Path(tempfile.mkdtemp(prefix="kompress-cp-"))
        self.users = [User("admin", ADMIN_TOKEN, ("system:masters",)), *users]
        self.processes: dict[str, subprocess.Popen] = {}
        self.api_port = free_port()
        self.etcd_port, self.etcd_peer = free_port(), free_port()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def kubeconfig(self, user: str = "admin", token: str | None = None) -> Path:
        path = self.dir / f"kubeconfig-{user}"
        known = {u.name: u.token for u in self.users}
        if token is None and user not in known and path.exists():
            return path  # written earlier with a token of its own (e.g. a ServiceAccount's)
        return write_kubeconfig(path, self.server, user, token or known[user])

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.dir / f"{name}.log").open("w")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def start(self) -> "ControlPlane":
        self._start_etcd()
        self.start_apiserver()
        self._start_controller_manager()
        return self

    def _start_etcd(self) -> None:
        etcd = self._spawn("etcd", [
            str(self.assets / "etcd"), "--data-dir", str(self.dir / "etcd"), "--name", "test",
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{self.etcd_peer}",
            "--unsafe-no-fsync",
        ])
        _wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health", timeout=1).status == 200,
              "etcd", 30, etcd, self.dir / "etcd.log")

    @property
    def webhook_client_ca(self) -> Path:
        """The CA of the client certificate this API server presents to admission webhooks (as a
        cluster's AdmissionConfiguration sets it up): a webhook that requires it admits only the API server."""
        return self.dir / "webhook-client" / "ca.crt"

    def _webhook_client_identity(self) -> Path:
        """The admission configuration giving the API server a client certificate for every webhook."""
        folder = self.dir / "webhook-client"
        config = folder / "admission.yaml"
        if config.exists():
            return config
        folder.mkdir()
        openssl = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)  # noqa: E731
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                "-subj", "/CN=kompress-test-webhook-client-ca")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=kube-apiserver")
        openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "client.crt",
                "-days", "2")
        (folder / "kubeconfig").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "users": [
            {"name": "*", "user": {"client-certificate": str(folder / "client.crt"), "client-key": str(folder / "client.key")}}]}))
        plugin = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
                  "kubeConfigFile": str(folder / "kubeconfig")}
        config.write_text(yaml.safe_dump({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration", "plugins": [
            {"name": name, "configuration": plugin} for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")]}))
        return config

    def start_apiserver(self) -> None:
        key = self.dir / "sa.key"
        if not key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
            subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(self.dir / "sa.pub")],
                           check=True, capture_output=True)
            (self.dir / "tokens.csv").write_text("".join(
                f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in self.users))
        apiserver = self._spawn("kube-apiserver", [
            str(self.assets / "kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{self.etcd_port}",
            "--cert-dir", str(self.dir / "certs"),
            "--secure-port", str(self.api_port), "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(self.dir / "sa.pub"),
            "--service-account-signing-key-file", str(key),
            "--token-auth-file", str(self.dir / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-cluster-ip-range", "10.96.0.0/24",
            # Webhooks behind a Service are called at its endpoints (no kube-proxy here for a ClusterIP).
            "--enable-aggregator-routing=true",
            "--admission-control-config-file", str(self._webhook_client_identity()),
            *self.apiserver_args,
        ])
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

        def ready() -> bool:
            request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            return urllib.request.urlopen(request, timeout=2, context=context).status == 200

        _wait(ready, "kube-apiserver", 90, apiserver, self.dir / "kube-apiserver.log")

    def _start_controller_manager(self) -> None:
        self._spawn("kube-controller-manager", [
            str(self.assets / "kube-controller-manager"),
            "--kubeconfig", str(self.kubeconfig()),
            "--controllers", ",".join(self.controllers),
            "--leader-elect=false", "--port=0", "--secure-port=0",
            "--service-account-private-key-file", str(self.dir / "sa.key"),
            "--root-ca-file", str(self.dir / "certs" / "apiserver.crt"),
            "--use-service-account-credentials=false",
            "--concurrent-gc-syncs", "5",
            *self.controller_manager_args,
        ])

    def kubectl(self, *args: str, user: str = "admin", input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.assets / "kubectl"), "--kubeconfig", str(self.kubeconfig(user)), *args],
                              input=input, capture_output=True, text=True, timeout=120)
        if check and done.returncode:
            raise KubectlError(done.returncode, done.args, done.stdout, done.stderr)
        return done

    def wait_established(self, *crds: str, timeout: float = 120) -> None:
        """Wait until each CRD is served (its Established condition). On a timeout, say what the API
        server last reported of each one's conditions, and the end of its log."""
        def conditions(crd: str) -> dict[str, str]:
            found = self.kubectl("get", "crd", crd, "-o", "jsonpath={range .status.conditions[*]}{.type}={.status} {end}",
                                 check=False).stdout
            return dict(pair.split("=", 1) for pair in found.split())

        deadline = time.monotonic() + timeout
        waiting = list(crds)
        while waiting and time.monotonic() < deadline:
            waiting = [crd for crd in waiting if conditions(crd).get("Established") != "True"]
            if waiting:
                time.sleep(0.5)
        if waiting:
            seen = {crd: conditions(crd) for crd in waiting}
            log = self.dir / "kube-apiserver.log"
            raise TimeoutError(f"CRDs not established after {timeout}s, conditions {seen}\n"
                               f"{log.read_text()[-4000:] if log.exists() else ''}")

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver (SIGTERM; SIGKILL when its graceful shutdown, which waits on open
        watches, takes longer than 10 s) and start it again on the same port and data."""
        process = self.processes.pop("kube-apiserver")
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        self.start_apiserver()

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)
