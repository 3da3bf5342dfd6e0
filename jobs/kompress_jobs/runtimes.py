"""Load a model file and run it: PyTorch for TorchScript / torch.export, ONNX Runtime for ONNX,
TensorRT for engines.

Nothing here unpickles Python objects: TorchScript archives and torch.export programs carry
code in their own restricted formats, and ONNX is protobuf.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import DataError, ModelLoadError
from .modelfile import ModelFile
from .schema import ModelFormat


class Runner:
    """Runs one model on numpy batches; the same call shape for every runtime."""

    runtime: str
    device: str = "cpu"

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def check_input(self, batch: np.ndarray) -> None:
        """Raise DataError when a batch of this shape cannot feed the model."""


def load_torch_module(model: ModelFile):
    """The torch.nn.Module behind a TorchScript archive or a torch.export program."""
    import torch

    if not model.path.is_file():
        raise ModelLoadError(f"model file {model.path}: no such file")
    try:
        if model.format is ModelFormat.TORCH_SCRIPT:
            module = torch.jit.load(str(model.path), map_location="cpu")
        elif model.format is ModelFormat.TORCH_EXPORT:
            with quiet_logger("torch.export"):  # it logs a traceback before raising on a foreign file
                module = torch.export.load(str(model.path)).module()
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
        onnx.checker.check_model(str(path))  # by path, so models with external data work
    except Exception as exc:
        raise ModelLoadError(f"model file {path}: not a valid ONNX model: {_first_line(exc)}") from None


class TorchRunner(Runner):
    runtime = "pytorch"

    def __init__(self, model: ModelFile):
        import torch

        self._torch = torch
        self.module = load_torch_module(model)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            output = self.module(torch.from_numpy(batch))
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output.detach().float().numpy()

    def check_input(self, batch: np.ndarray) -> None:
        try:
            self(batch)
        except Exception as exc:
            raise DataError(f"inputs of shape {tuple(batch.shape[1:])} per sample do not fit the model: {_first_line(exc)}") from None


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
        (model_input,) = self.session.get_inputs()[:1]
        self.input_name = model_input.name
        self.input_shape = model_input.shape
        self.input_type = _ORT_TYPES.get(model_input.type, np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != self.input_type:
            batch = batch.astype(self.input_type)
        output = self.session.run(None, {self.input_name: batch})[0]
        return np.asarray(output, dtype=np.float32)

    def check_input(self, batch: np.ndarray) -> None:
        expected = self.input_shape[1:]
        actual = batch.shape[1:]
        fits = len(expected) == len(actual) and all(
            not isinstance(want, int) or want == got for want, got in zip(expected, actual)
        )
        if not fits:
            shown = tuple(d if isinstance(d, int) else "?" for d in expected)
            raise DataError(f"inputs of shape {tuple(actual)} per sample do not fit the model, which expects {shown}")
        try:
            self(batch)
        except Exception as exc:
            raise DataError(f"inputs of shape {tuple(actual)} per sample do not fit the model: {_first_line(exc)}") from None


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
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = self._torch_dtype(self.engine.get_tensor_dtype(self.input_name))
        self.output_dtype = self._torch_dtype(self.engine.get_tensor_dtype(self.output_name))
        self.stream = torch.cuda.Stream()

    def _torch_dtype(self, dtype):
        trt, torch = self._trt, self._torch
        return {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                trt.int64: torch.int64, trt.int8: torch.int8, trt.bool: torch.bool}[dtype]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.cuda.stream(self.stream):
            inputs = torch.from_numpy(batch).to("cuda", self.input_dtype, non_blocking=False).contiguous()
            self.context.set_input_shape(self.input_name, tuple(inputs.shape))
            output = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype, device="cuda")
            self.context.set_tensor_address(self.input_name, inputs.data_ptr())
            self.context.set_tensor_address(self.output_name, output.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            result = output.float().cpu()  # waits for the stream
        return result.numpy()


def make_runner(model: ModelFile, threads: int, providers: list[str] | None = None) -> Runner:
    if model.format is ModelFormat.ONNX:
        return OrtRunner(model, threads, providers)
    if model.format is ModelFormat.TENSORRT:
        return TensorRtRunner(model)
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
