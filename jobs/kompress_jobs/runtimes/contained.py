"""A native runtime's first run, in a child process: a library that crashes (a segfault in a kernel
built for another CPU, a malformed program) fails one candidate with the signal named, not the run."""

from __future__ import annotations

from ..child_python import run_python
from ..errors import ModelLoadError
from ..modelfile import ModelFile


def survives_in_a_child(model: ModelFile, code: str, runtime: str, doing: str, timeout: float = 300) -> None:
    """Run `code` (argv[1]: the model's path; it prints "ok") isolated; ModelLoadError naming the
    signal or the last line of its error when it does not finish."""
    done = run_python(code=code, args=[str(model.path)], timeout=timeout)
    if done.returncode != 0 or "ok" not in done.stdout:
        how = (f"was killed by signal {-done.returncode}" if done.returncode < 0
               else f"failed ({(done.stderr.strip().splitlines() or ['exit ' + str(done.returncode)])[-1][:200]})")
        raise ModelLoadError(f"model file {model.path}: {runtime} {how} {doing}, in a process of its own; "
                             "this candidate is left out")
