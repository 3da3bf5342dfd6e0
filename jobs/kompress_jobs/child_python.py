"""The one way kompress starts a Python process of its own (the memory probe, the OpenVINO exporter,
the ONNX Runtime GenAI builder): isolated from whatever a tenant could have placed around it.

- `python -I`: no working folder or script folder on sys.path, no PYTHON* variables, no user site,
  so a `numpy.py` downloaded into a scratch folder is never imported in place of numpy; the folders
  the child needs are put on its path by name.
- an empty working folder of its own, removed afterwards;
- an environment of only what the libraries need to run as the pipeline does (threads, locale,
  GPU selection, library paths): never the storage credentials or the study database's URL, which
  the child does not need and a model it loads must not read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

# a hardware target's cap (spec/targets.py) holds in a child as in its parent
_PASSED = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "ATEN_CPU_CAPABILITY",
                     "KOMPRESS_MAX_CPU_ISA", "TVM_NUM_THREADS"})
# thread pools and instruction-set caps (OpenMP, MKL, OpenBLAS, oneDNN), GPU selection, locale
_PASSED_PREFIXES = ("LC_", "OMP_", "MKL_", "OPENBLAS_", "ONEDNN_", "DNNL_", "KMP_", "GOTO_", "CUDA_", "NVIDIA_")

# What `-I` leaves out, put back by name: the folders the child imports from, then the module or code.
_BOOT = ("import json, runpy, sys\n"
         "sys.path[:0] = json.loads(sys.argv[1])\n"
         "what, target = sys.argv[2], sys.argv[3]\n"
         "sys.argv = [target, *sys.argv[4:]]\n"
         "if what == 'module':\n"
         "    runpy.run_module(target, run_name='__main__', alter_sys=True)\n"
         "else:\n"
         "    exec(compile(target, '<kompress child>', 'exec'), {'__name__': '__main__'})\n")


def child_environment(extra: Mapping[str, str] = {}, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a child gets: the allowed ones of `base` (this process's), then `extra`."""
    base = os.environ if base is None else base
    kept = {k: v for k, v in base.items() if k in _PASSED or k.startswith(_PASSED_PREFIXES)}
    return kept | dict(extra)


def run_python(*, module: str | None = None, code: str | None = None, args: Sequence[str] = (),
               paths: Sequence[Path] = (), env: Mapping[str, str] = {},
               timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args` (or the code with args as sys.argv[1:]) isolated, in an empty
    working folder; output captured as text. subprocess.TimeoutExpired past `timeout`."""
    with tempfile.TemporaryDirectory(prefix="kompress-child-") as home:
        return subprocess.run(_command(module, code, args, paths), capture_output=True, text=True, timeout=timeout,
                              cwd=home, env=child_environment({"HOME": home, **env}))


def start_python(home: Path, *, module: str, args: Sequence[str] = (), paths: Sequence[Path] = (),
                 stderr=None) -> subprocess.Popen:
    """`python -m module args`, isolated as run_python's, left running in `home` (an empty folder the
    caller made and removes) with binary pipes on its stdin and stdout."""
    return subprocess.Popen(_command(module, None, args, paths), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=stderr, cwd=home, env=child_environment({"HOME": str(home)}))


def _command(module: str | None, code: str | None, args: Sequence[str], paths: Sequence[Path]) -> list[str]:
    if (module is None) == (code is None):
        raise ValueError("a child runs a module or code, not both")
    what, target = ("module", module) if module is not None else ("code", code)
    return [sys.executable, "-I", "-c", _BOOT, json.dumps([str(p) for p in paths]), what, target, *args]


def how_it_ended(done: subprocess.CompletedProcess) -> str:
    """"was killed by signal N" or "failed (exit N)", for a one-line error about a child that failed."""
    return f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"failed (exit {done.returncode})"


def last_line(done: subprocess.CompletedProcess, otherwise: str = "") -> str:
    """What a failed child said last (its error's one line, stderr before stdout), for a one-line
    PassError; `exit N` and `otherwise` when it said nothing."""
    lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit {done.returncode}{otherwise}"
