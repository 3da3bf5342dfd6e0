"""Weight quantization of a Hugging Face checkpoint with torchao, stored as a checkpoint again:
transformers writes torchao's tensors to safetensors with the quantization config in config.json
(no pickles), and reads them back with the same config. INT8 weight-only runs on the CPU and the
GPU; FP8 weights and activations need an NVIDIA GPU of compute capability 8.9 or later (Ada,
Hopper). Where torchao or the GPU is missing, the candidate is NotApplicable with the reason."""

from __future__ import annotations

import importlib.util
import shutil
from enum import Enum
from typing import Literal

from pydantic import Field

from ..modelfile import Execution, ModelFile, Processor
from ..spec.sources import Device, ModelFormat
from .base import OptimizationPass, PassContext, failing_as, register
from .settings import PassSettings

FP8_COMPUTE_CAPABILITY = (8, 9)


class TorchAoScheme(str, Enum):
    INT8_WEIGHT_ONLY = "Int8WeightOnly"  # per-row INT8 weights, activations in the model's type
    FLOAT8 = "Float8"  # FP8 (e4m3) weights and dynamically scaled FP8 activations

    def config(self):
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig

        return Int8WeightOnlyConfig() if self is TorchAoScheme.INT8_WEIGHT_ONLY else Float8DynamicActivationFloat8WeightConfig()


class TorchAoQuantizePass(PassSettings):
    """The checkpoint's Linear weights quantized by torchao (`scheme`), stored as a checkpoint and run
    by PyTorch on `device`; the embeddings stay as they are."""

    type: Literal["TorchAoQuantize"]
    scheme: TorchAoScheme = TorchAoScheme.INT8_WEIGHT_ONLY
    device: Device = Field(Device.GPU, description="Where the candidate runs: GPU (CUDA) or CPU (Int8WeightOnly only).")


@register(TorchAoQuantizePass)
class TorchAoQuantize(OptimizationPass):
    technique = "quantization"
    accepts = frozenset({ModelFormat.HUGGING_FACE})
    output_format = ModelFormat.HUGGING_FACE

    def check(self, spec) -> str | None:
        if self.spec.scheme is TorchAoScheme.FLOAT8 and self.spec.device is Device.CPU:
            return "scheme: Float8 runs on NVIDIA GPUs only (compute capability 8.9 or later); use device: GPU"
        return None

    def not_applicable_reason(self) -> str | None:
        if importlib.util.find_spec("torchao") is None:
            return "torchao is not installed in this Job image (pip install torchao)"
        if self.spec.device is Device.CPU:
            return None
        from ..runtimes.base import cuda_missing

        reason = cuda_missing()
        if reason is None and self.spec.scheme is TorchAoScheme.FLOAT8:
            import torch

            capability = torch.cuda.get_device_capability(0)
            if capability < FP8_COMPUTE_CAPABILITY:
                return (f"{torch.cuda.get_device_name(0)} (compute capability {capability[0]}.{capability[1]}) has no FP8 "
                        "tensor cores: Float8 needs 8.9 or later (Ada, Hopper)")
        return reason

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        output = ctx.output_dir / "checkpoint"
        with failing_as(f"torchao {self.spec.scheme.value}"):
            quantize_checkpoint(model, output, self.spec.scheme)
        ctx.log(f"Linear weights quantized by torchao ({self.spec.scheme.value}), stored as safetensors")
        return ModelFile(output, ModelFormat.HUGGING_FACE, "int8" if self.spec.scheme is TorchAoScheme.INT8_WEIGHT_ONLY else "fp8",
                         options=model.options, input_names=model.input_names,
                         execution=Execution(device=Processor.CUDA if self.spec.device is Device.GPU else Processor.CPU))


def quantize_checkpoint(model: ModelFile, output, scheme: TorchAoScheme) -> None:
    """Load with torchao's config (transformers quantizes each Linear as it loads), save as safetensors,
    and carry the tokenizer files over."""
    from transformers import TorchAoConfig

    from ..huggingface import auto_class, read_config, resolve_head
    from ..spec.sources import HuggingFaceOptions

    head = resolve_head(read_config(model.path), model.options or HuggingFaceOptions())  # the checks every checkpoint gets
    quantized = auto_class(head).from_pretrained(str(model.path), local_files_only=True, use_safetensors=True,
                                                 trust_remote_code=False, quantization_config=TorchAoConfig(quant_type=scheme.config()))
    quantized.save_pretrained(str(output), safe_serialization=True)
    for path in model.path.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and not (output / path.name).exists():
            shutil.copy2(path, output / path.name)
