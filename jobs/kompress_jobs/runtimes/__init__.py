"""Load a model and run it, by the runtime that declares its format and device (registry.py):
PyTorch for TorchScript / torch.export / Hugging Face checkpoints, ONNX Runtime for ONNX, OpenVINO
for IR, TensorRT for engines. Every runner takes and returns named arrays; docs/security.md has
what each loader runs."""

from ..modelfile import ModelFile
from .base import Inputs, Processor, Runner, output_names_for, quiet_logger
from .onnx_runtime import OrtRunner, check_onnx
from .openvino_runtime import OpenVinoRunner, check_ir
from .registry import make_runner, register, runtime_for, runtimes
from .torch_runtime import HuggingFaceRunner, TorchRunner, load_torch_module, torch_input_names

__all__ = ["HuggingFaceRunner", "Inputs", "ModelFile", "OpenVinoRunner", "OrtRunner", "Processor", "Runner", "TorchRunner",
           "check_ir", "check_onnx", "load_torch_module", "make_runner", "output_names_for", "quiet_logger", "register",
           "runtime_for", "runtimes", "torch_input_names"]
