"""Measuring candidates the same way: latency (benchmark.py), task quality (quality.py), per-operator
profiles and energy (profiling.py), peak memory (memory_probe.py), the machine (fingerprint.py,
hardware.py), and judging them against the goals (selection.py, ties.py)."""
