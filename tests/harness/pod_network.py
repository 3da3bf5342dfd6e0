"""Pod addresses for a test node without network namespaces: each Pod gets an IPv4 and an IPv6
address of its own, added to the loopback interface (so the real Endpoints controller lists it and
the API server calls it, as in a cluster), and its Python processes bind those addresses wherever
they ask for "any interface" (pod_shim/sitecustomize.py), as a process in its own network
namespace would. Adding addresses needs CAP_NET_ADMIN (root on the test and CI machines)."""

from __future__ import annotations

import ipaddress
import subprocess
import threading
from pathlib import Path

SHIM = Path(__file__).resolve().parent / "pod_shim"
# Documented ranges that no test machine routes elsewhere: a Pod CIDR as kind uses, and a ULA.
IPV4_BASE, IPV6_BASE = ipaddress.ip_address("10.244.77.0"), ipaddress.ip_address("fd00:10:244:77::")


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


class PodNetwork:
    def __init__(self):
        self._lock = threading.Lock()
        self._next = 2
        self._given: list[tuple[str, str]] = []

    def check(self) -> str | None:
        """None when Pod addresses can be added here; else why not."""
        try:
            probe = self._add(1)
        except FileNotFoundError:
            return "no `ip` command (Debian's iproute2)"
        if isinstance(probe, str):
            return probe
        self._remove(*probe)
        return None

    def allocate(self) -> tuple[str, str]:
        """A fresh (IPv4, IPv6) pair on the loopback interface."""
        with self._lock:
            index, self._next = self._next, self._next + 1
        added = self._add(index)
        if isinstance(added, str):
            raise RuntimeError(added)
        self._given.append(added)
        return added

    def release(self, addresses: tuple[str, str]) -> None:
        if addresses in self._given:
            self._given.remove(addresses)
            self._remove(*addresses)

    def close(self) -> None:
        for addresses in list(self._given):
            self.release(addresses)

    @staticmethod
    def _add(index: int) -> tuple[str, str] | str:
        v4, v6 = str(IPV4_BASE + index), str(IPV6_BASE + index)
        for args in (["addr", "replace", f"{v4}/32", "dev", "lo"], ["-6", "addr", "replace", f"{v6}/128", "dev", "lo", "nodad"]):
            done = _ip(*args)
            if done.returncode != 0:
                _ip("addr", "del", f"{v4}/32", "dev", "lo")
                return f"`ip {' '.join(args)}` failed (adding Pod addresses needs CAP_NET_ADMIN): {done.stderr.strip()}"
        return v4, v6

    @staticmethod
    def _remove(v4: str, v6: str) -> None:
        _ip("addr", "del", f"{v4}/32", "dev", "lo")
        _ip("-6", "addr", "del", f"{v6}/128", "dev", "lo")

    @staticmethod
    def env(addresses: tuple[str, str]) -> dict[str, str]:
        """What a Pod's processes need to bind its addresses (PYTHONPATH is joined by the caller)."""
        return {"KOMPRESS_TEST_POD_IP": addresses[0], "KOMPRESS_TEST_POD_IP6": addresses[1], "PYTHONPATH": str(SHIM)}
