"""Where the time goes: a per-operator profile of a model from its runtime's own profiler, and
the energy an inference takes where the machine exposes a counter for it.

Profiles run in a session of their own (profiling slows a runtime down, so the benchmark's
sessions are never profiled) for a fixed number of calls at the report's primary batch size:
ONNX Runtime's session profiling (kernel time per node), the PyTorch profiler (self CPU time per
aten operator), OpenVINO's per-layer performance counters. Times are summed over the calls and
given per call. A profiled session runs slower than the benchmark's: read the shares, and the
benchmark's latencies for speed. The operators' runs are also written as a trace file (Chrome's
trace event JSON: Perfetto, chrome://tracing and TensorBoard's PyTorch profiler plugin open it).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from ..data import Inputs
from ..runtimes import ModelFile, Processor, Runner

TOP = 10
MIN_ENERGY_SECONDS = 1.0
RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


def profile_model(model: ModelFile, runner: Runner, batch: Inputs, threads: int, calls: int = 20,
                  trace_path: Path | None = None) -> dict:
    """{profiler, calls, totalMs (per call), byType [{type, ms, share, nodes}], top [{name, type, ms, share}]},
    or {profiler: None, reason} where the runtime has no profiler kompress reads. With `trace_path`,
    the operators' runs are written there and `traced` is set."""
    if runner.profiler is None:
        return {"profiler": None, "reason": f"no per-operator profile is read for {runner.runtime}"}
    for _ in range(3):  # warm: first calls allocate and pick kernels
        runner(batch)
    events: list[dict] = []
    try:
        rows = runner.profile(model, batch, threads, calls, trace=events)
    except Exception as exc:  # a profile is a diagnosis: it must not fail the run
        return {"profiler": None, "reason": f"profiling failed: {str(exc).splitlines()[0][:200]}"}
    summary = _summarize(runner.profiler, rows, calls)
    if trace_path is not None and events:
        write_trace(trace_path, events, f"{runner.runtime} ({runner.profiler} profiler), {calls} calls")
        summary["traced"] = True
    return summary


def trace_key(candidate: str) -> str:
    """Where a candidate's trace goes in the run's folder."""
    return f"traces/{candidate}.pt.trace.json"


def write_trace(path: Path, events: list[dict], process: str) -> None:
    """Chrome's trace event format (JSON object form), which Perfetto and chrome://tracing read; the
    `.pt.trace.json` name is what TensorBoard's PyTorch profiler plugin looks for."""
    named = [{"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": process}}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"traceEvents": named + events, "displayTimeUnit": "ms"}, separators=(",", ":")))


def _summarize(profiler: str, rows: list[tuple], calls: int) -> dict:
    """rows: (node name, operator type, microseconds summed over the calls[, times it ran]).
    `runsPerCall`: how often an operator type ran in one call (its nodes, or aten calls)."""
    total = sum(row[2] for row in rows) or 1.0
    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    by_node: dict[tuple[str, str], float] = defaultdict(float)
    for name, kind, us, *count in rows:
        by_type[kind][0] += us
        by_type[kind][1] += count[0] if count else 1
        by_node[(name, kind)] += us
    types = sorted(({"type": kind, "ms": us / calls / 1e3, "share": us / total, "runsPerCall": runs / calls}
                    for kind, (us, runs) in by_type.items()), key=lambda r: -r["ms"])
    top = sorted(({"name": name, "type": kind, "ms": us / calls / 1e3, "share": us / total}
                  for (name, kind), us in by_node.items()), key=lambda r: -r["ms"])[:TOP]
    return {"profiler": profiler, "calls": calls, "totalMs": total / calls / 1e3, "byType": types, "top": top}


def energy_per_call(runner: Runner, batch: Inputs, calls: int = 50) -> dict:
    """Joules per call from the GPU's NVML energy counter (a model on CUDA) or the CPU package's
    RAPL counter, or why it cannot be measured here. Either counter covers the whole device
    (other processes included): a figure to compare models measured alike on one quiet machine,
    not an absolute cost."""
    if runner.device is Processor.CUDA:
        return _nvml_energy(runner, batch, calls)
    try:
        before = int(RAPL.read_text())
    except FileNotFoundError:
        return {"measurable": False, "reason": f"{RAPL.parent} is absent (this machine or its container exposes no "
                                               "RAPL powercap counter)"}
    except OSError as exc:
        return {"measurable": False, "reason": f"{RAPL} is not readable ({exc.strerror}); reading it needs root "
                                               "or a powercap permission"}
    calls, seconds = _run_for(runner, batch, calls)
    after = int(RAPL.read_text())
    joules = (after - before) / 1e6 if after >= before else None  # the counter wrapped
    if joules is None:
        return {"measurable": False, "reason": "the RAPL counter wrapped during the measurement"}
    return _energy("RAPL package-0", joules, calls, seconds)


def _run_for(runner: Runner, batch: Inputs, calls: int) -> tuple[int, float]:
    """At least `calls` calls and at least MIN_ENERGY_SECONDS: the counters advance in steps (NVML's
    about every 100 ms), so a short burst of small calls would read as no energy at all.
    Returns (calls made, seconds)."""
    runner.synchronize()
    start, made = time.perf_counter(), 0
    while made < calls or time.perf_counter() - start < MIN_ENERGY_SECONDS:
        runner(batch)
        made += 1
    runner.synchronize()
    return made, time.perf_counter() - start


def _energy(source: str, joules: float, calls: int, seconds: float) -> dict:
    if joules <= 0:
        return {"measurable": False, "reason": f"the {source} counter did not advance in {seconds:.1f} s"}
    return {"measurable": True, "source": source, "calls": calls, "seconds": seconds, "joulesPerCall": joules / calls,
            "watts": joules / seconds}


def _nvml_energy(runner: Runner, batch: Inputs, calls: int) -> dict:
    try:
        import pynvml
    except ImportError:
        return {"measurable": False, "reason": "nvidia-ml-py (pynvml) is not installed in this image"}
    import torch

    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        runner.synchronize()
        before = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # mJ since the driver loaded (Volta and later)
        calls, seconds = _run_for(runner, batch, calls)
        after = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as exc:
        return {"measurable": False, "reason": f"NVML gives no energy counter here: {exc}"}
    return _energy(f"NVML {pynvml.nvmlDeviceGetName(handle)}", (after - before) / 1e3, calls, seconds)
