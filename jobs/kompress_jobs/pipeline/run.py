"""One optimization run: load → baseline → passes → measure → select → report → upload.

All work happens in a scratch folder; the artifact store sees nothing until the run is complete,
then receives the candidate files and reports, and manifest.json last. If an upload fails the
files already sent are deleted again, so a reader either finds a manifest or nothing.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable

from .. import __version__
from ..measurement.candidates import Candidate
from ..measurement.fingerprint import machine_fingerprint
from ..measurement.selection import judge, mark_pareto_front, primary_batch_size, rank
from ..planning.auto_plan import Plan, planned
from ..planning.plan import BASELINE, plan_passes
from ..planning.preflight import check_local_inputs
from ..planning.search_space import plan_tuning
from ..reporting.report import candidate_result
from ..reporting.results import Report, RunInfo
from ..runtimes import make_runner
from ..spec.goals import Benchmark
from ..errors import SpecError
from ..spec.schema import ModelOptimization
from ..spec.targets import isa_environment
from ..storage.digest import sha256
from ..storage.layout import kept_prefix, run_prefix
from ..tuning.parallel_study import StudyCollector, StudyWorker, WorkerRun
from ..tuning.study import LocalStudy
from .budget import BudgetClock
from .chain import ancestry, run_passes
from .inputs import fetch_and_load, local_input, open_run_store, promoter
from .measure import measure, profiles
from .publish import RunResult, publish

Progress = Callable[[str], None]


def new_run_id(name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}-{secrets.token_hex(3)}"


def run_optimization(
    resource: ModelOptimization,
    *,
    base_dir: Path = Path("."),
    artifacts_uri: str | None = None,
    run_id: str | None = None,
    progress: Progress = lambda _: None,
    study_storage: str | None = None,
    library_log: Path | None = None,
) -> RunResult:
    """With `study_storage`, a parallel study's trials already ran in the tuning Job's Pods: the
    run reads its best trials from the shared study instead of running any. `library_log`: what the
    libraries printed during the run (library_output.py), published in the run folder."""
    check_target_environment(resource.spec)
    budget = BudgetClock.of(resource.spec)  # from the start: loading the model and data counts
    resource, plan = planned(resource, base_dir)  # a spec without passes: planned for this machine
    if plan.automatic:
        progress("planned for this machine: " + "; ".join(plan.reasons))
    spec = resource.spec
    steps = plan_passes(spec)
    check_local_inputs(spec, base_dir)  # what `kompress validate` checks, before anything is spent
    target = spec.target()
    run = _Run(resource, run_id or new_run_id(resource.metadata.name + (f"-{target.name}" if target else "")), _now(),
               progress, plan)
    store = open_run_store(spec, base_dir, artifacts_uri)
    store.check_writable()  # fail before spending minutes on work that cannot be saved
    promoted = promoter(resource, store, base_dir)

    with tempfile.TemporaryDirectory(prefix="kompress-") as scratch_name:
        scratch = Path(scratch_name)
        model_path, data_path, (dataset, baseline, runners) = fetch_and_load(spec, base_dir, scratch, progress)
        fetch = lambda uri: local_input(uri, spec, base_dir, scratch)  # noqa: E731
        run_chain = partial(run_passes, dataset=dataset, spec=spec, progress=progress, fetch=fetch)
        kept = store.under(kept_prefix(resource.metadata.namespace, resource.metadata.name))
        made = run_chain(steps, {BASELINE: baseline}, scratch / "candidates", runners=runners, budget=budget, kept=kept)
        budget.check_something_made(made)
        candidates = [baseline] + made
        tuning_report = None
        if spec.tuning is not None and budget.spent():
            progress(f"tuning: skipped: {budget.why()}")
        elif spec.tuning is not None:
            spec = within_budget(spec, budget, progress)
            study = (resource.metadata, spec, plan_tuning(spec, steps), {c.name: c for c in candidates},
                     dataset, scratch, store, partial(run_chain, runners=None, quiet=True), progress)
            if spec.tuning.parallelism > 1 and not study_storage:
                progress(f"tuning: parallelism {spec.tuning.parallelism} applies on the cluster; here the trials run one at a time")
            tuned = StudyCollector(*study, storage_url=study_storage).collect() if study_storage else LocalStudy(*study).run()
            for candidate in tuned.candidates:
                runners[candidate.name] = make_runner(candidate.model, threads=spec.benchmark.threads, input_names=dataset.input_names)
            candidates, tuning_report = candidates + tuned.candidates, tuned.report
        if promoted:
            incumbent = promoted.contender(scratch, spec, dataset.input_names, partial(
                make_runner, threads=spec.benchmark.threads, input_names=dataset.input_names))
            if incumbent:
                candidates.append(incumbent[0])
                runners[incumbent[0].name] = incumbent[1]
        measured = measure(candidates, runners, dataset, spec, progress)
        typed = run.report(candidates, measured, runners, dataset, scratch, promoted, tuning_report,
                           inputs={"model": {"uri": spec.model.uri, "sha256": sha256(model_path)},
                                   "inputNames": list(dataset.input_names),
                                   "data": {"uri": spec.data.uri, "sha256": sha256(data_path)}})
        progress("writing report and uploading artifacts")
        meta = resource.metadata
        result = publish(store.under(run_prefix(meta.namespace, meta.name, run.id)), run.id, typed, candidates, scratch, library_log)
        if promoted:
            pick = next((c for c in candidates if c.rank == 1), None)
            result.promotion = promoted.publish(run.id, pick, typed.promotion, typed)
            progress(f"promotion: {result.promotion.decision.value}: {result.promotion.message}")
        result.results = typed.model_copy(update={"run_uri": result.run_uri, "manifest_sha256": result.manifest_sha256,
                                                  "promotion_status": result.promotion})
        return result


def within_budget(spec, budget: BudgetClock, progress: Progress):
    """The spec whose study stops starting trials when the budget is spent (tuning.timeoutSeconds)."""
    if budget.duration is None:
        return spec
    left = int(budget.remaining())
    if spec.tuning.timeout_seconds is not None and spec.tuning.timeout_seconds <= left:
        return spec
    progress(f"tuning: {left} s of spec.budget.duration {budget.duration} left: no trial starts after that")
    return spec.model_copy(update={"tuning": spec.tuning.model_copy(update={"timeout_seconds": max(1, left)})})


def check_target_environment(spec) -> None:
    """A spec with several targets runs one (the operator's Job, `kompress optimize --target`), and a
    capped target in a process its cap was applied to from the start: the runtimes read it once."""
    if len(spec.targets) > 1:
        raise SpecError(f"spec.targets names {len(spec.targets)} targets: a run is for one of them (--target NAME)")
    target = spec.target()
    missing = {k: v for k, v in isa_environment(target.max_cpu_isa if target else None).items() if os.environ.get(k) != v}
    if missing:
        raise SpecError(f"spec.targets[{target.name}].maxCpuIsa: this process was not started under the cap "
                        f"({' '.join(f'{k}={v}' for k, v in missing.items())}); `kompress optimize --target {target.name}` "
                        f"and the operator's Job set it")


class _Run:
    """What a run knows of itself while it judges its candidates and writes its report."""

    def __init__(self, resource: ModelOptimization, run_id: str, started: str, progress: Progress, plan: Plan):
        self.resource, self.id, self.started, self.progress, self.plan = resource, run_id, started, progress, plan

    def report(self, candidates: list[Candidate], measured: list[Candidate], runners: dict, dataset, scratch: Path,
               promoted, tuning_report, inputs: dict) -> Report:
        """Judge against the goals, keep the front, rank, profile the baseline and the pick, decide
        promotion: the typed report everything published is rendered from."""
        spec, meta = self.resource.spec, self.resource.metadata
        batch = primary_batch_size(spec.goals, spec.benchmark)
        judge(candidates, spec.goals, spec.benchmark, spec.task.metric)
        front = mark_pareto_front(candidates, batch)
        ranked = rank(candidates, spec.goals, spec.benchmark)
        profiled = [] if spec.task.generative else [c for c in measured if c.is_baseline or c.rank == 1]
        profiled_runs = profiles(profiled, runners, dataset, spec, batch, self.progress, scratch)
        for c in measured:
            if not c.is_baseline and not c.contender:
                c.sha256 = sha256(c.model.path)
                c.artifact_key = f"candidates/{c.name}/{c.model.path.name}"  # a directory's prefix for a checkpoint
        pick = ranked[0] if ranked else None
        plan = promoted.decide(pick, candidates, spec, batch, spec.task.metric.value) if promoted else None
        by_name = {c.name: c for c in candidates}
        return Report(
            run=RunInfo(id=self.id, name=meta.name, namespace=meta.namespace, started_at=self.started,
                        finished_at=_now(), kompress_version=__version__),
            spec=spec.to_wire(), fingerprint=machine_fingerprint(),
            benchmark=Benchmark.model_validate(spec.benchmark.to_wire()),  # every setting set: report.json lists them all
            metric=spec.task.metric.value, primary_batch_size=batch, best_name=pick.name if pick else None,
            pareto_front_names=[c.name for c in front], candidates=[candidate_result(c, by_name, batch) for c in candidates],
            profiles=profiled_runs, inputs=inputs, plan=self.plan.to_wire() if self.plan.automatic else None,
            **({"tuning": tuning_report} if tuning_report else {}), **({"promotion": plan} if plan else {}))


def run_tuning_worker(resource: ModelOptimization, *, study_storage: str, attempt: str, artifacts_uri: str | None = None,
                      progress: Progress = lambda _: None) -> tuple[str, WorkerRun]:
    """One worker Pod of a parallel study: the passes the tuned chain starts from, then trials on
    the shared study until it is over. Returns the study's name and what this worker did."""
    spec = resource.spec
    steps = plan_passes(spec)
    plan = plan_tuning(spec, steps)
    store = open_run_store(spec, Path("."), artifacts_uri)
    with tempfile.TemporaryDirectory(prefix="kompress-") as scratch_name:
        scratch = Path(scratch_name)
        _, _, (dataset, baseline, _) = fetch_and_load(spec, Path("."), scratch, progress)
        fetch = lambda uri: local_input(uri, spec, Path("."), scratch)  # noqa: E731
        run_chain = partial(run_passes, dataset=dataset, spec=spec, progress=progress, fetch=fetch, runners=None)
        head = [step for step in steps if step.name in ancestry(steps, plan.start)]
        known = {c.name: c for c in [baseline] + run_chain(head, {BASELINE: baseline}, scratch / "candidates")}
        study = StudyWorker(resource.metadata, spec, plan, known, dataset, scratch, store, partial(run_chain, quiet=True),
                            progress, storage_url=study_storage, attempt=attempt)
        return study.key, study.work()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
