"""The runtime registry: every model format has a runtime, a runner is found by format and device,
and what cannot run here says why, naming the runtime and device."""

from __future__ import annotations

import numpy as np
import pytest
from kompress_jobs.errors import ModelLoadError
from kompress_jobs.measurement.profiling import energy_per_call, profile_model
from kompress_jobs.runtimes import (
    ModelFile,
    Processor,
    Runner,
    TorchRunner,
    make_runner,
    register,
    runtime_for,
    runtimes,
)
from kompress_jobs.spec.sources import ModelFormat

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def torchscript(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 8)), str(path))
    return ModelFile(path, ModelFormat.TORCH_SCRIPT)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(8, 3)).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(module, (torch.zeros(1, 8),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    return ModelFile(path, ModelFormat.ONNX)


def test_every_model_format_has_exactly_one_runtime_by_default():
    """One per format and kind of model: a checkpoint folder is an encoder (called per batch) or a
    causal language model (run token by token); GGUF, OnnxGenAI and OpenVINOCausalLM hold only the latter."""
    by_kind = {(f, generative): [cls.__name__ for cls in runtimes() if f in cls.formats and cls.generative == generative
                                 and cls.default]
               for f in ModelFormat for generative in (False, True)}
    served = {key: names for key, names in by_kind.items() if names}
    assert all(len(names) == 1 for names in served.values()), served
    only_generative = {ModelFormat.GGUF, ModelFormat.ONNX_GENAI, ModelFormat.OPENVINO_CAUSAL_LM}
    assert {f for f, generative in served if generative} == {ModelFormat.HUGGING_FACE, *only_generative}
    assert {f for f, generative in served if not generative} == set(ModelFormat) - only_generative
    assert {(f, g): runtime_for(ModelFile(None, f, generative=g)).devices[0] for f, g in served} == {
        **{key: Processor.CPU for key in served}, (ModelFormat.TENSORRT, False): Processor.CUDA}


def test_a_runner_is_found_by_format_and_runs_on_the_cpu_by_default(torchscript, onnx_model):
    batch = {"x": np.ones((2, 8), np.float32)}
    torch_runner = make_runner(torchscript, threads=1, input_names=("x",))
    ort_runner = make_runner(onnx_model, threads=1)
    assert (torch_runner.runtime, torch_runner.device) == ("pytorch", Processor.CPU)
    assert (ort_runner.runtime, ort_runner.device) == ("onnxruntime", Processor.CPU)
    assert torch_runner(batch)["output"].shape == (2, 3) and ort_runner(batch)["y"].shape == (2, 3)


def test_a_device_the_runtime_does_not_declare_names_what_would_run_the_format(tmp_path):
    model = ModelFile(tmp_path / "model.xml", ModelFormat.OPENVINO)
    with pytest.raises(ModelLoadError, match=r"no runtime runs OpenVINO models on cuda \(it runs with openvino on cpu\)"):
        make_runner(model, threads=1, device=Processor.CUDA)


def test_a_device_missing_here_is_named_with_the_runtime(torchscript, onnx_model, monkeypatch):
    import onnxruntime
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="pytorch cannot run it on cuda here: no CUDA GPU is visible to this Job"):
        make_runner(torchscript, threads=1, device=Processor.CUDA)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ModelLoadError, match="onnxruntime cannot run it on cuda here: this ONNX Runtime build has no "
                                             "CUDAExecutionProvider"):
        make_runner(onnx_model, threads=1, device=Processor.CUDA)


def test_a_tensorrt_engine_without_tensorrt_says_so(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on an image without it
    with pytest.raises(ModelLoadError, match="tensorrt cannot run it on cuda here: TensorRT is not installed"):
        make_runner(ModelFile(tmp_path / "model.engine", ModelFormat.TENSORRT), threads=1)


def test_two_runtimes_cannot_both_be_the_default_for_a_format_on_a_device():
    class Another(Runner):
        runtime = "another"
        formats = frozenset({ModelFormat.ONNX})
        devices = (Processor.CUDA,)

    with pytest.raises(ValueError, match=r"Another and OrtRunner both run \[\('ONNX', 'cuda'\)\] by default"):
        register(Another)
    assert Another not in runtimes()


@pytest.fixture
def second_onnx_runtime(monkeypatch):
    """A second runtime for ONNX, not the default: its module and this registration are all it takes."""
    from kompress_jobs.runtimes import registry
    from kompress_jobs.spec.wire import Model

    class EchoOptions(Model):
        scale: float = 1.0

    class EchoRunner(Runner):
        runtime, formats, default, Options = "echo", frozenset({ModelFormat.ONNX}), False, EchoOptions

        def __init__(self, model, *, threads, device, input_names=None):
            self.device, self.scale = device, self.options_of(model).scale
            self.input_names, self.output_names = ("x",), ("y",)

        def __call__(self, inputs):
            return {"y": inputs["x"] * self.scale}

    monkeypatch.setattr(registry, "_RUNTIMES", list(registry._RUNTIMES))
    register(EchoRunner)
    return EchoRunner


def test_a_second_runtime_for_a_format_runs_only_what_names_it_with_its_own_options(second_onnx_runtime, onnx_model):
    from dataclasses import replace

    from kompress_jobs.modelfile import Execution

    assert make_runner(onnx_model, threads=1).runtime == "onnxruntime"  # the default stays
    named = replace(onnx_model, execution=Execution(runtime="echo", options={"scale": 2.0}))
    runner = make_runner(named, threads=1)
    assert runner.runtime == "echo" and runner({"x": np.ones((1, 8), np.float32)})["y"][0, 0] == 2.0
    with pytest.raises(ModelLoadError, match=r"echo options: scale: Input should be a valid number"):
        make_runner(replace(onnx_model, execution=Execution(runtime="echo", options={"scale": "big"})), threads=1)
    with pytest.raises(ModelLoadError, match=r"onnxruntime options: executionProvider|onnxruntime options: unknown"):
        make_runner(replace(onnx_model, execution=Execution(options={"unknown": 1})), threads=1)
    with pytest.raises(ModelLoadError, match=r"runtime 'llama.cpp' does not run ONNX models \(these do: echo, onnxruntime\)"):
        make_runner(replace(onnx_model, execution=Execution(runtime="llama.cpp")), threads=1)


def test_an_execution_is_stored_as_it_is_and_records_from_before_it_still_read():
    from kompress_jobs.modelfile import Execution
    from kompress_jobs.storage.promoted import PointerModel

    compiled = Execution(runtime="pytorch", device=Processor.CUDA, options={"compileMode": "max-autotune"})
    assert compiled.to_wire() == {"runtime": "pytorch", "device": "cuda", "options": {"compileMode": "max-autotune"}}
    assert Execution.model_validate(compiled.to_wire()) == compiled
    assert Execution.of_record({"execution": compiled.to_wire()}) == compiled
    assert Execution.of_record({"device": "cuda", "compile_mode": "max-autotune"}) == compiled  # a trial's record
    old_pointer = {"path": "r/m.pt", "format": "TorchScript", "device": "cuda", "compileMode": "max-autotune"}
    assert PointerModel.model_validate(old_pointer).execution == compiled  # current.json before Execution
    assert PointerModel.model_validate(old_pointer).to_wire()["execution"]["options"] == {"compileMode": "max-autotune"}
    provider = Execution.of_record({"device": "cuda", "executionProvider": "TensorrtExecutionProvider"})
    assert provider == Execution(runtime="onnxruntime", device=Processor.CUDA, options={"executionProvider": "TensorrtExecutionProvider"})
    assert Execution.of_record(None) == Execution() == Execution.of_record({"file": "m.onnx"})
    from kompress_jobs.tuning.trial_record import SavedModel

    before = {"file": "m.pt", "format": "TorchScript", "precision": "fp16", "device": "cuda", "compile_mode": "max-autotune",
              "extraFiles": []}  # a trial's record in a study from before Execution
    assert SavedModel.model_validate(before).execution == compiled
    assert SavedModel.model_validate(SavedModel.model_validate(before).to_wire()).execution == compiled


def test_a_runtime_without_a_profiler_says_so_and_one_with_it_profiles(torchscript, onnx_model):
    class Unprofiled(Runner):
        runtime = "unprofiled"

        def __call__(self, inputs):
            return inputs

    batch = {"x": np.ones((2, 8), np.float32)}
    assert profile_model(onnx_model, Unprofiled(), batch, 1) == {"profiler": None,
                                                                "reason": "no per-operator profile is read for unprofiled"}
    profile = profile_model(torchscript, make_runner(torchscript, threads=1, input_names=("x",)), batch, 1, calls=5)
    assert profile["profiler"] == "pytorch" and {"aten::addmm", "aten::relu"} <= {row["type"] for row in profile["byType"]}


@pytest.mark.gpu
def test_a_torchscript_model_runs_on_cuda_with_the_cpu_outputs_and_a_device_profile(torchscript):
    missing = TorchRunner.unavailable(Processor.CUDA)  # the runtime's own reason: no PyTorch, or no GPU
    if missing:
        pytest.skip(missing)
    batch = {"x": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}
    cpu = make_runner(torchscript, threads=1, input_names=("x",))
    gpu = make_runner(torchscript, threads=1, device=Processor.CUDA, input_names=("x",))
    assert gpu.device is Processor.CUDA and next(gpu.module.parameters()).is_cuda
    np.testing.assert_allclose(gpu(batch)["output"], cpu(batch)["output"], rtol=1e-3, atol=1e-4)
    profile = profile_model(torchscript, gpu, batch, 1, calls=5)
    assert profile["profiler"] == "pytorch" and profile["totalMs"] > 0, profile
    energy = energy_per_call(gpu, batch, calls=200)
    assert energy["measurable"] and energy["source"].startswith("NVML") and energy["joulesPerCall"] > 0, energy


def test_a_model_back_from_the_store_runs_as_the_spec_says_what_its_files_do_not(tmp_path):
    """A tuning trial's or a promoted checkpoint keeps the spec's head, pooling and input names."""
    from pathlib import Path

    from kompress_jobs.modelfile import Execution, Processor, stored_as_spec_runs_it
    from kompress_jobs.spec.specfile import resource_from_dict

    from .conftest import resource_dict

    checkpoint = resource_from_dict(resource_dict(
        model={"uri": "models/bert", "format": "HuggingFace", "huggingFace": {"head": "FeatureExtraction", "pooling": "Mean"}},
        data={"uri": "data/s.jsonl", "text": {"column": "text"}}, passes=[{"type": "OnnxExport"}],
        task={"type": "Fidelity", "metric": "CosineSimilarity"})).spec
    names = ("input_ids", "attention_mask")
    model = stored_as_spec_runs_it(tmp_path / "bert", ModelFormat.HUGGING_FACE, "bf16", checkpoint, names,
                                   execution=Execution.of_record({"device": "cpu", "compile_mode": "default"}))  # a record before Execution
    assert model.options == checkpoint.model.hugging_face and model.options.pooling.value == "Mean"
    assert model.input_names == names and not model.generative and model.precision == "bf16"
    assert model.execution == Execution(runtime="pytorch", device=Processor.CPU, options={"compileMode": "default"})
    # Files that name their own inputs (ONNX, an IR with its .bin beside it) take nothing from the checkpoint's options.
    ir = stored_as_spec_runs_it(tmp_path / "m.xml", ModelFormat.OPENVINO, "fp32", checkpoint, names, (Path("x.data"),))
    assert ir.options is None and ir.input_names == () and ir.extra_files == (Path("x.data"),) and ir.execution == Execution()


@pytest.mark.parametrize("kind", ["torchscript", "onnx", "openvino"])
def test_every_cpu_profiler_writes_a_trace_of_the_operators_it_sums(kind, torchscript, onnx_model, tmp_path):
    """Chrome's trace event format (what Perfetto and TensorBoard open): complete events in µs,
    named as the profile's operator types, with a process name; OpenVINO's counters have no start
    times, so its layers are laid end to end and say so."""
    import json

    model = {"torchscript": torchscript, "onnx": onnx_model}.get(kind)
    if kind == "openvino":
        import openvino as ov

        xml = tmp_path / "model.xml"
        ov.save_model(ov.convert_model(str(onnx_model.path)), str(xml))
        model = ModelFile(xml, ModelFormat.OPENVINO)
    runner = make_runner(model, threads=1, input_names=("x",))
    trace = tmp_path / "traces" / "m.pt.trace.json"
    profile = profile_model(model, runner, {"x": np.ones((2, 8), np.float32)}, 1, calls=3, trace_path=trace)
    assert profile["traced"] is True
    document = json.loads(trace.read_text())
    meta, spans = document["traceEvents"][0], [e for e in document["traceEvents"] if e["ph"] == "X"]
    assert meta == {"name": "process_name", "ph": "M", "pid": 0, "tid": 0,
                    "args": {"name": f"{runner.runtime} ({runner.profiler} profiler), 3 calls"}}
    assert spans and all(e["ts"] >= 0 and e["dur"] >= 0 for e in spans)
    assert {t["type"] for t in profile["byType"]} <= {e["name"] for e in spans}
    if kind == "openvino":
        assert all("laid end to end" in e["args"]["timing"] for e in spans)
        assert all(a["ts"] + a["dur"] <= b["ts"] for a, b in zip(spans, spans[1:]))  # one after the other
