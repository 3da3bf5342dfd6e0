"""Native runtimes that can crash the process (llama.cpp, TVM, ExecuTorch, LiteRT: a kernel built for
another CPU, a malformed program) run in a process of their own for the candidate's whole life: a
runner class that declares `contained` is made in runner_process.py, and a ContainedRunner stands in
for it here, passing each call through a pipe (pipe.py). A segfault, an abort or a hang, while it
loads, scores, is timed or generates, costs that candidate (ModelLoadError, then RuntimeCrashed,
naming the signal and the runtime's last line of error) and the run goes on.

Calls are timed in the child (Runner.time_calls, GenerativeRunner.generate), so the pipe is never in
a latency figure. The child is isolated as every child of kompress is (child_python.py): a tenant's
model file is parsed where there are no storage credentials."""

from __future__ import annotations

import importlib
import os
import select
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

from .. import errors
from ..child_python import how_it_ended, start_python
from ..errors import ModelLoadError, RuntimeCrashed
from ..modelfile import ModelFile
from .base import Inputs, Processor, Runner
from .generative import Generation, GenerativeRunner
from .pipe import Arrays, PipeError, decode, encode

LOAD_TIMEOUT_S = 900  # loading a large model in a cold process is slow, but never unbounded
CALL_TIMEOUT_S = 1800  # the longest call: a benchmark round or a generation; past it the runtime hangs
_CHUNK = 1 << 20


def contained_runner(cls: type[Runner], model: ModelFile, *, threads: int, device: Processor,
                     input_names: tuple[str, ...] | None) -> Runner:
    proxy = ContainedGenerativeRunner if cls.generative else ContainedRunner
    return proxy(cls, model, threads=threads, device=device, input_names=input_names)


class ContainedRunner(Runner):
    """A runner of class `cls`, in a process of its own."""

    def __init__(self, cls: type[Runner], model: ModelFile, *, threads: int, device: Processor,
                 input_names: tuple[str, ...] | None):
        self.runtime, self.device, self._model = cls.runtime, device, model
        self._dead: str | None = None
        home = tempfile.TemporaryDirectory(prefix="kompress-runner-")
        stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty library never blocks on it
        self._process = start_python(Path(home.name), module=f"{__package__}.runner_process",
                                     paths=[_import_root(__name__), _import_root(cls.__module__)], stderr=stderr)
        self._stderr = stderr
        weakref.finalize(self, _stop, self._process, home, stderr)  # when the runner goes, or the run ends
        os.set_blocking(self._process.stdin.fileno(), False)
        about, _ = self._ask({"op": "load", "module": cls.__module__, "class": cls.__qualname__,
                              "model": model.to_record(), "threads": threads, "device": device.value,
                              "inputNames": list(input_names) if input_names is not None else None},
                             doing="loading it", timeout=LOAD_TIMEOUT_S)
        self.input_names, self.output_names = tuple(about["inputNames"]), tuple(about["outputNames"])
        self.max_positions, self.variant = about["maxPositions"], about["variant"]

    def __call__(self, inputs: Inputs) -> Inputs:
        return self._ask({"op": "call"}, {name: inputs[name] for name in self.input_names}, doing="running it")[1]

    def time_calls(self, batch: Inputs, calls: int) -> tuple[list[int], int]:
        header, _ = self._ask({"op": "time", "calls": calls}, {name: batch[name] for name in self.input_names},
                              doing="timing it")
        return header["timingsNs"], header["cpuNs"]

    def _ask(self, header: dict, arrays: Arrays | None = None, *, doing: str,
             timeout: float | None = None) -> tuple[dict, Arrays]:
        if self._dead:
            raise RuntimeCrashed(self._dead)
        timeout = timeout or CALL_TIMEOUT_S
        deadline = time.monotonic() + timeout
        try:
            self._write(encode(header, arrays), deadline)
            reply, got = decode(lambda n: self._read(n, deadline))
        except (EOFError, OSError, PipeError) as exc:  # OSError: a broken pipe, or TimeoutError
            self._dead = self._obituary(doing, hung=isinstance(exc, TimeoutError), timeout=timeout)
            raise (ModelLoadError if header["op"] == "load" else RuntimeCrashed)(self._dead) from None
        if "error" in reply:
            raise _raised(reply, self._model, self.runtime, header["op"] == "load")
        return reply, got

    def _obituary(self, doing: str, hung: bool, timeout: float) -> str:
        if hung:
            how = f"did not answer within {timeout:g} s"
        else:
            try:
                self._process.wait(timeout=10)  # its pipe closed: it is ending
            except subprocess.TimeoutExpired:
                pass
            how = how_it_ended(self._process) if self._process.returncode is not None else "broke off its messages"
        _stop(self._process)
        said = _last_line(self._stderr)
        return (f"model file {self._model.path}: {self.runtime} {how} {doing}, in a process of its own"
                f"{f' ({said})' if said else ''}; this candidate is left out")

    def _write(self, data: bytes, deadline: float) -> None:
        fd, view = self._process.stdin.fileno(), memoryview(data)
        while view:
            if not select.select([], [fd], [], _left(deadline))[1]:
                raise TimeoutError
            try:
                view = view[os.write(fd, view[:_CHUNK]):]
            except BlockingIOError:
                continue

    def _read(self, size: int, deadline: float) -> bytes:
        fd, chunks = self._process.stdout.fileno(), []
        while size:
            if not select.select([fd], [], [], _left(deadline))[0]:
                raise TimeoutError
            chunk = os.read(fd, min(size, _CHUNK))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


class ContainedGenerativeRunner(ContainedRunner, GenerativeRunner):
    """A causal language model's runner in a process of its own: its generation is timed there."""

    def logits(self, ids: np.ndarray) -> np.ndarray:
        return self._ask({"op": "logits"}, {"ids": ids}, doing="scoring text")[1]["logits"]

    def generate(self, prompts: np.ndarray, new_tokens: int) -> Generation:
        header, arrays = self._ask({"op": "generate", "newTokens": new_tokens}, {"prompts": prompts}, doing="generating")
        return Generation(header["firstTokenNs"], header["stepNs"], arrays["tokens"], header["cpuNs"])


def _raised(reply: dict, model: ModelFile, runtime: str, loading: bool) -> Exception:
    """What the child raised, as this process would have: kompress's own errors keep their class
    (a DataError stays one); another exception loading the model is a ModelLoadError."""
    kind, message = getattr(errors, str(reply["error"]), None), str(reply["message"])
    if isinstance(kind, type) and issubclass(kind, errors.KompressError):
        return kind(message)
    if loading:
        return ModelLoadError(f"model file {model.path}: {runtime} cannot load it: {message.splitlines()[0][:300]}")
    return RuntimeError(message)


def _stop(process: subprocess.Popen, home: tempfile.TemporaryDirectory | None = None, stderr=None) -> None:
    if process.returncode is None:
        try:
            process.stdin.close()  # the child's loop ends at the end of its input
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
    for closing in (process.stdout, stderr):
        if closing is not None:
            closing.close()
    if home is not None:
        home.cleanup()


def _last_line(stderr) -> str:
    stderr.seek(max(0, os.fstat(stderr.fileno()).st_size - 4096))
    lines = [line.strip() for line in stderr.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _import_root(module: str) -> Path:
    """The folder the module `module` (a file, not a package) is imported from: its top package's
    parent, which the child puts on its path."""
    path = Path(importlib.import_module(module).__file__).resolve()
    return path.parents[module.count(".")]
