"""Peak resident memory of each candidate, as a serving process would pay it: a fresh Python process
loads the model with its runtime and runs it once on a real batch (a language model: one generation
of the benchmark's length), and reports its own peak RSS (VmHWM). A process of its own, because
in the pipeline's process every candidate, the libraries of all runtimes and the data share one
heap that never shrinks. The figure includes the interpreter and the runtime's libraries, which a
serving process loads too; compare candidates of one run.

    python -m kompress_jobs.measurement.memory_probe REQUEST.json   (what peak_memory runs; prints one JSON line)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..child_python import run_python
from ..modelfile import ModelFile

PROBE_TIMEOUT = 900  # seconds: loading a large model in a cold process is slow, but never unbounded


@dataclass(frozen=True)
class Probe:
    """What a probe runs: one call on `batch`, or (new_tokens set) one greedy generation from it."""

    batch: dict[str, np.ndarray]
    threads: int
    new_tokens: int | None = None


def peak_memory(model: ModelFile, probe: Probe) -> dict:
    """{"measurable": True, "peakBytes": n} or {"measurable": False, "reason": ...}."""
    package_root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="kompress-memory-") as folder:
        inputs = Path(folder) / "inputs.npz"
        np.savez(inputs, **probe.batch)
        request = {"model": model.to_record(), "inputs": str(inputs), "threads": probe.threads, "newTokens": probe.new_tokens}
        (Path(folder) / "request.json").write_text(json.dumps(request))
        try:  # isolated: the model it loads sees no storage credentials and no planted module
            done = run_python(module="kompress_jobs.measurement.memory_probe", args=[str(Path(folder) / "request.json")],
                              paths=[package_root], timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            return {"measurable": False, "reason": f"the probe process did not finish within {PROBE_TIMEOUT} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return {"measurable": False, "reason": f"the probe process failed: {last[:300]}"}
    return json.loads(lines[-1])


def main(request_path: str) -> None:
    from ..runtimes import make_runner

    request = json.loads(Path(request_path).read_text())
    model = ModelFile.of_record(request["model"])
    with np.load(request["inputs"], allow_pickle=False) as stored:
        batch = {name: stored[name] for name in stored.files}
    # contain=False: this process is already the model's own, and its peak is what is measured
    runner = make_runner(model, threads=request["threads"], input_names=tuple(batch) if not model.generative else None,
                         contain=False)
    if request["newTokens"]:
        runner.generate(next(iter(batch.values())), request["newTokens"])
    else:
        runner(batch)
    print(json.dumps({"measurable": True, "peakBytes": high_water_mark()}))


def high_water_mark() -> int:
    """This process's peak resident set in bytes: VmHWM, which starts afresh at exec (getrusage's
    ru_maxrss does not: a forked child inherits its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no procfs: an upper bound


if __name__ == "__main__":
    main(sys.argv[1])
