"""Hand memory freed after a burst back to the system. A burst of large specs (an operator start
that lists 1,000 queued resources, or a tenant applying them) leaves glibc's heap full of freed
blocks pinned by the few small objects that outlive the burst; glibc returns only the top of the
heap on its own. malloc_trim(0) releases every free page (measured in docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)


def _malloc_trim():
    """glibc's malloc_trim, or None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


async def release_freed_memory_forever(interval: float) -> None:
    trim = _malloc_trim()
    if trim is None:
        log.info("no malloc_trim in this C library: freed memory is returned as the allocator sees fit")
        return
    while True:
        await asyncio.sleep(interval)
        trim(0)  # a few milliseconds on a few hundred MiB heap
