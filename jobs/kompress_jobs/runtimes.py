"""Load a model and run it: PyTorch for TorchScript / torch.export / Hugging Face checkpoints,
ONNX Runtime for ONNX, OpenVINO for IR, TensorRT for engines. Every runner takes and returns named arrays.

Nothing here unpickles Python objects: TorchScript archives carry code in TorchScript's own
restricted format, torch.export programs are checked and loaded by safe_load.py, and ONNX is
protobuf whose external data must lie beside it (docs/security.md has every loader).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import DataError, ModelLoadError
from .modelfile import ModelFile
from .safe_load import check_onnx_external_data
from .schema import ModelFormat


Inputs = dict[str, np.ndarray]


class Runner:
    """Runs one model on named numpy batches and returns named outputs; the same call shape for
    every runtime. `input_names` is the order the model takes its inputs in."""

    runtime: str
    device: str = "cpu"
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def __call__(self, inputs: Inputs) -> Inputs:  # pragma: no cover - interface
        raise NotImplementedError

    def check_input(self, inputs: Inputs) -> None:
        """Raise DataError when these arrays cannot feed the model, naming the input."""
        try:
            self(inputs)
        except DataError:
            raise
        except Exception as exc:
            shapes = ", ".join(f"{n!r} of shape {tuple(a.shape[1:])} ({a.dtype})" for n, a in inputs.items())
            verb = "input {} per sample does not" if len(inputs) == 1 else "inputs {} per sample do not"
            raise DataError(f"{verb.format(shapes)} fit the model: {_telling_line(exc)}") from None


def output_names_for(count: int) -> tuple[str, ...]:
    """PyTorch outputs have no names: `output`, or `output_0`, `output_1`, ... for several."""
    return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))


def torch_input_names(module) -> tuple[str, ...]:
    """The argument names of a TorchScript module's forward, or the user inputs of a torch.export program."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:
        return tuple(a.name for a in schema.arguments[1:])  # [0] is self
    import inspect

    return tuple(p for p in inspect.signature(module.forward).parameters if p not in ("args", "kwargs"))


def load_torch_module(model: ModelFile):
    """The torch.nn.Module behind a TorchScript archive or a torch.export program."""
    import torch

    if not model.path.is_file():
        raise ModelLoadError(f"model file {model.path}: no such file")
    try:
        if model.format is ModelFormat.TORCH_SCRIPT:
            module = torch.jit.load(str(model.path), map_location="cpu")
        elif model.format is ModelFormat.TORCH_EXPORT:
            from .safe_load import load_exported_program

            with quiet_logger("torch.export"):  # it logs a traceback before raising on a foreign file
                module = load_exported_program(model.path).module()
        else:
            raise ModelLoadError(f"model file {model.path}: {model.format.value} is not a PyTorch format")
    except ModelLoadError:
        raise
    except Exception as exc:  # torch raises RuntimeError, ValueError, zipfile errors...
        raise ModelLoadError(
            f"model file {model.path}: not a readable {model.format.value} file "
            f"(kompress loads torch.jit.save archives and torch.export.save programs, never pickled modules): "
            f"{_first_line(exc)}"
        ) from None
    if model.format is ModelFormat.TORCH_SCRIPT:
        module.eval()
    return module


def check_onnx(path: Path) -> None:
    """Fail with ModelLoadError unless path is a well-formed ONNX model."""
    import onnx

    if not path.is_file():
        raise ModelLoadError(f"model file {path}: no such file")
    try:
        check_onnx_external_data(path)  # first: the checker would read what the model names
        onnx.checker.check_model(str(path))  # by path, so models with external data work
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"model file {path}: not a valid ONNX model: {_first_line(exc)}") from None


class TorchRunner(Runner):
    runtime = "pytorch"

    def __init__(self, model: ModelFile, module=None, input_names: tuple[str, ...] | None = None):
        import torch

        self._torch = torch
        self.module = module if module is not None else load_torch_module(model)
        self.input_names = input_names or torch_input_names(self.module)
        self.output_names = ("output",)

    def __call__(self, inputs: Inputs) -> Inputs:
        torch = self._torch
        with torch.inference_mode():
            output = self.module(*[torch.from_numpy(inputs[name]) for name in self.input_names])
        tensors = list(output) if isinstance(output, (tuple, list)) else [output]
        self.output_names = self._name_outputs(len(tensors))  # known once the module has run
        return {name: t.detach().float().numpy() for name, t in zip(self.output_names, tensors)}

    def _name_outputs(self, count: int) -> tuple[str, ...]:
        return output_names_for(count)


class HuggingFaceRunner(TorchRunner):
    """A checkpoint directory run in PyTorch eager with its task head (`huggingface.TaskModel`)."""

    def __init__(self, model: ModelFile, input_names: tuple[str, ...]):
        from .huggingface import load_task_model

        super().__init__(model, load_task_model(model.path, model.options, input_names), tuple(input_names))
        self.output_names = self._name_outputs(1)

    def __call__(self, inputs: Inputs) -> Inputs:
        from .huggingface import check_inputs

        problem = check_inputs(self.input_names, inputs, self.module.max_positions)
        if problem:
            raise DataError(problem)
        return super().__call__(inputs)

    def _name_outputs(self, count: int) -> tuple[str, ...]:
        return (self.module.output_name,)  # the task head gives one tensor


_ORT_TYPES: dict[str, Callable] = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                                   "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OrtRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, model: ModelFile, threads: int, providers: list[str] | None = None):
        import onnxruntime as ort

        check_onnx(model.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model.path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"model file {model.path}: ONNX Runtime cannot load it: {_first_line(exc)}") from None
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        self.inputs = {i.name: (i.shape, _ORT_TYPES.get(i.type, np.float32)) for i in self.session.get_inputs()}
        self.input_names = tuple(self.inputs)
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def __call__(self, inputs: Inputs) -> Inputs:
        feed = {}
        for name, (_, dtype) in self.inputs.items():
            array = inputs[name]
            feed[name] = array if array.dtype == dtype else array.astype(dtype)
        outputs = self.session.run(None, feed)
        return {name: np.asarray(value, dtype=np.float32) for name, value in zip(self.output_names, outputs)}

    def check_input(self, inputs: Inputs) -> None:
        for name, (shape, dtype) in self.inputs.items():
            array = inputs[name]
            if np.issubdtype(array.dtype, np.integer) != np.issubdtype(dtype, np.integer):
                raise DataError(f"input {name!r} holds {array.dtype} but the model takes {np.dtype(dtype).name}")
            expected, actual = shape[1:], array.shape[1:]
            fits = len(expected) == len(actual) and all(
                not isinstance(want, int) or want == got for want, got in zip(expected, actual))
            if not fits:
                shown = tuple(d if isinstance(d, int) else "?" for d in expected)
                raise DataError(f"input {name!r} has shape {tuple(actual)} per sample but the model expects {shown}")
        super().check_input(inputs)


class OpenVinoRunner(Runner):
    """An OpenVINO IR (or an ONNX file read by OpenVINO) on the CPU: fixed thread count, latency hint,
    one stream, and f32 inference precision for FP32 models (the CPU plugin would otherwise pick bf16
    on CPUs that have it, which is a precision change, not a runtime's merit)."""

    runtime = "openvino"

    def __init__(self, model: ModelFile, threads: int):
        import openvino as ov

        check_ir(model.path)
        core = ov.Core()
        try:
            read = core.read_model(str(model.path))
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
            if model.precision == "fp32":
                config["INFERENCE_PRECISION_HINT"] = "f32"
            self.compiled = core.compile_model(read, "CPU", config)
        except Exception as exc:
            raise ModelLoadError(f"model file {model.path}: OpenVINO cannot load it: {_first_line(exc)}") from None
        self.request = self.compiled.create_infer_request()
        self.input_names = tuple(port.get_any_name() for port in self.compiled.inputs)
        self.output_names = tuple(port.get_any_name() for port in self.compiled.outputs)
        self.input_types = {port.get_any_name(): port.get_element_type().to_dtype() for port in self.compiled.inputs}

    def __call__(self, inputs: Inputs) -> Inputs:
        feed = {name: inputs[name] if inputs[name].dtype == dtype else inputs[name].astype(dtype)
                for name, dtype in self.input_types.items()}
        results = self.request.infer(feed)
        return {name: np.asarray(results[port], dtype=np.float32) for name, port in zip(self.output_names, self.compiled.outputs)}


def check_ir(path: Path) -> None:
    """An IR is two files: fail with ModelLoadError, naming the missing one, before OpenVINO does."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path}: no such file")
    if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise ModelLoadError(f"model file {path}: its weights {path.with_suffix('.bin').name} are missing "
                             "(an OpenVINO IR is a .xml and the .bin beside it)")


class TensorRtRunner(Runner):
    """A serialized TensorRT engine on the GPU. Timed calls include the host↔device copies, as a
    serving call would (ONNX Runtime's and PyTorch's CPU runs have no copies to make)."""

    runtime = "tensorrt"
    device = "cuda"

    def __init__(self, model: ModelFile):
        import tensorrt as trt
        import torch

        self._torch, self._trt = torch, trt
        if not model.path.is_file():
            raise ModelLoadError(f"model file {model.path}: no such file")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(model.path.read_bytes())
        if self.engine is None:
            raise ModelLoadError(f"model file {model.path}: not an engine this GPU and TensorRT version can load")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = tuple(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = tuple(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.dtypes = {n: self._torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream()

    def _torch_dtype(self, dtype):
        trt, torch = self._trt, self._torch
        return {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                trt.int64: torch.int64, trt.int8: torch.int8, trt.bool: torch.bool}[dtype]

    def __call__(self, inputs: Inputs) -> Inputs:
        torch = self._torch
        with torch.cuda.stream(self.stream):
            device_inputs = {}
            for name in self.input_names:
                tensor = torch.from_numpy(inputs[name]).to("cuda", self.dtypes[name], non_blocking=False).contiguous()
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
                device_inputs[name] = tensor  # kept alive until the stream is done
            outputs = {}
            for name in self.output_names:
                outputs[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device="cuda")
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            result = {name: tensor.float().cpu() for name, tensor in outputs.items()}  # waits for the stream
        return {name: tensor.numpy() for name, tensor in result.items()}


def make_runner(model: ModelFile, threads: int, providers: list[str] | None = None,
                input_names: tuple[str, ...] | None = None) -> Runner:
    """A runner for any candidate. `input_names` is needed only where the file does not name its
    inputs (a Hugging Face checkpoint takes whatever the tokenizer gives)."""
    if model.format is ModelFormat.ONNX:
        return OrtRunner(model, threads, providers)
    if model.format is ModelFormat.TENSORRT:
        return TensorRtRunner(model)
    if model.format is ModelFormat.OPENVINO:
        return OpenVinoRunner(model, threads)
    if model.format is ModelFormat.HUGGING_FACE:
        return HuggingFaceRunner(model, input_names or model.input_names)
    return TorchRunner(model)


@contextlib.contextmanager
def quiet_logger(logger_name: str):
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _telling_line(exc: BaseException) -> str:
    """TorchScript errors start with a generic line and end with the real one."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and "TorchScript interpreter" in lines[0]:
        return lines[-1][:300]
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
