"""`kompress validate` over what a GitOps repository holds: files of several YAML documents, folders
that mix ModelOptimizations with other manifests (a kustomization.yaml, Namespaces, Secrets), and
specs whose local files exist only in the job image (`--no-files`). Each ModelOptimization is
checked as the operator would admit it, its size included; every other document is named as
skipped, so a CI log says what was and was not looked at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kompress_jobs.spec.contract import spec_bytes
from kompress_jobs.errors import KompressError, SpecError
from kompress_jobs.spec.schema import API_GROUP, ModelOptimization

KIND = "ModelOptimization"


@dataclass(frozen=True)
class Checked:
    """One document's verdict: the resource, or why it was skipped, or the error."""

    where: str
    resource: ModelOptimization | None = None
    skipped: str | None = None
    error: KompressError | None = None


def documents_of(path: Path) -> list[tuple[str, object]]:
    """(where, document) for every document of a YAML file; SpecError when it is not readable YAML."""
    from kompress_jobs.spec.specfile import parse_documents, read_spec_text

    documents = parse_documents(read_spec_text(path), str(path))
    if len(documents) == 1:
        return [(str(path), documents[0])]
    return [(f"{path} (document {index + 1})", document) for index, document in enumerate(documents)]


def check_file(path: Path, *, files: bool = True, max_spec_bytes: int | None = None) -> list[Checked]:
    try:
        documents = documents_of(path)
    except KompressError as exc:
        return [Checked(str(path), error=exc)]
    if not documents:
        return [Checked(str(path), skipped="no YAML document")]
    return [check_document(where, document, path.parent, files=files, max_spec_bytes=max_spec_bytes)
            for where, document in documents]


def check_document(where: str, document: object, base_dir: Path, *, files: bool = True,
                   max_spec_bytes: int | None = None) -> Checked:
    kind = document.get("kind") if isinstance(document, dict) else None
    group = str(document.get("apiVersion", "")).split("/")[0] if isinstance(document, dict) else ""
    if kind != KIND or group != API_GROUP:
        what = f"kind {kind}" if isinstance(kind, str) else "not a Kubernetes object"
        return Checked(where, skipped=f"{what}, not a {KIND}")
    from kompress_jobs.api import validate_resource
    from kompress_jobs.spec.specfile import resource_from_dict

    try:
        resource = resource_from_dict(document, where)
        size = spec_bytes(resource.spec)
        if max_spec_bytes is not None and size > max_spec_bytes:
            raise SpecError(f"spec: {size} bytes of JSON are more than the operator takes ({max_spec_bytes}, its "
                            "maxSpecBytes): it would refuse it at apply")
        validate_resource(resource, base_dir, files=files)
    except KompressError as exc:
        return Checked(where, error=exc)
    return Checked(where, resource=resource)


def spec_files(paths: list[Path]) -> list[Path]:
    """The files as given, a folder as the YAML files under it, its subfolders' too (hidden ones
    left out), as a GitOps repository keeps them; a folder with none is an error."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not inside:
                raise SpecError(f"{path}: a folder with no .yaml or .yml file to validate")
            found += inside
        else:
            found.append(path)
    return found
