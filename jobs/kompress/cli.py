"""`kompress`: run and check ModelOptimization specs on a laptop, the same YAML the cluster takes.

Heavy libraries (torch, ONNX Runtime) load only when a command needs them, so `kompress validate`
and the operator image stay light.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from kompress_jobs import __version__
from kompress_jobs.spec.contract import MAX_SPEC_BYTES, JobEnv
from kompress_jobs.storage.layout import DEFAULT_ARTIFACTS
from kompress_jobs.errors import KompressError, SpecError, VersionMismatchError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "missing_extra", None):  # without the extra, the operator's flags are unknown
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except KompressError as exc:
        print(f"kompress: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kompress: interrupted; nothing was published", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kompress", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kompress {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    optimize = commands.add_parser("optimize", help="run the optimization pipeline on a ModelOptimization YAML, "
                                                     "or on a model file with --model (its passes planned here)")
    optimize.add_argument("file", type=Path, nargs="?", help="ModelOptimization YAML (or --model)")
    optimize.add_argument("--model", metavar="PATH", help="a model file or folder: no YAML; the run folder keeps the "
                                                           "spec it ran (spec.yaml), which a cluster takes unchanged")
    optimize.add_argument("--data", metavar="PATH", help="with --model: the evaluation and calibration data")
    optimize.add_argument("--task", choices=["Classification", "Regression", "Fidelity", "LanguageModeling"],
                          help="with --model (default: LanguageModeling for a causal LM, else Classification)")
    optimize.add_argument("--max-drop", type=float, metavar="X", help="with --model: goals.maxAccuracyDrop (points; "
                                                                        "percent of perplexity for a language model)")
    optimize.add_argument("--output", "-o", metavar="DIR_OR_S3_URI",
                          help="artifact destination (a folder or s3://bucket/prefix); overrides spec.artifacts.uri "
                               f"(default: spec.artifacts.uri, else {DEFAULT_ARTIFACTS})")
    optimize.add_argument("--target", metavar="NAME", help="run one of spec.targets (default: each, one after another, "
                          "each in a process of its own under its instruction-set cap)")
    optimize.add_argument("--run-id", help="name of the run folder (default: <name>-<UTC time>-<random>)")
    optimize.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    optimize.set_defaults(handler=_optimize)

    job = commands.add_parser("job", help="run one optimization inside a Kubernetes Job (launched by the operator)")
    job.add_argument("--termination-log", type=Path,
                     default=Path(os.environ.get(JobEnv.TERMINATION_LOG.value, "/dev/termination-log")),
                     help=f"where the compact result for the operator goes [{JobEnv.TERMINATION_LOG.value}]")
    job.add_argument("--tuning-worker", action="store_true",
                     help="run trials of the resource's parallel study until it is over (a Pod of its tuning Job)")
    job.set_defaults(handler=_job)

    operator = commands.add_parser("operator", help="run the Kubernetes operator (kubeconfig or in-cluster config)")
    try:  # the operator's settings need the 'operator' extra; `kompress optimize` does not
        from kompress_operator.settings import OperatorSettings
    except ImportError as exc:
        operator.set_defaults(missing_extra=str(exc))
    else:
        OperatorSettings.add_arguments(operator)
    operator.set_defaults(handler=_operator)

    fetch = commands.add_parser("fetch-promoted", help="copy the promoted model (current.json's release) into a folder, "
                                "digests checked (a serving Pod's init container)")
    fetch.add_argument("location", help="the promotion root holding current.json (directory or s3://bucket/prefix)")
    fetch.add_argument("target", type=Path, help="folder to fill (replaced as a whole)")
    fetch.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3"), help="S3-compatible endpoint (MinIO)")
    fetch.add_argument("--region", default=None)
    fetch.set_defaults(handler=_fetch_promoted)

    validate = commands.add_parser("validate", help="check ModelOptimization YAMLs and the local files they name, "
                                                     "without running the model (for CI gates and pre-commit)")
    validate.add_argument("files", type=Path, nargs="+", metavar="FILE",
                          help="a YAML file (every ModelOptimization document in it), or a folder of them (*.yaml, *.yml)")
    validate.add_argument("--no-files", action="store_true",
                          help="check everything but the local files the specs name (they may exist only in the job image)")
    validate.add_argument("--max-spec-bytes", type=int, default=MAX_SPEC_BYTES, metavar="N",
                          help=f"the operator's maxSpecBytes: a larger spec is refused at apply (default: {MAX_SPEC_BYTES})")
    validate.set_defaults(handler=_validate)

    plan = commands.add_parser("plan", help="print the passes a run of this spec would take on this machine, and why, "
                                             "without running it (spec.passes empty: planned; else as written)")
    plan.add_argument("file", type=Path, help="ModelOptimization YAML")
    plan.add_argument("--target", metavar="NAME", help="plan for one of spec.targets, as its capped CPU sees this machine")
    plan.set_defaults(handler=_plan)
    return parser


def _plan(args: argparse.Namespace) -> int:
    """The plan as YAML a user can paste into spec.passes, its reasons as comments."""
    import yaml

    from kompress_jobs.api import for_target, load
    from kompress_jobs.planning.auto_plan import plan_for
    from kompress_jobs.spec.targets import isa_environment

    resource, folder = load(args.file)
    if args.target is None and len(resource.spec.targets) > 1:
        raise SpecError(f"--target: the spec names {len(resource.spec.targets)} targets "
                        f"({', '.join(t.name for t in resource.spec.targets)}): plan one at a time")
    resource = for_target(resource, args.target)
    target = resource.spec.target()
    os.environ.update(isa_environment(target.max_cpu_isa if target else None))  # kompress's view of the CPU, capped
    plan = plan_for(resource, folder)
    where = "planned for this machine" if plan.automatic else "as written"
    if target is not None and plan.automatic:
        where += f", target {target.name}" + (f" (capped at {target.max_cpu_isa.value})" if target.max_cpu_isa else "")
    print(f"# {resource.metadata.name}: passes {where}")
    print("\n".join(f"#   {reason}" for reason in plan.reasons))
    print(yaml.safe_dump({"passes": plan.passes, **({"tuning": plan.tuning} if plan.tuning else {})}, sort_keys=False).rstrip())
    return 0


def _operator(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "missing_extra", None):
            raise ImportError(args.missing_extra)
        from kompress_operator.main import run
        from kompress_operator.settings import OperatorSettings
    except ImportError as exc:
        raise KompressError(f"the operator needs the 'operator' extra (pip install 'kompress[operator]'): {exc}") from None
    try:
        settings = OperatorSettings.from_arguments(args)
    except ValidationError as exc:
        raise SpecError(f"operator settings: {_settings_errors(exc)}") from None
    run(settings)
    return 0


def _settings_errors(exc: ValidationError) -> str:
    from kompress_operator.settings import OperatorSettings

    return "; ".join(f"{OperatorSettings.env_name(str(e['loc'][0]))} / --{str(e['loc'][0]).replace('_', '-')}: {e['msg']}"
                     for e in exc.errors())


def _validate(args: argparse.Namespace) -> int:
    """Every ModelOptimization of every file checked (one line each, naming the file and document),
    other documents named as skipped; exit 2 when any is invalid."""
    from kompress.gitops import check_file, spec_files
    from kompress_jobs.planning.auto_plan import planned
    from kompress_jobs.planning.plan import plan_passes

    worst = 0
    for path in spec_files(args.files):
        for checked in check_file(path, files=not args.no_files, max_spec_bytes=args.max_spec_bytes):
            if checked.error is not None:
                text = str(checked.error)
                print(f"kompress: error: {text if text.startswith(checked.where) else f'{checked.where}: {text}'}", file=sys.stderr)
                worst = max(worst, checked.error.exit_code)
            elif checked.skipped:
                print(f"{checked.where}: skipped ({checked.skipped})")
            else:
                resource = checked.resource
                automatic = not resource.spec.passes
                chain = ", ".join(f"{s.name} ← {s.input}" for s in plan_passes(planned(resource)[0].spec)) or "none"
                chain += " (planned here; the Job plans for its node)" if automatic else ""
                unchecked = "; local files not checked" if args.no_files else ""
                print(f"{checked.where}: valid ModelOptimization {resource.metadata.name!r}; passes: {chain}{unchecked}")
    return worst


def _optimize(args: argparse.Namespace) -> int:
    """The libraries' own output goes to library.log in the run folder, not to the terminal; when the
    run fails, its tail is shown and the file kept."""
    from kompress_jobs.api import optimize
    from kompress_jobs.reporting.console import ProgressDisplay, console_for, print_results
    from kompress_jobs.reporting.library_output import LibraryOutput

    spec = _spec_argument(args)
    children = _target_processes(spec, args)
    if children is not None:
        return children
    libraries = LibraryOutput()
    try:
        with libraries, ProgressDisplay(stream=libraries.stderr, quiet=args.quiet) as progress:
            report = optimize(spec, output=args.output, run_id=args.run_id, progress=progress,
                              library_log=libraries.path, target=args.target)
    except BaseException:
        tail = libraries.tail()
        if tail:
            print(f"kompress: the libraries' output (last lines; all of it in {libraries.path}):\n{tail}", file=sys.stderr)
        raise
    libraries.path.unlink(missing_ok=True)  # published in the run folder
    print_results(report, sys.stdout)
    out = console_for(sys.stdout)
    out.print(f"\nArtifacts: {report.run_uri}  (manifest sha256 {report.manifest_sha256[:16]}…)", soft_wrap=True)
    promoted = report.promotion_status
    if promoted:
        out.print(f"Promotion: {promoted.decision.value} ({promoted.reason}): {promoted.message}\n"
                  f"  current model: {promoted.uri or 'none'}  (pointer {promoted.pointer})", soft_wrap=True)
    return 0


def _target_processes(spec, args: argparse.Namespace) -> int | None:
    """A spec whose targets cannot all run in this process: each target (or the one --target names)
    runs in a child `kompress optimize --target NAME` started under its cap, one after another, as
    its own Job would on the cluster. None when this process runs it itself."""
    import subprocess

    from kompress_jobs.api import for_target, load
    from kompress_jobs.spec.targets import isa_environment

    if not isinstance(spec, Path):
        return None  # --model: no targets
    resource, _ = load(spec)
    targets = resource.spec.targets
    if args.target is not None:
        cap = for_target(resource, args.target).spec.target().max_cpu_isa
        env = isa_environment(cap)
        if all(os.environ.get(k) == v for k, v in env.items()):
            return None
        chosen = [(args.target, env)]
    elif len(targets) > 1 or (targets and isa_environment(targets[0].max_cpu_isa)):
        chosen = [(t.name, isa_environment(t.max_cpu_isa)) for t in targets]
        if args.run_id:
            raise SpecError("--run-id names one run; with several targets each run is named <name>-<target>-<time>")
    else:
        return None
    failed = []
    for name, env in chosen:
        print(f"kompress: target {name}" + (f" ({env['ONEDNN_MAX_CPU_ISA']} cap)" if env else ""), file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "kompress.cli", "optimize", str(spec), "--target", name]
        command += [flag for flag, on in (("--quiet", args.quiet),) if on]
        command += ["--output", args.output] if args.output else []
        command += ["--run-id", args.run_id] if args.run_id else []
        if subprocess.run(command, env=os.environ | env).returncode:
            failed.append(name)
    if failed:
        print(f"kompress: error: target(s) {', '.join(failed)} failed (their errors are above)", file=sys.stderr)
        return 1
    return 0


def _spec_argument(args: argparse.Namespace):
    """The YAML file, or with --model the spec made for it (the two exclude each other)."""
    from kompress_jobs.api import spec_for_model

    given = [flag for flag in ("data", "task", "max_drop") if getattr(args, flag) is not None]
    if args.model is None:
        if args.file is None:
            raise SpecError("give a ModelOptimization YAML, or --model PATH --data PATH")
        if given:
            raise SpecError(f"--{given[0].replace('_', '-')} goes with --model; a YAML says it in its spec")
        return args.file
    if args.file is not None:
        raise SpecError(f"give {args.file} or --model, not both")
    return spec_for_model(args.model, args.data, task=args.task, max_drop=args.max_drop)


def _job(args: argparse.Namespace) -> int:
    """The resource arrives as JSON in $KOMPRESS_RESOURCE; a JobMessage leaves in the termination log."""
    from kompress_jobs.reporting.console import ProgressDisplay, print_results
    from kompress_jobs.spec.contract import JobMessage, WorkerReport, job_mismatch
    from kompress_jobs.pipeline.run import run_optimization, run_tuning_worker
    from kompress_jobs.spec.status import TrialCounts
    from kompress_jobs.reporting.summary import run_summary

    def finish(message: JobMessage) -> None:
        try:
            args.termination_log.write_text(json.dumps(message.to_wire(), separators=(",", ":")))
        except OSError as exc:  # still exit with the real outcome; the operator falls back to the exit code
            print(f"kompress: cannot write {args.termination_log}: {exc}", file=sys.stderr)

    operator_release = os.environ.get(JobEnv.OPERATOR_RELEASE.value)
    try:
        mismatch = job_mismatch(os.environ.get(JobEnv.CONTRACT_VERSION.value), operator_release)
        if mismatch:
            raise VersionMismatchError(mismatch)
        resource = _job_resource(operator_release)
        artifacts = None if resource.spec.artifacts.uri else os.environ.get(JobEnv.DEFAULT_ARTIFACTS.value)
        study_storage = _study_storage(resource.spec)
        with ProgressDisplay() as progress:  # plain timestamped lines in a Pod's log
            if args.tuning_worker:
                study, did = run_tuning_worker(resource, study_storage=study_storage, attempt=os.environ.get(JobEnv.RUN_ID.value, ""),
                                               artifacts_uri=artifacts, progress=progress)
                finish(JobMessage.worker_done(WorkerReport(
                    study=study, trials=did.trials, stopped_because=did.stopped_because,
                    counts=TrialCounts(finished=did.finished, failed=did.failed, running=did.running))))
                return 0
            result = run_optimization(resource, run_id=os.environ.get(JobEnv.RUN_ID.value), artifacts_uri=artifacts,
                                      progress=progress, study_storage=study_storage)
    except KompressError as exc:
        finish(JobMessage.failure(exc.reason, str(exc)))
        raise
    except Exception as exc:
        finish(JobMessage.failure("PipelineFailed", f"{type(exc).__name__}: {exc}"))
        raise
    finish(JobMessage.success(run_summary(result.results)))
    print_results(result.results, sys.stdout)
    return 0


def _fetch_promoted(args: argparse.Namespace) -> int:
    from kompress_jobs.storage.promoted import fetch_promoted
    from kompress_jobs.spec.uris import is_s3
    from kompress_jobs.storage.store import open_store

    if not is_s3(args.location) and not Path(args.location).expanduser().is_dir():
        raise KompressError(f"{args.location}: no such folder (the promotion root holding current.json: a folder or s3://bucket/prefix)")
    pointer = fetch_promoted(open_store(args.location, args.endpoint_url, args.region), args.target)
    print(f"kompress: {pointer.candidate} of run {pointer.run.id} (sha256 {pointer.digest[:16]}…) "
          f"in {args.target}: {', '.join(sorted(p.name for p in args.target.iterdir()))}")
    return 0


def _study_storage(spec) -> str | None:
    """The shared study's URL, for a parallel study (its trials run in the tuning Job's Pods)."""
    from kompress_jobs.errors import StudyStorageMissing
    from kompress_jobs.tuning.study_storage import check_url

    if spec.tuning is None or spec.tuning.parallelism == 1:
        return None
    url = os.environ.get(JobEnv.STUDY_STORAGE.value)
    if not url:
        raise StudyStorageMissing(f"spec.tuning.parallelism {spec.tuning.parallelism} needs a study database, and "
                                f"{JobEnv.STUDY_STORAGE.value} is empty: the Secret named by spec.tuning.storageSecret "
                                f"(or the operator's studyStorageSecret) must exist in this namespace with the URL under its key")
    check_url(url)
    return url


def _job_resource(operator_release: str | None):
    from kompress_jobs.spec.contract import unknown_field_hint
    from kompress_jobs.spec.specfile import resource_from_dict

    raw = os.environ.get(JobEnv.RESOURCE.value)
    if not raw:
        raise SpecError(f"{JobEnv.RESOURCE.value} is not set: `kompress job` runs inside a Job the operator creates")
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{JobEnv.RESOURCE.value} is not JSON: {exc}") from None
    try:
        return resource_from_dict(document, "resource")
    except SpecError as exc:
        hint = unknown_field_hint(operator_release)
        if not hint:
            raise
        raise VersionMismatchError(f"{exc}{hint}") from None


if __name__ == "__main__":
    sys.exit(main())
