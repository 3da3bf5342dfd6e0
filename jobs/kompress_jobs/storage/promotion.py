"""Promotion: a run's pick published where a serving stack finds it, never over a better model.

Under the promotion root (default <artifacts>/<namespace>/<name>/; names in promoted.py):
  releases/<run id>/…  the promoted model's files, one folder per promotion, never rewritten
  current/…            a copy of the current release for readers of a fixed prefix (KServe's
                       storageUri): each file is replaced whole, but not all files at once
  current.json         the pointer: the release, each file's digest, the metrics. Written last,
                       in one PUT (S3) or rename (a directory): a reader of it never sees a mix.
After the switch, releases other than the new one and the one before are removed, so a reader
that read the old pointer a moment ago still finds its files.

The gate (`decide`): the promoted model is measured in the later run as one more contender,
interleaved with its candidates on its data, and the run's pick replaces it only when faster
(or smaller, or more accurate: the goal's objective) beyond the benchmark's tie tolerance, and
faster in every interleaved round, at no worse fidelity.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..measurement.candidates import Candidate
from .digest import sha256
from ..errors import KompressError, StoreError
from ..spec.goals import Objective
from .layout import resource_prefix
from ..modelfile import ModelFile, stored_as_spec_runs_it
from ..planning.plan import BASELINE
from .promoted import (
    MIRROR,
    POINTER,
    RELEASES,
    PointerFile,
    PointerModel,
    PointerRun,
    PromotedPointer,
    PromotionError,
    download_release,
    read_pointer,
    release_relative,
)
from ..reporting.results import CandidateResult, PromotionPlan, PromotionVerdict, Report
from ..spec.schema import ModelOptimizationSpec
from ..spec.sources import BUILT_ONLY, ModelFormat
from ..spec.status import PromotionDecision, PromotionStatus
from .store import ArtifactStore

CONTENDER = "@promoted"  # not a valid pass name, so it never collides with one


@dataclass
class Current:
    """The promoted model as current.json names it, fetched for measuring, or why it cannot be."""

    pointer: PromotedPointer | None  # None: there is a current.json, but it cannot be read
    model: ModelFile | None = None
    problem: str | None = None  # e.g. a file the pointer names is missing: it cannot be served either
    recorded_only: bool = False  # a library only the run that built it loads (TVM): judged by its run's figures

    @property
    def run_id(self) -> str:
        return self.pointer.run.id if self.pointer else "?"


TARGETS = "targets"  # <promotion>/targets/<target>/current.json: one pointer per hardware target


def promotion_store(artifacts: ArtifactStore, spec: ModelOptimizationSpec, namespace: str, name: str,
                    open_uri) -> ArtifactStore:
    """Where the resource's promoted model lives: spec.promotion.uri, else <artifacts>/<namespace>/<name>;
    a hardware target's under targets/<target>/ there, so each target keeps its own pick and gate."""
    base = open_uri(spec.promotion.uri) if spec.promotion.uri else artifacts.under(resource_prefix(namespace, name))
    target = spec.target()
    return base.under(f"{TARGETS}/{target.name}") if target else base


def check_writable(store: ArtifactStore) -> None:
    try:
        store.check_writable()
    except StoreError as exc:
        raise PromotionError(f"spec.promotion: {exc}") from None


def read_current(store: ArtifactStore, scratch: Path, spec: ModelOptimizationSpec,
                 input_names: tuple[str, ...]) -> Current | None:
    """The promoted model, downloaded and checked against the pointer's digests; None when
    nothing was promoted yet. A pointer naming missing or changed files is reported, not fatal:
    the run's own results stand, and its pick can replace a model that cannot be served."""
    local = scratch / "promoted"
    try:
        pointer = read_pointer(store, local)
    except PromotionError as exc:
        return Current(None, problem=str(exc))
    if pointer is None:
        return None
    model = pointer.model
    try:
        download_release(store, pointer, local)
        model_format = ModelFormat(model.format)
    except PromotionError as exc:
        return Current(pointer, problem=str(exc))
    except ValueError as exc:
        return Current(pointer, problem=f"{store.uri(POINTER)} does not say which model it is ({exc})")
    try:
        release_relative(pointer, model.path, store)
        for extra in model.extra_files:
            release_relative(pointer, extra, store)
    except PromotionError as exc:
        return Current(pointer, problem=str(exc))
    in_release = lambda path: local / release_relative(pointer, path, store)  # noqa: E731
    return Current(pointer, stored_as_spec_runs_it(in_release(model.path), model_format, model.precision, spec, input_names,
                                                   tuple(in_release(p) for p in model.extra_files), model.execution))


def contender(current: Current) -> Candidate:
    """The promoted model as a candidate that is measured with the others but never picked."""
    return Candidate(name=CONTENDER, technique=f"promoted from {current.run_id}", pass_type=None, parent=BASELINE,
                     lineage=current.pointer.lineage, model=current.model, contender=True)


def _plan(promote: bool, reason: str, message: str) -> PromotionPlan:
    return PromotionPlan(decision=PromotionVerdict.PROMOTE if promote else PromotionVerdict.KEEP, reason=reason, message=message)


def decide(pick: Candidate | None, incumbent: Candidate | None, current: Current | None,
           spec: ModelOptimizationSpec, batch: int, metric: str, baseline: Candidate | None = None) -> PromotionPlan:
    if pick is None:
        kept = f"; {current.run_id}'s model stays promoted" if current else ""
        return _plan(False, "NoCandidate", f"no candidate met the goals{kept}")
    if current is None:
        return _plan(True, "FirstPromotion", f"{pick.name} promoted (nothing was promoted before)")
    if current.recorded_only:
        return _by_recorded_figures(pick, baseline, current, spec, batch, metric) or _plan(
            True, "PromotedModelUnusable", f"{pick.name} promoted: the promoted model cannot be used ({current.problem}, "
                                           "and its run recorded no figures to compare with)")
    if current.problem or incumbent is None or not incumbent.measured:
        why = current.problem or (incumbent.error if incumbent else "it could not be loaded")
        return _plan(True, "PromotedModelUnusable", f"{pick.name} promoted: the promoted model cannot be used ({why})")
    allowed = incumbent.metric_drop + spec.promotion.fidelity_tolerance
    if pick.metric_drop > allowed + 1e-12:
        return _plan(False, "WorseFidelity", f"kept {current.run_id}'s model: {pick.name}'s {metric} drop "
                                                f"{pick.metric_drop:.4g} is above the promoted model's {incumbent.metric_drop:.4g}"
                                                + (f" + {spec.promotion.fidelity_tolerance:g}" if spec.promotion.fidelity_tolerance else ""))
    better, comparison = _compare(pick, incumbent, spec, batch, metric)
    if better:
        return _plan(True, "Better", f"{pick.name} promoted over {current.run_id}'s model: {comparison}")
    return _plan(False, "NotBetter", f"kept {current.run_id}'s model: {pick.name} is not better beyond the noise "
                                        f"tolerance: {comparison}")


def _by_recorded_figures(pick: Candidate, baseline: Candidate | None, current: Current, spec: ModelOptimizationSpec,
                         batch: int, metric: str) -> PromotionPlan | None:
    """The gate for a promoted model this run may not load (a TVM library: native code only the run
    that built it loads): the pick against the figures the promoted model's run recorded, each speedup
    over its own run's baseline; None when that run recorded none (the pick then replaces it)."""
    figures = current.pointer.metrics
    theirs, their_baseline = (figures.get(key, {}).get(str(batch)) for key in ("latencyP50Ms", "baselineP50Ms"))
    drop = (figures.get("metric") or {}).get("drop")
    if None in (theirs, their_baseline, drop) or baseline is None or batch not in pick.latency or batch not in baseline.latency:
        return None
    how = f"against the figures {current.run_id}'s run recorded ({current.problem})"
    if pick.metric_drop > drop + spec.promotion.fidelity_tolerance + 1e-12:
        return _plan(False, "WorseFidelity", f"kept {current.run_id}'s model, {how}: {pick.name}'s {metric} drop "
                                                f"{pick.metric_drop:.4g} is above its {drop:.4g}")
    objective, tolerance = spec.goals.optimize_for, spec.benchmark.tie_tolerance
    if objective is Objective.SIZE:
        new, old = pick.size_bytes, figures.get("sizeBytes") or 0
        better, comparison = new < old * 0.99, f"size {new} B vs {old} B (1% tolerance)"
    elif objective is Objective.ACCURACY:
        better, comparison = pick.metric_drop < drop - 1e-12, f"{metric} drop {pick.metric_drop:.4g} vs {drop:.4g}"
    else:
        mine, old = baseline.latency[batch].p50_ms / pick.latency[batch].p50_ms, their_baseline / theirs
        better = mine > old * (1 + tolerance)
        comparison = f"{mine:.2f}x vs {old:.2f}x its run's baseline at batch {batch} (tie tolerance {tolerance:.0%})"
    if better:
        return _plan(True, "Better", f"{pick.name} promoted over {current.run_id}'s model, {how}: {comparison}")
    return _plan(False, "NotBetter", f"kept {current.run_id}'s model, {how}: {pick.name} is not better beyond the noise "
                                        f"tolerance: {comparison}")


def _compare(pick: Candidate, incumbent: Candidate, spec: ModelOptimizationSpec, batch: int, metric: str) -> tuple[bool, str]:
    objective, tolerance = spec.goals.optimize_for, spec.benchmark.tie_tolerance
    if objective is Objective.SIZE:
        new, old = pick.size_bytes, incumbent.size_bytes
        return new < old * 0.99, f"size {new} B vs {old} B (1% tolerance)"
    if objective is Objective.ACCURACY:
        new, old = pick.metric_drop, incumbent.metric_drop
        return new < old - 1e-12, f"{metric} drop {new:.4g} vs {old:.4g}"
    # Paired over the interleaved rounds too: a real gain shows in every round, noise in some.
    mine, theirs = pick.latency[batch], incumbent.latency[batch]
    rounds = sum(n < o for n, o in zip(mine.round_medians_ms, theirs.round_medians_ms))
    faster = mine.p50_ms < theirs.p50_ms * (1 - tolerance) and rounds == len(theirs.round_medians_ms)
    return faster, (f"p50 {mine.p50_ms:.3f} ms vs {theirs.p50_ms:.3f} ms at batch {batch}, faster in {rounds} of "
                    f"{len(theirs.round_medians_ms)} interleaved rounds (tie tolerance {tolerance:.0%})")


def promote(store: ArtifactStore, run_id: str, pick: Candidate, result: CandidateResult, report: Report,
            previous: str | None) -> PromotedPointer:
    """Publish `pick` as the current model: its release, the mirror, then the pointer. Returns
    the pointer. On failure nothing the pointer names changes (PromotionError). Releases other
    than this one and `previous` (the one a reader may still be fetching) are removed after; with
    no usable previous pointer (`previous` None) none are, since which ones matter is unknown."""
    release = f"{RELEASES}/{run_id}"
    files = pick.model.relative_files()
    pointer = _pointer(run_id, pick, result, report, release, files)
    uploaded: list[str] = []
    try:
        for relative, path in files.items():
            store.put(path, f"{release}/{relative}")
            uploaded.append(f"{release}/{relative}")
        for relative, path in files.items():
            store.put(path, f"{MIRROR}/{relative}")
        store.delete(sorted(set(store.list(f"{MIRROR}/")) - {f"{MIRROR}/{r}" for r in files}))
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / POINTER).write_text(json.dumps(pointer.to_wire(), indent=2) + "\n")
            store.put(Path(folder) / POINTER, POINTER)  # the switch
    except (KompressError, OSError) as exc:
        _forget(store, uploaded)
        raise PromotionError(f"promotion to {store.uri('')} failed, the promoted model is unchanged: {exc}") from None
    if previous:
        _prune_releases(store, keep={run_id, previous})
    return pointer


def _pointer(run_id: str, pick: Candidate, result: CandidateResult, report: Report, release: str,
             files: dict[str, Path]) -> PromotedPointer:
    model = pick.model
    return PromotedPointer(
        run=PointerRun(id=run_id, name=report.run.name, namespace=report.run.namespace, finished_at=report.run.finished_at),
        promoted_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        candidate=pick.name, technique=pick.technique, lineage=pick.lineage, digest=pick.sha256, release=f"{release}/",
        model=PointerModel(path=f"{release}/{model.path.name}", format=model.format.value, precision=model.precision,
                           extra_files=[f"{release}/{p.name}" for p in model.extra_files], execution=model.execution),
        files=[PointerFile(path=f"{release}/{relative}", sha256=sha256(path), size_bytes=path.stat().st_size)
               for relative, path in files.items()],
        metrics={"metric": result.metric.to_wire() if result.metric else None, "sizeBytes": result.size_bytes,
                 "runtime": result.runtime, "device": result.device.value if result.device else None,
                 "latencyP50Ms": {str(b): s.p50_ms for b, s in result.latency.items()},
                 # what a later run compares a model it may not load with (_by_recorded_figures)
                 "baselineP50Ms": {str(b): s.p50_ms for b, s in report.baseline.latency.items()},
                 "measuredOn": report.fingerprint.cpu.model},
        inputs=report.inputs,
    )


def _forget(store: ArtifactStore, keys: list[str]) -> None:
    try:
        store.delete(keys)
    except Exception:  # the store is failing already; the original error is the one to show
        pass


def _prune_releases(store: ArtifactStore, keep: set[str | None]) -> None:
    stale = [key for key in store.list(f"{RELEASES}/") if key.split("/")[1] not in keep]
    _forget(store, stale)


class Promoter:
    """The promotion steps of one run: the promoted model as a contender, the decision, the switch."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self.current: Current | None = None

    def contender(self, scratch: Path, spec: ModelOptimizationSpec, input_names: tuple[str, ...], make_runner) -> tuple[Candidate, object] | None:
        """The promoted model and its runner, to measure with this run's candidates; None when
        there is none or it cannot be used (the decision says why)."""
        self.current = read_current(self.store, scratch, spec, input_names)
        if self.current is None or self.current.problem:
            return None
        if self.current.model.format in BUILT_ONLY:  # native code: loaded only by the run that built it
            self.current.recorded_only = True
            self.current.problem = f"a {self.current.model.format.value} library is measured only by the run that built it"
            return None
        try:
            runner = make_runner(self.current.model)
        except Exception as exc:  # a model another release wrote, or files that no longer load
            self.current.problem = f"it cannot be loaded: {str(exc).splitlines()[0][:200]}"
            return None
        return contender(self.current), runner

    def decide(self, pick: Candidate | None, candidates: list[Candidate], spec: ModelOptimizationSpec, batch: int,
               metric: str) -> PromotionPlan:
        """The gate's decision (the report's `promotion`), made once; publish() carries it out."""
        incumbent = next((c for c in candidates if c.contender), None)
        baseline = next((c for c in candidates if c.name == BASELINE), None)
        gate = decide(pick, incumbent, self.current, spec, batch, metric, baseline)
        return PromotionPlan(decision=gate.decision, reason=gate.reason, message=gate.message,
                             pointer=self.store.uri(POINTER), previous_run=self.current.run_id if self.current else None)

    def publish(self, run_id: str, pick: Candidate | None, plan: PromotionPlan, report: Report) -> PromotionStatus:
        """status.promotion: the plan carried out, and what is promoted after it."""
        if plan.promote:
            try:
                previous = self.current.run_id if self._usable_pointer() else None
                pointer = promote(self.store, run_id, pick, report.candidate(pick.name), report, previous)
                return self._status(PromotionDecision.PROMOTED, plan.reason, plan.message, pointer)
            except PromotionError as exc:
                return self._status(PromotionDecision.FAILED, exc.reason, str(exc), self._usable_pointer())
        return self._status(PromotionDecision.KEPT, plan.reason, plan.message, self._usable_pointer())

    def _usable_pointer(self) -> PromotedPointer | None:
        return self.current.pointer if self.current and not self.current.problem else None

    def _status(self, decision: PromotionDecision, reason: str, message: str, pointer: PromotedPointer | None) -> PromotionStatus:
        promoted = {}
        if pointer:  # what is promoted now: this run's pointer, or the one before when it stays
            promoted = {"uri": self.store.uri(pointer.release), "digest": pointer.digest, "run_id": pointer.run.id,
                        "candidate": pointer.candidate, "promoted_at": pointer.promoted_at}
        return PromotionStatus(decision=decision, reason=reason, message=message[:1000], pointer=self.store.uri(POINTER), **promoted)
