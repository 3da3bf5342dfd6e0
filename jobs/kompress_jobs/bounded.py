"""Running a piece of a tenant's data that is code in all but name (a chat template is a Jinja
program) with a bound on its time and memory: in a forked child, so a template that loops for
ever or builds a string of gigabytes costs a few seconds and an error, not the Job's slot."""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Callable
from pathlib import Path

SECONDS = 10.0
EXTRA_MEMORY = 1 << 30  # address space the child may add to what it inherits
MAX_RESULT = 1 << 20  # characters


class BoundExceeded(Exception):
    """The call broke a bound, or raised: the message says which (its type and first line)."""


def call_bounded(call: Callable[[], str], *, seconds: float = SECONDS) -> str:
    """call() in a forked child, killed after `seconds`; its text result, at most MAX_RESULT characters."""
    context = multiprocessing.get_context("fork")  # the child inherits the loaded tokenizer: nothing to send it
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(call, sender))
    child.start()
    sender.close()
    try:
        if not receiver.poll(seconds):
            raise BoundExceeded(f"did not finish within {seconds:g} s")
        try:
            kind, value = receiver.recv()
        except EOFError:
            raise BoundExceeded(f"its process ended without an answer (exit code {child.exitcode})") from None
    finally:
        child.kill()
        child.join()
        receiver.close()
    if kind != "ok":
        raise BoundExceeded(value)
    return value


def _child(call: Callable[[], str], sender) -> None:
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _address_space() + EXTRA_MEMORY
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        result = call()
        if not isinstance(result, str) or len(result) > MAX_RESULT:
            sender.send(("error", f"gave more than {MAX_RESULT} characters"))
        else:
            sender.send(("ok", result))
    except MemoryError:
        sender.send(("error", f"needed more than {EXTRA_MEMORY >> 20} MiB of memory"))
    except BaseException as exc:  # noqa: BLE001 - whatever the call raised goes back as one line
        sender.send(("error", f"{type(exc).__name__}: {str(exc)[:200]}"))


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0
