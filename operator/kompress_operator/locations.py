"""Where a namespace's runs may read and write: the storage half of the operator policy.

Every location a spec names (model, data, tokenizer, a student, artifacts, promotion) must lie
under one of the namespace's allowed prefixes: the `storageLocations` templates with `{namespace}`
filled in, by default `<defaultArtifacts>/{namespace}/`. What a run only reads may also lie under
`readLocations`, every namespace's alike (by default the job image's bundled examples,
`/opt/kompress/examples/`, which the cluster sample reads). Runs lay their files out as
`<root>/<namespace>/<name>/…` (kompress_jobs/storage/layout.py), so with the default a team's runs touch
only `<defaultArtifacts>/<namespace>/`, the prefix an S3 policy grants that team's credentials.
Comparison is by path segment (`s3://ml/team` does not cover `s3://ml/team-a`), and any `.` or
`..` segment is refused outright. `endpointUrl` must be one the policy names: the Job sends the
team's credentials there.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from urllib.parse import urlparse

from kompress_jobs.spec.schema import ModelOptimizationSpec

from .settings import OperatorSettings

ANYWHERE = "*"  # storageLocations: ["*"] turns the check off (one trusted team)


def spec_locations(spec: ModelOptimizationSpec) -> list[tuple[str, str, bool]]:
    """(wire path, URI, whether the run writes there) of every location the spec reads or writes."""
    found = [("spec.model.uri", spec.model.uri, False), ("spec.data.uri", spec.data.uri, False)]
    if spec.data.text is not None and spec.data.text.tokenizer:
        found.append(("spec.data.text.tokenizer", spec.data.text.tokenizer, False))
    found += [(f"spec.passes[{i}].{field}.uri", source.uri, False)
              for i, settings in enumerate(spec.passes) for field, source in settings.model_sources()]
    if spec.artifacts.uri:
        found.append(("spec.artifacts.uri", spec.artifacts.uri, True))
    if spec.promotion is not None and spec.promotion.uri:
        found.append(("spec.promotion.uri", spec.promotion.uri, True))
    return found


def allowed_prefixes(settings: OperatorSettings, namespace: str) -> list[str]:
    templates = settings.storage_locations or (
        (f"{settings.default_artifacts.rstrip('/')}/{{namespace}}/",) if settings.default_artifacts else ())
    return [template.replace("{namespace}", namespace) for template in templates]


def within(uri: str, prefixes: list[str]) -> bool:
    if ANYWHERE in prefixes:
        return True
    mine = _segments(uri)
    return mine is not None and any((allowed := _segments(p)) is not None and mine[: len(allowed)] == allowed
                                    for p in prefixes)


def _segments(uri: str) -> tuple[str, ...] | None:
    """('s3', bucket, key parts…) or ('file', path parts…); None for a location never allowed
    (relative, or with empty, '.' or '..' segments)."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        head, path = ("s3", parsed.netloc), parsed.path
    elif uri.startswith("/"):
        head, path = ("file",), uri
    else:
        return None
    parts = path.strip("/").split("/") if path.strip("/") else []
    if any(p in ("", ".", "..") for p in parts):
        return None
    return (*head, *parts)


def describe(prefixes: list[str]) -> str:
    return ", ".join(prefixes) if prefixes else "none: the operator sets neither storageLocations nor defaultArtifacts"


def outside(spec: ModelOptimizationSpec, settings: OperatorSettings, namespace: str) -> list[tuple[str, str, str]]:
    """(field, policy setting, message) for each location or endpoint outside the policy."""
    prefixes, found = allowed_prefixes(settings, namespace), []
    for field, uri, writes in spec_locations(spec):
        readable = () if writes else settings.read_locations
        if not within(uri, [*prefixes, *readable]):
            also = f"; to read from, also {', '.join(readable)}" if readable else ""
            why = "is not an absolute path or s3:// URI without empty, '.' or '..' segments" if _segments(uri) is None else \
                f"is outside the locations allowed in namespace {namespace} ({describe(prefixes)}{also})"
            found.append((field, "storageLocations", f"{uri} {why}"))
    refused = _endpoint_refused(spec.artifacts.endpoint_url, settings)
    if refused:
        found.append(("spec.artifacts.endpointUrl", "allowedEndpoints", f"{refused}; the Job would send the team's credentials there"))
    return found


def _endpoint_refused(endpoint: str | None, settings: OperatorSettings) -> str | None:
    if endpoint and not any(fnmatchcase(endpoint.rstrip("/"), e.rstrip("/")) for e in settings.allowed_endpoints):
        return f"endpoint {endpoint} is not allowed (allowed: {', '.join(settings.allowed_endpoints) or 'none'})"
    return None


def digest_readable(spec, settings: OperatorSettings, namespace: str) -> str | None:
    """Why the operator may not read the model's digest with its own identity, or None. `spec`
    has the model and artifacts of a ModelOptimizationSpec."""
    if not spec.model.uri.startswith("s3://"):
        return "the operator reads model digests only from S3 (a local path is a file of the Job's image, not the operator's)"
    prefixes = allowed_prefixes(settings, namespace)
    if not within(spec.model.uri, prefixes):
        return f"{spec.model.uri} is outside the locations allowed in namespace {namespace} ({describe(prefixes)})"
    return _endpoint_refused(spec.artifacts.endpoint_url, settings)
