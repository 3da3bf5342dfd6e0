"""llama.cpp's own tools for the quantizations the Python bindings cannot do: an importance matrix
from calibration text (`llama-imatrix`), and a quantization guided by it (`llama-quantize --imatrix`).
The matrix is a C++ map that llama_model_quantize takes as a pointer the bindings cannot build, so
both run as llama.cpp's programs, built from the same llama.cpp as the bindings
(scripts/build-llama-tools). Each runs in a process of its own with the child's environment: a
native crash costs the build, not the run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ..child_python import child_environment, how_it_ended
from ..errors import PassError

TOOLS_ENV = "KOMPRESS_LLAMA_TOOLS"
TOOLS = ("llama-imatrix", "llama-quantize")


def tools_dir() -> Path:
    """Where the tools are: $KOMPRESS_LLAMA_TOOLS, else `llama-tools` in the Python environment's
    folder (scripts/setup-venv and the job image put them there)."""
    return Path(os.environ.get(TOOLS_ENV) or Path(sys.prefix) / "llama-tools")


def unavailable() -> str | None:
    missing = [tool for tool in TOOLS if not os.access(tools_dir() / "bin" / tool, os.X_OK)]
    if missing:
        return (f"llama.cpp's {' and '.join(missing)} not found in {tools_dir() / 'bin'} (scripts/build-llama-tools "
                f"builds them; or set {TOOLS_ENV})")
    return None


def importance_matrix(model: Path, text: str, output: Path, *, context: int, threads: int, timeout: float = 3600) -> Path:
    """The importance matrix of `model` over `text` (whole chunks of `context` tokens), as GGUF."""
    calibration = output.with_suffix(".txt")
    calibration.write_text(text, encoding="utf-8")
    _run("llama-imatrix", ["-m", str(model.resolve()), "-f", str(calibration.resolve()), "-o", str(output.resolve()),
                           "-c", str(context), "-t", str(threads), "--no-ppl"], output, timeout)
    return output


def quantize(source: Path, output: Path, kind: str, *, imatrix: Path | None, threads: int, timeout: float = 3600) -> None:
    """`source` re-quantized to llama.cpp's type `kind`, guided by `imatrix` where given."""
    guided = ["--imatrix", str(imatrix.resolve())] if imatrix is not None else []
    _run("llama-quantize", ["--allow-requantize", *guided, str(source.resolve()), str(output.resolve()), kind, str(threads)],
         output, timeout)


def _run(tool: str, args: list[str], output: Path, timeout: float) -> None:
    try:
        done = subprocess.run([str(tools_dir() / "bin" / tool), *args], capture_output=True, text=True, timeout=timeout,
                              cwd=output.parent, env=child_environment())
    except subprocess.TimeoutExpired:
        raise PassError(f"llama.cpp's {tool} did not finish within {timeout:g} s") from None
    if done.returncode != 0 or not output.is_file():
        said = _said(done)
        raise PassError(f"llama.cpp's {tool} {how_it_ended(done)}" + (f": {said}" if said else ""))


def _said(done: subprocess.CompletedProcess) -> str:
    """The last error line a tool logged ("0.00.002 E main : failed to init"), without its stamp; else its last line."""
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if _LOGGED_ERROR.match(line)]
    return _LOGGED.sub("", (errors or lines or [""])[-1])[:300]


_LOGGED, _LOGGED_ERROR = re.compile(r"^[\d.]+ [A-Z] "), re.compile(r"^[\d.]+ E ")  # llama.cpp's log prefix: time, level
