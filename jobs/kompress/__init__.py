"""kompress as a library: optimize a model from a notebook or a script with the same pipeline a
ModelOptimization Job runs (docs/python-api.md).

    import kompress
    report = kompress.optimize("examples/digits-cnn.yaml", output="runs/")
    print(report.best.name, report.best.vs_baseline.speedup_p50)

The names load on first use: `kompress.cli` (the command line, which the operator's image runs)
imports this package, and must not pull numpy or the report's types with it.
"""

from __future__ import annotations

import importlib

from kompress_jobs import __version__  # noqa: F401  (re-exported)
from kompress_jobs.errors import DataError, KompressError, ModelLoadError, SpecError, StoreError  # noqa: F401

_LAZY = {
    "kompress_jobs.api": ("optimize", "validate"),
    "kompress_jobs.reporting.results": ("CandidateResult", "Comparison", "Latency", "Metric", "PromotionPlan", "Report",
                                        "RunInfo", "TrialRecord", "TuningReport"),
    "kompress_jobs.spec.status": ("PromotionStatus",),
    "kompress_jobs.spec.schema": ("ModelOptimization",),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted(["DataError", "KompressError", "ModelLoadError", "SpecError", "StoreError", "__version__", *_HOME])


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'kompress' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
