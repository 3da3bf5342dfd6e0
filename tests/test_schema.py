"""The resource schema: the examples parse, and bad specs get one line naming the field."""

from pathlib import Path

import pytest
import yaml
from kompress_jobs.errors import SpecError
from kompress_jobs.spec.goals import parse_size
from kompress_jobs.spec.schema import ModelOptimization
from kompress_jobs.spec.specfile import (
    load_resource_file,
    parse_resource,
    resource_from_dict,
)

from .conftest import EXAMPLES, resource_dict

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_a_valid_resource(path: Path):
    resource = load_resource_file(path)
    assert resource.kind == "ModelOptimization"
    assert resource.spec.passes or resource.spec.targets  # a fleet example lets each target's Job plan its passes


def test_wire_form_round_trips_in_camel_case():
    resource = resource_from_dict(resource_dict(goals={"maxAccuracyDrop": 0.5, "maxSize": "2Mi"}))
    wire = resource.to_wire()
    assert wire["spec"]["goals"] == {"maxAccuracyDrop": 0.5, "accuracyDropMode": "Absolute", "maxSize": "2Mi",
                                     "optimizeFor": "Latency"}
    assert ModelOptimization.model_validate(wire) == resource


def _error(document) -> str:
    with pytest.raises(SpecError) as caught:
        resource_from_dict(document, "spec.yaml")
    return str(caught.value)


def test_negative_goal_names_the_field():
    message = _error(resource_dict(goals={"maxAccuracyDrop": -1}))
    assert message == "spec.yaml: spec.goals.maxAccuracyDrop: must be ≥ 0"


def test_unknown_pass_lists_the_known_types():
    message = _error(resource_dict(passes=[{"type": "OnnxExport"}, {"type": "Quantum"}]))
    assert "spec.passes[1]: unknown pass type 'Quantum'" in message
    assert "StaticInt8" in message


def test_bad_pass_parameter_names_its_index_not_the_union_tag():
    message = _error(resource_dict(passes=[{"type": "StaticInt8", "calibrationSamples": 0}]))
    assert message == "spec.yaml: spec.passes[0].calibrationSamples: must be ≥ 1"


def test_unknown_field_is_rejected_rather_than_ignored():
    assert "spec.goals.maxAccuracyDorp: unknown field" in _error(resource_dict(goals={"maxAccuracyDorp": 1}))


def test_missing_model_is_required():
    document = resource_dict()
    del document["spec"]["model"]
    assert "spec.model: is required" in _error(document)


def test_latency_goal_batch_must_be_benchmarked():
    message = _error(resource_dict(goals={"latency": {"maxMilliseconds": 1, "batchSize": 3}}))
    assert "batchSize 3 is not among benchmark.batchSizes [1, 8]" in message


def test_metric_must_fit_task():
    message = _error(resource_dict(task={"type": "Regression", "metric": "Accuracy"}))
    assert "spec.task: metric Accuracy does not fit a Regression task" in message


def test_malformed_yaml_reports_line_and_column():
    with pytest.raises(SpecError, match=r"bad.yaml: malformed YAML \(line 3, column 1\): expected .,. or .\]."):
        parse_resource("spec:\n  passes: [a, b\n", "bad.yaml")


def test_several_documents_are_refused():
    text = yaml.safe_dump(resource_dict()) + "---\n" + yaml.safe_dump(resource_dict())
    with pytest.raises(SpecError, match="expected one YAML document"):
        parse_resource(text)


def test_wrong_kind_is_refused():
    document = resource_dict()
    document["kind"] = "Deployment"
    assert "kind: must be one of 'ModelOptimization'" in _error(document)


@pytest.mark.parametrize(("text", "expected"), [("1500", 1500), ("12Mi", 12 * 2**20), ("5M", 5_000_000), (2048, 2048),
                                                ("1.5Gi", int(1.5 * 2**30))])
def test_sizes_accept_kubernetes_quantities(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12Qi", "-3", "ten", True])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_a_fidelity_task_defaults_to_cosine_and_takes_only_fidelity_metrics():
    resource = resource_from_dict(resource_dict(task={"type": "Fidelity"}))
    assert resource.spec.task.metric.value == "CosineSimilarity" and not resource.spec.task.needs_labels
    message = _error(resource_dict(task={"type": "Fidelity", "metric": "Accuracy"}))
    assert "metric Accuracy does not fit a Fidelity task (it takes CosineSimilarity, KlDivergence" in message


def test_a_relative_drop_of_a_metric_whose_baseline_is_zero_is_refused():
    message = _error(resource_dict(task={"type": "Fidelity", "metric": "KlDivergence"}, goals={"accuracyDropMode": "Relative"}))
    assert "KlDivergence of the baseline to itself is 0 (use Absolute)" in message


def test_text_data_needs_a_tokenizer_and_labelled_tasks_need_a_label_column():
    text = {"uri": "data/s.jsonl", "text": {"column": "text"}}
    assert "data.text.tokenizer: text data needs a tokenizer directory" in _error(resource_dict(data=text))
    checkpoint = {"uri": "models/ckpt", "format": "HuggingFace"}
    message = _error(resource_dict(model=checkpoint, data=text))
    assert "data.text.labelColumn: a Classification task needs labels (or use task.type: Fidelity)" in message
    assert resource_from_dict(resource_dict(model=checkpoint, data=text, task={"type": "Fidelity"})).spec.data.text.max_length == 128


def test_hugging_face_options_need_the_hugging_face_format():
    message = _error(resource_dict(model={"uri": "m.onnx", "format": "ONNX", "huggingFace": {"pooling": "Cls"}}))
    assert "huggingFace options need format: HuggingFace, not ONNX" in message


def test_each_pass_owns_its_settings_and_the_schema_takes_them_from_the_registry():
    from typing import get_args

    from kompress_jobs.passes import PASSES
    from kompress_jobs.passes.settings import PassSettings, pass_type_of
    from kompress_jobs.spec.schema import PASS_TYPES, PassSpec

    union = get_args(get_args(PassSpec)[0])
    assert sorted(PASSES) == list(PASS_TYPES) and {pass_type_of(s) for s in union} == set(PASS_TYPES)
    for type_, pass_class in PASSES.items():
        assert issubclass(pass_class.settings, PassSettings) and pass_type_of(pass_class.settings) == type_
        # Declared beside the pass, not in a shared schema module: adding a pass is one module.
        assert pass_class.settings.__module__ == pass_class.__module__, (type_, pass_class.settings.__module__)
        assert pass_class.settings in union


def test_a_pass_that_names_another_model_has_it_checked_like_the_model():
    """Settings say which models they name (a student); the operator's storage check derives from it."""
    from kompress_operator.locations import spec_locations

    spec = resource_from_dict(resource_dict(passes=[
        {"type": "OnnxExport"}, {"type": "Distill", "name": "d", "student": {"uri": "s3://other-team/s.pt", "format": "TorchScript"}}])).spec
    assert spec.passes[1].model_sources()[0][0] == "student" and spec.passes[0].model_sources() == []
    assert ("spec.passes[1].student.uri", "s3://other-team/s.pt", False) in spec_locations(spec)


def test_a_steered_pass_declares_the_split_it_judges_on():
    spec = resource_from_dict(resource_dict(passes=[{"type": "OnnxExport"}, {"type": "AutoQuantize", "validationSplit": "dev"}])).spec
    assert [p.judging_splits() for p in spec.passes] == [(), ("dev",)]


def test_a_distillation_student_that_cannot_be_trained_is_refused_at_validation():
    message = _error(resource_dict(passes=[{"type": "Distill", "student": {"uri": "s.onnx", "format": "ONNX"}}]))
    assert "spec.passes[0].student" in message and "the student must be a TorchScript archive" in message


@pytest.mark.parametrize("field, value, path", [
    ("model", {"uri": "s3://b/" + "k" * 5000, "format": "ONNX"}, "spec.model.uri"),
    ("job", {"nodeSelector": {f"k{i}": "v" for i in range(40)}}, "spec.job.nodeSelector"),
    ("job", {"tolerations": [{"key": "x"}] * 40}, "spec.job.tolerations"),
])
def test_oversized_strings_lists_and_maps_are_refused_naming_the_field(field, value, path):
    with pytest.raises(SpecError, match=path.replace(".", r"\.")) as refused:
        resource_from_dict(resource_dict(**{field: value}))
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 600


def test_the_pass_table_in_the_docs_has_a_row_per_pass_with_the_formats_it_takes():
    """Adding a pass means adding its docs row: the table names every registered pass and what it accepts."""
    from kompress_jobs.passes import PASSES

    table = (Path(__file__).parent.parent / "docs" / "passes.md").read_text()
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            rows[cells[0].strip("`")] = {name.strip() for name in cells[1].split(",")}
    assert sorted(rows) == sorted(PASSES)
    for type_, pass_class in PASSES.items():
        assert rows[type_] == {f.value for f in pass_class.accepts}, type_


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.update(benchmarks={}), "spec.benchmarks: unknown field (did you mean 'benchmark'?)"),
    (lambda s: s["passes"].append({"type": "DynamicInt8", "perchannel": True}),
     "spec.passes[2].perchannel: unknown field (did you mean 'perChannel'?)"),
    (lambda s: s["passes"].append({"type": "DynamicInt"}), "(did you mean 'DynamicInt8'?)"),
    (lambda s: s["model"].update(format="Torchscript"), "got 'Torchscript' (did you mean 'TorchScript'?)"),
    (lambda s: s.update(goals={"maxAcuracyDrop": 1}), "spec.goals.maxAcuracyDrop: unknown field (did you mean 'maxAccuracyDrop'?)"),
])
def test_a_misspelt_field_pass_type_or_value_gets_a_did_you_mean(change, expected):
    document = resource_dict()
    change(document["spec"])
    assert expected in _error(document)


def test_no_did_you_mean_when_nothing_is_close():
    document = resource_dict()
    document["spec"]["zzzzzz"] = 1
    assert _error(document).endswith("spec.zzzzzz: unknown field")
