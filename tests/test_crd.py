"""crds/ is generated from the pydantic schema and must not drift from it."""

from pathlib import Path

import pytest
import yaml

from kompress_jobs.spec.schema import PASS_TYPES
from kompress_operator.crd import CRD_COPIES, CRD_FILE, render

from .conftest import EXAMPLES

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[1] / "crds"


def test_checked_in_crds_match_the_schema():
    assert CRDS / CRD_FILE in CRD_COPIES
    for path in CRD_COPIES:  # crds/ and the chart's copy
        assert path.read_text() == render(), f"{path} is stale: run `python -m kompress_operator.crd --write`"


def test_crd_is_structural():
    """No $ref, anyOf or oneOf anywhere, and every object either typed or explicitly open."""
    def walk(node, path="openAPIV3Schema"):
        if isinstance(node, dict):
            assert not {"$ref", "anyOf", "oneOf", "allOf", "const"} & set(node), path
            if "properties" in node:
                assert node.get("type") == "object" and "additionalProperties" not in node, path
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    crd = yaml.safe_load((CRDS / CRD_FILE).read_text())
    version = crd["spec"]["versions"][0]
    walk(version["schema"]["openAPIV3Schema"])
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == ["mopt"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Succeeded", "Reason", "Best", "Speedup", "Smaller", "Targets", "Age",
                                                                            "Promoted", "Last-Schedule"]


def test_pass_items_carry_no_defaults():
    """A default on a merged pass field would add it to passes of other types."""
    crd = yaml.safe_load((CRDS / CRD_FILE).read_text())
    items = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["passes"]["items"]
    def keys(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)

    assert "default" not in set(keys(items))
    assert set(items["properties"]["type"]["enum"]) == set(PASS_TYPES)


def test_examples_only_use_fields_the_crd_knows():
    crd = yaml.safe_load((CRDS / CRD_FILE).read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def check(value, schema, path):
        if isinstance(value, dict) and "properties" in schema:
            for key, sub in value.items():
                assert key in schema["properties"], f"{path}.{key} would be pruned by the API server"
                check(sub, schema["properties"][key], f"{path}.{key}")
        elif isinstance(value, list) and "items" in schema:
            for index, sub in enumerate(value):
                check(sub, schema["items"], f"{path}[{index}]")

    for path in EXAMPLES.glob("*.yaml"):
        check(yaml.safe_load(path.read_text())["spec"], spec_schema, f"{path.name}:spec")


def _unbounded(node: dict, path: str) -> list[str]:
    """Paths of strings, lists and maps in a CRD schema that have no size limit."""
    found, kind = [], node.get("type")
    if kind == "array":
        found += [] if "maxItems" in node else [f"{path} (list)"]
        found += _unbounded(node.get("items", {}), f"{path}[]")
    elif isinstance(node.get("additionalProperties"), dict):
        found += [] if "maxProperties" in node else [f"{path} (map)"]
        found += _unbounded(node["additionalProperties"], f"{path}{{}}")
    elif kind == "object" or "properties" in node:
        for name, sub in (node.get("properties") or {}).items():
            found += _unbounded(sub, f"{path}.{name}")
    elif (kind == "string" or node.get("x-kubernetes-int-or-string")) and "maxLength" not in node and "enum" not in node:
        found.append(f"{path} (string)")
    return found


def test_every_string_list_and_map_of_the_spec_is_bounded():
    """One tenant's specs must not grow etcd, the webhook or the operator without bound (issue 27).
    Scalars of several types (search choices) are x-kubernetes-preserve-unknown-fields in the CRD;
    pydantic bounds their strings."""
    crd = yaml.safe_load((CRDS / CRD_FILE).read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert _unbounded(spec, "spec") == []


def test_the_crds_status_schema_is_the_one_the_operator_writes_through():
    """The status the API server validates is generated from the model the operator's writer
    checks every status patch against (writer.status_merge_patch): one model, both ends."""
    from kompress_jobs.spec.status import ModelOptimizationStatus
    from kompress_operator import writer
    from kompress_operator.crd import schema_of

    crd = yaml.safe_load((CRDS / CRD_FILE).read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status == schema_of(ModelOptimizationStatus, defaults=False)
    assert writer.ModelOptimizationStatus is ModelOptimizationStatus
    assert set(status["properties"]) == {field.alias for field in ModelOptimizationStatus.model_fields.values()}
