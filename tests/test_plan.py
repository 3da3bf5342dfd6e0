"""The pass chain is resolved and checked before any work is done."""

import pytest

from kompress_jobs.errors import SpecError
from kompress_jobs.planning.plan import plan_passes
from kompress_jobs.spec.specfile import resource_from_dict

from .conftest import resource_dict

pytestmark = pytest.mark.unit


def plan(passes, model_format="TorchScript"):
    return plan_passes(resource_from_dict(resource_dict(passes=passes, model_format=model_format)).spec)


def test_variants_branch_off_the_head_of_the_chain():
    steps = plan([{"type": "OnnxExport"}, {"type": "DynamicInt8"}, {"type": "StaticInt8"}, {"type": "Fp16"}])
    assert [(s.name, s.input) for s in steps] == [
        ("onnx-export", "baseline"), ("dynamic-int8", "onnx-export"), ("static-int8", "onnx-export"), ("fp16", "onnx-export"),
    ]


def test_repeated_types_get_numbered_names_and_explicit_inputs_are_honoured():
    steps = plan([{"type": "OnnxExport"}, {"type": "StaticInt8"}, {"type": "StaticInt8", "perChannel": False},
                  {"type": "OrtOptimize", "input": "static-int8"}])
    assert [(s.name, s.input) for s in steps][1:] == [
        ("static-int8", "onnx-export"), ("static-int8-2", "onnx-export"), ("ort-optimize", "static-int8"),
    ]


def test_onnx_models_need_no_export():
    assert [s.input for s in plan([{"type": "DynamicInt8"}], model_format="ONNX")] == ["baseline"]


def test_quantizing_a_torch_model_without_export_says_what_to_add():
    with pytest.raises(SpecError, match=r"spec.passes\[0\]: DynamicInt8 needs an ONNX model but 'baseline' is TorchScript; add a pass of type OnnxExport"):
        plan([{"type": "DynamicInt8"}])


def test_exporting_an_onnx_model_is_refused():
    with pytest.raises(SpecError, match="OnnxExport needs a HuggingFace, TorchExport or TorchScript model but 'baseline' is ONNX"):
        plan([{"type": "OnnxExport"}], model_format="ONNX")


def test_unknown_input_names_the_known_ones():
    with pytest.raises(SpecError, match=r"spec.passes\[1\].input: no earlier pass is named 'later' \(known: baseline, onnx-export\)"):
        plan([{"type": "OnnxExport"}, {"type": "StaticInt8", "input": "later"}])


def test_duplicate_explicit_names_are_refused():
    with pytest.raises(SpecError, match=r"spec.passes\[2\].name: 'q' is already used"):
        plan([{"type": "OnnxExport"}, {"type": "StaticInt8", "name": "q"}, {"type": "DynamicInt8", "name": "q"}])


def test_a_steered_search_judged_on_the_evaluation_split_is_refused():
    spec = resource_from_dict(resource_dict(passes=[{"type": "OnnxExport"}, {"type": "AutoQuantize", "validationSplit": "evaluation"}])).spec
    with pytest.raises(SpecError, match=r"spec.passes\[1\].validationSplit: must differ from spec.data.evaluationSplit"):
        plan_passes(spec)
