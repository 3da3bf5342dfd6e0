"""llama.cpp's CPU kernels as run-time variants: the job image's llama-cpp-python is built with
GGML_BACKEND_DL and one CPU backend library per variant below (scripts/build-llama-wheel reads this
list), and the process that runs a model loads the best one this CPU has, as the target's
instruction-set cap lets it see the CPU. One image for every node of a fleet, each node on its own
best kernels; a variant the node lacks is never loaded, so never crashes it.

Left out on purpose: the AMX variant (sapphirerapids). Its repacking of Q4_1 tensors segfaulted at
the first inference on a Xeon with AMX; such a CPU runs the zen4 variant (AVX-512 VNNI and BF16).

    python jobs/kompress_jobs/runtimes/llama_variants.py   (prints the names, for the build script)
"""

from __future__ import annotations

import ctypes
from pathlib import Path

# Best first: the /proc/cpuinfo flags each needs (ggml's own score refuses a CPU without them too)
_AVX2 = ("avx", "avx2", "fma", "f16c", "bmi2")
_AVX512 = _AVX2 + ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")
VARIANTS: dict[str, tuple[str, ...]] = {
    "zen4": _AVX512 + ("avx512vbmi", "avx512_vnni", "avx512_bf16"),
    "icelake": _AVX512 + ("avx512vbmi", "avx512_vnni"),
    "cascadelake": _AVX512 + ("avx512_vnni",),
    "skylakex": _AVX512,
    "alderlake": _AVX2 + ("avx_vnni",),
    "haswell": _AVX2,
    "x64": (),
}

_loaded: str | None = None


def best_variant(built: set[str], flags: frozenset[str]) -> str | None:
    """The best of the `built` variants a CPU with `flags` runs."""
    return next((name for name, needs in VARIANTS.items() if name in built and flags.issuperset(needs)), None)


def built_variants(lib_dir: Path) -> set[str]:
    """The variants whose CPU backend library the build put in `lib_dir`."""
    return {path.name[len("libggml-cpu-"): -len(".so")] for path in lib_dir.glob("libggml-cpu-*.so")}


def load_cpu_backend(lib_dir: Path) -> str | None:
    """Load the best CPU variant in `lib_dir` this CPU has (as the target's cap shows it), once per
    process; its name. None when the build has its CPU backend compiled in (no variant libraries)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    built = built_variants(lib_dir)
    if not built:
        return None
    from ..errors import ModelLoadError
    from ..measurement.hardware import cpu_flags

    name = best_variant(built, cpu_flags())
    # through libllama, the library the bindings load: the wheel holds libggml.so and libggml.so.0 as two
    # files, and only the one libllama links (its dependency) is the registry a model load looks in
    ggml = ctypes.CDLL(str(lib_dir / "libllama.so"))
    ggml.ggml_backend_load.argtypes, ggml.ggml_backend_load.restype = [ctypes.c_char_p], ctypes.c_void_p
    if name is None or not ggml.ggml_backend_load(str(lib_dir / f"libggml-cpu-{name}.so").encode()):
        raise ModelLoadError(f"llama.cpp: no CPU variant in {lib_dir} ({', '.join(sorted(built))}) loads on this CPU")
    _loaded = name
    return name


if __name__ == "__main__":
    print(" ".join(VARIANTS))
