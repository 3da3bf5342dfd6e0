"""What every runtime is: a Runner that takes and returns named arrays on one device, and declares
which model formats and devices it runs, how it is profiled, and how its energy is read. The
registry (registry.py) picks a runner for a model by these declarations."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import ClassVar

import numpy as np

from ..errors import DataError, first_line  # noqa: F401  (runtimes import it from here)
from ..modelfile import ModelFile, Processor
from ..spec.sources import ModelFormat
from ..spec.wire import Model

Inputs = dict[str, np.ndarray]
# (node name, operator type, microseconds summed over the calls[, times it ran]) — see profiling.py
ProfileRows = list[tuple]
TraceEvents = list[dict]  # Chrome trace events (ph "X", ts and dur in µs): what Perfetto and TensorBoard open


class NoOptions(Model):
    """A runtime without options of its own: Execution.options must be empty."""


class Runner:
    """Runs one model on named numpy batches and returns named outputs; the same call shape for
    every runtime. `input_names` is the order the model takes its inputs in.

    A runtime declares what it runs: `formats` and `devices` (the first is where it runs when the
    caller names none), whether it is the `default` for them (several runtimes may run one format;
    a model's Execution names another), its `Options` (the Execution.options it takes), and
    `unavailable()` says why it cannot run here (a missing package, no GPU)."""

    runtime: ClassVar[str]
    formats: ClassVar[frozenset[ModelFormat]]
    devices: ClassVar[tuple[Processor, ...]] = (Processor.CPU,)
    default: ClassVar[bool] = True  # what runs its formats on its devices when an Execution names no runtime
    Options: ClassVar[type[Model]] = NoOptions
    profiler: ClassVar[str | None] = None  # the per-operator profiler this runtime reads, if any
    generative: ClassVar[bool] = False  # runs a causal language model token by token (generative.py)
    # a native library that may crash the process: runs in a process of its own (contained.py)
    contained: ClassVar[bool] = False

    device: Processor = Processor.CPU
    compile_mode: str | None = None  # set by runtimes that compile (PyTorch's torch.compile)
    first_call_seconds: float | None = None  # with compile_mode: the first call, which compiles, timed apart
    variant: str | None = None  # which build of its kernels the runtime loaded here (llama.cpp's CPU variant)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @classmethod
    def unavailable(cls, device: Processor) -> str | None:
        """Why this runtime cannot run on `device` here, or None."""
        return cuda_missing() if device is Processor.CUDA else None

    @classmethod
    def options_of(cls, model: ModelFile) -> Model:
        """The model's Execution.options as this runtime's Options (checked by make_runner first)."""
        return cls.Options.model_validate(model.execution.options)

    def __call__(self, inputs: Inputs) -> Inputs:  # pragma: no cover - interface
        raise NotImplementedError

    def time_calls(self, batch: Inputs, calls: int) -> tuple[list[int], int]:
        """The wall time of each of `calls` calls on `batch`, and the CPU time of the process running
        the model over them (every thread of its runtime's pool), in ns: timed where the model runs,
        so a contained runner's pipe is not in the figures."""
        timings, cpu_start = [], time.process_time_ns()
        for _ in range(calls):
            start = time.perf_counter_ns()
            self(batch)
            timings.append(time.perf_counter_ns() - start)
        return timings, time.process_time_ns() - cpu_start

    def check_input(self, inputs: Inputs) -> None:
        """Raise DataError when these arrays cannot feed the model, naming the input."""
        try:
            self(inputs)
        except DataError:
            raise
        except Exception as exc:
            shapes = ", ".join(f"{n!r} of shape {tuple(a.shape[1:])} ({a.dtype})" for n, a in inputs.items())
            verb = "input {} per sample does not" if len(inputs) == 1 else "inputs {} per sample do not"
            raise DataError(f"{verb.format(shapes)} fit the model: {telling_line(exc)}") from None

    def profile(self, model: ModelFile, batch: Inputs, threads: int, calls: int, trace: TraceEvents | None = None) -> ProfileRows:
        """Per-operator times of `calls` calls on `batch`, from the runtime's own profiler, in a
        session of its own (profiling slows a session down), with each operator's run appended to
        `trace`. Only where `profiler` is set."""
        raise NotImplementedError(f"no per-operator profile is read for {self.runtime}")

    def synchronize(self) -> None:
        """Wait for work queued on the device (energy is read after it); nothing on the CPU."""


def cuda_missing() -> str | None:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed, so no CUDA device can be used"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to this Job (spec.job.device: GPU schedules it on a GPU node)"
    return None


def output_names_for(count: int) -> tuple[str, ...]:
    """PyTorch outputs have no names: `output`, or `output_0`, `output_1`, ... for several."""
    return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))


@contextlib.contextmanager
def quiet_logger(logger_name: str):
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def telling_line(exc: BaseException) -> str:
    """TorchScript errors start with a generic line and end with the real one."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and "TorchScript interpreter" in lines[0]:
        return lines[-1][:300]
    return first_line(exc)
