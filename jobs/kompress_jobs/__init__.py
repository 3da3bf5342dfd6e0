"""kompress optimization pipeline: the workload every ModelOptimization Job runs, and the local CLI."""

__version__ = "0.1.0"
