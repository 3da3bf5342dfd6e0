"""How a contained runner (contained.py) and the process it runs in (runner_process.py) talk: each
message is a JSON header and named arrays, length-prefixed. The arrays travel as an .npz read with
allow_pickle=False, so neither side can make the other unpickle (run) anything: the parent holds
the storage credentials, and the child parses a tenant's model file with native code."""

from __future__ import annotations

import io
import json
import struct
from typing import Callable

import numpy as np

_SIZES = struct.Struct("<QQ")  # the header's length, the arrays' length
HEADER_LIMIT = 1 << 20  # a header is a few scalars and lists of timings, never megabytes
# arrays: a batch's outputs, or a window's logits (2,048 positions of a 150k vocabulary: 1.2 GB);
# what a process taken over by a crafted model file may make this one allocate
PAYLOAD_LIMIT = 1 << 32

Arrays = dict[str, np.ndarray]


class PipeError(Exception):
    """A message that is not one (the other side wrote something else, or was cut off)."""


def encode(header: dict, arrays: Arrays | None = None) -> bytes:
    payload = b""
    if arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        payload = buffer.getvalue()
    head = json.dumps(header).encode()
    return _SIZES.pack(len(head), len(payload)) + head + payload


def decode(read: Callable[[int], bytes]) -> tuple[dict, Arrays]:
    """The next message, from `read(n)` (exactly n bytes; EOFError at the end of the stream);
    PipeError when it is not one."""
    head_size, payload_size = _SIZES.unpack(read(_SIZES.size))
    if head_size > HEADER_LIMIT or payload_size > PAYLOAD_LIMIT:
        raise PipeError(f"a message of {head_size} + {payload_size} bytes")
    head = read(head_size)
    payload = read(payload_size) if payload_size else b""
    try:
        header = json.loads(head)
        if not isinstance(header, dict):
            raise ValueError("the header is not an object")
        arrays: Arrays = {}
        if payload:
            with np.load(io.BytesIO(payload), allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
    except Exception as exc:  # JSON, zip and .npy errors alike: the message is not one
        raise PipeError(f"not a message: {exc}") from None
    return header, arrays
