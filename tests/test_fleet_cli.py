"""`kompress optimize` on a spec with hardware targets, on a laptop: each target runs in a process
of its own under its instruction-set cap, plans for the CPU as that cap shows it, and keeps its own
run folder and promoted model; `kompress plan --target` says the plan of each."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml


pytestmark = pytest.mark.pipeline

TARGETS = [{"name": "avx2", "maxCpuIsa": "AVX2"}, {"name": "native"}]


def test_each_target_runs_capped_in_its_own_process_and_keeps_its_own_pick(write_spec, workspace):
    spec = write_spec(name="fleet", passes=[], targets=TARGETS, promotion={})
    out = workspace / "out"
    clean = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "KOMPRESS_MAX_CPU_ISA")}
    done = subprocess.run([sys.executable, "-m", "kompress.cli", "optimize", str(spec), "-q", "--output", str(out)],
                          capture_output=True, text=True, env=clean | {"MPLBACKEND": "Agg"}, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kompress: target avx2 (AVX2 cap)" in done.stderr and "kompress: target native" in done.stderr
    runs = {path.parent.name.split("-")[1]: json.loads(path.read_text())
            for path in (out / "default" / "fleet" / "runs").glob("*/report.json")}
    assert set(runs) == {"avx2", "native"}
    capped, native = runs["avx2"]["fingerprint"]["cpu"], runs["native"]["fingerprint"]["cpu"]
    assert capped["maxIsa"] == "AVX2" and not any(f.startswith(("avx512", "amx")) for f in capped["flags"])
    assert "maxIsa" not in native
    # Each plan was made for the CPU its target sees: no BF16 under the AVX2 cap, whatever this CPU has.
    assert any("no BF16" in reason for reason in runs["avx2"]["plan"]["reasons"])
    assert runs["native"]["plan"]["automatic"] and runs["avx2"]["plan"]["automatic"]
    for name in ("avx2", "native"):
        pointer = json.loads((out / "default" / "fleet" / "targets" / name / "current.json").read_text())
        assert pointer["run"]["id"].startswith(f"fleet-{name}-")


def test_plan_prints_each_targets_plan_and_refuses_to_guess_which(write_spec):
    spec = write_spec(name="fleet", passes=[], targets=TARGETS)
    plan = lambda *extra: subprocess.run([sys.executable, "-m", "kompress.cli", "plan", str(spec), *extra],  # noqa: E731
                                         capture_output=True, text=True, timeout=300)
    capped = plan("--target", "avx2")
    assert capped.returncode == 0 and "target avx2 (capped at AVX2)" in capped.stdout and "no BF16" in capped.stdout
    assert [p["type"] for p in yaml.safe_load(capped.stdout)["passes"]] == ["OnnxExport", "AutoQuantize"]
    both = plan()
    assert both.returncode != 0 and "--target: the spec names 2 targets (avx2, native): plan one at a time" in both.stderr
    unknown = plan("--target", "arm")
    assert unknown.returncode != 0 and "no target named 'arm' in spec.targets (it names avx2, native)" in unknown.stderr


def test_the_python_api_runs_one_target_per_call(write_spec):
    from kompress_jobs.api import optimize
    from kompress_jobs.errors import SpecError

    spec = write_spec(name="fleet", targets=TARGETS)
    with pytest.raises(SpecError, match="names 2 targets \\(avx2, native\\): run one at a time"):
        optimize(spec)
