"""What the passes that rebuild a causal language model for a runtime share (OnnxGenAI,
OpenVinoCausalLM): a checkpoint folder as their input, and with their Auto setting the steered
search over their ladder of settings (llm/search.py), whose account the report shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext


class SteeredBuildPass(OptimizationPass):
    technique = "weight-compression"
    accepts = frozenset({ModelFormat.HUGGING_FACE, ModelFormat.GGUF})
    generative = True

    def build_steered(self, model: ModelFile, source: Path, ctx: PassContext, build: Callable[[Any, Path], None],
                      auto: bool) -> Any:
        """Build the pass's settings into ctx.output_dir, or with `auto` the search's pick of its
        ladder (its account in self.details); returns the settings built."""
        if not auto:
            build(self.spec, ctx.output_dir)
            return self.spec
        from ..llm.search import search

        # judged against the input's weights; from the checkpoint folder when it was GGUF (the same
        # FP32 weights, read in seconds instead of de-quantized again)
        reference = ModelFile(source, ModelFormat.HUGGING_FACE, generative=True) if source != model.path else model
        ladder = self.spec.ladder()
        self.details = search(ladder, reference, ctx, build, ctx.output_dir, self.built_model)
        return ladder[self.details["chosenTrial"] - 1]

    def built_model(self, folder: Path) -> ModelFile:
        """The model a build wrote into `folder`, as it is to run (a folder of output_format by default)."""
        return ModelFile(folder, self.output_format, generative=True)

    @classmethod
    def report_section(cls, name: str, details: dict[str, Any]) -> list[str]:
        """Auto: every build the search judged."""
        from ..llm.search import report_section

        return report_section(name, details)
