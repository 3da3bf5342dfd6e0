"""`kompress`: run and check ModelOptimization specs on a laptop, the same YAML the cluster takes.

Heavy libraries (torch, ONNX Runtime) load only when a command needs them, so `kompress validate`
and the operator image stay light.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from kompress_operator.settings import OperatorSettings

from . import __version__
from .contract import JobEnv
from .errors import KompressError, SpecError, VersionMismatchError



def _json_object(text: str) -> dict:
    """argparse type: a JSON object (flags that take structured values, e.g. --job-resources)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value

def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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

    optimize = commands.add_parser("optimize", help="run the optimization pipeline on a ModelOptimization YAML")
    optimize.add_argument("file", type=Path, help="ModelOptimization YAML")
    optimize.add_argument("--output", "-o", help="artifact destination (directory or s3://bucket/prefix); "
                          "overrides spec.artifacts.uri")
    optimize.add_argument("--run-id", help="name of the run folder (default: <name>-<UTC time>-<random>)")
    optimize.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    optimize.set_defaults(handler=_optimize)

    job = commands.add_parser("job", help="run one optimization inside a Kubernetes Job (launched by the operator)")
    job.add_argument("--termination-log", type=Path,
                     default=Path(os.environ.get(JobEnv.TERMINATION_LOG.value, "/dev/termination-log")),
                     help=f"where the compact result for the operator goes [{JobEnv.TERMINATION_LOG.value}]")
    job.set_defaults(handler=_job)

    operator = commands.add_parser("operator", help="run the Kubernetes operator (kubeconfig or in-cluster config)")
    env = lambda name, default: os.environ.get(f"KOMPRESS_{name}") or default  # noqa: E731  (empty = unset, as charts write)
    defaults = OperatorSettings()
    operator.add_argument("--namespace", action="append", default=[n for n in env("NAMESPACES", "").split(",") if n],
                          help="watch only this namespace (repeatable; default: all) [KOMPRESS_NAMESPACES]")
    operator.add_argument("--max-running", type=int, default=int(env("MAX_RUNNING", defaults.max_running)),
                          help="optimization Jobs in flight cluster-wide [KOMPRESS_MAX_RUNNING]")
    operator.add_argument("--max-running-per-namespace", type=int,
                          default=int(env("MAX_RUNNING_PER_NAMESPACE", defaults.max_running_per_namespace)),
                          help="optimization Jobs in flight per namespace [KOMPRESS_MAX_RUNNING_PER_NAMESPACE]")
    operator.add_argument("--cpu-image", default=env("CPU_IMAGE", defaults.cpu_image))
    operator.add_argument("--gpu-image", default=env("GPU_IMAGE", defaults.gpu_image))
    operator.add_argument("--default-artifacts", default=env("DEFAULT_ARTIFACTS", None),
                          help="artifact URI for specs that name none [KOMPRESS_DEFAULT_ARTIFACTS]")
    operator.add_argument("--artifacts-secret", default=env("ARTIFACTS_SECRET", None),
                          help="Secret (in each run's namespace) whose keys become the Job's environment, e.g. AWS_*")
    operator.add_argument("--job-env", action="append", default=[], metavar="NAME=VALUE",
                          help="environment variable for every Job (repeatable; adds to KOMPRESS_JOB_ENV, "
                          'a JSON object such as \'{"AWS_REGION": "eu-west-1"}\')')
    operator.add_argument("--job-resources", type=_json_object, default=env("JOB_RESOURCES", "{}"),
                          metavar="JSON", help='default Job container resources, e.g. \'{"requests": {"cpu": "2"}}\'; '
                          "a spec's own requests or limits replace them [KOMPRESS_JOB_RESOURCES]")
    operator.add_argument("--job-service-account", default=env("JOB_SERVICE_ACCOUNT", None),
                          help="ServiceAccount for Job Pods whose spec names none [KOMPRESS_JOB_SERVICE_ACCOUNT]")
    operator.add_argument("--image-pull-policy", default=env("IMAGE_PULL_POLICY", defaults.image_pull_policy),
                          choices=["Always", "IfNotPresent", "Never"])
    operator.add_argument("--ttl-seconds-after-finished", type=int,
                          default=int(env("TTL_SECONDS_AFTER_FINISHED", defaults.ttl_seconds_after_finished)),
                          help="how long finished Jobs stay, unless a spec says otherwise")
    operator.add_argument("--metrics-port", type=int, default=int(env("METRICS_PORT", defaults.metrics_port)))
    operator.add_argument("--health-port", type=int, default=int(env("HEALTH_PORT", defaults.health_port)))
    operator.add_argument("--retry-interval", type=float, default=float(env("RETRY_INTERVAL", defaults.retry_interval_seconds)),
                          help="seconds between retries of a run whose start failed (the API server away, a refused Job)")
    operator.add_argument("--watch-server-timeout", type=int,
                          default=int(env("WATCH_SERVER_TIMEOUT", defaults.watch_server_timeout_seconds)),
                          help="seconds after which the API server ends each watch (Kopf then resumes it)")
    operator.add_argument("--watch-client-timeout", type=int,
                          default=int(env("WATCH_CLIENT_TIMEOUT", defaults.watch_client_timeout_seconds)),
                          help="seconds after which the operator gives up on a watch stream that went silent and "
                               "opens a new one (keep it above --watch-server-timeout)")
    operator.add_argument("--peering", default=env("PEERING", None),
                          help="Kopf peering name, for more than one replica (default: standalone)")
    operator.add_argument("--peering-priority", type=int, default=env("PEERING_PRIORITY", None),
                          help="this replica's peering priority (default: random, so one replica serves "
                          "and the others stand by; equal priorities would make Kopf freeze all of them)")
    operator.set_defaults(handler=_operator)

    validate = commands.add_parser("validate", help="check a ModelOptimization YAML without running it")
    validate.add_argument("file", type=Path)
    validate.set_defaults(handler=_validate)
    return parser


def _operator(args: argparse.Namespace) -> int:
    try:
        from kompress_operator.main import run
    except ImportError as exc:
        raise KompressError(f"the operator needs the 'operator' extra (pip install 'kompress[operator]'): {exc}") from None
    bad_env = [item for item in args.job_env if "=" not in item]
    if bad_env:
        raise SpecError(f"--job-env takes NAME=VALUE, got {bad_env[0]!r}")
    try:
        env_json = _json_object(os.environ.get("KOMPRESS_JOB_ENV") or "{}")
    except argparse.ArgumentTypeError as exc:
        raise SpecError(f"KOMPRESS_JOB_ENV: {exc}") from None
    extra_env = {str(k): str(v) for k, v in env_json.items()} | dict(item.split("=", 1) for item in args.job_env)
    priority = args.peering_priority if args.peering_priority is not None else random.randint(1, 2**31 - 1)
    settings = OperatorSettings(
        namespaces=tuple(args.namespace), max_running=args.max_running, max_running_per_namespace=args.max_running_per_namespace,
        cpu_image=args.cpu_image, gpu_image=args.gpu_image, default_artifacts=args.default_artifacts,
        artifacts_secret=args.artifacts_secret, metrics_port=args.metrics_port, health_port=args.health_port,
        retry_interval_seconds=args.retry_interval, extra_env=extra_env,
        watch_server_timeout_seconds=args.watch_server_timeout, watch_client_timeout_seconds=args.watch_client_timeout,
        default_job_resources=args.job_resources,
        job_service_account=args.job_service_account, image_pull_policy=args.image_pull_policy,
        ttl_seconds_after_finished=args.ttl_seconds_after_finished, peering_priority=priority,
    )
    run(settings, peering=args.peering)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .plan import plan_passes
    from .specfile import load_resource_file

    resource = load_resource_file(args.file)
    steps = plan_passes(resource.spec)
    chain = ", ".join(f"{s.name} ← {s.input}" for s in steps)
    print(f"{args.file}: valid ModelOptimization {resource.metadata.name!r}; passes: {chain}")
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from .pipeline import run_optimization
    from .specfile import load_resource_file

    resource = load_resource_file(args.file)
    started = time.monotonic()

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    result = run_optimization(
        resource, base_dir=args.file.parent, artifacts_uri=args.output, run_id=args.run_id, progress=progress,
    )
    print(results_table(result.report))
    print(f"\nArtifacts: {result.run_uri}  (manifest sha256 {result.manifest_sha256[:16]}…)")
    return 0


def _job(args: argparse.Namespace) -> int:
    """The resource arrives as JSON in $KOMPRESS_RESOURCE; a JobMessage leaves in the termination log."""
    from .contract import JobMessage, job_mismatch, unknown_field_hint
    from .pipeline import run_optimization
    from .specfile import resource_from_dict
    from .summary import run_summary

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
        resource = _job_resource(resource_from_dict, operator_release, unknown_field_hint)
        started = time.monotonic()
        result = run_optimization(
            resource, run_id=os.environ.get(JobEnv.RUN_ID.value),
            artifacts_uri=None if resource.spec.artifacts.uri else os.environ.get(JobEnv.DEFAULT_ARTIFACTS.value),
            progress=lambda m: print(f"[{time.monotonic() - started:6.1f}s] {m}", file=sys.stderr, flush=True),
        )
    except KompressError as exc:
        finish(JobMessage.failure(exc.reason, str(exc)))
        raise
    except Exception as exc:
        finish(JobMessage.failure("PipelineFailed", f"{type(exc).__name__}: {exc}"))
        raise
    finish(JobMessage.success(run_summary(result.report, result.run_uri, result.manifest_sha256)))
    print(results_table(result.report))
    return 0


def _job_resource(resource_from_dict, operator_release: str | None, hint):
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
        if not hint(operator_release):
            raise
        raise VersionMismatchError(f"{exc}{hint(operator_release)}") from None


def results_table(report: dict) -> str:
    batch = str(report["primaryBatchSize"])
    header = ("candidate", "runtime", report["metric"], "drop", f"p50 ms (b={batch})", "speedup", "size KiB", "smaller", "verdict")
    rows = []
    for c in report["candidates"]:
        if c["outcome"] != "Measured":
            rows.append((c["name"], "-", "-", "-", "-", "-", "-", "-", f"{c['outcome']}: {c.get('error', '')}"))
            continue
        verdict = "baseline" if c["parent"] is None else (
            "BEST" if c["rank"] == 1 else f"ok #{c['rank']}" if c["accepted"] else "rejected: " + "; ".join(c["rejectedReasons"]))
        rows.append((
            c["name"], f"{c['runtime']} {c['precision']}", f"{c['metric']['value']:.4f}", f"{c['metric']['drop']:+.2f}",
            f"{c['latency'][batch]['p50_ms']:.3f}", f"{c['vsBaseline']['speedupP50']:.2f}x", f"{c['sizeBytes'] / 1024:.1f}",
            f"{c['vsBaseline']['sizeReduction']:.2f}x", verdict,
        ))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in [header, *rows]]
    summary = (f"Best: {report['best']}" if report["best"] else "No candidate met the goals; keep the baseline.")
    return "\n".join(lines + ["", summary])


if __name__ == "__main__":
    sys.exit(main())
