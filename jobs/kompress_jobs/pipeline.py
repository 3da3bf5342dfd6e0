"""One optimization run: load → baseline → passes → measure → select → report → upload.

All work happens in a scratch folder; the artifact store sees nothing until the run is complete,
then receives the candidate files and reports, and manifest.json last. If an upload fails the
files already sent are deleted again, so a reader either finds a manifest or nothing.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable

from . import __version__
from .benchmark import measure_latency
from .candidates import Candidate, Outcome, score_each
from .data import Dataset, batch_of, load_dataset, require_labels, rows
from .digest import sha256
from .errors import DataError, KompressError
from .fingerprint import machine_fingerprint
from .goals import Benchmark
from .layout import DEFAULT_ARTIFACTS, run_prefix
from .library_output import LOG_NAME as LIBRARY_LOG
from .llm import stages as language_model
from .parallel_study import StudyCollector, StudyWorker, WorkerRun
from .passes import PassContext
from .plan import BASELINE, Step, plan_passes
from .preflight import check_local_inputs
from .profile_report import plot_profiles
from .memory_probe import Probe, peak_memory
from .profiling import energy_per_call, profile_model, trace_key
from .promotion import Promoter, check_writable, promotion_store
from .quality import Scorer, predict, scored
from .charts import plot_comparison, plot_pareto
from .report import candidate_result, render_markdown, write_json
from .results import ManifestFile, Report, RunInfo, RunManifest
from .runtimes import ModelFile, Processor, Runner, make_runner
from .schema import ModelOptimization, ModelOptimizationSpec
from .search_space import plan_tuning
from .selection import judge, mark_pareto_front, primary_batch_size, rank
from .sources import ModelFormat
from .specfile import resolve_path
from .status import PromotionStatus
from .store import ArtifactStore, fetch_directory, fetch_input, is_s3, open_store
from .tasks import TaskType
from .tuning import LocalStudy

Progress = Callable[[str], None]


@dataclass
class RunResult:
    run_id: str
    report: dict  # report.json as written (results: the same as types)
    run_uri: str
    manifest_uri: str
    manifest_sha256: str
    promotion: PromotionStatus | None = None  # status.promotion, with spec.promotion
    results: Report | None = None  # the report as types (results.py), with where it went


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
    spec = resource.spec
    steps = plan_passes(spec)
    check_local_inputs(spec, base_dir)  # what `kompress validate` checks, before anything is spent
    run_id = run_id or new_run_id(resource.metadata.name)
    started = _now()
    generative = spec.task.generative

    store = _open_store(spec, base_dir, artifacts_uri)
    store.check_writable()  # fail before spending minutes on work that cannot be saved
    promoter = _promoter(resource, store, base_dir)

    with tempfile.TemporaryDirectory(prefix="kompress-") as scratch_name:
        scratch = Path(scratch_name)
        model_path, data_path, (dataset, baseline, runners) = _fetch_and_load(spec, base_dir, scratch, progress)
        fetch = lambda uri: _local_input(uri, spec, base_dir, scratch)  # noqa: E731
        run_chain = partial(_run_passes, dataset=dataset, spec=spec, progress=progress, fetch=fetch)
        candidates = [baseline] + run_chain(steps, {BASELINE: baseline}, scratch / "candidates", runners=runners)
        tuning_report = None
        if spec.tuning is not None:
            inputs = (resource.metadata, spec, plan_tuning(spec, steps), {c.name: c for c in candidates},
                      dataset, scratch, store, partial(run_chain, runners=None, quiet=True), progress)
            if spec.tuning.parallelism > 1 and not study_storage:
                progress(f"tuning: parallelism {spec.tuning.parallelism} applies on the cluster; here the trials run one at a time")
            tuned = StudyCollector(*inputs, storage_url=study_storage).collect() if study_storage else LocalStudy(*inputs).run()
            for candidate in tuned.candidates:
                runners[candidate.name] = make_runner(candidate.model, threads=spec.benchmark.threads, input_names=dataset.input_names)
            candidates, tuning_report = candidates + tuned.candidates, tuned.report
        if promoter:
            incumbent = promoter.contender(scratch, spec, dataset.input_names, partial(
                make_runner, threads=spec.benchmark.threads, input_names=dataset.input_names))
            if incumbent:
                candidates.append(incumbent[0])
                runners[incumbent[0].name] = incumbent[1]
        measured = [c for c in candidates if c.measured]

        progress(f"evaluating {len(measured)} model(s) on {len(dataset.evaluation)} "
                 f"{'windows of text' if generative else 'samples'}")
        (language_model.evaluate if generative else _evaluate)(measured, runners, dataset, spec)
        measured = [c for c in candidates if c.measured]  # a candidate may fail at inference
        batch = primary_batch_size(spec.goals, spec.benchmark)
        progress(f"benchmarking {len(measured)} model(s) at batch sizes {spec.benchmark.batch_sizes}, "
                 f"{spec.benchmark.rounds} interleaved rounds (up to {spec.benchmark.round_cap} at batch {batch} if noisy)")
        if generative:
            language_model.benchmark(measured, runners, dataset, spec, progress)
        else:
            latencies = measure_latency({c.name: runners[c.name] for c in measured}, dataset.evaluation.inputs,
                                        spec.benchmark, progress, judged_at=batch)
            for c in measured:
                c.latency = latencies[c.name]

        if not generative:
            _device_figures(measured, runners, dataset, batch, progress)
        if spec.benchmark.peak_memory or spec.goals.max_memory is not None:
            _peak_memory(measured, dataset, spec, batch, generative, progress)
        judge(candidates, spec.goals, spec.benchmark, spec.task.metric)
        front = mark_pareto_front(candidates, batch)
        ranked = rank(candidates, spec.goals, spec.benchmark)

        profiled = [] if generative else [c for c in measured if c.is_baseline or c.rank == 1]  # per-call profiles
        profiles = _profiles(profiled, runners, dataset, spec, batch, progress, scratch)
        for c in measured:
            if not c.is_baseline and not c.contender:
                c.sha256 = sha256(c.model.path)
                c.artifact_key = f"candidates/{c.name}/{c.model.path.name}"  # a directory's prefix for a checkpoint
        pick = ranked[0] if ranked else None
        plan = promoter.decide(pick, candidates, spec, batch, spec.task.metric.value) if promoter else None
        by_name = {c.name: c for c in candidates}
        typed = Report(
            run=RunInfo(id=run_id, name=resource.metadata.name, namespace=resource.metadata.namespace,
                        started_at=started, finished_at=_now(), kompress_version=__version__),
            spec=spec.to_wire(),
            fingerprint=machine_fingerprint(),
            benchmark=Benchmark.model_validate(spec.benchmark.to_wire()),  # every setting set: report.json lists them all
            metric=spec.task.metric.value,
            primary_batch_size=batch,
            best_name=pick.name if pick else None,
            pareto_front_names=[c.name for c in front],
            candidates=[candidate_result(c, by_name, batch) for c in candidates],
            profiles=profiles,
            **({"tuning": tuning_report} if tuning_report else {}),
            **({"promotion": plan} if plan else {}),
            inputs={"model": {"uri": spec.model.uri, "sha256": sha256(model_path)}, "inputNames": list(dataset.input_names),
                    "data": {"uri": spec.data.uri, "sha256": sha256(data_path)}},
        )
        progress("writing report and uploading artifacts")
        result = _publish(store.under(run_prefix(resource.metadata.namespace, resource.metadata.name, run_id)), run_id,
                          typed, candidates, scratch, library_log)
        if promoter:
            result.promotion = promoter.publish(run_id, pick, plan, typed)
            progress(f"promotion: {result.promotion.decision.value}: {result.promotion.message}")
        result.results = typed.model_copy(update={"run_uri": result.run_uri, "manifest_sha256": result.manifest_sha256,
                                                  "promotion_status": result.promotion})
        return result


def run_tuning_worker(resource: ModelOptimization, *, study_storage: str, attempt: str, artifacts_uri: str | None = None,
                      progress: Progress = lambda _: None) -> tuple[str, WorkerRun]:
    """One worker Pod of a parallel study: the passes the tuned chain starts from, then trials on
    the shared study until it is over. Returns the study's name and what this worker did."""
    spec = resource.spec
    steps = plan_passes(spec)
    plan = plan_tuning(spec, steps)
    store = _open_store(spec, Path("."), artifacts_uri)
    with tempfile.TemporaryDirectory(prefix="kompress-") as scratch_name:
        scratch = Path(scratch_name)
        _, _, (dataset, baseline, _) = _fetch_and_load(spec, Path("."), scratch, progress)
        fetch = lambda uri: _local_input(uri, spec, Path("."), scratch)  # noqa: E731
        run_chain = partial(_run_passes, dataset=dataset, spec=spec, progress=progress, fetch=fetch, runners=None)
        head = [step for step in steps if step.name in _ancestry(steps, plan.start)]
        known = {c.name: c for c in [baseline] + run_chain(head, {BASELINE: baseline}, scratch / "candidates")}
        study = StudyWorker(resource.metadata, spec, plan, known, dataset, scratch, store, partial(run_chain, quiet=True),
                            progress, storage_url=study_storage, attempt=attempt)
        return study.key, study.work()


def _ancestry(steps: list[Step], name: str) -> set[str]:
    """`name` and the passes it is made from (what a tuned chain starting there needs)."""
    by_name, names = {step.name: step for step in steps}, set()
    while name in by_name:
        names.add(name)
        name = by_name[name].input
    return names


def _run_passes(steps: list[Step], known: dict[str, Candidate], folder: Path, *, dataset: Dataset,
                spec: ModelOptimizationSpec, runners: dict[str, Runner] | None, progress: Progress, fetch,
                on_epoch=None, quiet: bool = False) -> list[Candidate]:
    """Run steps in order, each on an earlier candidate (from `known` or this call); a pass that
    fails is recorded on its candidate and the others go on. Runners for the new models go into
    `runners` (None: a tuning trial, which measures its one model itself)."""
    by_name = dict(known)
    produced = []
    for number, step in enumerate(steps, start=1):
        optimization, parent = step.optimization, by_name[step.input]
        candidate = Candidate(
            name=step.name, technique=optimization.technique, pass_type=optimization.type, parent=parent.name,
            lineage=parent.lineage + [{"name": step.name, "pass": optimization.type, "parameters": optimization.parameters}],
        )
        by_name[step.name] = candidate
        produced.append(candidate)
        reason = optimization.not_applicable_reason()
        if reason:
            candidate.outcome, candidate.error = Outcome.NOT_APPLICABLE, reason
            progress(f"pass {number}/{len(steps)} {step.name}: not applicable: {reason}")
            continue
        if not parent.measured:
            candidate.outcome, candidate.error = Outcome.SKIPPED, f"its input {parent.name!r} did not produce a model"
            continue
        if not quiet:
            progress(f"pass {number}/{len(steps)} {step.name} ({optimization.type}) on {parent.name}")
        output_dir = folder / step.name
        output_dir.mkdir(parents=True)
        log = (lambda m: None) if quiet else (lambda m, n=step.name: progress(f"  {n}: {m}"))
        context = PassContext(output_dir, dataset, spec.benchmark.threads, log, task=spec.task, fetch=fetch,
                              on_epoch=on_epoch, batch_sizes=tuple(spec.benchmark.batch_sizes), goals=spec.goals,
                              benchmark=spec.benchmark, baseline=by_name[BASELINE].model)
        try:
            candidate.model = optimization.run(parent.model, context)
            candidate.details = optimization.details
            if runners is not None:
                runners[step.name] = make_runner(candidate.model, threads=spec.benchmark.threads, input_names=dataset.input_names)
        except KompressError as exc:
            candidate.outcome, candidate.error = Outcome.FAILED, str(exc)
        except Exception as exc:  # a bug or library failure in one pass must not lose the others' results
            candidate.outcome, candidate.error = Outcome.FAILED, f"{type(exc).__name__}: {exc}"
            if not quiet:
                progress(f"  {step.name}: failed:\n{traceback.format_exc(limit=3)}")
        if candidate.outcome is Outcome.FAILED and not quiet:
            progress(f"  {step.name}: failed: {candidate.error}")
    return produced


def _evaluate(measured: list[Candidate], runners: dict[str, Runner], dataset: Dataset, spec: ModelOptimizationSpec) -> None:
    split = dataset.evaluation
    reference = predict(runners[BASELINE], split, spec.benchmark.evaluation_batch_size)
    scorer = Scorer(spec.task, spec.goals.accuracy_drop_mode, split, reference)
    score_each(measured, runners, lambda c: scorer.judge(
        reference if c.is_baseline else predict(runners[c.name], split, spec.benchmark.evaluation_batch_size)))


def _device_figures(measured: list[Candidate], runners: dict[str, Runner], dataset: Dataset, batch: int,
                    progress: Progress) -> None:
    """What a candidate costs beyond its latency: the energy per call of every one on a GPU (NVML), and
    a compiled model's first call (its compilation), reported apart from the latency it buys."""
    sample = None
    for c in measured:
        runner = runners[c.name]
        if runner.compile_mode and runner.first_call_seconds is not None:
            c.details = (c.details or {}) | {"compileMode": runner.compile_mode,
                                             "firstCallSeconds": round(runner.first_call_seconds, 3)}
        if runner.device is Processor.CUDA:
            sample = sample if sample is not None else batch_of(dataset.evaluation.inputs, batch)
            progress(f"energy of {c.name} on the GPU at batch {batch}")
            c.energy = energy_per_call(runner, sample)


def _peak_memory(measured: list[Candidate], dataset: Dataset, spec: ModelOptimizationSpec, batch: int, generative: bool,
                 progress: Progress) -> None:
    """Each candidate's peak resident memory, in a process of its own (memory_probe.py)."""
    if generative:
        from .llm.corpus import INPUT, PROMPTS

        probe = Probe({INPUT: dataset.split(PROMPTS).inputs[INPUT][:batch]}, spec.benchmark.threads,
                      spec.benchmark.generation.new_tokens)
    else:
        probe = Probe(batch_of(dataset.evaluation.inputs, batch), spec.benchmark.threads)
    for c in measured:
        progress(f"peak memory of {c.name}, in a process of its own")
        c.memory = peak_memory(c.model, probe)


def _profiles(models: list[Candidate], runners: dict[str, Runner], dataset: Dataset, spec: ModelOptimizationSpec,
              batch: int, progress: Progress, scratch: Path) -> dict:
    """Where the time goes, for the baseline and the pick: operators (a trace file each, published
    under the key of `trace`) and energy per call."""
    sample = batch_of(dataset.evaluation.inputs, batch)
    profiles = {}
    for c in models:
        progress(f"profiling {c.name} at batch {batch}")
        key = trace_key(c.name)
        profile = profile_model(c.model, runners[c.name], sample, spec.benchmark.threads, trace_path=scratch / key)
        profiles[c.name] = profile | ({"trace": key} if profile.pop("traced", False) else {}) | {
            "energy": energy_per_call(runners[c.name], sample)}
    return profiles


def _publish(store: ArtifactStore, run_id: str, typed: Report, candidates: list[Candidate], scratch: Path,
             library_log: Path | None) -> RunResult:
    """Into `store`, the run's own folder (layout.run_prefix)."""
    report = typed.to_wire()  # report.json is what the types hold, nothing else
    out = scratch / "out"
    out.mkdir()
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(typed))
    plot_pareto(typed, out / "pareto.png")
    charts = ["pareto.png"] + [name for name, drawn in (("comparison.png", plot_comparison(typed, out / "comparison.png")),
                                                         ("profile.png", plot_profiles(typed, out / "profile.png"))) if drawn]

    files = {key: path for c in candidates if c.artifact_key for key, path in c.artifact_files().items()}
    files |= {name: out / name for name in ("report.json", "report.md", *charts)}
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


def _open_store(spec: ModelOptimizationSpec, base_dir: Path, override: str | None) -> ArtifactStore:
    if override:
        uri = override
    elif spec.artifacts.uri:
        uri = spec.artifacts.uri if is_s3(spec.artifacts.uri) else str(resolve_path(spec.artifacts.uri, base_dir))
    else:
        uri = DEFAULT_ARTIFACTS
    return open_store(uri, spec.artifacts.endpoint_url, spec.artifacts.region)


def _promoter(resource: ModelOptimization, store: ArtifactStore, base_dir: Path) -> Promoter | None:
    spec = resource.spec
    if spec.promotion is None:
        return None
    local = lambda uri: uri if is_s3(uri) else str(resolve_path(uri, base_dir))  # noqa: E731
    promoted = promotion_store(store, spec, resource.metadata.namespace or "default", resource.metadata.name,
                               lambda uri: open_store(local(uri), spec.artifacts.endpoint_url, spec.artifacts.region))
    check_writable(promoted)  # before any work, as the run's own store
    return Promoter(promoted)


def _local_input(uri: str, spec: ModelOptimizationSpec, base_dir: Path, scratch: Path, directory: bool = False) -> Path:
    if is_s3(uri):
        fetch = fetch_directory if directory else fetch_input
        return fetch(uri, scratch, spec.artifacts.endpoint_url, spec.artifacts.region)
    return resolve_path(uri, base_dir)


def _is_checkpoint(model_format: ModelFormat) -> bool:
    return model_format.is_folder


def _fetch_and_load(spec: ModelOptimizationSpec, base_dir: Path, scratch: Path, progress: Progress):
    """The model and data as local paths (fetched from S3 when remote), threads pinned, and
    what _load_inputs makes of them."""
    model_path = _local_input(spec.model.uri, spec, base_dir, scratch, directory=_is_checkpoint(spec.model.format))
    data_path = _local_input(spec.data.uri, spec, base_dir, scratch)
    _pin_threads(spec.benchmark.threads)
    return model_path, data_path, _load_inputs(spec, model_path, data_path, base_dir, scratch, progress)


def _load_inputs(spec: ModelOptimizationSpec, model_path: Path, data_path: Path, base_dir: Path, scratch: Path,
                 progress: Progress) -> tuple[Dataset, Candidate, dict[str, Runner]]:
    """The data bound to the model's input names, the baseline candidate and its runner."""
    if spec.task.generative:
        dataset, model, runner = language_model.load(spec, model_path, data_path, progress)
        baseline = Candidate(name=BASELINE, technique="baseline", pass_type=None, parent=None, lineage=[], model=model)
        return dataset, baseline, {BASELINE: runner}
    tokenizer_dir = None
    if spec.data.text is not None:
        tokenizer_dir = (_local_input(spec.data.text.tokenizer, spec, base_dir, scratch, directory=True)
                         if spec.data.text.tokenizer else model_path)
    progress(f"loading data {data_path}")
    dataset = load_dataset(data_path, spec.data, spec.task, extra_splits=spec.judging_splits(), tokenizer_dir=tokenizer_dir)
    if _is_checkpoint(spec.model.format) and not dataset.named:
        raise DataError(f"data file {data_path}: a HuggingFace model takes named inputs (input_ids, attention_mask, ...): "
                        "store x_<split>/<input name> arrays, or use text rows (data.text)")
    progress(f"loading model {model_path} ({spec.model.format.value})")
    model = ModelFile(model_path, spec.model.format, options=spec.model.hugging_face,
                      input_names=dataset.input_names if _is_checkpoint(spec.model.format) else ())
    runner = make_runner(model, threads=spec.benchmark.threads)
    dataset = dataset.bind(runner.input_names, f"data file {data_path}")
    require_labels(dataset, spec.task, f"data file {data_path}")
    _check_fit(runner, dataset, data_path, spec)
    baseline = Candidate(name=BASELINE, technique="baseline", pass_type=None, parent=None, lineage=[], model=model)
    return dataset, baseline, {BASELINE: runner}


def _check_fit(runner: Runner, dataset: Dataset, data_path: Path, spec: ModelOptimizationSpec) -> None:
    """Fail early, naming the data file, when the data cannot feed the model or its labels cannot match."""
    sample = rows(dataset.evaluation.inputs, 0, 2)
    try:
        runner.check_input(sample)
    except DataError as exc:
        raise DataError(f"data file {data_path}: evaluation {exc}") from None
    output = scored(runner(sample), spec.task)
    if spec.task.type is TaskType.CLASSIFICATION:  # one output per class
        classes = output.shape[-1]
        highest = int(dataset.evaluation.labels.max())
        if highest >= classes or int(dataset.evaluation.labels.min()) < 0:
            raise DataError(f"data file {data_path}: labels reach {highest} but the model has {classes} outputs")


def _pin_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
