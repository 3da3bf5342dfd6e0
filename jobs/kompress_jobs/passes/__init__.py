"""Optimization passes. Importing this package registers every pass (heavy libraries load lazily)."""

from . import (  # noqa: F401  (registration)
    auto_quantize, distill, export, fp16, int4, lowrank, openvino, ort_optimize, prune, quantize, structured_prune, tensorrt,
    transformer_compress,
)
from .base import PASSES, OptimizationPass, PassContext, build_pass

__all__ = ["PASSES", "OptimizationPass", "PassContext", "build_pass"]
