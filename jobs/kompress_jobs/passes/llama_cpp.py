"""A GGUF model run by llama.cpp, as its users run it: the file as kept, or re-quantized by llama.cpp
to one of the types most used on CPUs (Q8_0, Q6_K, Q5_K_M, Q4_K_M, IQ4_XS), or with `quantization:
Auto` the fastest of them that keeps goals.maxAccuracyDrop on the calibration text (llm/search.py),
every build judged and timed in llama.cpp itself. Where llama.cpp's own tools are installed
(llm/llama_tools.py), the quantization is guided by an importance matrix computed once from the
calibration text that the search does not judge on. Quantizing runs in a process of its own: a
native crash costs the build, not the run."""

from __future__ import annotations

import os
import shutil
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..child_python import how_it_ended, run_python
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
    AUTO = "Auto"  # the fastest of IQ4_XS, Q4_K_M, Q5_K_M, Q6_K and Q8_0 that keeps the goal
    IQ4_XS = "IQ4_XS"  # 4.25 bits a weight, non-linear; best with an importance matrix
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
    importance_matrix: bool | None = Field(None, description="Guide the quantization by an importance matrix from "
                                           "the calibration text (llama.cpp's llama-imatrix and llama-quantize). "
                                           "Default: where those tools are installed; true requires them.")

    @property
    def trial_label(self) -> str:
        return self.quantization.value

    def ladder(self) -> list["LlamaCppPass"]:
        """quantization Auto: the types tried, the fastest kind first."""
        kinds = (GgufType.IQ4_XS, GgufType.Q4_K_M, GgufType.Q5_K_M, GgufType.Q6_K, GgufType.Q8_0)
        return [self.model_copy(update={"quantization": kind}) for kind in kinds]

    def execution(self) -> Execution:
        return Execution(runtime=RUNTIME, options={"contextTokens": self.context_tokens})


@register(LlamaCppPass)
class LlamaCpp(SteeredBuildPass):
    technique = "quantization"
    accepts = frozenset({ModelFormat.GGUF})
    output_format = ModelFormat.GGUF

    def not_applicable_reason(self) -> str | None:
        from ..llm import llama_tools
        from ..runtimes.base import Processor
        from ..runtimes.llama_cpp import LlamaCppRunner

        if self.spec.importance_matrix and self.spec.quantization is not GgufType.AS_KEPT and llama_tools.unavailable():
            return f"importanceMatrix is true and {llama_tools.unavailable()}"
        return LlamaCppRunner.unavailable(Processor.CPU)

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        if self.spec.quantization is GgufType.AS_KEPT:
            output = ctx.output_dir / FILE
            _link_or_copy(model.path, output)
            ctx.log(f"{model.path.name} as kept, run by llama.cpp")
            return ModelFile(output, ModelFormat.GGUF, _file_type(model.path) or model.precision, generative=True,
                             execution=self.spec.execution())

        auto = self.spec.quantization is GgufType.AUTO
        imatrix, account = self._importance_matrix(model, ctx, auto)

        def build(settings: LlamaCppPass, folder: Path) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            ctx.log(f"quantizing to {settings.quantization.value}" + (" with the importance matrix" if imatrix else ""))
            _quantize(model.path, folder / FILE, settings.quantization, ctx.threads, imatrix)

        settings = self.build_steered(model, model.path, ctx, build, auto)
        if imatrix is not None:
            self.details = {**(self.details or {}), "importanceMatrix": account}
        return ModelFile(ctx.output_dir / FILE, ModelFormat.GGUF, settings.quantization.value.lower(), generative=True,
                         execution=self.spec.execution())

    def built_model(self, folder: Path) -> ModelFile:
        return ModelFile(folder / FILE, ModelFormat.GGUF, generative=True, execution=self.spec.execution())

    def _importance_matrix(self, model: ModelFile, ctx: PassContext, auto: bool) -> tuple[Path | None, dict]:
        """The importance matrix of the input over the calibration text and its account (None where it is not used):
        from the windows after those the search judges on, so a build is not judged on the text that
        guided it (all of them, said in the account, when no window is left after those)."""
        from ..llm import llama_tools
        from ..llm.loading import load_tokenizer

        if self.spec.importance_matrix is False:
            return None, {}
        if llama_tools.unavailable():
            ctx.log(f"no importance matrix: {llama_tools.unavailable()}")
            return None, {}
        split = ctx.dataset.splits.get(ctx.dataset.source.calibration_split)
        if split is None:
            raise PassError("an importance matrix is computed from the text after task.evaluationTokens (split "
                            f"{ctx.dataset.source.calibration_split!r}); the text has not one more window there "
                            "(or set importanceMatrix: false)")
        windows = split.inputs["input_ids"]
        judged = max(1, (self.spec.judge_tokens or ctx.task.evaluation_tokens) // ctx.task.context_length) if auto else 0
        disjoint = len(windows) > judged
        used = windows[judged:] if disjoint else windows
        text = load_tokenizer(model).decode(used.reshape(-1), skip_special_tokens=True)
        folder = ctx.output_dir.parent / f"_{ctx.output_dir.name}-imatrix"  # scratch: "_" starts no candidate name
        folder.mkdir(parents=True, exist_ok=True)
        ctx.log(f"importance matrix from {len(used)} window(s) of the calibration text")
        # llama-imatrix takes at least two chunks of its context
        matrix = llama_tools.importance_matrix(model.path, text, folder / "imatrix.gguf", threads=ctx.threads,
                                               context=min(ctx.task.context_length, used.size // 2))
        return matrix, {"windows": int(len(used)), "tokens": int(used.size), "disjointFromJudged": disjoint}

    @classmethod
    def report_section(cls, name: str, details: dict[str, Any]) -> list[str]:
        lines = super().report_section(name, details) if "trials" in details else [f"## llama.cpp `{name}`", ""]
        matrix = details.get("importanceMatrix")
        if matrix:
            lines += [f"Quantized with an importance matrix from {matrix['windows']} window(s) ({matrix['tokens']} tokens) "
                      "of the calibration text" + ("." if matrix["disjointFromJudged"] or "trials" not in details else
                                                   ": the same windows the builds were judged on (no other was left)."), ""]
        return lines


def _quantize(source: Path, output: Path, kind: GgufType, threads: int, imatrix: Path | None) -> None:
    from ..llm import llama_tools

    if imatrix is not None:
        llama_tools.quantize(source, output, kind.value, imatrix=imatrix, threads=threads)
        return
    done = run_python(code=_QUANTIZE, args=[str(source), str(output), kind.value, str(threads)], timeout=3600)
    if done.returncode != 0 or not output.is_file():
        raise PassError(f"llama.cpp's quantization to {kind.value} {how_it_ended(done)}")


def _file_type(path: Path) -> str | None:
    """The file's own quantization type ("q4_1"), as its header's general.file_type says: what the
    report shows for a file run as kept (PyTorch de-quantizes it, llama.cpp does not)."""
    from gguf import LlamaFileType

    from ..formats.gguf import read_header

    try:
        return LlamaFileType(read_header(path).metadata.get("general.file_type")).name.split("_", 1)[1].lower()
    except ValueError:
        return None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source.resolve(), target)  # the same bytes: no second copy of a model of gigabytes
    except OSError:
        shutil.copyfile(source, target)
