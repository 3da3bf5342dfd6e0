"""Loaded by Python at start-up in processes the test node runs as Pods with their own address
(tests/harness/pod_network.py): a bind to "any interface" binds the Pod's address instead, as it
would inside the Pod's network namespace, so two replicas can listen on the same ports."""

import os
import socket

_V4, _V6 = os.environ.get("KOMPRESS_TEST_POD_IP"), os.environ.get("KOMPRESS_TEST_POD_IP6")
_ANY = {"", "0.0.0.0", "::", "::0"}

if _V4 and _V6:
    _bind = socket.socket.bind

    def bind(self, address):
        if isinstance(address, tuple) and address and address[0] in _ANY:
            own = _V6 if self.family == socket.AF_INET6 else _V4
            address = (own, *address[1:])
        return _bind(self, address)

    socket.socket.bind = bind
