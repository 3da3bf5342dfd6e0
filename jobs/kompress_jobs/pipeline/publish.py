"""Publishing a run: report.json, report.md, the charts, the traces and every candidate's files into
the run's folder, manifest.json last; if an upload fails, what was sent is deleted again, so a
reader finds either a manifest or nothing."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..measurement.candidates import Candidate
from ..reporting.charts import plot_comparison, plot_pareto
from ..reporting.library_output import LOG_NAME as LIBRARY_LOG
from ..reporting.profile_report import plot_profiles
from ..reporting.report import render_markdown, write_json
from ..reporting.results import ManifestFile, Report, RunManifest
from ..spec.status import PromotionStatus
from ..storage.digest import sha256
from ..storage.store import ArtifactStore

SPEC = "spec.yaml"


def spec_yaml(report: Report) -> str:
    """The resource the run ran (its planned passes written in): `kubectl apply -f` takes it as it is."""
    import yaml

    metadata = {"name": report.run.name} | ({"namespace": report.run.namespace} if report.run.namespace else {})
    return yaml.safe_dump({"apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization", "metadata": metadata,
                           "spec": report.spec}, sort_keys=False)


@dataclass
class RunResult:
    run_id: str
    report: dict  # report.json as written (results: the same as types)
    run_uri: str
    manifest_uri: str
    manifest_sha256: str
    promotion: PromotionStatus | None = None  # status.promotion, with spec.promotion
    results: Report | None = None  # the report as types (results.py), with where it went


def publish(store: ArtifactStore, run_id: str, typed: Report, candidates: list[Candidate], scratch: Path,
             library_log: Path | None) -> RunResult:
    """Into `store`, the run's own folder (layout.run_prefix)."""
    report = typed.to_wire()  # report.json is what the types hold, nothing else
    out = scratch / "out"
    out.mkdir()
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(typed))
    (out / SPEC).write_text(spec_yaml(typed))
    plot_pareto(typed, out / "pareto.png")
    charts = ["pareto.png"] + [name for name, drawn in (("comparison.png", plot_comparison(typed, out / "comparison.png")),
                                                         ("profile.png", plot_profiles(typed, out / "profile.png"))) if drawn]

    files = {key: path for c in candidates if c.artifact_key for key, path in c.artifact_files().items()}
    files |= {name: out / name for name in ("report.json", "report.md", SPEC, *charts)}
    files |= {p["trace"]: scratch / p["trace"] for p in typed.profiles.values() if p.get("trace")}
    if library_log is not None:  # as it is now: the libraries are still writing to it
        shutil.copyfile(library_log, out / LIBRARY_LOG)
        files[LIBRARY_LOG] = out / LIBRARY_LOG
    known = {c.artifact_key: c.sha256 for c in candidates if c.artifact_key and not c.model.path.is_dir()}
    manifest = RunManifest.of(typed, [ManifestFile(path=key, sha256=known.get(key) or sha256(path), size_bytes=path.stat().st_size)
                                      for key, path in files.items()])
    write_json(out / "manifest.json", manifest.to_wire())

    uploaded: list[str] = []
    try:
        for key, path in files.items():
            store.put(path, key)
            uploaded.append(key)
        store.put(out / "manifest.json", "manifest.json")  # last: it marks the run complete
    except BaseException:
        try:
            store.delete(uploaded)
        except Exception:  # the store is failing already; the original error is the one to show
            pass
        raise
    return RunResult(run_id, report, store.uri(""), store.uri("manifest.json"), sha256(out / "manifest.json"))
