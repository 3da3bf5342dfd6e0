"""Read a ModelOptimization from YAML and turn validation failures into one readable line each."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SpecError
from .schema import PASS_TYPES, ModelOptimization


def load_resource_file(path: str | Path) -> ModelOptimization:
    return parse_resource(read_spec_text(Path(path)), source=str(path))


def read_spec_text(path: Path) -> str:
    """A spec file's text; SpecError naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None


def parse_documents(text: str, source: str = "<input>") -> list[Any]:
    """Every YAML document of the text (empty ones left out); SpecError naming line and column."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{source}: malformed YAML{where}: {problem}") from None


def parse_resource(text: str, source: str = "<input>") -> ModelOptimization:
    documents = parse_documents(text, source)
    if len(documents) != 1:
        raise SpecError(f"{source}: expected one YAML document holding a ModelOptimization, found {len(documents)}")
    return resource_from_dict(documents[0], source)


def resource_from_dict(document: Any, source: str = "<input>") -> ModelOptimization:
    if not isinstance(document, dict):
        raise SpecError(f"{source}: expected a mapping with apiVersion, kind, metadata and spec")
    try:
        return ModelOptimization.model_validate(document)
    except ValidationError as exc:
        raise SpecError(f"{source}: " + "; ".join(describe_errors(exc))) from None


def describe_errors(exc: ValidationError, model: type[BaseModel] = ModelOptimization) -> list[str]:
    """One 'field.path: what is wrong' string per error, in the resource's own field names, with a
    "did you mean" for a misspelt field, pass type or value."""
    lines = []
    for error in exc.errors():
        path = _field_path(error["loc"])
        message = _message(error) + _suggestion(error, model)
        lines.append(f"{path}: {message}" if path else message)
    return list(dict.fromkeys(lines))  # unions can repeat an error; keep the first of each


def _suggestion(error: dict[str, Any], model: type[BaseModel]) -> str:
    kind, typed = error["type"], error.get("input")
    if kind == "extra_forbidden":
        known = _fields_at(model, error["loc"][:-1])
        typed = error["loc"][-1]
    elif kind == "union_tag_invalid":
        known, typed = list(PASS_TYPES), (error.get("ctx") or {}).get("tag")
    elif kind in ("enum", "literal_error"):
        known = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
    else:
        return ""
    close = difflib.get_close_matches(str(typed), known, n=2, cutoff=0.6) if isinstance(typed, str) and known else []
    fold = {k.lower().replace("_", "").replace("-", ""): k for k in known}
    folded = [fold[k] for k in [str(typed).lower().replace("_", "").replace("-", "")] if k in fold]
    if folded:  # case and separators are the usual slips: perchannel, per_channel -> perChannel
        close = folded
    elif len(close) == 2 and _likeness(typed, close[0]) == _likeness(typed, close[1]):
        return ""  # as close to two (P90: P95 or P99?): the message lists the choices; guessing one misleads
    return f" (did you mean {close[0]!r}?)" if close and close[0] != typed else ""


def _likeness(a: Any, b: str) -> float:
    return difflib.SequenceMatcher(None, str(a), b).ratio()


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The wire names of the fields of the object at `loc` (empty when the walk cannot follow it)."""
    from ..passes import PASSES

    node: Any = model
    for item in loc:
        if isinstance(item, str) and item in PASSES and isinstance(node, (list, tuple)):
            node = PASSES[item].settings  # a pass's settings: the union's tag names the variant
            continue
        if isinstance(item, int):
            continue  # into a list: the item type was taken with the list
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            return []
        field = next((f for name, f in node.model_fields.items() if item in (name, f.alias)), None)
        if field is None:
            return []
        node = _model_in(field.annotation)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [f.alias or name for name, f in node.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    """The model an annotation holds (through Optional, list and Annotated), or the union's variants."""
    for _ in range(4):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        args = [a for a in get_args(annotation) if a is not type(None)]
        if not args:
            return annotation
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) > 1:
            return tuple(models)  # the pass union: the next loc item is the tag
        annotation = models[0] if models else args[0]
    return annotation


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for index, item in enumerate(loc):
        # A discriminated union adds the tag (the pass type) after the list index: drop it.
        if isinstance(item, str) and item in PASS_TYPES and index > 0 and isinstance(loc[index - 1], int):
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and item.startswith("function-"):
            continue
        elif isinstance(item, str) and not _PLAIN_KEY.match(item):
            parts.append(f"[{json.dumps(item)}]")  # a key with spaces or control characters: quoted, one line
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _message(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be ≥ {_number(ctx['ge'])}"
    if kind == "greater_than":
        return f"must be > {_number(ctx['gt'])}"
    if kind == "less_than_equal":
        return f"must be ≤ {_number(ctx['le'])}"
    if kind == "less_than":
        return f"must be < {_number(ctx['lt'])}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "union_tag_invalid":
        return f"unknown pass type {ctx.get('tag')!r}; known types: {', '.join(PASS_TYPES)}"
    if kind == "union_tag_not_found":
        return f"every pass needs a type, one of: {', '.join(PASS_TYPES)}"
    if kind in ("enum", "literal_error"):
        return f"must be one of {ctx.get('expected')}, got {error.get('input')!r}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"allows at most {ctx.get('max_length')} item(s)"
    if kind == "string_pattern_mismatch":
        return f"{error.get('input')!r} must match {ctx.get('pattern')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    message = error["msg"]
    return message[0].lower() + message[1:]


def resolve_path(path: str, base_dir: Path) -> Path:
    """Relative paths in a spec are relative to the spec file, as in kustomize."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base_dir / candidate)
