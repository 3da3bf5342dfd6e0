"""Bad input through the real CLI: one clear error line, a non-zero exit, no partial artifacts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from kompress.cli import main

from .conftest import free_port, run_folder

pytestmark = pytest.mark.pipeline


def run_cli(capsys, *args: str) -> tuple[int, list[str], str]:
    code = main(["optimize", "--quiet", *args])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


def assert_one_error(code: int, lines: list[str], *fragments: str) -> None:
    assert code != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith("kompress: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def assert_nothing_published(out_dir: Path) -> None:
    leftovers = [p for p in out_dir.rglob("*") if p.is_file()] if out_dir.exists() else []
    assert leftovers == []


def test_malformed_yaml(capsys, workspace, tmp_path):
    spec = workspace / "bad.yaml"
    spec.write_text("apiVersion: kompress.io/v1alpha1\nspec: {model: [\n")
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "bad.yaml: malformed YAML (line 3")
    assert code == 2
    assert_nothing_published(tmp_path / "out")


def test_unknown_pass(capsys, write_spec, tmp_path):
    spec = write_spec(passes=[{"type": "OnnxExport"}, {"type": "MagicInt2"}])
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "spec.passes[1]: unknown pass type 'MagicInt2'")
    assert_nothing_published(tmp_path / "out")


def test_negative_goal(capsys, write_spec, tmp_path):
    spec = write_spec(goals={"maxAccuracyDrop": -0.5})
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "spec.goals.maxAccuracyDrop: must be ≥ 0")


def test_missing_model_file(capsys, write_spec, tmp_path):
    spec = write_spec(model="models/nope.pt")
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "spec.model.uri: ", "models/nope.pt: no such file")
    assert_nothing_published(tmp_path / "out")


def test_missing_data_file(capsys, write_spec, tmp_path):
    spec = write_spec(data="data/nope.npz")
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "spec.data.uri: ", "data/nope.npz: no such file")


def test_corrupt_onnx(capsys, write_spec, workspace, tmp_path):
    (workspace / "models" / "broken.onnx").write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    spec = write_spec(model="models/broken.onnx", model_format="ONNX", passes=[{"type": "DynamicInt8"}])
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "spec.model.uri: ", "broken.onnx is not a valid ONNX model (DecodeError")
    assert_nothing_published(tmp_path / "out")


def test_corrupt_data_archive(capsys, write_spec, workspace, tmp_path):
    (workspace / "data" / "digits.npz").write_bytes(b"not a zip at all")
    code, lines, _ = run_cli(capsys, str(write_spec()), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "digits.npz: not a readable .npz archive")


def _flat_digits(workspace: Path) -> None:
    """The digits data with images flattened to 64 values: no longer fits the CNN."""
    with np.load(workspace / "data" / "digits.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key in [k for k in arrays if k.startswith("x_")]:
        arrays[key] = arrays[key].reshape(len(arrays[key]), -1)
    np.savez(workspace / "data" / "flat.npz", **arrays)


def test_data_that_does_not_fit_a_torch_model(capsys, write_spec, workspace, tmp_path):
    _flat_digits(workspace)
    code, lines, _ = run_cli(capsys, str(write_spec(data="data/flat.npz")), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "flat.npz: evaluation input 'input' of shape (64,) (float32) per sample does not fit the model")
    assert_nothing_published(tmp_path / "out")


def test_data_that_does_not_fit_an_onnx_model(capsys, write_spec, workspace, tmp_path):
    # First export the CNN to ONNX through the pipeline itself, then feed it flat data.
    code, _, _ = run_cli(capsys, str(write_spec(passes=[{"type": "OnnxExport"}])), "--output", str(tmp_path / "first"),
                         "--run-id", "export")
    assert code == 0
    exported = run_folder(tmp_path / "first", "export") / "candidates" / "onnx-export" / "model.onnx"
    _flat_digits(workspace)
    spec = write_spec(model=str(exported), model_format="ONNX", data="data/flat.npz", passes=[{"type": "DynamicInt8"}])
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "input 'input' has shape (64,) per sample but the model expects (1, 8, 8)")


def test_labels_beyond_the_models_outputs(capsys, write_spec, workspace, tmp_path):
    with np.load(workspace / "data" / "digits.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["y_evaluation"] = arrays["y_evaluation"] + 5
    np.savez(workspace / "data" / "shifted.npz", **arrays)
    code, lines, _ = run_cli(capsys, str(write_spec(data="data/shifted.npz")), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "labels reach 14 but the model has 10 outputs")


def test_unreachable_s3_endpoint(capsys, write_spec, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = write_spec(artifacts={"uri": "s3://models/runs", "endpointUrl": endpoint, "region": "us-east-1"})
    code, lines, _ = run_cli(capsys, str(spec))
    assert_one_error(code, lines, f"artifact store s3://models at {endpoint}: unreachable")


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_model_is_never_executed(capsys, write_spec, workspace, tmp_path):
    import torch

    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker)}, workspace / "models" / "evil.pt")
    with (workspace / "models" / "evil.pkl").open("wb") as handle:
        pickle.dump(_Payload(marker), handle)
    for name in ("evil.pt", "evil.pkl"):
        for model_format in ("TorchScript", "TorchExport"):
            code, lines, _ = run_cli(capsys, str(write_spec(model=f"models/{name}", model_format=model_format)),
                                     "--output", str(tmp_path / "out"))
            assert_one_error(code, lines, name)  # refused by the preflight's signature check, or by the safe loader
            assert f"is format: {model_format} right?" in lines[0] or f"not a readable {model_format} file" in lines[0], lines
    assert not marker.exists()


@pytest.mark.parametrize("command", [["validate"], ["optimize"]])
def test_missing_spec_file(capsys, tmp_path, command):
    code = main([*command, str(tmp_path / "absent.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"kompress: error: {tmp_path / 'absent.yaml'}: no such file"]


# --- models as users keep them: named inputs, checkpoints, text --------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from .transformer_fixtures import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("checkpoint") / "tiny-bert")


def _write_text_spec(workspace: Path, model: Path, data: Path, text: dict, **spec) -> Path:
    import yaml

    from .conftest import resource_dict

    resource = resource_dict(passes=[{"type": "OnnxExport"}])
    resource["spec"].update({"model": {"uri": str(model), "format": "HuggingFace"}, "data": {"uri": str(data), "text": text},
                             "task": {"type": "Fidelity"}}, **spec)
    path = workspace / "text.yaml"
    path.write_text(yaml.safe_dump(resource))
    return path


@pytest.fixture
def sentences(workspace) -> Path:
    from .transformer_fixtures import write_sentences

    return write_sentences(workspace / "sentences.jsonl", {"calibration": 16, "evaluation": 16})


def _token_npz(path: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_evaluation/input_ids": rng.integers(1000, 2000, size=(8, 16)), "x_evaluation/attention_mask": np.ones((8, 16), np.int64)}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_data_missing_one_of_the_models_inputs(capsys, workspace, tmp_path, tiny_checkpoint, write_spec):
    # Export first, so the model names its inputs itself; then feed it data without the mask.
    from .transformer_fixtures import write_sentences

    onnx_run = tmp_path / "export"
    spec = _write_text_spec(workspace, tiny_checkpoint, write_sentences(workspace / "s.jsonl", {"evaluation": 8}), {"maxLength": 16})
    assert main(["optimize", "-q", str(spec), "--output", str(onnx_run), "--run-id", "e"]) == 0
    capsys.readouterr()
    data = _token_npz(workspace / "data" / "ids-only.npz", **{"x_evaluation/attention_mask": None})
    spec = write_spec(model=str(run_folder(onnx_run, "e") / "candidates" / "onnx-export" / "model.onnx"), model_format="ONNX",
                      data="data/ids-only.npz", passes=[{"type": "DynamicInt8"}], task={"type": "Fidelity"})
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, f"{data}: the model's input 'attention_mask' is missing from the data",
                     "the model takes input_ids, attention_mask; the data holds input_ids")
    assert_nothing_published(tmp_path / "out")


def test_token_ids_of_the_wrong_dtype(capsys, workspace, tmp_path, tiny_checkpoint, write_spec):
    _token_npz(workspace / "data" / "float-ids.npz", **{"x_evaluation/input_ids": np.ones((8, 16), np.float32)})
    spec = write_spec(model=str(tiny_checkpoint), model_format="HuggingFace", data="data/float-ids.npz",
                      passes=[{"type": "OnnxExport"}], task={"type": "Fidelity"})
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "input 'input_ids' holds float32 but the model takes integer token ids")
    assert_nothing_published(tmp_path / "out")


def test_a_sequence_longer_than_the_model_has_positions(capsys, workspace, tmp_path, tiny_checkpoint, sentences):
    spec = _write_text_spec(workspace, tiny_checkpoint, sentences, {"maxLength": 600})
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "input 'input_ids' has sequence length 600 but the model has 512 positions")
    assert_nothing_published(tmp_path / "out")


def test_a_checkpoint_with_only_pickled_weights_is_refused_unopened(capsys, workspace, tmp_path, sentences):
    checkpoint = workspace / "pickled"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    marker = tmp_path / "unpickled"
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(str(marker))))
    spec = _write_text_spec(workspace, checkpoint, sentences, {"tokenizer": str(EXAMPLES_TOKENIZER())})
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "holds only pickled weights (pytorch_model.bin); kompress never unpickles")
    assert not marker.exists()
    assert_nothing_published(tmp_path / "out")


def test_a_checkpoint_that_needs_remote_code_is_refused(capsys, workspace, tmp_path, tiny_checkpoint, sentences):
    import json
    import shutil

    checkpoint = workspace / "remote"
    shutil.copytree(tiny_checkpoint, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text()) | {"auto_map": {"AutoModel": "modeling_evil.EvilModel"}}
    (checkpoint / "config.json").write_text(json.dumps(config))
    code, lines, _ = run_cli(capsys, str(_write_text_spec(workspace, checkpoint, sentences, {})), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "config.json needs remote code (auto_map: AutoModel)", "never runs code from a checkpoint")
    assert_nothing_published(tmp_path / "out")


def test_an_architecture_transformers_does_not_know(capsys, workspace, tmp_path, tiny_checkpoint, sentences):
    import json
    import shutil

    checkpoint = workspace / "unknown"
    shutil.copytree(tiny_checkpoint, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text()) | {"model_type": "quantum-llama"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    code, lines, _ = run_cli(capsys, str(_write_text_spec(workspace, checkpoint, sentences, {})), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "architecture model_type 'quantum-llama' is not known to transformers")
    assert_nothing_published(tmp_path / "out")


def test_a_text_column_that_does_not_exist(capsys, workspace, tmp_path, tiny_checkpoint, sentences):
    spec = _write_text_spec(workspace, tiny_checkpoint, sentences, {"column": "sentence"})
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    assert_one_error(code, lines, "sentences.jsonl: no column 'sentence' (columns: text, label, split)")
    assert_nothing_published(tmp_path / "out")


def test_unnamed_data_for_a_model_with_two_inputs(capsys, workspace, tmp_path, tiny_checkpoint, write_spec):
    np.savez(workspace / "data" / "unnamed.npz", x_evaluation=np.ones((4, 8), np.int64))
    spec = write_spec(model=str(tiny_checkpoint), model_format="HuggingFace", data="data/unnamed.npz",
                      passes=[{"type": "OnnxExport"}], task={"type": "Fidelity"})
    code, lines, _ = run_cli(capsys, str(spec), "--output", str(tmp_path / "out"))
    # A checkpoint takes what the data names; one unnamed array cannot say which input it is.
    assert_one_error(code, lines, "unnamed.npz: a HuggingFace model takes named inputs", "x_<split>/<input name>")
    assert_nothing_published(tmp_path / "out")


class _Trap:
    """Unpickling this writes a file: proof that a checkpoint was (or was not) unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("unpickled!",))


def EXAMPLES_TOKENIZER() -> Path:  # noqa: N802
    from .transformer_fixtures import minilm_dir

    return minilm_dir()


def test_the_operator_command_without_the_operator_extra_says_which_extra(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "kompress_operator.settings", None)  # as if pydantic-settings were not installed
    code = main(["operator", "--max-running", "3"])
    err = capsys.readouterr().err
    assert code == 1 and "the operator needs the 'operator' extra" in err


def test_the_commands_a_new_user_runs_by_hand_fail_in_one_line(capsys, monkeypatch, tmp_path):
    """Each printed a traceback or a puzzle before: the operator without a cluster (33 lines), the
    Job's command outside a Job ('kompress unknown speaks contract v?'), fetch-promoted on a folder
    that does not exist ('nothing is promoted there')."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("KUBERNETES_", "KOMPRESS_"))}
    env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")
    kompress = str(Path(sys.executable).parent / "kompress")
    done = subprocess.run([kompress, "operator"], capture_output=True, text=True, env=env, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines == [lines[-1]] and lines[0].startswith("kompress: error: no cluster to talk to"), done.stderr
    assert "no-such-kubeconfig" in lines[0]

    monkeypatch.delenv("KOMPRESS_RESOURCE", raising=False)
    monkeypatch.delenv("KOMPRESS_CONTRACT_VERSION", raising=False)
    monkeypatch.delenv("KOMPRESS_OPERATOR_RELEASE", raising=False)
    code = main(["job", "--termination-log", str(tmp_path / "termination-log")])
    assert_one_error(code, capsys.readouterr().err.strip().splitlines(), "runs inside a Job the operator creates",
                     "kompress optimize FILE.yaml")

    code = main(["fetch-promoted", str(tmp_path / "absent"), str(tmp_path / "target")])
    assert_one_error(code, capsys.readouterr().err.strip().splitlines(), "absent: no such folder")
    assert not (tmp_path / "target").exists()


# --- validate catches what would fail the run, without running the model -----------------


def _validate_one_line(capsys, spec: Path, field: str, *fragments: str) -> None:
    code = main(["validate", str(spec)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("kompress: error: ") and field in err[0], err[0]
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_validate_refuses_a_missing_model_file(capsys, write_spec):
    _validate_one_line(capsys, write_spec(model="models/absent.pt"), "spec.model.uri:", "absent.pt: no such file or folder")


def test_validate_refuses_a_model_path_that_is_a_folder(capsys, write_spec, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    _validate_one_line(capsys, write_spec(model=str(folder)), "spec.model.uri:", "is a folder; format: TorchScript expects a torch.jit.save archive")


def test_validate_refuses_a_file_without_its_formats_signature(capsys, write_spec, tmp_path):
    (tmp_path / "notes.onnx").write_text("these are not weights")
    _validate_one_line(capsys, write_spec(model=str(tmp_path / "notes.onnx"), model_format="ONNX", passes=[{"type": "DynamicInt8"}]),
                       "spec.model.uri:", "is not an .onnx file", "format: ONNX")
    (tmp_path / "model.pt").write_bytes(b"\x80\x04 a pickle, not an archive")
    _validate_one_line(capsys, write_spec(model=str(tmp_path / "model.pt")), "spec.model.uri:", "not a zip archive")


def test_validate_refuses_empty_data_and_a_missing_split(capsys, write_spec, tmp_path):
    import numpy as np

    np.savez(tmp_path / "empty.npz")
    _validate_one_line(capsys, write_spec(data=str(tmp_path / "empty.npz")), "spec.data.uri:", "needs x_<split>")
    np.savez(tmp_path / "no-eval.npz", x_train=np.zeros((4, 1, 8, 8), np.float32), y_train=np.zeros(4, np.int64))
    _validate_one_line(capsys, write_spec(data=str(tmp_path / "no-eval.npz")), "spec.data.uri:", "'evaluation' split")
    (tmp_path / "a-folder").mkdir()
    _validate_one_line(capsys, write_spec(data=str(tmp_path / "a-folder")), "spec.data.uri:", "is a folder")


def test_validate_refuses_data_that_lacks_an_input_the_onnx_graph_takes(capsys, write_spec, tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["pixels"], ["y"])], "g",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    onnx.save(helper.make_model(graph), tmp_path / "model.onnx")
    rows = np.zeros((4, 4), np.float32)
    np.savez(tmp_path / "named.npz", **{"x_evaluation/image": rows, "y_evaluation": np.zeros(4, np.int64)})
    spec = write_spec(model=str(tmp_path / "model.onnx"), model_format="ONNX", data=str(tmp_path / "named.npz"),
                      passes=[{"type": "DynamicInt8"}])
    _validate_one_line(capsys, spec, "spec.data.uri:", "the model's input 'pixels' is missing from the data")
    np.savez(tmp_path / "named.npz", **{"x_evaluation/pixels": rows, "y_evaluation": np.zeros(4, np.int64)})
    assert main(["validate", str(spec)]) == 0


def test_validate_takes_several_files_and_folders_and_names_the_file_of_each_error(capsys, write_spec, tmp_path):
    good = write_spec("good.yaml")
    bad = write_spec("bad.yaml", model="models/absent.pt")
    folder = good.parent
    code = main(["validate", str(good), str(bad)])
    out, err = capsys.readouterr()
    assert code == 2 and f"{good}: valid ModelOptimization" in out
    assert err.strip().splitlines() == [f"kompress: error: {bad}: spec.model.uri: {folder / 'models/absent.pt'}: no such file or folder"]
    assert main(["validate", str(folder)]) == 2  # the folder's YAMLs: good.yaml and bad.yaml
    out, err = capsys.readouterr()
    assert f"{good}: valid" in out and f"{bad}: spec.model.uri" in err
    (tmp_path / "empty-folder").mkdir()
    assert main(["validate", str(tmp_path / "empty-folder")]) == 2
    assert "a folder with no .yaml or .yml file" in capsys.readouterr().err


def test_optimize_runs_the_checks_validate_runs_before_anything_else(capsys, write_spec, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code = main(["optimize", "-q", str(write_spec(model=str(folder))), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"kompress: error: spec.model.uri: {folder} is a folder; format: TorchScript expects a torch.jit.save archive"]
    assert not (tmp_path / "out").exists()  # nothing published, not even a folder


def test_help_names_each_flags_type_default_and_variable(capsys):
    with pytest.raises(SystemExit):
        main(["operator", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--max-running N optimization Jobs in flight cluster-wide (default: 4) [KOMPRESS_MAX_RUNNING]" in text
    assert "--job-resources JSON" in text and "--cpu-image TEXT" in text and "--retry-interval NUMBER" in text
    assert "VALUE" not in text
    with pytest.raises(SystemExit):
        main(["optimize", "--help"])
    assert "(default: spec.artifacts.uri, else ./kompress-runs)" in " ".join(capsys.readouterr().out.split())


# --- validate in GitOps CI ---------------------------------------------------------------------

def test_validate_no_files_passes_the_cluster_samples_and_names_what_it_skips(capsys):
    samples = Path(__file__).parents[1] / "deploy" / "samples"
    assert main(["validate", "--no-files", str(samples)]) == 0
    out = capsys.readouterr().out
    assert "digits-cnn.yaml: valid ModelOptimization 'digits-cnn'" in out and "local files not checked" in out
    assert "cpu/kustomization.yaml: skipped (kind Kustomization, not a ModelOptimization)" in out
    assert main(["validate", str(samples / "cpu" / "digits-cnn.yaml")]) == 2  # the image's files are not here
    assert "validate --no-files" in capsys.readouterr().err


def test_validate_checks_every_document_of_a_file(capsys, workspace):
    import yaml

    from .conftest import resource_dict

    good, bad = resource_dict(name="good"), resource_dict(name="bad")
    bad["spec"]["goals"] = {"latency": {"percentile": "P90", "maxMilliseconds": 2}}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
    path = workspace / "all.yaml"
    path.write_text(yaml.safe_dump_all([namespace, good, bad], sort_keys=False))
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert f"{path} (document 1): skipped (kind Namespace, not a ModelOptimization)" in out
    assert f"{path} (document 2): valid ModelOptimization 'good'" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kompress: error: {path} (document 3): spec.goals.latency.percentile")
    assert "did you mean" not in lines[0], "P90 is as near P95 as P99: no guess"


def test_validate_refuses_what_the_operator_would_refuse_at_apply_for_its_size(capsys, write_spec):
    names = [f"/encoder/layer.{i}/attention/MatMul_{'x' * 200}" for i in range(400)]  # ~96 KiB of node names
    spec = write_spec(passes=[{"type": "OnnxExport"}, {"type": "OpenVinoInt8", "ignoredScope": {"names": names}}])
    assert main(["validate", "--no-files", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "spec: " in err and "bytes of JSON are more than the operator takes (65536" in err
    assert main(["validate", "--no-files", "--max-spec-bytes", "200000", str(spec)]) == 0


def test_validate_refuses_a_language_model_text_shorter_than_its_windows(capsys, write_spec, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("A few words only. " * 10)  # 180 bytes: fewer than 512 tokens could take
    gguf = Path(__file__).parents[1] / "examples" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        pytest.skip("the SmolLM2 GGUF is not installed (scripts/setup-venv … smollm2)")
    spec = write_spec(model=str(gguf), model_format="GGUF", data=str(short),
                      task={"type": "LanguageModeling", "contextLength": 512},
                      passes=[{"type": "OnnxGenAI", "precision": "Fp32"}])
    _validate_one_line(capsys, spec, "spec.data.uri:", "is 180 bytes, fewer than the 512 tokens of one window")


def test_validate_blames_the_model_file_not_the_chain_when_the_format_is_wrong(capsys, workspace, write_spec):
    torchscript = workspace / "models" / "digits-cnn.pt"
    spec = write_spec(model=str(torchscript), model_format="ONNX", passes=[{"type": "OnnxExport"}])
    _validate_one_line(capsys, spec, "spec.model.uri:", "is not an .onnx file", "format: ONNX")
