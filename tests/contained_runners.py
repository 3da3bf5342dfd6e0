"""Runner classes for the tests of runtimes/contained.py. A contained runner's class is imported by
name in its own process, so these live in a module of their own, not in a test's body."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np

from kompress_jobs.errors import DataError
from kompress_jobs.runtimes.base import Processor, Runner
from kompress_jobs.runtimes.executorch_runtime import ExecuTorchRunner
from kompress_jobs.runtimes.generative import GenerativeRunner
from kompress_jobs.runtimes.litert_runtime import LiteRtRunner
from kompress_jobs.runtimes.llama_cpp import LlamaCppRunner
from kompress_jobs.runtimes.tvm_runtime import TvmRunner
from kompress_jobs.spec.sources import ModelFormat


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


class Scripted(Runner):
    """Doubles its input; what else it does at which call is read from the model file (JSON):
    crash or hang at load or at call N, refuse batches over 4 rows, chatter on stdout."""

    runtime = "scripted"
    formats = frozenset({ModelFormat.ONNX})
    default = False
    contained = True

    def __init__(self, model, *, threads=1, device=Processor.CPU, input_names=None):
        print("a native library's chatter on stdout", flush=True)  # must not reach the pipe
        self.script, self.calls, self.device = json.loads(model.path.read_text()), 0, device
        self.input_names, self.output_names = tuple(input_names or ("x",)), ("y",)
        if self.script.get("crashAtLoad"):
            segfault()
        self.pid = os.getpid()

    def __call__(self, inputs):
        self.calls += 1
        if self.script.get("crashAtCall") == self.calls:
            segfault()
        if self.script.get("hangAtCall") == self.calls:
            time.sleep(3600)
        if len(inputs["x"]) > 4:
            raise DataError("this model takes at most 4 rows")
        if inputs["x"].ndim != 2:
            raise ValueError(f"expected a matrix, got {inputs['x'].ndim} dimensions")
        print(f"call {self.calls}", flush=True)
        return {"y": inputs["x"] * 2, "pid": np.array([os.getpid()])}


class ScriptedLanguageModel(GenerativeRunner):
    """Predicts the next token as the last one plus one; crashes at the generation its model file
    (JSON) names."""

    runtime = "scripted-lm"
    formats = frozenset({ModelFormat.GGUF})
    default = False
    contained = True
    vocabulary = 16

    def __init__(self, model, *, threads=1, device=Processor.CPU, input_names=None):
        self.device, self.max_positions, self.generations = device, 64, 0
        self.script = json.loads(model.path.read_text())

    def logits(self, ids):
        return np.eye(self.vocabulary, dtype=np.float32)[(ids + 1) % self.vocabulary]

    def generate(self, prompts, new_tokens):
        self.generations += 1
        if self.script.get("crashAtGeneration") == self.generations:
            segfault()
        return super().generate(prompts, new_tokens)

    def _prefill(self, prompts, new_tokens):
        return None, (prompts[:, -1] + 1) % self.vocabulary

    def _step(self, state, token):
        return None, (token + 1) % self.vocabulary


class CrashesWhenTimed:
    """A real runtime that loads and runs, then segfaults in its own process when it is timed."""

    def time_calls(self, batch, calls):
        segfault()


class CrashesAtThirdCall:
    def __call__(self, inputs):
        self.calls_seen = getattr(self, "calls_seen", 0) + 1  # (LiteRT's runner has a `calls` of its own)
        if self.calls_seen == 3:
            segfault()
        return super().__call__(inputs)


class ExecuTorchCrashingWhenTimed(CrashesWhenTimed, ExecuTorchRunner):
    pass


class ExecuTorchCrashing(CrashesAtThirdCall, ExecuTorchRunner):
    pass


class LiteRtCrashing(CrashesAtThirdCall, LiteRtRunner):
    pass


class TvmCrashing(CrashesAtThirdCall, TvmRunner):
    pass


class LlamaCppCrashing(LlamaCppRunner):
    """Segfaults at its third decode step, in the middle of a generation."""

    def _step(self, rows, token):
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps == 3:
            segfault()
        return super()._step(rows, token)


def crashes_at_its_third_call(cls, model, batch, input_names=("x",)) -> None:
    """`cls`, a real runtime's runner crashing at its third call: the first two answer, the third is
    RuntimeCrashed naming the runtime, the signal and what it was doing."""
    import pytest

    from kompress_jobs.errors import RuntimeCrashed
    from kompress_jobs.runtimes.contained import contained_runner

    runner = contained_runner(cls, model, threads=1, device=Processor.CPU, input_names=input_names)
    runner(batch)
    runner(batch)
    with pytest.raises(RuntimeCrashed, match=f"{cls.runtime} was killed by signal 11 running it, in a process of its own"):
        runner(batch)
