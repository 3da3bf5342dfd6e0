"""TensorRT: serialized engines, on the CUDA GPU they were built for."""

from __future__ import annotations

from ..errors import ModelLoadError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import Inputs, Processor, Runner
from .registry import register


@register
class TensorRtRunner(Runner):
    """Timed calls include the host↔device copies, as a serving call would (ONNX Runtime's and
    PyTorch's CPU runs have no copies to make)."""

    runtime = "tensorrt"
    formats = frozenset({ModelFormat.TENSORRT})
    devices = (Processor.CUDA,)

    @classmethod
    def unavailable(cls, device: Processor) -> str | None:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "TensorRT is not installed (run on the GPU Job image: spec.job.device: GPU)"
        return super().unavailable(device)

    def __init__(self, model: ModelFile, *, threads: int = 1, device: Processor = Processor.CUDA,
                 input_names: tuple[str, ...] | None = None):
        import tensorrt as trt
        import torch

        self._torch, self._trt = torch, trt
        self.device = device
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

    def synchronize(self) -> None:
        self.stream.synchronize()
