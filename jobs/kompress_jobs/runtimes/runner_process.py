"""The process a contained runner runs in (contained.py): told a runner class and a model, it loads
the model, then answers calls until its stdin closes. Timing happens here, next to the runtime, so
the pipe is never part of a latency figure.

    python -m kompress_jobs.runtimes.runner_process   (what contained.py starts, isolated: child_python.py)
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import BinaryIO

from ..modelfile import ModelFile, Processor
from .base import Runner
from .pipe import Arrays, decode, encode


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    runner: Runner | None = None
    while True:
        try:
            header, arrays = decode(lambda n: _exactly(requests, n))
        except EOFError:
            return
        try:
            if header["op"] == "load":
                runner = _load(header)
                reply = _about(runner), {}
            else:
                reply = _answer(runner, header, arrays)
        except Exception as exc:
            reply = {"error": type(exc).__name__, "message": str(exc).strip() or type(exc).__name__}, {}
        replies.write(encode(*reply))
        replies.flush()


def _load(header: dict) -> Runner:
    cls = getattr(importlib.import_module(header["module"]), header["class"])
    names = header["inputNames"]
    return cls(ModelFile.of_record(header["model"]), threads=header["threads"], device=Processor(header["device"]),
               input_names=tuple(names) if names is not None else None)


def _about(runner: Runner) -> dict:
    return {"inputNames": list(runner.input_names), "outputNames": list(runner.output_names),
            "maxPositions": getattr(runner, "max_positions", None), "variant": runner.variant}


def _answer(runner: Runner, header: dict, arrays: Arrays) -> tuple[dict, Arrays]:
    op = header["op"]
    if op == "call":
        return {}, runner(arrays)
    if op == "time":
        timings, cpu_ns = runner.time_calls(arrays, header["calls"])
        return {"timingsNs": timings, "cpuNs": cpu_ns}, {}
    if op == "logits":
        return {}, {"logits": runner.logits(arrays["ids"])}
    if op == "generate":
        done = runner.generate(arrays["prompts"], header["newTokens"])
        return {"firstTokenNs": done.first_token_ns, "stepNs": done.step_ns, "cpuNs": done.cpu_ns}, {"tokens": done.tokens}
    raise ValueError(f"no operation {op!r}")


def _exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return data


def main() -> None:
    # the replies keep a descriptor of their own; what a native library prints goes to stderr
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
