"""What the CPU this Job landed on can do, read once from /proc/cpuinfo: the fingerprint reports it,
and the passes that need a CPU feature (BF16 compute) ask here, so a test can force either answer."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

from ..spec.targets import MAX_CPU_ISA_ENV, CpuIsa, capped_flags

# Native BF16 / FP16 compute: AMX tiles (Sapphire Rapids and later) or AVX-512 dot products.
# Without one of these, PyTorch and OpenVINO emulate the type through FP32, slower than FP32 itself.
HALF_PRECISION_FLAGS = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("amx_fp16", "avx512_fp16")}


def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and its feature flags (the first processor's; they are alike), as the
    target this process runs for sees them: flags above its instruction-set cap are left out."""
    model, flags = _cpu_as_built()
    return model, capped_flags(flags, cpu_cap())


def cpu_cap() -> CpuIsa | None:
    """The instruction-set cap of the target this process runs for (spec.targets[].maxCpuIsa), if any."""
    value = os.environ.get(MAX_CPU_ISA_ENV)
    return CpuIsa(value) if value in CpuIsa._value2member_map_ else None


@functools.lru_cache(maxsize=1)
def _cpu_as_built() -> tuple[str, frozenset[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    model, flags = platform.machine(), frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == platform.machine():
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def cpu_flags() -> frozenset[str]:
    return cpu_info()[1]


def cpu_lacks(precision: str) -> str | None:
    """Why this CPU cannot compute in `precision` ("bf16" or "fp16") natively, or None when it can."""
    needed = HALF_PRECISION_FLAGS[precision]
    if any(flag in cpu_flags() for flag in needed):
        return None
    return (f"this CPU ({cpu_info()[0]}) has neither {' nor '.join(needed)}, so {precision.upper()} would be emulated "
            f"through FP32 and slower than FP32 itself (it pays on CPUs with AMX or AVX-512 {precision.upper()})")
