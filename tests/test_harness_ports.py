"""The ports tests hand their servers: never from the range the kernel gives outgoing connections
(one of which took an operator's health port between free_port() and its bind), never twice."""

from __future__ import annotations

import pytest

from .harness.control_plane import _ephemeral_range, free_port

pytestmark = pytest.mark.unit


def test_free_ports_lie_outside_the_ephemeral_range_and_are_never_handed_out_twice():
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]
