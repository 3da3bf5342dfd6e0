"""Bad-input fuzzing: Hypothesis-generated resources through the pydantic models, the planner and
the operator's own validation and Job builder. Whatever comes in, the answer is a valid Job or a
SpecError naming a field (or, outside the operator's policy, a PolicyViolation naming one) — never
another exception."""

from __future__ import annotations

import typing

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pytest

from kompress_jobs.errors import SpecError
from kompress_jobs.spec.schema import PASS_TYPES, PassSpec
from kompress_operator.controller import validate as _validate
from kompress_operator.jobspec import build_job
from kompress_operator.policy import PolicyViolation
from kompress_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                        max_leaves=8)
# Plausible values that get past the first checks, so the fuzzing reaches deeper rules.
PLAUSIBLE = st.one_of(st.floats(-2, 2), st.integers(-5, 100), st.sampled_from(
    ["baseline", "onnx-export", "ONNX", "TorchScript", "INT8", "FP16", "L2", "All", "QDQ", "kompress_jobs.reference:digits_cnn"]))
PASS_FIELDS = sorted({info.alias or name for model in typing.get_args(typing.get_args(PassSpec)[0])
                      for name, info in model.model_fields.items()} - {"type"})


ANYTHING = st.one_of(PLAUSIBLE, ANY_JSON)


def maybe(values) -> st.SearchStrategy:
    """Mostly the well-formed values, sometimes anything: enough valid resources reach the Job builder."""
    return st.one_of(values, values, values, values, PLAUSIBLE, ANY_JSON)


passes = st.lists(st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(PASS_TYPES + ("Bogus",)),
    st.dictionaries(st.sampled_from(PASS_FIELDS), st.one_of(PLAUSIBLE, ANY_JSON), max_size=2),
), min_size=1, max_size=5)

search_range = st.fixed_dictionaries({"pass": maybe(st.sampled_from(["onnx-export", "prune", "static-int8"])),
                                      "parameter": maybe(st.sampled_from(["amount", "fineTuning.learningRate", "calibrationMethod"]))},
                                     optional={"low": ANYTHING, "high": ANYTHING,
                                               "choices": maybe(st.lists(PLAUSIBLE, max_size=3)), "log": st.booleans()})

specs = st.fixed_dictionaries(
    {"model": maybe(st.fixed_dictionaries({"uri": st.text(max_size=20), "format": st.sampled_from(["ONNX", "TorchScript", "TorchExport", "Pickle"])})),
     "data": maybe(st.fixed_dictionaries({"uri": st.text(min_size=1, max_size=20)})),
     "passes": maybe(passes)},
    optional={
        "goals": maybe(st.fixed_dictionaries({}, optional={"maxAccuracyDrop": ANYTHING, "maxSize": maybe(st.text(max_size=6)),
                                                           "latency": ANYTHING, "optimizeFor": ANYTHING})),
        "benchmark": maybe(st.fixed_dictionaries({}, optional={"batchSizes": maybe(st.lists(st.integers(-2, 70), max_size=4)),
                                                               "rounds": ANYTHING, "threads": ANYTHING})),
        "tuning": maybe(st.fixed_dictionaries({}, optional={"searchSpace": maybe(st.lists(search_range, max_size=3)),
                                                            "objectives": maybe(st.lists(st.sampled_from(["Latency", "Size", "Accuracy", "Speed"]), max_size=3)),
                                                            "trials": ANYTHING, "target": ANYTHING})),
        "job": maybe(st.fixed_dictionaries({}, optional={"device": maybe(st.sampled_from(["CPU", "GPU", "TPU"])),
                                                         "resources": ANYTHING, "tolerations": ANYTHING,
                                                         "activeDeadlineSeconds": ANYTHING})),
        "artifacts": maybe(st.fixed_dictionaries({}, optional={"uri": ANYTHING, "endpointUrl": ANYTHING})),
    })


# A valid spec touching most sections; mutants of it explore the space just around valid input.
VALID = {
    "model": {"uri": "models/digits-cnn.pt", "format": "TorchScript"},
    "data": {"uri": "data/digits.npz"},
    "passes": [{"type": "StructuredPrune", "name": "narrow", "architecture": "kompress_jobs.reference:digits_cnn",
                "amount": 0.5, "fineTuning": {"epochs": 2}},
               {"type": "OnnxExport"}, {"type": "StaticInt8", "calibrationMethod": "Entropy"},
               {"type": "LowRank", "input": "onnx-export", "rankRatio": 0.5}, {"type": "TensorRT", "input": "onnx-export"}],
    "goals": {"maxAccuracyDrop": 1.0, "maxSize": "2Mi", "latency": {"percentile": "P95", "maxMilliseconds": 5}},
    "benchmark": {"batchSizes": [1, 8], "rounds": 3},
    "tuning": {"trials": 4, "searchSpace": [{"pass": "narrow", "parameter": "amount", "low": 0.2, "high": 0.8}]},
    "job": {"device": "GPU", "resources": {"limits": {"cpu": "2"}}, "tolerations": [{"key": "gpu", "operator": "Exists"}]},
    "artifacts": {"uri": "s3://bucket/runs", "endpointUrl": "http://minio:9000"},
}


def _leaf_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaf_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaf_paths(value, prefix + (index,))
    yield prefix


PATHS = [p for p in _leaf_paths(VALID) if p]


def _mutate(mutations) -> dict:
    import copy

    spec = copy.deepcopy(VALID)
    for path, value in mutations:
        node = spec
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier mutation replaced a parent
            pass
    return spec


def _at(path):
    node = VALID
    for part in path:
        node = node[part]
    return node


def _like(original) -> st.SearchStrategy:
    """Values of the original's type (most mutants stay well-formed), or anything at all."""
    if isinstance(original, bool):
        typed = st.booleans()
    elif isinstance(original, int):
        typed = st.integers(-3, 200)
    elif isinstance(original, float):
        typed = st.floats(-1, 10)
    elif isinstance(original, str):
        typed = st.one_of(st.text(max_size=12), PLAUSIBLE)
    else:
        typed = ANY_JSON
    return st.one_of(typed, typed, typed, ANY_JSON)


mutation = st.sampled_from(PATHS).flatmap(lambda path: st.tuples(st.just(path), _like(_at(path))))
mutants = st.lists(mutation, min_size=1, max_size=3).map(_mutate)


# A policy that lets every spec through, so that every valid spec still exercises the Job builder.
PERMISSIVE = OperatorSettings(allowed_images=("*",), allow_service_accounts=True, allowed_tolerations=[{}], storage_locations=("*",),
                              allowed_priority_classes=("*",), max_retries=10, max_failed_trials=10**6, allowed_endpoints=("*",),
                              max_active_deadline_seconds=10**12)


def body(spec) -> dict:
    return {"apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization",
            "metadata": {"name": "fuzzed", "namespace": "default", "generation": 1, "uid": "0000"}, "spec": spec}


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(specs, mutants))
def test_any_spec_is_either_a_job_or_a_spec_error(spec):
    document = body(spec)
    try:
        resource = _validate(document)
    except SpecError as error:
        assert str(error).startswith("spec") and "\n" not in str(error)  # names the field, one line
        return
    try:
        build_job(document, resource.spec, OperatorSettings(storage_locations=("*",)))
        event("valid resource: Job built under the default policy")
    except PolicyViolation as refusal:
        assert all(str(v).startswith("spec.") and "\n" not in str(v) for v in refusal.violations)
        event("valid resource: refused by the default policy")
    job = build_job(document, resource.spec, PERMISSIVE)
    assert job["kind"] == "Job" and job["metadata"]["name"] == "fuzzed-g1"


@settings(max_examples=200, deadline=None)
@given(ANY_JSON)
def test_any_json_document_is_rejected_cleanly(document):
    from kompress_jobs.spec.specfile import resource_from_dict

    try:
        resource_from_dict(document)
    except SpecError:
        pass
