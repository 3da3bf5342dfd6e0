"""What the libraries print (PyTorch's profiler, ONNX Runtime, NNCF, transformers, native code)
kept off the terminal of `kompress optimize` and in a log file, published in the run folder.

It works on file descriptors 1 and 2, so native writes are caught too; kompress's own progress
lines and results go to streams on copies of the terminal's descriptors, taken before."""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

LOG_NAME = "library.log"  # its name in the run folder


class LibraryOutput:
    """`with LibraryOutput() as out:` everything written to fds 1 and 2 lands in `out.path`;
    `out.stdout` / `out.stderr` reach the terminal. The file is the caller's to keep or remove."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.stdout: TextIO = sys.stdout
        self.stderr: TextIO = sys.stderr
        self._saved: dict[int, int] = {}

    def __enter__(self) -> "LibraryOutput":
        self.stdout, self.stderr = _terminal(sys.stdout), _terminal(sys.stderr)
        handle, name = tempfile.mkstemp(prefix="kompress-libraries-", suffix=".log")
        self.path = Path(name)
        _flush_all()
        for fd in (1, 2):
            self._saved[fd] = os.dup(fd)
            os.dup2(handle, fd)
        os.close(handle)
        return self

    def __exit__(self, *exc_info) -> None:
        _flush_all()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        for stream, original in ((self.stdout, sys.stdout), (self.stderr, sys.stderr)):
            if stream is not original:
                stream.close()

    def tail(self, lines: int = 20) -> str:
        """The last lines written, for an error message when the run failed."""
        if self.path is None or not self.path.exists():
            return ""
        return "\n".join(self.path.read_text(errors="replace").splitlines()[-lines:])


def _terminal(stream: TextIO) -> TextIO:
    """A stream on a copy of `stream`'s descriptor (still the terminal once fds 1 and 2 are
    redirected); `stream` itself when it has none (pytest's capsys, a StringIO)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    stream.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                     errors="replace")


def _flush_all() -> None:
    """Python's buffers and C's stdio buffers, so nothing written before lands on the other side."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask (not on Linux or macOS)
        pass
