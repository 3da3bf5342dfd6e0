"""Hardware targets (spec.targets, schema.Target): the kinds of node one resource is optimized for, each with its own Job, plan
and pick (spec.targets). A target is a kind of node (its device, nodeSelector, tolerations and
resources) and, optionally, a cap on the instruction set the runtimes may use, so that two targets
really differ even on one node (a test cluster, a laptop).

What a cap reaches, and what it does not (docs/targets.md):
- oneDNN (PyTorch's convolutions and matmuls): ONEDNN_MAX_CPU_ISA;
- PyTorch's own ATen kernels: ATEN_CPU_CAPABILITY (avx2 or avx512);
- kompress's view of the CPU (measurement/hardware.py): flags above the cap are not seen, so the
  plan and the passes that need a feature (BF16 compute) decide as on the capped CPU;
- not ONNX Runtime's MLAS, nor OpenVINO's CPU plugin, nor llama.cpp: they read CPUID themselves.
"""

from __future__ import annotations

import re
from enum import Enum


# The environment variable through which a capped Job (or a laptop's child process) tells
# kompress's own view of the CPU; the runtimes' variables are derived from the same cap.
MAX_CPU_ISA_ENV = "KOMPRESS_MAX_CPU_ISA"
TARGET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class CpuIsa(str, Enum):
    """The highest instruction set a target's runtimes may use, in oneDNN's names, lowest first."""

    AVX2 = "AVX2"
    AVX512_CORE = "AVX512_CORE"
    AVX512_CORE_VNNI = "AVX512_CORE_VNNI"
    AVX512_CORE_BF16 = "AVX512_CORE_BF16"
    AVX512_CORE_AMX = "AVX512_CORE_AMX"


# /proc/cpuinfo flags each level adds to the one below it; AVX2 is the floor every target has.
_LEVEL_FLAGS: dict[CpuIsa, tuple[str, ...]] = {
    CpuIsa.AVX2: ("avx", "avx2", "fma", "f16c"),
    CpuIsa.AVX512_CORE: ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"),
    CpuIsa.AVX512_CORE_VNNI: ("avx512_vnni",),
    # Ice Lake / Cooper Lake's AVX-512 extensions come with BF16 here: no runtime kompress runs keys on them alone
    CpuIsa.AVX512_CORE_BF16: ("avx512_bf16", "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_bitalg",
                              "avx512_vpopcntdq", "avx512_vp2intersect"),
    CpuIsa.AVX512_CORE_AMX: ("amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"),
}
# Flags no cap lets through unless its level is reached: everything SIMD beyond AVX2.
_CAPPED_PREFIXES = ("avx512", "amx", "avx_vnni", "avx10")


def capped_flags(flags: frozenset[str], cap: CpuIsa | None) -> frozenset[str]:
    """The CPU's flags as a target capped at `cap` sees them; the highest cap hides nothing."""
    if cap is None or cap is list(CpuIsa)[-1]:
        return flags
    levels = list(CpuIsa)
    allowed = {flag for level in levels[: levels.index(cap) + 1] for flag in _LEVEL_FLAGS[level]}
    return frozenset(f for f in flags if f in allowed or not f.startswith(_CAPPED_PREFIXES))


def isa_environment(cap: CpuIsa | None) -> dict[str, str]:
    """The process environment that applies `cap`: set before the runtimes load."""
    if cap is None:
        return {}
    return {"ONEDNN_MAX_CPU_ISA": cap.value, "ATEN_CPU_CAPABILITY": "avx2" if cap is CpuIsa.AVX2 else "avx512",
            MAX_CPU_ISA_ENV: cap.value}
