"""Optimization passes. Importing this package registers every pass (heavy libraries load lazily)."""

from . import auto_quantize, distill, export, fp16, lowrank, ort_optimize, prune, quantize, structured_prune, tensorrt  # noqa: F401  (registration)
from .base import PASSES, OptimizationPass, PassContext, build_pass

__all__ = ["PASSES", "OptimizationPass", "PassContext", "build_pass"]
