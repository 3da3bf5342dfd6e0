"""kompress as a library: optimize a model from a notebook or a script with the same pipeline a
ModelOptimization Job runs (docs/python-api.md).

    import kompress
    report = kompress.optimize("examples/digits-cnn.yaml", output="runs/")
    print(report.best.name, report.best.vs_baseline.speedup_p50)
"""

from kompress_jobs import __version__
from kompress_jobs.api import optimize, validate
from kompress_jobs.errors import DataError, KompressError, ModelLoadError, SpecError, StoreError
from kompress_jobs.results import (
    CandidateResult, Comparison, Latency, Metric, PromotionPlan, Report, RunInfo, TrialRecord, TuningReport,
)
from kompress_jobs.status import PromotionStatus
from kompress_jobs.schema import ModelOptimization

__all__ = ["CandidateResult", "Comparison", "DataError", "KompressError", "Latency", "Metric", "ModelLoadError",
           "ModelOptimization", "PromotionPlan", "PromotionStatus", "Report", "RunInfo", "SpecError", "StoreError",
           "TrialRecord", "TuningReport", "__version__", "optimize", "validate"]
