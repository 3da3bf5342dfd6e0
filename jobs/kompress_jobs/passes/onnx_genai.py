"""A causal language model rebuilt for ONNX Runtime GenAI by its model builder: the graph written
from the weights (no tracing), with a key/value cache, in FP32 or with weight-only INT8 / INT4
MatMuls (MatMulNBits, a scale per block of weights, optionally INT8 for the layers most sensitive to
4 bits). The builder runs in its own process (it holds the whole model in memory while it writes)
and never runs code from the checkpoint. A GGUF model is first written as a checkpoint folder;
every tokenizer written on the way is checked against the source's on the evaluation text."""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ..child_python import last_line, run_python
from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import PassContext, failing_as, register
from .settings import PassSettings
from .steered import SteeredBuildPass


class GenAiPrecision(str, Enum):
    AUTO = "Auto"  # the fastest of INT4 / mixed / INT8 builds that keeps goals.maxAccuracyDrop (llm/search.py)
    FP32 = "Fp32"
    INT8 = "Int8"  # weight-only: MatMul weights in 8 bits
    INT4 = "Int4"  # weight-only: MatMul weights in 4 bits


class QuantAlgorithm(str, Enum):
    RTN = "Rtn"  # round to nearest, a scale per block
    K_QUANT = "KQuant"  # llama.cpp's k-quant scales and minimums per block


class Int8Layers(str, Enum):
    NONE = "None"
    LAST_MATMUL = "LastMatMul"  # the output head, the largest and most output-sensitive weight
    SENSITIVE = "Sensitive"  # the head, the first and last eighth of the layers and every third layer's qkv/v/down projections


_INT8_LAYERS = {Int8Layers.LAST_MATMUL: "last_matmul:int8", Int8Layers.SENSITIVE: "last_matmul:int8,mixed_layers:int8"}


class OnnxGenAIPass(PassSettings):
    """ONNX Runtime GenAI's model builder: a causal LM as an ONNX model with a key/value cache."""

    type: Literal["OnnxGenAI"]
    precision: GenAiPrecision = GenAiPrecision.INT4
    block_size: int = Field(32, ge=16, le=256, description="Int8/Int4: weights per scale (16, 32, 64, 128 or 256).")
    accuracy_level: int = Field(4, ge=1, le=4, description="Int8/Int4: what the activations are computed in: 4 INT8 "
                                "(fastest on CPUs), 3 BF16, 2 FP16, 1 FP32.")
    algorithm: QuantAlgorithm = QuantAlgorithm.RTN
    int8_layers: Int8Layers = Field(Int8Layers.NONE, description="Int4: layers kept in 8 bits.")
    symmetric: bool = True
    judge_tokens: int | None = Field(None, ge=8, le=1_000_000, description="Auto: tokens of the calibration text "
                                     "each build is judged on (defaults to task.evaluationTokens).")

    @field_validator("block_size")
    @classmethod
    def _supported_block(cls, size: int) -> int:
        if size not in (16, 32, 64, 128, 256):
            raise ValueError(f"must be 16, 32, 64, 128 or 256, not {size}")
        return size

    def builder_arguments(self) -> list[str]:
        """The builder's command-line arguments for these settings (input and output apart)."""
        if self.precision is GenAiPrecision.AUTO:
            raise ValueError("precision Auto has no builder arguments of its own: each build of its ladder has")
        arguments = ["-p", self.precision.value.lower(), "-e", "cpu"]
        if self.precision is GenAiPrecision.FP32:
            return arguments
        extra = [f"accuracy_level={self.accuracy_level}", f"block_size={self.block_size}",
                 f"is_symmetric={str(self.symmetric).lower()}", f"algo_config={self.algorithm.name.lower()}"]
        if self.precision is GenAiPrecision.INT4 and self.int8_layers is not Int8Layers.NONE:
            extra.append(f"matmul_mixed_precision={_INT8_LAYERS[self.int8_layers]}")
        return arguments + ["--extra_options", *extra]

    @property
    def trial_label(self) -> str:
        label = f"{self.precision.value} {self.algorithm.value} block {self.block_size}"
        return label + (f", {self.int8_layers.value} in Int8" if self.int8_layers is not Int8Layers.NONE else "")

    def ladder(self) -> list["OnnxGenAIPass"]:
        """precision Auto: the builds tried, the fastest kind first; the other settings as given."""
        steps = [dict(precision=GenAiPrecision.INT4, int8_layers=Int8Layers.NONE),
                 dict(precision=GenAiPrecision.INT4, int8_layers=Int8Layers.LAST_MATMUL),
                 dict(precision=GenAiPrecision.INT4, int8_layers=Int8Layers.SENSITIVE, algorithm=QuantAlgorithm.K_QUANT),
                 dict(precision=GenAiPrecision.INT8, int8_layers=Int8Layers.NONE)]
        return [self.model_copy(update=step) for step in steps]

    @property
    def precision_label(self) -> str:
        if self.precision is GenAiPrecision.INT4 and self.int8_layers is not Int8Layers.NONE:
            return "int4/int8"
        return self.precision.value.lower()


@register(OnnxGenAIPass)
class OnnxGenAI(SteeredBuildPass):
    output_format = ModelFormat.ONNX_GENAI

    def not_applicable_reason(self) -> str | None:
        from ..runtimes.base import Processor
        from ..runtimes.onnx_genai import GenAiRunner

        return GenAiRunner.unavailable(Processor.CPU)  # what it builds runs there, or nowhere

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        from ..llm.loading import check_round_trip, checkpoint_input

        source, tokenizer, sample = checkpoint_input(model, ctx)

        def build(settings: OnnxGenAIPass, output: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="genai-") as cache:
                ctx.log(f"building ({' '.join(settings.builder_arguments())})")
                self._build(settings, source, output, Path(cache))
            with failing_as("the built model's tokenizer check"):
                check_round_trip(tokenizer, output, sample)

        settings = self.build_steered(model, source, ctx, build, self.spec.precision is GenAiPrecision.AUTO)
        return ModelFile(ctx.output_dir, ModelFormat.ONNX_GENAI, settings.precision_label, generative=True)

    def _build(self, settings: OnnxGenAIPass, source: Path, output: Path, cache: Path) -> None:
        # offline, and hf_remote stays false: the builder reads the folder and runs none of its code
        done = run_python(module="onnxruntime_genai.models.builder", env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                          args=["-i", str(source), "-o", str(output), "-c", str(cache), *settings.builder_arguments()])
        if done.returncode != 0:
            raise PassError(f"the ONNX Runtime GenAI builder failed: {last_line(done)}")
        if not (output / "genai_config.json").is_file():
            raise PassError("the ONNX Runtime GenAI builder wrote no genai_config.json")
