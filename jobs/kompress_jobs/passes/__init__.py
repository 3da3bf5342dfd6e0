"""Optimization passes. Importing this package registers every pass: each module of the package is
imported once, and a pass module registers its pass with its settings (heavy libraries load lazily,
inside the passes, so the operator plans passes without numpy or the runtimes)."""

import importlib
import pkgutil

from .base import PASSES, OptimizationPass, PassContext, build_pass

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PASSES", "OptimizationPass", "PassContext", "build_pass"]
