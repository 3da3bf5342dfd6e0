"""A GGUF model run by llama.cpp, as its users run it: the file as kept, or re-quantized by llama.cpp
to one of the types most used on CPUs (Q8_0, Q6_K, Q5_K_M, Q4_K_M), or with `quantization: Auto`
the fastest of them that keeps goals.maxAccuracyDrop on the calibration text (llm/search.py), every
build judged and timed in llama.cpp itself. Quantizing runs in a process of its own: a native crash
costs the build, not the run."""

from __future__ import annotations

import os
import shutil
from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..child_python import run_python
from ..errors import PassError
from ..modelfile import Execution, ModelFile
from ..spec.sources import ModelFormat
from .base import PassContext, register
from .settings import PassSettings
from .steered import SteeredBuildPass

RUNTIME = "llama.cpp"
FILE = "model.gguf"
_QUANTIZE = """
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
params.nthread = int(sys.argv[4])
params.allow_requantize = True
status = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params)
sys.exit(0 if status == 0 else 3)
"""


class GgufType(str, Enum):
    AS_KEPT = "AsKept"  # the input file, unchanged, run by llama.cpp
    AUTO = "Auto"  # the fastest of Q4_K_M, Q5_K_M, Q6_K and Q8_0 that keeps the goal
    Q4_K_M = "Q4_K_M"
    Q5_K_M = "Q5_K_M"
    Q6_K = "Q6_K"
    Q8_0 = "Q8_0"


class LlamaCppPass(PassSettings):
    """llama.cpp: a GGUF file run by its own kernels, as kept or re-quantized to one of its types."""

    type: Literal["LlamaCpp"]
    quantization: GgufType = Field(GgufType.AUTO, description="AsKept runs the file as it is; a type re-quantizes it "
                                   "(from a file already quantized, llama.cpp re-quantizes the de-quantized weights: "
                                   "the goal judges what that costs); Auto searches the types.")
    context_tokens: int = Field(2048, ge=64, le=131_072, description="The context llama.cpp allocates.")
    judge_tokens: int | None = Field(None, ge=8, le=1_000_000, description="Auto: tokens of the calibration text "
                                     "each build is judged on (defaults to task.evaluationTokens).")

    @property
    def trial_label(self) -> str:
        return self.quantization.value

    def ladder(self) -> list["LlamaCppPass"]:
        """quantization Auto: the types tried, the fastest kind first."""
        kinds = (GgufType.Q4_K_M, GgufType.Q5_K_M, GgufType.Q6_K, GgufType.Q8_0)
        return [self.model_copy(update={"quantization": kind}) for kind in kinds]

    def execution(self) -> Execution:
        return Execution(runtime=RUNTIME, options={"contextTokens": self.context_tokens})


@register(LlamaCppPass)
class LlamaCpp(SteeredBuildPass):
    technique = "quantization"
    accepts = frozenset({ModelFormat.GGUF})
    output_format = ModelFormat.GGUF

    def not_applicable_reason(self) -> str | None:
        from ..runtimes.base import Processor
        from ..runtimes.llama_cpp import LlamaCppRunner

        return LlamaCppRunner.unavailable(Processor.CPU)

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        if self.spec.quantization is GgufType.AS_KEPT:
            output = ctx.output_dir / FILE
            _link_or_copy(model.path, output)
            ctx.log(f"{model.path.name} as kept, run by llama.cpp")
            return ModelFile(output, ModelFormat.GGUF, model.precision, generative=True, execution=self.spec.execution())

        def build(settings: LlamaCppPass, folder: Path) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            ctx.log(f"quantizing to {settings.quantization.value}")
            _quantize(model.path, folder / FILE, settings.quantization, ctx.threads)

        settings = self.build_steered(model, model.path, ctx, build, self.spec.quantization is GgufType.AUTO)
        return ModelFile(ctx.output_dir / FILE, ModelFormat.GGUF, settings.quantization.value.lower(), generative=True,
                         execution=self.spec.execution())

    def built_model(self, folder: Path) -> ModelFile:
        return ModelFile(folder / FILE, ModelFormat.GGUF, generative=True, execution=self.spec.execution())


def _quantize(source: Path, output: Path, kind: GgufType, threads: int) -> None:
    done = run_python(code=_QUANTIZE, args=[str(source), str(output), kind.value, str(threads)], timeout=3600)
    if done.returncode != 0 or not output.is_file():
        how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"failed (exit {done.returncode})"
        raise PassError(f"llama.cpp's quantization to {kind.value} {how}")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source.resolve(), target)  # the same bytes: no second copy of a model of gigabytes
    except OSError:
        shutil.copyfile(source, target)
