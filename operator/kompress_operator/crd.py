"""Generate the ModelOptimization CRD from the pydantic schema (the single source of truth).

    python -m kompress_operator.crd > crds/kompress.io_modeloptimizations.yaml

Pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: no $ref, no
anyOf/oneOf choosing between types, int-or-string spelled its own way. The pass list is a
discriminated union: the CRD merges its variants into one object whose `type` is an enum and that
carries every variant's fields without defaults (a default would add a field another pass type does
not have). What the CRD cannot express (per-type fields, cross-field rules) the operator checks with
the same pydantic models and reports as a condition naming the field.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from kompress_jobs.spec.schema import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    ModelOptimizationSpec,
)
from kompress_jobs.spec.status import ModelOptimizationStatus

CRD_NAME = f"{PLURAL}.{API_GROUP}"
CRD_FILE = f"{API_GROUP}_{PLURAL}.yaml"
_DROP = {"title", "discriminator", "$defs", "propertyNames"}  # map keys: bounded by pydantic, not expressible in 1.20's CRDs


def structural(node: Any, defs: dict[str, Any], no_defaults: bool = False) -> Any:
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = structural(defs[node["$ref"].split("/")[-1]], defs, no_defaults)
        extras = {k: v for k, v in node.items() if k not in ("$ref",) and k not in _DROP}
        return {**target, **structural(extras, defs, no_defaults)}
    if "anyOf" in node:
        return _any_of(node, defs, no_defaults)
    if "oneOf" in node:
        return _merge_union(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (no_defaults and key == "default"):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: structural(sub, defs, no_defaults) for name, sub in value.items()}
        elif key == "additionalProperties" and value is False:
            continue  # Kubernetes prunes unknown fields instead; it forbids this beside `properties`
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs, no_defaults)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    return out


def _any_of(node: dict, defs: dict, no_defaults: bool) -> dict:
    options = [o for o in node["anyOf"] if o.get("type") != "null"]
    rest = {k: v for k, v in node.items() if k != "anyOf" and k not in _DROP}
    if no_defaults:
        rest.pop("default", None)
    if rest.get("default", "") is None:
        rest.pop("default")  # "unset" needs no default in Kubernetes
    kinds = {o.get("type") for o in options}
    if kinds == {"integer", "string"}:
        bound = next((o["maxLength"] for o in options if "maxLength" in o), None)
        return {"x-kubernetes-int-or-string": True, **({"maxLength": bound} if bound else {}), **rest}
    if len(options) == 1:
        return {**structural(options[0], defs, no_defaults), **structural(rest, defs, no_defaults)}
    if kinds <= {"integer", "number", "string", "boolean"}:
        # A scalar of several types (search choices): Kubernetes cannot say "one of these types",
        # so the CRD lets any value through and the operator's pydantic check names a bad one.
        return {"x-kubernetes-preserve-unknown-fields": True, **rest}
    raise ValueError(f"cannot express anyOf {options} structurally")


def _merge_union(node: dict, defs: dict) -> dict:
    variants = [structural(o, defs, no_defaults=True) for o in node["oneOf"]]
    properties: dict[str, Any] = {}
    for variant in variants:
        for name, schema in variant.get("properties", {}).items():
            if name == "type":
                continue
            if name in properties and properties[name] != schema:
                properties[name] = _loosen(properties[name], schema)
            else:
                properties.setdefault(name, schema)
    types = [v["properties"]["type"]["enum"][0] for v in variants]
    merged = {
        "type": "object",
        "description": "One pass; `type` selects it. Fields of other pass types are rejected by the operator.",
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": types}, **dict(sorted(properties.items()))},
    }
    return merged


def _loosen(first: dict, second: dict) -> dict:
    """The same field in two pass types with different rules: keep only what both share."""
    shared = {k: v for k, v in first.items() if second.get(k) == v}
    if "enum" in first and "enum" in second and "type" in shared:  # e.g. `precision` of TensorRT and OnnxGenAI
        shared["enum"] = list(dict.fromkeys(first["enum"] + second["enum"]))
    return shared if "type" in shared or "x-kubernetes-int-or-string" in shared else {"x-kubernetes-preserve-unknown-fields": True}


def schema_of(model, defaults: bool = True) -> dict:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(copy.deepcopy(raw), raw.get("$defs", {}), no_defaults=not defaults)


def spec_schema() -> dict:
    return schema_of(ModelOptimizationSpec)


def crd() -> dict:
    condition = '.status.conditions[?(@.type=="Succeeded")]'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "annotations": {"kompress.io/generated-by": "python -m kompress_operator.crd"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": KIND.lower(),
                      "shortNames": ["mopt"], "categories": ["kompress", "ml"]},
            "versions": [{
                "name": API_VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Succeeded", "type": "string", "jsonPath": f"{condition}.status"},
                    {"name": "Reason", "type": "string", "jsonPath": f"{condition}.reason"},
                    {"name": "Best", "type": "string", "jsonPath": ".status.best.name"},
                    {"name": "Speedup", "type": "number", "jsonPath": ".status.best.speedup", "format": "float"},
                    {"name": "Smaller", "type": "number", "jsonPath": ".status.best.sizeRatio", "format": "float"},
                    {"name": "Targets", "type": "string", "jsonPath": ".status.targetsDone"},  # done/all; empty without targets
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    # -o wide, after Age as kubectl's own wide columns are
                    {"name": "Promoted", "type": "string", "jsonPath": ".status.promotion.runId", "priority": 1},
                    {"name": "Last-Schedule", "type": "date", "jsonPath": ".status.reoptimization.lastScheduleTime", "priority": 1},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "An optimization run: a model, its data, passes to try and goals to meet.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(),
                        # The operator writes every field it means; a default would only add noise.
                        "status": schema_of(ModelOptimizationStatus, defaults=False),
                    },
                }},
            }],
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """No &anchors / *aliases: some YAML consumers (and readers) handle them badly."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = "# Generated from jobs/kompress_jobs/spec/schema.py by `python -m kompress_operator.crd`. Do not edit.\n"
    return header + yaml.dump(crd(), Dumper=_PlainDumper, sort_keys=False, width=120)


# Where the generated CRD is checked in: the plain manifests, and the chart (Helm reads files only
# from inside the chart, so it carries its own copy; tests keep both equal to render()).
REPO = Path(__file__).resolve().parents[2]
CRD_COPIES = (REPO / "crds" / CRD_FILE, REPO / "charts" / "kompress" / "files" / "crds" / CRD_FILE)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        for path in CRD_COPIES:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render())
            print(f"wrote {path.relative_to(REPO)}")
    else:
        sys.stdout.write(render())
