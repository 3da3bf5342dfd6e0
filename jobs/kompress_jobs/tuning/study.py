"""Hyperparameter search over pass parameters with Optuna (`spec.tuning`).

Each trial reruns the tuned chain (first searched pass → target) with sampled values, then judges
the target's output on the validation split: metric drop, size and a short latency measurement.
The goals become constraints. The study lives in an Optuna journal that is uploaded to the
artifact store after every trial, together with the model of every trial that is best so far,
so a killed Job resumes the study where it stopped and never loses its best model. The best
trials become ordinary candidates and are measured by the full benchmark like every other.

With `parallelism` above 1 the study lives in a shared database instead (study_storage.py): each
worker Pod of the tuning Job runs trials until the study is over, and the run's Job later only
reads the study (parallel_study.py); trial models go to the store as in a single-Pod study.
Here: what every study shares (`Study`: the Optuna study, judging a trial, the best trials and the
report), and the single-Pod study (`LocalStudy`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..data import Dataset
from ..errors import KompressError
from ..measurement.benchmark import measure_latency
from ..measurement.candidates import Candidate
from ..measurement.quality import Scorer, predict
from ..measurement.selection import primary_batch_size
from ..passes import build_pass
from ..passes.training import first_output
from ..planning.plan import Step
from ..planning.search_space import SearchParameter, TuningPlan, discrete_points, unmeasured, with_values
from ..runtimes import ModelFile, make_runner
from ..spec.goals import Benchmark, Objective
from ..spec.schema import ModelOptimizationSpec, ObjectMeta
from ..storage.layout import local_path, study_prefix
from ..storage.store import ArtifactStore
from .study_report import StopKind, StopReason, TuningReport, count_trials, feasible, judged_trials, study_report, taken_points
from .study_storage import where
from .trial_record import Attr, SavedModel, attr, has, put

# The pipeline's pass loop: run_chain(steps, known_candidates, folder, on_epoch=...) -> candidates.
ChainRunner = Callable[..., list[Candidate]]


class TrialStopped(BaseException):
    """Raised inside a pass's training loop to abandon a weak trial. A BaseException, so the pass
    loop's own error handling (which records failures) lets it through to Optuna."""


@dataclass
class TuningResult:
    candidates: list[Candidate]
    report: TuningReport


def study_key(namespace: str | None, name: str, spec: ModelOptimizationSpec) -> str:
    """Where the study lives in the store: the same inputs and search give the same study, so a
    restarted Job resumes it; a changed spec starts a new one. Budget fields are left out, so
    raising `trials` continues the study instead of starting over."""
    tuning = spec.tuning.to_wire()
    for budget in ("trials", "timeoutSeconds", "maxFailedTrials", "stopWhenAcceptable", "keepBest",
                   "parallelism", "storageSecret", "heartbeatSeconds"):
        tuning.pop(budget, None)
    identity = {"model": spec.model.to_wire(), "data": spec.data.to_wire(), "task": spec.task.to_wire(),
                "passes": [p.to_wire() for p in spec.passes], "goals": spec.goals.to_wire(), "tuning": tuning,
                "threads": spec.benchmark.threads, "batch": primary_batch_size(spec.goals, spec.benchmark)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return study_prefix(namespace, name, digest)


class Study:
    """What every tuning study shares: its Optuna study, where it is stored, how a trial is judged,
    and its best trials as candidates. The modes are LocalStudy (here) and parallel_study.py's."""

    storage_url: str | None = None  # a shared database (parallel studies); None: the journal in the store

    def __init__(self, resource: ObjectMeta, spec: ModelOptimizationSpec, plan: TuningPlan, known: dict[str, Candidate],
                 dataset: Dataset, scratch: Path, store: ArtifactStore, run_chain: ChainRunner,
                 progress: Callable[[str], None]):
        self.spec, self.tuning, self.plan, self.known = spec, spec.tuning, plan, known
        self.points = discrete_points(plan)  # a small discrete space, listed: no point is measured twice
        self.scratch, self.store, self.run_chain, self.progress = scratch / "tuning", store, run_chain, progress
        self.key = study_key(resource.namespace, resource.name, spec)
        self.journal = self.scratch / "journal.log"
        self.validation = dataset.split(spec.tuning.validation_split)
        self.input_names = dataset.input_names
        self.batch = primary_batch_size(spec.goals, spec.benchmark)
        self.local_models: dict[int, ModelFile] = {}
        self.stop_reason = StopReason.budget()
        self.current_trial: int | None = None  # the trial this process runs now
        self.trial_started: Callable[[], None] = lambda: None  # a parallel worker frees the trial slot here
        self._scorer: Scorer | None = None  # the baseline's validation outputs, read once a mode starts

    # --- the study ---------------------------------------------------------------------

    def _create(self, storage, seed: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            storage=storage, study_name=self.key, load_if_exists=True,
            directions=["minimize"] * len(self.tuning.objectives),
            # constant_liar: parallel workers see each other's running trials, and spread out.
            sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=self.tuning.parallelism > 1,
                                               n_startup_trials=min(10, max(2, self.tuning.trials // 3))),
            pruner=(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
                    if self.tuning.prune_weak_trials else optuna.pruners.NopPruner()),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([_metric_name(o) for o in self.tuning.objectives])
        return study

    def _over(self, study, started: float | None) -> StopReason | None:
        """Why the study should start no more trials, or None."""
        failed = count_trials(study, "FAIL")
        if failed >= self.tuning.max_failed_trials:
            return StopReason.failures(failed, self.tuning.max_failed_trials)
        if self.tuning.stop_when_acceptable:
            good = next((t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and feasible(t)), None)
            if good is not None:
                return StopReason.acceptable(good.number)
        if judged_trials(study) >= self.tuning.trials:
            return StopReason.budget()
        if self.points is not None and not unmeasured(self.points, taken_points(study)):
            return StopReason.exhausted(len(self.points))
        if started is not None and self.tuning.timeout_seconds and time.time() - started > self.tuning.timeout_seconds:
            return StopReason.timeout(self.tuning.timeout_seconds)
        return None

    def _close_interrupted(self, storage) -> int:
        """Trials left RUNNING by a killed attempt can never finish: mark them failed."""
        from optuna.trial import TrialState

        try:
            study_id = storage.get_study_id_from_name(self.key)
        except KeyError:
            return 0
        trials = storage.get_all_trials(study_id, deepcopy=False)
        for trial in trials:
            if trial.state is TrialState.RUNNING:
                storage.set_trial_user_attr(trial._trial_id, "error", "interrupted (the Job stopped during this trial)")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return sum(1 for t in trials if t.state.is_finished() or t.state is TrialState.RUNNING)

    # --- one trial ---------------------------------------------------------------------

    def _objective(self, trial) -> tuple[float, ...]:
        import optuna

        self.current_trial = trial.number
        put(trial, Attr.WORKER, _worker())
        self.trial_started()
        try:
            return self._judge_trial(trial)
        except (optuna.TrialPruned, TrialStopped):
            raise
        except Exception as exc:  # recorded, so a failed trial is told from one lost with its Pod
            if not has(trial, Attr.ERROR):
                put(trial, Attr.ERROR, str(exc) if isinstance(exc, KompressError) else f"{type(exc).__name__}: {exc}")
            raise

    def _judge_trial(self, trial) -> tuple[float, ...]:
        import optuna

        values = {p.key: _suggest(trial, p) for p in self.plan.parameters}
        chain = [self._step_with(step, values) for step in self.plan.chain]
        put(trial, Attr.LINEAGE, [{"name": s.name, "pass": s.optimization.type, "parameters": s.optimization.parameters}
                                        for s in chain])
        self.progress(f"tuning: trial {trial.number}: " + ", ".join(f"{k}={_show(v)}" for k, v in values.items()))
        earlier = _same_parameters(trial)
        if earlier is not None:  # samplers repeat choices over small discrete spaces; a rerun costs a whole chain
            left = unmeasured(self.points or [], taken_points(trial.study))
            if left:  # the next trial measures a point not taken yet; this one does not count against the budget
                trial.study.enqueue_trial(left[0])
            self.progress(f"tuning: trial {trial.number} repeats trial {earlier.number}'s parameters: its result stands")
            return self._repeat(trial, earlier)
        try:
            produced = self.run_chain(chain, self.known, self.scratch / f"trial-{trial.number}",
                                      on_epoch=self._pruning_reporter(trial) if self.tuning.prune_weak_trials else None)
        except TrialStopped:
            raise optuna.TrialPruned() from None
        result = produced[-1]
        if not result.measured:
            put(trial, Attr.ERROR, result.error or "the chain produced no model")
            raise KompressError(result.error or "the chain produced no model")
        measured = self._measure(result.model)
        put(trial, Attr.VALIDATION, measured)
        for goal, value in self._constraint_values(measured).items():
            trial.set_constraint(goal, value)
        put(trial, Attr.MODEL, SavedModel.of(result.model).to_wire())
        self.local_models[trial.number] = result.model
        return tuple(measured[_metric_name(o)] for o in self.tuning.objectives)

    def _repeat(self, trial, earlier) -> tuple[float, ...]:
        for key in (Attr.VALIDATION, Attr.MODEL):
            put(trial, key, attr(earlier, key))
        put(trial, Attr.REPEAT_OF, earlier.number)
        for goal, value in (earlier.constraints or {}).items():
            trial.set_constraint(goal, value)
        return tuple(earlier.values)

    def _step_with(self, step: Step, values: dict) -> Step:
        mine = {p.path: values[p.key] for p in self.plan.parameters if p.pass_name == step.name}
        if not mine:
            return step
        return replace(step, optimization=build_pass(with_values(self.spec.passes[step.index], mine)))

    def _pruning_reporter(self, trial):
        import torch

        steps = itertools.count(1)  # across every training pass of the trial
        inputs = [torch.from_numpy(self.validation.inputs[name]) for name in self.input_names]

        def report(epoch: int, module) -> None:
            with torch.no_grad():
                output = first_output(module(*inputs)).numpy()
            trial.report(self._scorer.drop(self._scorer.value(output)), next(steps))
            if trial.should_prune():
                self.progress(f"tuning: trial {trial.number}: pruned after epoch {epoch} (behind the median)")
                raise TrialStopped()

        return report

    def _reference_scorer(self) -> Scorer:
        runner = make_runner(self.known["baseline"].model, threads=self.spec.benchmark.threads, input_names=self.input_names)
        reference = predict(runner, self.validation, self.spec.benchmark.evaluation_batch_size)
        return Scorer(self.spec.task, self.spec.goals.accuracy_drop_mode, self.validation, reference)

    def _measure(self, model: ModelFile) -> dict:
        """The validation metric, size and a short single-model latency measurement."""
        runner = make_runner(model, threads=self.spec.benchmark.threads, input_names=self.input_names)
        value, drop, _ = self._scorer.judge(predict(runner, self.validation, self.spec.benchmark.evaluation_batch_size))
        quick = Benchmark(batch_sizes=[self.batch], warmup=self.spec.benchmark.warmup, rounds=1,
                          iterations=self.spec.benchmark.iterations, threads=self.spec.benchmark.threads)
        latency = measure_latency({"trial": runner}, self.validation.inputs, quick)["trial"][self.batch]
        percentile = self.spec.goals.latency.percentile.value if self.spec.goals.latency else "P50"
        return {"metric": value, "drop": drop, "latencyMs": latency.percentile_ms(percentile),
                "sizeMiB": model.size_bytes / 2**20}

    def _constraint_values(self, measured: dict) -> dict[str, float]:
        """Optuna's convention: ≤ 0 is feasible. One value per goal the spec sets."""
        goals, values = self.spec.goals, {}
        if goals.max_accuracy_drop is not None:
            values["maxAccuracyDrop"] = measured["drop"] - goals.max_accuracy_drop
        if goals.latency is not None:
            values["latency"] = measured["latencyMs"] - goals.latency.max_milliseconds
        if goals.max_size_bytes is not None:
            values["maxSize"] = measured["sizeMiB"] - goals.max_size_bytes / 2**20
        return values

    def _after_trial(self, study, trial) -> None:
        from optuna.trial import TrialState

        if trial.state is TrialState.COMPLETE:
            shown = ", ".join(f"{n}={v:.4g}" for n, v in zip(study.metric_names, trial.values))
            self.progress(f"tuning: trial {trial.number} done: {shown}" + ("" if feasible(trial) else " (breaks a goal)"))
            if trial.number in {t.number for t in self._best_trials(study)} and trial.number in self.local_models:
                # Saved before the journal that records it, so a resumed study never names a missing model.
                # Any trial among the best when it finished: later trials can only push it out, not back in.
                model = self.local_models[trial.number]
                for name, path in model.relative_files().items():  # every file: an IR's .bin, a folder's files
                    self.store.put(path, f"{self.key}/trials/{trial.number}/{name}")
        elif trial.state is TrialState.FAIL:
            self.progress(f"tuning: trial {trial.number} failed: {attr(trial, Attr.ERROR, 'see the log above')}")
        if self.storage_url is None:
            self.store.put(self.journal, f"{self.key}/journal.log")

        failed = count_trials(study, "FAIL")
        if failed >= self.tuning.max_failed_trials:
            self.stop_reason = StopReason.failures(failed, self.tuning.max_failed_trials)
            study.stop()
        elif self.points is not None and (over := self._over(study, None)):  # repeats do not count: the budget is told here
            self.stop_reason = over
            study.stop()
        elif self.tuning.stop_when_acceptable and trial.state is TrialState.COMPLETE and feasible(trial):
            self.stop_reason = StopReason.acceptable(trial.number)
            study.stop()

    # --- results -------------------------------------------------------------------------

    def _best_trials(self, study) -> list:
        # A repeat stands for the trial it repeats: never a second candidate of the same model.
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and not has(t, Attr.REPEAT_OF)]
        if not complete:
            return []
        if len(self.tuning.objectives) == 1:
            ranked = sorted(complete, key=lambda t: (not feasible(t), t.values[0]))
        else:  # the Pareto front, feasible trials first, then by the first objective
            ranked = sorted((t for t in study.best_trials if not has(t, Attr.REPEAT_OF)), key=lambda t: (not feasible(t), t.values[0]))
        return ranked[: self.tuning.keep_best]

    def _best_candidates(self, best: list) -> list[Candidate]:
        target, start = self.plan.target, self.known[self.plan.start]
        candidates = []
        for trial in best:
            model = self._model_of(trial)
            if model is None:
                self.progress(f"tuning: trial {trial.number}'s model is not in the store; left out")
                continue
            candidates.append(Candidate(
                name=f"{target.name}-trial-{trial.number}", technique=target.optimization.technique,
                pass_type=target.optimization.type, parent=start.name,
                lineage=start.lineage + attr(trial, Attr.LINEAGE) + [{"trial": trial.number, "study": self.key}],
                model=model,
            ))
        return candidates

    def _model_of(self, trial) -> ModelFile | None:
        if trial.number in self.local_models:
            return self.local_models[trial.number]
        saved = SavedModel.model_validate(attr(trial, Attr.MODEL))
        what = f"trial {trial.number}'s model file"  # the study is shared: never trust a path in it
        prefix, folder = f"{self.key}/trials/{trial.number}/", self.scratch / f"saved-{trial.number}"
        for key in self.store.list(prefix):
            self.store.get(key, local_path(folder, key[len(prefix):], what))
        model = saved.restore(folder, self.spec, self.input_names, what)
        if not model.path.exists() or not all(p.is_file() for p in model.files):
            return None  # a study saved before every file was kept (an IR without its .bin) is left out, not half-loaded
        return model

    def _report(self, study, best: list, finished_before: int) -> TuningReport:
        storage = f"postgresql://{where(self.storage_url)}" if self.storage_url else self.store.uri(f"{self.key}/journal.log")
        return study_report(study, key=self.key, storage=storage, parallelism=self.tuning.parallelism if self.storage_url else 1,
                            tuning=self.tuning, target=self.plan.target.name, best=best, finished_before=finished_before,
                            stop_reason=self.stop_reason)


class LocalStudy(Study):
    """A single-Pod study: every trial in this process, the journal in the artifact store."""

    def run(self) -> TuningResult:
        import optuna

        self.scratch.mkdir(parents=True, exist_ok=True)
        resumed = self.store.get(f"{self.key}/journal.log", self.journal)
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(self.journal)))
        finished_before = self._close_interrupted(storage) if resumed else 0
        # Reseeded per attempt, so a resumed study does not replay the first attempt's samples.
        study = self._create(storage, self.tuning.seed + finished_before)
        self._scorer = self._reference_scorer()
        if resumed:
            self.progress(f"tuning: resuming study {self.key} with {finished_before} finished trial(s)")
        remaining = self.tuning.trials - finished_before
        failed = count_trials(study, "FAIL")
        if failed >= self.tuning.max_failed_trials:
            self.stop_reason, remaining = StopReason.failures(failed, self.tuning.max_failed_trials), 0
        if remaining > 0:
            self.progress(f"tuning: {remaining} trial(s) over {', '.join(p.key for p in self.plan.parameters)}, "
                          f"judged on {self.plan.target.name}")
            study.optimize(self._objective, n_trials=None if self.points is not None else remaining, timeout=self.tuning.timeout_seconds,
                           catch=(Exception,), callbacks=[self._after_trial], gc_after_trial=True)
            if self.tuning.timeout_seconds and judged_trials(study) < self.tuning.trials and self.stop_reason.kind is StopKind.BUDGET:
                self.stop_reason = StopReason.timeout(self.tuning.timeout_seconds)
        best = self._best_trials(study)
        return TuningResult(self._best_candidates(best), self._report(study, best, finished_before))


def _suggest(trial, parameter: SearchParameter):
    search = parameter.range
    if parameter.kind == "categorical":
        return trial.suggest_categorical(parameter.key, search.choices)
    if parameter.kind == "int":
        return trial.suggest_int(parameter.key, int(search.low), int(search.high), log=search.log)
    return trial.suggest_float(parameter.key, search.low, search.high, log=search.log)


def _metric_name(objective: Objective) -> str:
    return {Objective.LATENCY: "latencyMs", Objective.SIZE: "sizeMiB", Objective.ACCURACY: "drop"}[objective]


def _worker() -> str:
    return os.environ.get("HOSTNAME") or f"pid-{os.getpid()}"


def _show(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _same_parameters(trial):
    """A finished trial of the study with exactly this trial's parameters, or None."""
    from optuna.trial import TrialState

    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.params == trial.params and not has(other, Attr.REPEAT_OF):
            return other
    return None
