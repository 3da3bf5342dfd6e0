"""llama.cpp's CPU variants (runtimes/llama_variants.py): each node loads the best variant it has,
as its target's instruction-set cap shows it, never the AMX variant, and x64 where nothing else runs."""

from __future__ import annotations

import pytest

from kompress_jobs.runtimes.llama_variants import VARIANTS, best_variant
from kompress_jobs.spec.targets import CpuIsa, capped_flags

pytestmark = pytest.mark.unit

BUILT = set(VARIANTS)
HASWELL = frozenset("sse4_2 avx avx2 fma f16c bmi2".split())
SKYLAKE_X = HASWELL | frozenset("avx512f avx512cd avx512vl avx512dq avx512bw".split())
CASCADE_LAKE = SKYLAKE_X | {"avx512_vnni"}
ZEN4 = CASCADE_LAKE | frozenset("avx512vbmi avx512_bf16 avx512ifma avx512_vbmi2".split())
SAPPHIRE_RAPIDS = ZEN4 | frozenset("amx_tile amx_int8 amx_bf16 avx512_fp16 avx_vnni".split())


@pytest.mark.parametrize("flags, expected", [
    (ZEN4, "zen4"), (CASCADE_LAKE, "cascadelake"), (SKYLAKE_X, "skylakex"), (HASWELL, "haswell"),
    (HASWELL | {"avx_vnni"}, "alderlake"), (frozenset({"sse2", "sse4_2"}), "x64"),
    (SAPPHIRE_RAPIDS, "zen4"),  # no AMX variant is built: its Q4_1 repacking crashed on such a Xeon
])
def test_each_cpu_gets_the_best_variant_it_has(flags, expected):
    assert best_variant(BUILT, flags) == expected


def test_a_targets_cap_hides_what_is_above_it_and_a_variant_not_built_is_never_chosen():
    assert best_variant(BUILT, capped_flags(ZEN4, CpuIsa.AVX2)) == "haswell"
    assert best_variant(BUILT, capped_flags(SAPPHIRE_RAPIDS, CpuIsa.AVX512_CORE_VNNI)) == "cascadelake"
    assert best_variant(BUILT - {"zen4"}, ZEN4) == "icelake"
    assert best_variant(set(), ZEN4) is None
